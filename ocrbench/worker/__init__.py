"""The worker side of the backend protocol: one driver loop shared by every backend.

A backend's worker module (run inside the backend's own environment) subclasses :class:`Trainer` — the
framework-specific parts — and calls :func:`serve` with that class. The driver owns everything else,
identically for all backends: reading the job spec (``ocrbench.job``), seeding, the epoch loop,
evaluation cadence, CTC decoding (one decoder, in ``ocrbench.codec``), prediction files
(``ocrbench.predictions``), resume bookkeeping, exports bookkeeping, timing and the JSON-lines event
stream. Metrics are *not* computed here: the core scores the prediction files.

Data-parallel runs: every rank runs this driver with the same job spec; the launcher (torchrun, paddle's
launch, msrun, ...) tells each its rank. Only **rank 0 writes**: events, evaluations, predictions,
checkpoints and exports. Other ranks train, print their final weights' digest to their log and exit.

Standard library and numpy only.
"""

from __future__ import annotations

import abc
import fcntl
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ocrbench import atomic
from ocrbench.job import JOB_SCHEMA, Dataset, Distributed, Job, JobSpecError  # noqa: F401 - the contract
from ocrbench.labels import read_label_file
from ocrbench.predictions import write_predictions
from ocrbench.schedule import Schedule

LOSS_REDUCTIONS = {
    "mean": "the per-sample CTC losses averaged over the batch",
    "sum": "the per-sample CTC losses summed over the batch",
    "char_mean": "each sample's CTC loss divided by its label length, then averaged over the batch",
}
LOSS_UNITS = {"per_sample": "per sample", "per_char": "per label character"}


@dataclass(frozen=True)
class LossSpec:
    """How a backend's training loss is reduced, recorded in metrics.json (``train.loss``) so that
    ``ocrbench compare`` can say when two runs' losses are not on one scale.

    ``reduction`` (a key of LOSS_REDUCTIONS): how the per-sample CTC losses of a batch become the loss whose
    gradient is taken — with ``sum`` the gradient is the batch size times that of ``mean``.
    ``logged`` (``per_sample`` or ``per_char``): what the loss reported to ``EpochContext.step`` and
    returned by ``train_epoch`` (the loss curves) is an average of. ``native``: the framework's call.
    """

    reduction: str
    logged: str
    native: str

    def __post_init__(self):
        if self.reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"LossSpec.reduction {self.reduction!r}: use one of {', '.join(LOSS_REDUCTIONS)}")
        if self.logged not in LOSS_UNITS:
            raise ValueError(f"LossSpec.logged {self.logged!r}: use one of {', '.join(LOSS_UNITS)}")

    def to_json(self) -> dict:
        return asdict(self)


DEFAULT_OUTPUT_SPEC = {"blank": 0, "labels": "charset[k] is class k + 1; the blank is class 0",
                       "output": "logits (time, batch, classes), time-major", "layout": "TBC"}
REFERENCE_BATCH = 8  # eval images in each export's reference.npz
SHUFFLE_SEED_STRIDE = 100_003   # Trainer.epoch_seed: seed * stride + epoch


Batches = Iterable[tuple[list[str], np.ndarray]]


