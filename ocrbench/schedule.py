"""Learning-rate schedules, one implementation for every backend.

A schedule maps the global optimizer step (0-based) to a learning rate. Epoch-valued settings
(``milestones``, ``warmup_epochs``) are converted with ``steps_per_epoch``. Standard library only
(imported by workers, which set the framework optimizer's lr from it before each step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Schedule:
    base_lr: float
    steps_per_epoch: int
    epochs: int
    name: str = "constant"          # constant | multistep | cosine | poly
    milestones: tuple[int, ...] = field(default_factory=tuple)  # epochs at whose start lr *= gamma
    gamma: float = 0.1
    warmup_epochs: float = 0.0      # linear warm-up from 0 to base_lr
    power: float = 1.0              # poly only
    end_lr: float = 0.0             # cosine and poly: final lr

    @classmethod
    def from_job(cls, train: dict, steps_per_epoch: int) -> "Schedule":
        """Build from the job spec's ``train`` section (the recipe's train section, resolved)."""
        s = train["lr_schedule"]
        return cls(base_lr=train["optimizer"]["lr"], steps_per_epoch=steps_per_epoch, epochs=train["epochs"],
                   name=s["name"], milestones=tuple(s["milestones"]), gamma=s["gamma"],
                   warmup_epochs=s["warmup_epochs"], power=s["power"], end_lr=s["end_lr"])

    def lr_at(self, step: int) -> float:
        """Learning rate for global step ``step`` (0-based)."""
        total = max(1, self.steps_per_epoch * self.epochs)
        warmup = int(round(self.warmup_epochs * self.steps_per_epoch))
        if step < warmup:
            return self.base_lr * (step + 1) / warmup
        if self.name == "constant":
            return self.base_lr
        if self.name == "multistep":
            epoch = step // max(1, self.steps_per_epoch)
            passed = sum(1 for m in self.milestones if epoch >= m)
            return self.base_lr * self.gamma ** passed
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if self.name == "cosine":
            return self.end_lr + (self.base_lr - self.end_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.name == "poly":
            return self.end_lr + (self.base_lr - self.end_lr) * (1 - progress) ** self.power
        raise ValueError(f"unknown lr schedule {self.name!r}")
