"""Minimal Paddle loop of the shared crnn (benchmarks/minimal/harness.py): dynamic graph (``mode:
to_static`` converts the network with ``paddle.jit.to_static``), Adam, ``paddle.nn.CTCLoss`` (blank 0,
warpctc) on logits; the math library's threads from the config (``paddle.base.core.set_num_threads``)."""

import harness

harness.repository_on_path(__file__)

import paddle  # noqa: E402

from backends.paddleocr.model import CRNN  # noqa: E402


class PaddleLoop(harness.Loop):
    framework = "paddle"

    def __init__(self, cfg: harness.Config, batch: harness.Batch):
        paddle.set_device("cpu")
        paddle.base.core.set_num_threads(cfg.threads)
        paddle.seed(cfg.seed)
        self.cfg = cfg
        self.model = CRNN(cfg.classes, channels=cfg.channels, hidden=cfg.hidden, input_width=cfg.input_width)
        static = cfg.mode == "to_static"
        self.forward = paddle.jit.to_static(self.model, full_graph=True) if static else self.model
        self.optimizer = paddle.optimizer.Adam(learning_rate=cfg.lr, beta1=cfg.betas[0], beta2=cfg.betas[1],
                                               epsilon=cfg.eps, parameters=self.model.parameters())
        self.ctc = paddle.nn.CTCLoss(blank=0, reduction="mean")
        self.x = paddle.to_tensor(batch.inputs)
        self.labels = paddle.to_tensor(batch.targets)
        self.lengths = paddle.to_tensor(batch.lengths.astype("int64"))
        self.input_lengths = paddle.full([cfg.batch], cfg.input_width // 4 + 1, dtype="int64")
        self.eval_x = paddle.to_tensor(batch.eval_inputs)

    def version(self) -> str:
        return paddle.__version__

    def train_step(self) -> None:
        self.model.train()
        logits = self.forward(self.x)                                      # (T, B, C)
        self.ctc(logits, self.labels, self.input_lengths, self.lengths).backward()
        self.optimizer.step()
        self.optimizer.clear_grad()

    def infer(self) -> None:
        self.model.eval()
        with paddle.no_grad():
            self.forward(self.eval_x).argmax(axis=2).numpy()

    def threads_used(self) -> int:
        return self.cfg.threads

    def describe(self) -> dict:
        return {"mode": self.cfg.mode or "dygraph"}


if __name__ == "__main__":
    harness.main(PaddleLoop)
