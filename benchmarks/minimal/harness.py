"""What the minimal training loops (``benchmarks/minimal/<backend>_loop.py``) share: the configuration they
are given, the fixed batch they train on, and the timing. Standard library and numpy only.

A minimal loop is the shared ``crnn`` (the backend's own network definition, whose function every backend
shares: docs/equivalence.md) trained the way its framework's documentation recommends for speed, on one
fixed batch that is already a framework tensor: no data loading, no conversion, no logging, no per-step
Python beyond the framework's own step. What it measures is the most that framework gives on this
machine; ``ocrbench bench`` sets it beside an ``ocrbench run`` of the same configuration.

Conventions of the batch: images float32 ``(B, 1, 32, W)`` NCHW in [-1, 1] (uint8 noise scaled by
x / 127.5 - 1), labels int ``(B, max_len)`` of classes 1..classes-1 (class 0 the CTC blank; a loop whose
framework wants the blank last shifts them), every label ``max_len`` long.

Run: ``<backend env>/bin/python benchmarks/minimal/<backend>_loop.py --config JSON``; prints one JSON
object on its last line of stdout.
"""

from __future__ import annotations

import abc
import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

HEIGHT = 32


@dataclass(frozen=True)
class Config:
    """One benchmark configuration (``ocrbench bench`` builds it from a recipe): the network's size
    (``classes`` including the blank), the batch sizes, Adam's ``lr``/``eps``/``betas``, the CPU
    ``threads`` to give the framework, ``rounds`` of ``steps`` timed steps after ``warmup`` untimed ones,
    ``rounds`` of ``infer_batches`` timed inference batches of ``eval_batch`` images, and ``mode`` (a loop's
    fast path; "" = its default)."""

    classes: int
    channels: list[int]
    hidden: int
    input_width: int
    batch: int
    eval_batch: int
    max_len: int
    lr: float = 1e-3
    eps: float = 1e-8
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    threads: int = 1
    steps: int = 30
    warmup: int = 5
    infer_batches: int = 5
    rounds: int = 5
    mode: str = ""
    seed: int = 1


@dataclass(frozen=True)
class Batch:
    """The fixed training batch and the inference batch, as numpy arrays (see the module docstring)."""

    inputs: np.ndarray        # float32 (batch, 1, 32, W) in [-1, 1]
    targets: np.ndarray       # int32 (batch, max_len), classes 1..classes-1
    lengths: np.ndarray       # int32 (batch,), all max_len
    eval_inputs: np.ndarray   # float32 (eval_batch, 1, 32, W)


def fixed_batch(cfg: Config) -> Batch:
    """Random uint8 images and labels from ``cfg.seed``, scaled as every backend scales its pixels."""
    rng = np.random.RandomState(cfg.seed)

    def images(n: int) -> np.ndarray:
        pixels = rng.randint(0, 256, size=(n, 1, HEIGHT, cfg.input_width)).astype(np.float32)
        return pixels / 127.5 - 1.0

    targets = rng.randint(1, cfg.classes, size=(cfg.batch, cfg.max_len)).astype(np.int32)
    return Batch(images(cfg.batch), targets, np.full(cfg.batch, cfg.max_len, dtype=np.int32),
                 images(cfg.eval_batch))


class Loop(abc.ABC):
    """One framework's minimal loop: built from the config and the batch (threads set, model, optimizer,
    loss, the batch as framework tensors), then timed by :func:`measure`."""

    framework = ""

    @abc.abstractmethod
    def version(self) -> str:
        """The framework's version."""

    @abc.abstractmethod
    def train_step(self) -> None:
        """One optimizer step (forward, CTC loss, backward, Adam update) on the fixed batch."""

    @abc.abstractmethod
    def infer(self) -> None:
        """Inference (argmax classes) on the inference batch."""

    def sync(self) -> None:
        """Wait for queued work (frameworks that run asynchronously); by default nothing."""

    def threads_used(self) -> int | None:
        """The intra-op threads the framework reports using; None when it cannot say."""
        return None

    def describe(self) -> dict:
        """What the loop chose (mode, layout, ...), recorded with its figures."""
        return {}


def _timed(run: Callable[[], None], sync: Callable[[], None], repeats: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``repeats`` calls of ``run`` (then ``sync``)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        run()
    sync()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(loop: Loop, cfg: Config) -> dict:
    """Train ``warmup`` steps untimed, then ``rounds`` rounds of ``steps`` timed steps; infer once untimed,
    then ``rounds`` rounds of ``infer_batches`` batches. A rate is the **median** over its rounds (a shared
    machine's noise moves single rounds by ±10 %); the best round is reported beside it. Also: the CPU
    utilisation (process CPU seconds / wall seconds) while training, the threads the framework used, and
    what the loop chose."""
    _timed(loop.train_step, loop.sync, cfg.warmup)
    train = [_timed(loop.train_step, loop.sync, cfg.steps) for _ in range(cfg.rounds)]
    _timed(loop.infer, loop.sync, 1)
    infer = [_timed(loop.infer, loop.sync, cfg.infer_batches)[0] for _ in range(cfg.rounds)]
    train_rates = sorted(cfg.steps * cfg.batch / wall for wall, _ in train)
    infer_rates = sorted(cfg.infer_batches * cfg.eval_batch / wall for wall in infer)
    wall, cpu = sum(w for w, _ in train), sum(c for _, c in train)
    return {"framework": loop.framework, "version": loop.version(), "config": asdict(cfg),
            "train_samples_per_s": float(np.median(train_rates)), "train_best_samples_per_s": train_rates[-1],
            "train_rounds": train_rates, "train_step_ms": 1000 * wall / (cfg.steps * cfg.rounds),
            "infer_samples_per_s": float(np.median(infer_rates)),
            "cpu_utilisation": cpu / wall, "threads": loop.threads_used(), **loop.describe()}


def main(build: Callable[[Config, Batch], Loop], argv: list[str] | None = None) -> None:
    """``--config JSON``: build the loop, measure it, print the result as one JSON line."""
    parser = argparse.ArgumentParser(description="a minimal training loop of the shared crnn")
    parser.add_argument("--config", required=True, help="a Config as JSON")
    args = parser.parse_args(argv)
    cfg = Config(**json.loads(args.config))
    result = measure(build(cfg, fixed_batch(cfg)), cfg)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def repository_on_path(script: str) -> None:
    """Put the repository root on ``sys.path`` (after the script's directory, where this module is found),
    so that ``backends.<name>.model`` and ``ocrbench`` import from the checkout."""
    from pathlib import Path

    sys.path.insert(1, str(Path(script).resolve().parents[2]))
