"""Minimal MXNet loop of the shared crnn (benchmarks/minimal/harness.py): the Gluon block hybridized with
``static_alloc``/``static_shape`` (the documented fast path), ``gluon.Trainer`` with Adam, ``nd.ctc_loss``
(blank first). MXNet sizes its OpenMP pool from ``OMP_NUM_THREADS`` at import, so the config's threads are
put there before ``import mxnet``; the engine runs asynchronously, so timings end with ``nd.waitall()``."""

import os

import harness

harness.repository_on_path(__file__)


def _threads_from_argv() -> None:
    import json
    import sys

    if "--config" in sys.argv:
        threads = json.loads(sys.argv[sys.argv.index("--config") + 1]).get("threads", 1)
        os.environ["OMP_NUM_THREADS"] = str(threads)


_threads_from_argv()

import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon, nd  # noqa: E402

from backends.mxnet.model import CRNN  # noqa: E402


class MxnetLoop(harness.Loop):
    framework = "mxnet"

    def __init__(self, cfg: harness.Config, batch: harness.Batch):
        mx.random.seed(cfg.seed)
        self.cfg = cfg
        self.net = CRNN(cfg.classes, channels=cfg.channels, hidden=cfg.hidden, input_width=cfg.input_width)
        self.net.initialize(mx.init.Xavier(factor_type="in", magnitude=2.34))
        self.net.hybridize(static_alloc=True, static_shape=True)
        self.trainer = gluon.Trainer(self.net.collect_params(), "adam",
                                     {"learning_rate": cfg.lr, "beta1": cfg.betas[0], "beta2": cfg.betas[1],
                                      "epsilon": cfg.eps})
        self.x = nd.array(batch.inputs)
        self.labels = nd.array(batch.targets, dtype="float32")   # as the backend's loader gives them
        self.lengths = nd.array(batch.lengths, dtype="float32")
        self.eval_x = nd.array(batch.eval_inputs)
        self.last = None

    def version(self) -> str:
        return mx.__version__

    def train_step(self) -> None:
        with autograd.record():
            logits = self.net(self.x)                                       # (T, B, C)
            loss = nd.ctc_loss(logits, self.labels, label_lengths=self.lengths, use_label_lengths=True,
                               blank_label="first").mean()
        loss.backward()
        self.trainer.step(1)
        self.last = loss

    def infer(self) -> None:
        self.last = self.net(self.eval_x).argmax(axis=2)

    def sync(self) -> None:
        nd.waitall()

    def threads_used(self) -> int:
        return int(os.environ["OMP_NUM_THREADS"])

    def describe(self) -> dict:
        return {"mode": "hybridized (static_alloc, static_shape)"}


if __name__ == "__main__":
    harness.main(MxnetLoop)
