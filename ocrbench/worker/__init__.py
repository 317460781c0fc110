"""The worker side of the backend protocol: one driver loop shared by every backend.

A backend's worker module (run inside the backend's own environment) implements :class:`Trainer` — the
framework-specific parts — and calls :func:`serve`. The driver owns everything else, identically for all
backends: reading the job spec, the epoch loop, evaluation cadence, CTC decoding (one decoder, in
``ocrbench.codec``), prediction files, resume bookkeeping, exports bookkeeping, timing and the JSON-lines
event stream. Metrics are *not* computed here: the core scores the prediction files.

Data-parallel runs: every rank runs this driver with the same job spec; the launcher (torchrun, paddle's
launch, msrun, ...) tells each its rank. Only **rank 0 writes**: events, evaluations, predictions,
checkpoints and exports. Other ranks train, print their final weights' digest to their log and exit.

Standard library and numpy only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import resource
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from ocrbench import atomic
from ocrbench.codec import Charset, decode_best_paths
from ocrbench.schedule import Schedule

JOB_SCHEMA = "ocrbench.job/1"


@dataclass
class Job:
    """The job spec the core wrote (``job.json``), with paths resolved."""

    raw: dict

    @property
    def run_dir(self) -> Path:
        return Path(self.raw["run_dir"])

    @property
    def dataset_dir(self) -> Path:
        return Path(self.raw["dataset"]["dir"])

    @property
    def native_dir(self) -> Path:
        """Where the backend keeps its native copy of the dataset (shared by runs on the same data)."""
        return Path(self.raw["dataset"]["native_dir"])

    @property
    def charset(self) -> Charset:
        return Charset(self.raw["dataset"]["charset"])

    @property
    def model(self) -> dict:
        return self.raw["model"]

    @property
    def train(self) -> dict:
        return self.raw["train"]

    @property
    def eval(self) -> dict:
        return self.raw["eval"]

    @property
    def gpus(self) -> int:
        """GPUs on this node (0 = CPU)."""
        return int(self.raw["device"]["gpus"])

    @property
    def distributed(self) -> dict:
        """The job's ``distributed`` section (ocrbench.distributed): world_size, nnodes, nproc_per_node,
        device, launcher, local_replicas (devices this process drives), processes, per_device_batch,
        global_batch, lr, and backend-specific keys (comm, kvstore, strategy)."""
        return self.raw.get("distributed") or {"world_size": 1, "nnodes": 1, "nproc_per_node": 1,
                                               "local_replicas": 1, "processes": 1, "rank_env": None,
                                               "local_rank_env": None}

    @property
    def world_size(self) -> int:
        """Data-parallel replicas over all nodes (1 = one device)."""
        return int(self.distributed["world_size"])

    @property
    def local_replicas(self) -> int:
        """Devices this process drives itself (TensorFlow MirroredStrategy, MXNet contexts); 1 when
        the launcher starts one process per device."""
        return int(self.distributed["local_replicas"])

    @property
    def processes(self) -> int:
        """Worker processes of the run over all nodes (> 1: this process joins a launcher's group)."""
        return int(self.distributed["processes"])

    @property
    def process_batch(self) -> int:
        """Images this process loads per step: the per-device batch times its local replicas."""
        return int(self.train["batch_size"]) * self.local_replicas

    @property
    def rank(self) -> int:
        """This process's rank among the worker processes (0 writes the results), from the variable the
        launcher sets (``distributed.rank_env``); 0 without one."""
        name = self.distributed.get("rank_env")
        return int(os.environ.get(name, "0")) if name else 0

    @property
    def local_rank(self) -> int:
        """This process's index on its node (which GPU it uses)."""
        name = self.distributed.get("local_rank_env")
        return int(os.environ.get(name, "0")) if name else 0

    def path(self, name: str) -> Path:
        """A run-directory path from the job's ``paths`` table (events, predictions, checkpoints, ...)."""
        return self.run_dir / self.raw["paths"][name]


class Trainer(Protocol):
    """What a backend implements. Shapes and conventions:

    * labels use ocrbench.codec's convention: class 0 is the CTC blank, charset[i] is class i + 1;
    * ``predict`` yields (ids, best_paths) with best_paths an int array (batch, time), batch-major,
      holding the argmax class per step in that convention.
    """

    framework: str  # e.g. "torch"

    def version(self) -> str: ...

    def setup(self, job: Job) -> dict: ...                 # devices, threads, seeds; returns device info

    def prepare(self, job: Job) -> dict: ...               # canonical -> native data; returns info

    def build(self, job: Job) -> dict: ...                 # model + optimizer; returns {"params", ...}

    def steps_per_epoch(self) -> int: ...

    def train_epoch(self, ctx: "EpochContext") -> float: ...  # returns the epoch's mean loss

    def predict(self, split: str) -> Iterable[tuple[list[str], np.ndarray]]: ...

    def save(self, directory: Path, epoch: int) -> list[Path]: ...

    def load(self, directory: Path) -> None: ...

    def export(self, fmt: str, directory: Path, opset: int) -> list[Path]: ...

    def input_spec(self) -> dict: ...                      # shape/layout/pixel range of the model input

    # Optional: ``on_evaluated(epoch, predictions_path)`` is called after each evaluation, before that
    # epoch's ``save`` (PaddleOCR keeps a best_accuracy checkpoint with it).
    # Optional: ``output_spec() -> dict`` overrides DEFAULT_OUTPUT_SPEC in exports' metadata (blank index,
    # label convention, logits layout) for a backend whose native convention differs.
    # Optional: ``predict_exported(fmt, directory)``: like ``predict("eval")`` but through the export in
    # ``directory`` reloaded by the framework (None for a format it does not reload, e.g. ONNX: the core
    # runs that one); the core compares those predictions with the trained model's.
    # Optional: ``reference_batch(n) -> (ids, inputs, outputs)``: the first n eval images as the exported
    # models' input, made by the backend's own data pipeline, and the framework's output for them as the
    # exports return it. Saved as ``reference.npz`` beside every export, so the core can check an export
    # (and its own preprocessing) without the framework (ocrbench.neutral).
    # Optional: ``weight_arrays() -> list[list[np.ndarray]]``: the trained weights of each replica this
    # process holds (one list for a process per device; one per device for MirroredStrategy / MXNet
    # contexts), in a fixed order; their digests show that the replicas of a data-parallel run agree.
    # Data-parallel runs: ``setup`` joins the framework's distributed engine as ``job.distributed`` says,
    # may return ``distributed`` (what it set up, recorded in metrics.json), and trains on
    # ``job.process_batch`` images per step (this process's share).


DEFAULT_OUTPUT_SPEC = {"blank": 0, "labels": "charset[k] is class k + 1; the blank is class 0",
                       "output": "logits (time, batch, classes), time-major", "layout": "TBC"}
REFERENCE_BATCH = 8  # eval images in each export's reference.npz


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


def write_predictions(path: Path, batches: Iterable[tuple[list[str], np.ndarray]], charset: Charset) -> int:
    """Decode best paths with the shared CTC decoder and write ``id<TAB>prediction`` lines atomically."""
    lines = []
    for ids, paths in batches:
        for key, text in zip(ids, decode_best_paths(paths, charset)):
            lines.append(f"{key}\t{text}\n")
    atomic.write_text(path, "".join(lines))
    return len(lines)


def _load_state(checkpoints: Path) -> dict | None:
    state = checkpoints / "state.json"
    return json.loads(state.read_text()) if state.is_file() else None


def run_job(trainer: Trainer, job: Job, events: Events) -> None:
    """The shared driver: prepare, build, train with per-epoch evaluation and checkpoints, export.
    In a data-parallel run the ranks other than 0 only train (see the module docstring)."""
    device = trainer.setup(job)
    rank = job.rank
    events.emit("start", framework=trainer.framework, version=trainer.version(), pid=os.getpid(),
                python=sys.version.split()[0], **device)

    started = time.perf_counter()
    with _native_data_lock(job):   # ranks on one machine share the native copy: the first writes it
        native = trainer.prepare(job)
    events.emit("prepared", seconds=time.perf_counter() - started, **native)

    model = trainer.build(job)
    events.emit("model", **model, input=trainer.input_spec())
    if job.raw.get("stage") == "export":   # ``ocrbench export``: the last checkpoint, exported again
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
    if job.raw.get("resume"):
        saved = _load_state(checkpoints)
        if saved is None:
            raise RuntimeError(f"--resume: no checkpoint in {checkpoints}")
        trainer.load(checkpoints)
        state = saved
        events.emit("resumed", epoch=state["epoch"], step=state["global_step"])

    steps = trainer.steps_per_epoch()
    schedule = Schedule.from_job(train, steps)
    events.emit("train_begin", epochs=train["epochs"], start_epoch=state["epoch"] + 1, steps_per_epoch=steps,
                batch_size=train["batch_size"])
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
            if hasattr(trainer, "on_evaluated"):  # optional: e.g. to keep a best-accuracy checkpoint
                trainer.on_evaluated(epoch, last_eval_file)
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
    if not hasattr(trainer, "weight_arrays"):
        return None
    digests = [weights_digest(arrays) for arrays in trainer.weight_arrays()]
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
    for fmt in job.raw["export"]["formats"]:
        target = exports / fmt
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        try:
            files = trainer.export(fmt, target, job.raw["export"]["onnx_opset"])
        except Exception as exc:  # the reason goes into metrics.json; other formats still run
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            events.emit("export", format=fmt, ok=False, error=f"{type(exc).__name__}: {exc}")
            continue
        output = getattr(trainer, "output_spec", lambda: DEFAULT_OUTPUT_SPEC)()
        meta = {"format": fmt, "charset": job.charset.chars, "classes": job.charset.num_classes,
                "input": trainer.input_spec(), **output}
        atomic.write_json(target / "ocrbench-export.json", meta)
        if hasattr(trainer, "reference_batch"):
            reference = reference or trainer.reference_batch(REFERENCE_BATCH)
            write_reference(target / "reference.npz", *reference)
        extra = {}
        reloaded = trainer.predict_exported(fmt, target) if hasattr(trainer, "predict_exported") else None
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


def serve(make_trainer: Callable[[], Trainer], argv: list[str] | None = None) -> None:
    """Entry point of a worker process: ``<worker> JOB.json``. Exit 0 on success, 1 on error."""
    argv = sys.argv[1:] if argv is None else argv
    job = Job(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    if job.raw.get("schema") != JOB_SCHEMA:
        raise SystemExit(f"unsupported job spec {job.raw.get('schema')!r}; expected {JOB_SCHEMA}")
    events = Events(job.path("events"), enabled=job.rank == 0)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        run_job(make_trainer(), job, events)
    except KeyboardInterrupt:
        events.emit("error", type="Interrupted", message="the worker was interrupted", peak_rss_mb=peak_rss_mb())
        raise SystemExit(130)
    except Exception as exc:
        traceback.print_exc()
        events.emit("error", type=type(exc).__name__, message=str(exc), peak_rss_mb=peak_rss_mb())
        raise SystemExit(1)
    finally:
        events.close()
