"""The one driver loop every backend runs (:func:`serve` -> :func:`run_job`): setup, native data,
build, the epoch loop with evaluation and checkpoints, resume, exports and their bookkeeping, the
replicas' weight digests. Standard library and numpy only."""

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
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ocrbench import atomic, recognition, weights
from ocrbench.job import Job, JobSpecError
from ocrbench.predictions import write_predictions
from ocrbench.schedule import Schedule
from ocrbench.worker.events import EpochContext, Events
from ocrbench.worker.trainer import Trainer

REFERENCE_BATCH = 8  # eval images in each export's reference.npz
WEIGHTS_FORMAT = "weights"   # the export format every backend's shared crnn writes (ocrbench.weights)


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
    if job.init_weights is not None and not job.resume and job.stage != "export":
        _load_init(trainer, job, events)
    if job.stage == "equivalence":
        _probe(trainer, job, events)
        events.emit("done", peak_rss_mb=peak_rss_mb())
        return
    if job.stage in ("export", "predict"):   # ``ocrbench export`` / ``predict``: the last checkpoint
        trainer.load(job.path("checkpoints"))
        (_export_all if job.stage == "export" else _recognise)(trainer, job, events)
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
                batch_size=train["batch_size"], drop_last=train["drop_last"],
                loss=trainer.loss_spec().to_json())
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


def _load_init(trainer: Trainer, job: Job, events: Events) -> None:
    """``model.init`` other than ``framework``: the neutral weights the core checked, loaded by the
    backend's converter before the first step."""
    source = weights.read(job.init_weights)
    trainer.load_neutral_weights(source.tensors)
    mode = job.model.get("init", "framework")
    events.emit("init", mode=mode if isinstance(mode, str) else "file", path=str(job.init_weights),
                sha256=weights_digest(source.tensors[name] for name in sorted(source.tensors)),
                source=source.meta.get("source"))


PROBE_INPUT, PROBE_OUTPUT = "input.npz", "output.npz"   # in the run's equivalence/ directory


def _probe(trainer: Trainer, job: Job, events: Events) -> None:
    """The equivalence probe (``ocrbench.equivalence``): the network in inference mode on the probe batch,
    one training step on it (training-mode logits and per-sample losses), the weights after the step and
    the inference-mode logits again — all in the canonical conventions, into ``equivalence/output.npz``."""
    directory = job.run_dir / "equivalence"
    with np.load(directory / PROBE_INPUT, allow_pickle=False) as batch:
        inputs, targets, lengths = batch["inputs"], batch["targets"], batch["lengths"]
    before = trainer.probe_forward(inputs)
    train_logits, losses = trainer.probe_step(inputs, targets, lengths, float(job.train["optimizer"]["lr"]))
    after = trainer.neutral_weights()
    arrays = {"eval_logits": before, "train_logits": train_logits, "losses": losses,
              "eval_logits_after": trainer.probe_forward(inputs),
              **{f"after/{name}": value for name, value in after.items()}}
    tmp = directory / (PROBE_OUTPUT + ".tmp.npz")
    np.savez(tmp, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
    os.replace(tmp, directory / PROBE_OUTPUT)
    events.emit("probe", path=str((directory / PROBE_OUTPUT).relative_to(job.run_dir)))


def _evaluate(trainer: Trainer, job: Job, events: Events, epoch: int, clock: float) -> Path:
    path = job.path("predictions") / f"eval-epoch{epoch:04d}.tsv"
    started = time.perf_counter()
    n = write_predictions(path, trainer.predict("eval"), job.charset)
    seconds = time.perf_counter() - started
    events.emit("eval", epoch=epoch, n=n, seconds=seconds, images_per_s=n / max(seconds, 1e-9),
                predictions=str(path.relative_to(job.run_dir)), wall_s=time.perf_counter() - clock)
    return path


RECOGNITIONS = "recognitions.jsonl"   # in the job's predictions directory (predict stage)


def _recognise(trainer: Trainer, job: Job, events: Events) -> None:
    """The predict stage: the eval split's images through the network (``Trainer.predict_outputs``),
    decoded with confidences by ``ocrbench.recognition``, into ``<predictions>/recognitions.jsonl``."""
    blank = int(trainer.output_spec()["blank"])
    started = time.perf_counter()
    found = []
    for ids, logits in trainer.predict_outputs("eval"):
        found += recognition.recognise(ids, recognition.probabilities(logits, blank, "logits"), job.charset)
    seconds = time.perf_counter() - started
    path = job.path("predictions") / RECOGNITIONS
    n = recognition.write_recognitions(path, found)
    events.emit("recognitions", n=n, seconds=seconds, images_per_s=n / max(seconds, 1e-9),
                path=str(path.relative_to(job.run_dir)))


def _export_all(trainer: Trainer, job: Job, events: Events) -> None:
    """Export every requested format; a failure is recorded with its reason, not raised."""
    exports = job.path("exports")
    reference = None
    for fmt in job.export["formats"]:
        target = exports / fmt
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        try:
            if fmt == WEIGHTS_FORMAT:
                files = [_write_weights(trainer, job, target)]
            else:
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


def _write_weights(trainer: Trainer, job: Job, directory: Path) -> Path:
    """The ``weights`` export: the trained network as a neutral weights file (``ocrbench.weights``)."""
    meta = weights.metadata(job.model["params"], job.charset.chars,
                            source=f"{trainer.framework} {trainer.version()}, run {job.run_id}",
                            arch=job.model["arch"])
    return weights.write(directory / weights.FILE_NAME, trainer.neutral_weights(), meta)


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
        events.emit("error", type="Interrupted", message="the worker was interrupted",
                    peak_rss_mb=peak_rss_mb())
        raise SystemExit(130)
    except Exception as exc:
        traceback.print_exc()
        events.emit("error", type=type(exc).__name__, message=str(exc), peak_rss_mb=peak_rss_mb())
        raise SystemExit(1)
    finally:
        events.close()
