"""What the driver hands a trainer while it trains: the event stream (:class:`Events`, rank 0 only),
the per-epoch context (:class:`EpochContext`: learning rate, step reporting) and the orphan check
(:func:`check_parent`). Standard library only."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from ocrbench.schedule import Schedule


class Events:
    """Appends one JSON object per line to events.jsonl, flushed at once so the core can follow. Only the
    writing rank (0) writes: set ``enabled`` False on the others (the file is opened on the first event)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        self._handle = None

    def emit(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        record = {"event": event, "time": time.time(), **fields}
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


class EpochContext:
    """Handed to ``Trainer.train_epoch``: the learning rate to use and where to report each step."""

    def __init__(self, epoch: int, global_step: int, schedule: Schedule, events: Events, log_every: int,
                 processes: int = 1):
        self.epoch = epoch
        self._processes = processes
        self.global_step = global_step
        self.samples = 0
        self._schedule = schedule
        self._events = events
        self._log_every = log_every
        self._started = time.perf_counter()

    def lr(self) -> float:
        """Learning rate for the step about to be taken (ocrbench.schedule, per global step)."""
        return self._schedule.lr_at(self.global_step)

    def step(self, samples: int, loss: float | Callable[[], float]) -> None:
        """Record one optimizer step over ``samples`` images (this process's; every worker process of a
        data-parallel run takes the same number of steps, so the run's samples are this times the
        processes). ``loss`` may be a callable, evaluated only when the step is logged (so a GPU backend
        does not synchronise every step)."""
        check_parent()
        lr = self.lr()
        self.global_step += 1
        self.samples += samples * self._processes
        if self.global_step % self._log_every == 0:
            value = loss() if callable(loss) else loss
            elapsed = time.perf_counter() - self._started
            self._events.emit("step", epoch=self.epoch, step=self.global_step, loss=float(value), lr=lr,
                              samples_per_s=self.samples / max(elapsed, 1e-9))


_PARENT = os.getppid()
_CORE = int(os.environ.get("OCRBENCH_CORE_PID", "0"))   # set by the core; launchers sit in between


def check_parent() -> None:
    """Stop if the core that started this worker is gone (killed hard): never train as an orphan — also
    when a native launcher (torchrun, msrun, ...) stands between the core and this worker."""
    if os.getppid() != _PARENT:
        raise KeyboardInterrupt
    if _CORE:
        try:
            os.kill(_CORE, 0)
        except ProcessLookupError:
            raise KeyboardInterrupt from None