class Trainer(abc.ABC):
    """What a backend implements: the framework-specific parts of a run. The driver (:func:`run_job`)
    constructs nothing: :func:`serve` makes ``TrainerClass(job)``, then the driver calls ``setup``,
    :meth:`seed_everything`, ``prepare``, ``build``, the epoch loop (``train_epoch``, ``predict``, ``save``)
    and ``export`` (docs/backends.md has the order and every event).

    Conventions, the same for every backend:

    * **labels**: class 0 is the CTC blank, ``charset[i]`` is class ``i + 1`` (``ocrbench.codec``); a
      framework whose native convention differs converts inside its worker (``codec.from_blank_last``);
    * **best paths** (``predict``, ``predict_exported``): int arrays ``(batch, time)``, batch-major, of the
      argmax class per step in that convention, yielded with the batch's sample ids (the canonical label
      files' image paths), in label-file order;
    * **training policies** are the recipe's, identical in every backend: the per-step learning rate
      (``EpochContext.lr``), the partial last batch (``train.drop_last``: use :meth:`drop_last` /
      :meth:`epoch_steps`), Adam's epsilon (``train.optimizer.eps``), the seeds (:meth:`seed_everything`,
      :meth:`epoch_seed`), the label-length limit (:attr:`max_label_len`);
    * **data-parallel runs**: ``setup`` joins the framework's engine as ``job.distributed`` says, may return
      ``distributed`` (what it set up, recorded in metrics.json) and trains on ``job.process_batch`` images
      per step (this process's share); only rank 0 evaluates, checkpoints and exports.
    """

    framework: str = ""   # the framework's name in events, e.g. "torch"

    def __init__(self, job: Job):
        self.job = job
        self._sample_ids: dict[str, list[str]] = {}

    # ------------------------------------------------------------------- what every backend provides
    @abc.abstractmethod
    def version(self) -> str:
        """The framework's version string."""

    @abc.abstractmethod
    def setup(self) -> dict:
        """Devices (``job.gpus``, ``job.local_rank``; :meth:`require_gpus`), threads (:meth:`threads`) and
        the distributed engine. Returns what goes into the ``start`` event: ``{"device": ..., ...}``, and
        ``distributed`` for a data-parallel run. Seeds are set next, by :meth:`seed_everything`."""

    @abc.abstractmethod
    def seed_framework(self, seed: int) -> None:
        """Seed the framework's own generators (Python's and numpy's are seeded by the driver)."""

    @abc.abstractmethod
    def prepare(self) -> dict:
        """Convert the canonical dataset (``job.dataset_dir``) into the native format under
        ``job.native_dir`` — written atomically, reused if present (ranks on one machine hold a lock
        around this call). Returns ``{"format", "path", "reused", ...}``."""

    @abc.abstractmethod
    def build(self) -> dict:
        """Model, optimizer (``train.optimizer``, with ``eps`` for Adam), loss and data pipeline. Returns
        ``{"arch", "params", "classes", ...}`` (``params``: trainable parameter count)."""

    @abc.abstractmethod
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch (:meth:`epoch_steps` of this process's share of the split)."""

    @abc.abstractmethod
    def train_epoch(self, ctx: "EpochContext") -> float:
        """One epoch: before each step take the learning rate from ``ctx.lr()``, after it call
        ``ctx.step(images, loss)``. Returns the epoch's mean loss, as :meth:`loss_spec` describes it."""

    @abc.abstractmethod
    def predict(self, split: str) -> Batches:
        """Inference on ``split`` in label-file order: ``(ids, best_paths)`` batches, best paths an int
        array ``(batch, time)`` in the blank-0 convention."""

    @abc.abstractmethod
    def save(self, directory: Path, epoch: int) -> list[Path]:
        """A native checkpoint of model and optimizer after ``epoch`` (1-based), written atomically;
        returns the files written."""

    @abc.abstractmethod
    def load(self, directory: Path) -> None:
        """Restore model and optimizer from the latest checkpoint in ``directory``."""

    @abc.abstractmethod
    def export(self, fmt: str, directory: Path, opset: int) -> list[Path]:
        """One deployable format into ``directory`` (empty, created by the driver); returns its files.
        An exception is recorded as that export's failure; the run goes on."""

    @abc.abstractmethod
    def input_spec(self) -> dict:
        """The model input: ``shape``, ``layout``, ``color``, ``dtype``, ``pixels`` (value range), ``resize``,
        and ``preprocess`` (``ocrbench.preprocess.describe``) that the core replays to run exports."""

    @abc.abstractmethod
    def loss_spec(self) -> LossSpec:
        """How the CTC loss is reduced and what the logged loss is an average of (metrics.json
        ``train.loss``)."""

    # -------------------------------------------------------------------- optional hooks (defaults)
    def output_spec(self) -> dict:
        """Blank index, label convention and layout of the exports' outputs (their metadata); the default
        is blank 0 with time-major logits ``(time, batch, classes)``."""
        return dict(DEFAULT_OUTPUT_SPEC)

    def on_evaluated(self, epoch: int, predictions: Path) -> None:
        """Called after each evaluation with its predictions file, before that epoch's ``save``."""

    def predict_exported(self, fmt: str, directory: Path) -> Batches | None:
        """Like ``predict("eval")`` through the export in ``directory`` reloaded by the framework; None for
        a format it does not reload (ONNX: the core runs that one). The core compares the predictions."""
        return None

    def reference_batch(self, n: int) -> tuple[list[str], np.ndarray, np.ndarray] | None:
        """``(ids, inputs, outputs)``: the first ``n`` eval images as the exports take them, made by the
        backend's own pipeline, and the framework's output for them as the exports return it; saved as
        ``reference.npz`` beside every export (``ocrbench.export_parity``). None: no reference."""
        return None

    def weight_arrays(self) -> list[list[np.ndarray]] | None:
        """The trained weights of each replica this process holds (one list per replica, a fixed order);
        their digests show that the replicas of a data-parallel run agree. None: not reported."""
        return None

    # --------------------------------------------------------------------------- shared helpers
    @property
    def seed(self) -> int:
        """The recipe's ``train.seed``."""
        return int(self.job.train["seed"])

    def seed_everything(self) -> None:
        """Seed Python's ``random``, numpy's global generator and the framework (:meth:`seed_framework`)
        from ``train.seed``; the driver calls it right after ``setup``."""
        random.seed(self.seed)
        np.random.seed(self.seed)
        self.seed_framework(self.seed)

    def epoch_seed(self, epoch: int) -> int:
        """The shuffle seed of training epoch ``epoch``: ``seed * 100003 + epoch``, so an epoch's order is
        the same after a resume."""
        return self.seed * SHUFFLE_SEED_STRIDE + epoch

    @property
    def max_label_len(self) -> int:
        """The longest label of the dataset: the width of padded label tensors."""
        return self.job.dataset.max_label_len

    def threads(self) -> int:
        """CPU threads for the framework in this process: ``train.threads``, else every core."""
        return self.job.train["threads"] or os.cpu_count() or 1

    def sample_ids(self, split: str) -> list[str]:
        """The sample ids of ``split`` (``train`` or ``eval``) in label-file order."""
        if split not in self._sample_ids:
            name = {"train": self.job.dataset.train, "eval": self.job.dataset.eval}[split]
            self._sample_ids[split] = [s.path for s in read_label_file(self.job.dataset_dir / name)]
        return self._sample_ids[split]

    def drop_last(self, samples: int, batch: int) -> bool:
        """Whether an epoch of ``samples`` images in batches of ``batch`` leaves out its partial last batch:
        ``train.drop_last``, unless there is not even one full batch (then the partial one trains)."""
        return bool(self.job.train["drop_last"]) and samples >= batch

    def epoch_steps(self, samples: int, batch: int) -> int:
        """Steps of an epoch of ``samples`` images in batches of ``batch``, under :meth:`drop_last`."""
        if self.drop_last(samples, batch):
            return samples // batch
        return -(-samples // batch)

    def require_gpus(self, visible: Callable[[], int], needed: int = 1, hint: str = "") -> None:
        """When the job asks for GPUs: fail unless the framework sees ``needed`` of them (``visible()`` is
        only called then). ``hint`` says what to do (e.g. point ``--python`` at a CUDA build)."""
        if self.job.gpus < 1:
            return
        seen = visible()
        if seen < needed:
            raise RuntimeError(f"--gpus asked for {needed} GPU(s) but this {self.framework} build sees {seen} "
                               f"({self.framework} {self.version()}{'; ' + hint if hint else ''})")


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


def compare_logits(what: str, expected: np.ndarray, got: np.ndarray, atol: float = 1e-3) -> None:
    """Check an exported model's logits on a fixed batch against the framework's own (same shape, all
    within ``atol``); raise a RuntimeError naming the export otherwise (recorded in metrics.json)."""
    got = np.asarray(got)
    if got.shape != expected.shape:
        raise RuntimeError(f"{what} export gives logits of shape {got.shape}, the framework {expected.shape}")
    diff = float(np.abs(got - expected).max()) if got.size else 0.0
    if not diff <= atol:
        raise RuntimeError(f"{what} export disagrees with the framework: max |logit diff| {diff:.3g} > {atol}")


def peak_rss_mb() -> float:
    """Peak resident memory of this process and of its largest finished child (MiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0  # ru_maxrss is in KiB on Linux


def _load_state(checkpoints: Path) -> dict | None:
    state = checkpoints / "state.json"
    return json.loads(state.read_text()) if state.is_file() else None


def run_job(trainer: Trainer, events: Events) -> None:
    """The shared driver: set up, prepare, build, train with per-epoch evaluation and checkpoints,
    export — for ``trainer.job``. In a data-parallel run the ranks other than 0 only train (see the
    module docstring)."""
    job = trainer.job
    device = trainer.setup()
    trainer.seed_everything()
    rank = job.rank
    events.emit("start", framework=trainer.framework, version=trainer.version(), pid=os.getpid(),
                python=sys.version.split()[0], **device)

    started = time.perf_counter()
    with _native_data_lock(job):   # ranks on one machine share the native copy: the first writes it
        native = trainer.prepare()
    events.emit("prepared", seconds=time.perf_counter() - started, **native)

    model = trainer.build()
    events.emit("model", **model, input=trainer.input_spec())
    if job.stage == "export":   # ``ocrbench export``: the last checkpoint, exported again
        trainer.load(job.path("checkpoints"))
        _export_all(trainer, job, events)
        events.emit("done", peak_rss_mb=peak_rss_mb())
        return

    train = job.train
    checkpoints, predictions = job.path("checkpoints"), job.path("predictions")
    if rank == 0:
        checkpoints.mkdir(parents=True, exist_ok=True)
        predictions.mkdir(parents=True, exist_ok=True)
    state = {"epoch": 0, "global_step": 0, "wall_s": 0.0, "train_s": 0.0, "samples": 0}
    if job.resume:
        saved = _load_state(checkpoints)
        if saved is None:
            raise RuntimeError(f"--resume: no checkpoint in {checkpoints}")
        trainer.load(checkpoints)
        state = saved
        events.emit("resumed", epoch=state["epoch"], step=state["global_step"])

    steps = trainer.steps_per_epoch()
    schedule = Schedule.from_job(train, steps)
    events.emit("train_begin", epochs=train["epochs"], start_epoch=state["epoch"] + 1, steps_per_epoch=steps,
                batch_size=train["batch_size"], drop_last=train["drop_last"], loss=trainer.loss_spec().to_json())
    clock = time.perf_counter() - state["wall_s"]  # wall time continues across a resume
    last_eval_file = None
    for epoch in range(state["epoch"] + 1, train["epochs"] + 1):
        ctx = EpochContext(epoch, state["global_step"], schedule, events, train["log_every"],
                           job.processes)
        epoch_start = time.perf_counter()
        loss = trainer.train_epoch(ctx)
        epoch_s = time.perf_counter() - epoch_start
        state.update(epoch=epoch, global_step=ctx.global_step, samples=state["samples"] + ctx.samples,
                     train_s=state["train_s"] + epoch_s)
        events.emit("epoch_end", epoch=epoch, step=ctx.global_step, loss=float(loss), lr=ctx.lr(),
                    train_s=epoch_s, samples=ctx.samples, wall_s=time.perf_counter() - clock)
        if rank != 0:
            continue   # rank 0 evaluates and checkpoints; the others go on to the next epoch's steps
        if epoch % train["eval_every"] == 0 or epoch == train["epochs"]:
            last_eval_file = _evaluate(trainer, job, events, epoch, clock)
            trainer.on_evaluated(epoch, last_eval_file)   # e.g. to keep a best-accuracy checkpoint
        state["wall_s"] = time.perf_counter() - clock
        saved = trainer.save(checkpoints, epoch)
        atomic.write_json(checkpoints / "state.json", state)
        events.emit("checkpoint", epoch=epoch, files=[str(p.relative_to(job.run_dir)) for p in saved],
                    bytes=sum(p.stat().st_size for p in saved))
    digests = report_weights(trainer, rank)
    events.emit("train_end", epochs=state["epoch"], steps=state["global_step"], samples=state["samples"],
                train_s=state["train_s"], wall_s=time.perf_counter() - clock, weights_sha256=digests)
    if rank != 0:
        return

    final = predictions / "eval.tsv"
    if last_eval_file is None:  # resumed after the last epoch, or nothing left to train
        last_eval_file = _evaluate(trainer, job, events, state["epoch"], clock)
    shutil.copyfile(last_eval_file, final.with_suffix(".tmp"))
    os.replace(final.with_suffix(".tmp"), final)
    events.emit("predictions", path=str(final.relative_to(job.run_dir)))

    _export_all(trainer, job, events)
    events.emit("done", peak_rss_mb=peak_rss_mb())


def report_weights(trainer: Trainer, rank: int) -> list[str] | None:
    """Print the sha256 of each replica's trained weights held by this process to its log (stderr), so
    the ranks of a data-parallel run can be checked to agree; returns them (None if the backend cannot)."""
    replicas = trainer.weight_arrays()
    if replicas is None:
        return None
    digests = [weights_digest(arrays) for arrays in replicas]
    for replica, digest in enumerate(digests):
        print(f"ocrbench: rank {rank} replica {replica} weights sha256 {digest}", file=sys.stderr, flush=True)
    return digests


def weights_digest(arrays: Iterable[np.ndarray]) -> str:
    """sha256 over the float32 bytes of ``arrays`` in order (their shapes included)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array, dtype=np.float32)
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class _native_data_lock:
    """An exclusive file lock beside the backend's native data directory (``fcntl.flock``), held while
    a rank prepares native data: the first rank writes it, the others then find it ready."""

    def __init__(self, job: Job):
        self.path = job.native_dir.parent / f".{job.native_dir.name}.lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a")
        fcntl.flock(self._handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


def _evaluate(trainer: Trainer, job: Job, events: Events, epoch: int, clock: float) -> Path:
    path = job.path("predictions") / f"eval-epoch{epoch:04d}.tsv"
    started = time.perf_counter()
    n = write_predictions(path, trainer.predict("eval"), job.charset)
    seconds = time.perf_counter() - started
    events.emit("eval", epoch=epoch, n=n, seconds=seconds, images_per_s=n / max(seconds, 1e-9),
                predictions=str(path.relative_to(job.run_dir)), wall_s=time.perf_counter() - clock)
    return path


def _export_all(trainer: Trainer, job: Job, events: Events) -> None:
    """Export every requested format; a failure is recorded with its reason, not raised."""
    exports = job.path("exports")
    reference = None
    for fmt in job.export["formats"]:
        target = exports / fmt
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        try:
            files = trainer.export(fmt, target, job.export["onnx_opset"])
        except Exception as exc:  # the reason goes into metrics.json; other formats still run
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            events.emit("export", format=fmt, ok=False, error=f"{type(exc).__name__}: {exc}")
            continue
        meta = {"format": fmt, "charset": job.charset.chars, "classes": job.charset.num_classes,
                "input": trainer.input_spec(), **trainer.output_spec()}
        atomic.write_json(target / "ocrbench-export.json", meta)
        reference = reference or trainer.reference_batch(REFERENCE_BATCH)
        if reference is not None:
            write_reference(target / "reference.npz", *reference)
        extra = {}
        reloaded = trainer.predict_exported(fmt, target)
        if reloaded is not None:   # the eval split through the export reloaded by its own framework
            write_predictions(target / "eval.tsv", reloaded, job.charset)
            extra["predictions"] = str((target / "eval.tsv").relative_to(job.run_dir))
        events.emit("export", format=fmt, ok=True, files=[str(p.relative_to(job.run_dir)) for p in files],
                    bytes=sum(p.stat().st_size for p in files), **extra)


def write_reference(path: Path, ids: list[str], inputs: np.ndarray, outputs: np.ndarray) -> None:
    """``reference.npz``: ``ids`` (str), ``inputs`` and ``outputs`` (float32), no pickled objects."""
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=np.asarray(ids, dtype=str), inputs=np.asarray(inputs, dtype=np.float32),
             outputs=np.asarray(outputs, dtype=np.float32))
    os.replace(tmp, path)


def _interrupt(signum, frame) -> None:
    """SIGTERM from the core (Ctrl-C there) ends the worker like Ctrl-C would."""
    raise KeyboardInterrupt


def serve(trainer_class: Callable[[Job], Trainer], argv: list[str] | None = None) -> None:
    """Entry point of a worker process: ``<worker> JOB.json``. Reads the job spec (a spec of another
    schema, or one that does not parse, stops the worker with the reason), makes ``trainer_class(job)``
    and runs it. Exit 0 on success, 1 on error, 130 when interrupted."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        job = Job.read(Path(argv[0]))
    except JobSpecError as exc:
        raise SystemExit(f"ocrbench worker: {exc}") from None
    events = Events(job.path("events"), enabled=job.rank == 0)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        run_job(trainer_class(job), events)
    except KeyboardInterrupt:
        events.emit("error", type="Interrupted", message="the worker was interrupted", peak_rss_mb=peak_rss_mb())
        raise SystemExit(130)
    except Exception as exc:
        traceback.print_exc()
        events.emit("error", type=type(exc).__name__, message=str(exc), peak_rss_mb=peak_rss_mb())
        raise SystemExit(1)
    finally:
        events.close()
