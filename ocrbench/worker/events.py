"""What the driver hands a trainer while it trains: the event stream (:class:`Events`, rank 0 only),
the per-epoch context (:class:`EpochContext`: learning rate, step reporting) and the orphan check
(:func:`check_parent`). Standard library only."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

from ocrbench.schedule import Schedule

T = TypeVar("T")


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


@dataclass
class PartialEpoch:
    """What an epoch had done when a mid-epoch checkpoint was written (``train.checkpoint_every``):
    its steps, images, summed logged loss and training seconds; a resumed run continues from them."""

    steps: int = 0
    samples: int = 0
    loss_sum: float = 0.0
    train_s: float = 0.0

    @classmethod
    def from_json(cls, data: dict | None) -> "PartialEpoch":
        return cls(**data) if data else cls()


class EpochContext:
    """Handed to ``Trainer.train_epoch``: the learning rate to use, the batches still to take
    (:meth:`batches`) and where to report each step (:meth:`step`). The epoch's mean loss is the mean of
    the losses reported to :meth:`step` (:meth:`mean_loss`), including those before a resume."""

    def __init__(self, epoch: int, global_step: int, schedule: Schedule, events: Events, log_every: int,
                 processes: int = 1, resumed: PartialEpoch | None = None,
                 on_step: Callable[["EpochContext"], None] | None = None):
        resumed = resumed or PartialEpoch()
        self.epoch = epoch
        self._processes = processes
        self.global_step = global_step
        self.skip = resumed.steps          # steps of this epoch taken before a resume
        self.epoch_step = resumed.steps    # steps of this epoch taken so far
        self.samples = resumed.samples
        self._carried = resumed
        self._losses: list[float | Callable[[], float]] = []
        self._rate_samples = 0
        self._schedule = schedule
        self._events = events
        self._log_every = log_every
        self._on_step = on_step
        self._started = time.perf_counter()
        self._cpu_started = time.process_time()
        self._batch_ready: float | None = None
        self._stopped = False
        self.data_s = 0.0   # waiting for the next batch (loading, decoding, collating)
        self.step_s = 0.0   # from a batch's arrival to its ctx.step: host->tensor, forward, backward, update
        self.eval_s = 0.0   # evaluations inside the epoch (train.eval_every_steps): not training time
        self._eval_cpu_s = 0.0

    def lr(self) -> float:
        """Learning rate for the step about to be taken (ocrbench.schedule, per global step)."""
        return self._schedule.lr_at(self.global_step)

    def batches(self, batches: Iterable[T]) -> Iterator[T]:
        """The epoch's batches (in its seeded order) without the first :attr:`skip` — those a resumed run
        took before its mid-epoch checkpoint — and none after :meth:`stop`. Every backend iterates its
        training batches through this. The time spent waiting for each batch is added to :attr:`data_s`."""
        began = time.perf_counter()
        iterator = itertools.islice(batches, self.skip, None)   # iter(): a pipeline may start here
        while not self._stopped:
            try:
                batch = next(iterator)
            except StopIteration:   # finding the end may take time too (a pipeline draining)
                self.data_s += time.perf_counter() - began
                return
            self._batch_ready = time.perf_counter()
            self.data_s += self._batch_ready - began
            yield batch
            began = time.perf_counter()

    def stop(self) -> None:
        """End the epoch after the current step: :meth:`batches` yields no more (``train.stop_at_target``
        reached by an evaluation inside the epoch)."""
        self._stopped = True

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` ended this epoch early."""
        return self._stopped

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Time spent inside this block (an evaluation inside the epoch) is added to :attr:`eval_s` and
        left out of the epoch's training seconds (:meth:`train_s`) and of its logged samples/s."""
        began, cpu_began = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.eval_s += time.perf_counter() - began
            self._eval_cpu_s += time.process_time() - cpu_began

    def step(self, samples: int, loss: float | Callable[[], float]) -> None:
        """Record one optimizer step over ``samples`` images (this process's; every worker process of a
        data-parallel run takes the same number of steps, so the run's samples are this times the
        processes). ``loss`` may be a callable, evaluated only when the step is logged or the epoch's mean
        is taken (so a GPU backend does not synchronise every step). The time since the batch arrived is
        added to :attr:`step_s`."""
        if self._batch_ready is not None:
            self.step_s += time.perf_counter() - self._batch_ready
            self._batch_ready = None
        check_parent()
        lr = self.lr()
        self.global_step += 1
        self.epoch_step += 1
        self.samples += samples * self._processes
        self._rate_samples += samples * self._processes
        self._losses.append(loss)
        if self.global_step % self._log_every == 0:
            value = self._resolve(len(self._losses) - 1)
            elapsed = time.perf_counter() - self._started - self.eval_s
            self._events.emit("step", epoch=self.epoch, step=self.global_step, loss=value, lr=lr,
                              samples_per_s=self._rate_samples / max(elapsed, 1e-9), train_s=self.train_s())
        if self._on_step is not None:
            self._on_step(self)

    def _resolve(self, index: int) -> float:
        value = self._losses[index]
        if callable(value):
            value = self._losses[index] = float(value())
        return float(value)

    def partial(self) -> PartialEpoch:
        """This epoch so far, for a mid-epoch checkpoint."""
        losses = sum(self._resolve(i) for i in range(len(self._losses)))
        return PartialEpoch(steps=self.epoch_step, samples=self.samples,
                            loss_sum=self._carried.loss_sum + losses, train_s=self.train_s())

    def mean_loss(self) -> float:
        """The mean of the epoch's logged step losses (those before a resume included); 0.0 without steps."""
        done = self.partial()
        return done.loss_sum / done.steps if done.steps else 0.0

    def train_s(self) -> float:
        """Seconds this epoch has trained (before a resume included; evaluations inside it left out)."""
        return self._carried.train_s + time.perf_counter() - self._started - self.eval_s

    def timers(self) -> dict[str, float]:
        """Where this attempt's part of the epoch went (seconds): ``data_s`` waiting for batches, ``step_s``
        in the steps (host->tensor conversion, forward, backward, update, per-step Python of the backend),
        ``other_s`` the rest of the epoch's training time (logging, mid-epoch checkpoints, the epoch's setup),
        ``eval_s`` its evaluations (``train.eval_every_steps``; not training time) and ``cpu_s`` the CPU
        time of this process (all its threads) over the epoch's training time: ``cpu_s / (wall - eval_s)``
        is the number of cores it kept busy. A process's data-loader worker processes are not counted."""
        wall = time.perf_counter() - self._started
        return {"data_s": self.data_s, "step_s": self.step_s,
                "other_s": max(0.0, wall - self.data_s - self.step_s - self.eval_s), "eval_s": self.eval_s,
                "cpu_s": time.process_time() - self._cpu_started - self._eval_cpu_s}


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
