"""Minimal PyTorch loop of the shared crnn (benchmarks/minimal/harness.py): eager mode, channels-last
weights and inputs (PyTorch's recommended layout for convnets, as the backend trains),
``torch.set_num_threads``, Adam, ``nn.CTCLoss`` (blank 0, mean) on log-softmax. ``mode: compile`` also
wraps the model in ``torch.compile``; ``mode: contiguous`` keeps the default NCHW-contiguous layout (the
backend before it switched)."""

import harness

harness.repository_on_path(__file__)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from backends.pytorch.model import CRNN  # noqa: E402


class TorchLoop(harness.Loop):
    framework = "torch"

    def __init__(self, cfg: harness.Config, batch: harness.Batch):
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        layout = torch.contiguous_format if cfg.mode == "contiguous" else torch.channels_last
        self.model = CRNN(cfg.classes, channels=cfg.channels, hidden=cfg.hidden, input_width=cfg.input_width)
        self.model = self.model.to(memory_format=layout)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                          eps=cfg.eps)
        self.ctc = nn.CTCLoss(blank=0, zero_infinity=True)
        self.forward = torch.compile(self.model) if cfg.mode == "compile" else self.model
        self.x = torch.from_numpy(batch.inputs).contiguous(memory_format=layout)
        self.targets = torch.from_numpy(batch.targets).long()
        self.lengths = torch.from_numpy(batch.lengths).long()
        with torch.no_grad():
            steps = self.model(self.x[:1]).shape[0]
        self.input_lengths = torch.full((cfg.batch,), steps, dtype=torch.long)
        self.eval_x = torch.from_numpy(batch.eval_inputs).contiguous(memory_format=layout)

    def version(self) -> str:
        return torch.__version__

    def train_step(self) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.forward(self.x)
        self.ctc(logits.log_softmax(2), self.targets, self.input_lengths, self.lengths).backward()
        self.optimizer.step()

    def infer(self) -> None:
        self.model.eval()
        with torch.inference_mode():
            self.forward(self.eval_x).argmax(2)

    def threads_used(self) -> int:
        return torch.get_num_threads()

    def describe(self) -> dict:
        return {"mode": self.cfg.mode or "eager", "layout": "NCHW" if self.cfg.mode == "contiguous"
                else "channels_last"}


if __name__ == "__main__":
    harness.main(TorchLoop)
