"""Minimal MindSpore loop of the shared crnn (benchmarks/minimal/harness.py): GRAPH_MODE, the network with
convolutions as im2col + MatMul on the CPU (``backends.mindspore.model.use_im2col``: the CPU Conv2D kernel is
far slower), ``nn.TrainOneStepCell`` over the loss (one compiled graph per step, the documented way), Adam,
``nn.CTCLoss`` (blank last) on log-softmax; CPU operator threads from the config
(``mindspore.device_context.cpu.op_tuning.threads_num``: the framework's default is 25)."""

import harness

harness.repository_on_path(__file__)

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import Tensor, nn, ops  # noqa: E402

from backends.mindspore.model import CRNN, use_im2col  # noqa: E402


class WithLoss(nn.Cell):
    def __init__(self, net: nn.Cell, classes: int, steps: int, batch: int):
        super().__init__()
        self.net = net
        self.ctc = nn.CTCLoss(blank=classes - 1, reduction="mean", zero_infinity=True)
        self.input_lengths = Tensor(np.full(batch, steps, dtype=np.int32))

    def construct(self, images, labels, lengths):
        logits = self.net(images)                                          # (T, B, C)
        return self.ctc(ops.log_softmax(logits, 2), labels, self.input_lengths, lengths)


class MindSporeLoop(harness.Loop):
    framework = "mindspore"

    def __init__(self, cfg: harness.Config, batch: harness.Batch):
        ms.set_context(mode=ms.GRAPH_MODE)
        ms.set_device("CPU")
        ms.device_context.cpu.op_tuning.threads_num(cfg.threads)
        ms.set_seed(cfg.seed)
        self.cfg = cfg
        self.net = CRNN(cfg.classes, channels=cfg.channels, hidden=cfg.hidden, input_width=cfg.input_width)
        use_im2col(self.net, True)
        optimizer = nn.Adam(self.net.trainable_params(), learning_rate=cfg.lr, beta1=cfg.betas[0],
                            beta2=cfg.betas[1], eps=cfg.eps)
        loss = WithLoss(self.net, cfg.classes, cfg.input_width // 4 + 1, cfg.batch)
        self.step = nn.TrainOneStepCell(loss, optimizer)
        self.step.set_train(True)
        self.x = Tensor(batch.inputs)
        self.labels = Tensor(batch.targets - 1)                             # blank last
        self.lengths = Tensor(batch.lengths)
        self.eval_x = Tensor(batch.eval_inputs)
        self.last = None

    def version(self) -> str:
        return ms.__version__

    def train_step(self) -> None:
        self.last = self.step(self.x, self.labels, self.lengths)

    def infer(self) -> None:
        self.net.set_train(False)
        self.last = self.net(self.eval_x).argmax(axis=2)
        self.net.set_train(True)

    def sync(self) -> None:
        if self.last is not None:
            self.last.asnumpy()

    def threads_used(self) -> int:
        return self.cfg.threads

    def describe(self) -> dict:
        return {"mode": "GRAPH_MODE, TrainOneStepCell", "conv": "im2col + MatMul"}


if __name__ == "__main__":
    harness.main(MindSporeLoop)
