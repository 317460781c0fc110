"""The one driver loop every backend runs (:func:`serve` -> :func:`run_job`): setup, native data,
build, the epoch loop with evaluation and checkpoints, resume, exports and their bookkeeping, the
replicas' weight digests. Standard library and numpy only."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import resource
import shutil
import signal
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ocrbench import atomic, recognition, weights
from ocrbench.errors import DiskFullError, writing
from ocrbench.job import Job, JobSpecError
from ocrbench.labels import read_label_file
from ocrbench.predictions import paired_with_labels, write_predictions
from ocrbench.protocol import Protocol, sequence_accuracy
from ocrbench.schedule import Schedule
from ocrbench.worker.checkpoints import CheckpointError, CheckpointStore
from ocrbench.worker.events import EpochContext, Events, PartialEpoch
from ocrbench.worker.trainer import Trainer

REFERENCE_BATCH = 8  # eval images in each export's reference.npz
WEIGHTS_FORMAT = "weights"   # the export format every backend's shared crnn writes (ocrbench.weights)


def peak_rss_mb() -> float:
    """Peak resident memory of this process and of its largest finished child (MiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0  # ru_maxrss is in KiB on Linux


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
        stale = _remove_stale_native(job)
        try:
            with writing("the native dataset", job.native_dir):
                native = trainer.prepare()
        except BaseException:
            _remove_stale_native(job)   # a half-written conversion frees its space at once
            raise
    if stale:
        native["stale_removed"] = stale
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
        checkpoint = _latest_checkpoint(CheckpointStore(job.path("checkpoints")), events, fall_back=False)
        trainer.load(checkpoint.directory)
        (_export_all if job.stage == "export" else _recognise)(trainer, job, events)
        events.emit("done", peak_rss_mb=peak_rss_mb())
        return

    train = job.train
    store, predictions = CheckpointStore(job.path("checkpoints")), job.path("predictions")
    if rank == 0:
        store.root.mkdir(parents=True, exist_ok=True)
        predictions.mkdir(parents=True, exist_ok=True)
    state = {"epoch": 0, "global_step": 0, "wall_s": 0.0, "train_s": 0.0, "samples": 0}
    partial = PartialEpoch()
    if job.resume:
        checkpoint = _latest_checkpoint(store, events)
        trainer.load(checkpoint.directory)
        state = {k: checkpoint.state[k] for k in state}
        partial = PartialEpoch.from_json(checkpoint.state.get("partial"))
        events.emit("resumed", epoch=state["epoch"], step=state["global_step"], epoch_step=partial.steps,
                    checkpoint=str(checkpoint.directory.relative_to(job.run_dir)))

    steps = trainer.steps_per_epoch()
    schedule = Schedule.from_job(train, steps)
    events.emit("train_begin", epochs=train["epochs"], start_epoch=state["epoch"] + 1, steps_per_epoch=steps,
                batch_size=train["batch_size"], drop_last=train["drop_last"],
                checkpoint_every=train.get("checkpoint_every", 0), loss=trainer.loss_spec().to_json())
    clock = time.perf_counter() - state["wall_s"]  # wall time continues across a resume
    every = train.get("checkpoint_every", 0) if rank == 0 else 0
    eval_steps = train.get("eval_every_steps", 0) if rank == 0 else 0
    inside: dict[str, object] = {}   # the last evaluation inside the current epoch: its file and target

    def mid_epoch(ctx: EpochContext) -> None:
        """After each step: ``train.eval_every_steps``, an evaluation inside the epoch (ending the epoch
        when ``train.stop_at_target`` is reached), and ``train.checkpoint_every``, a checkpoint inside
        the epoch (the epoch's last step has its own evaluation and checkpoint)."""
        if ctx.epoch_step >= steps:
            return
        if eval_steps and ctx.global_step % eval_steps == 0:
            with ctx.evaluating():
                path = _evaluate(trainer, job, events, ctx.epoch, clock, step=ctx.global_step, lr=ctx.lr(),
                                 loss=ctx.mean_loss(), train_s=ctx.train_s())
                trainer.on_evaluated(ctx.epoch, path)
                trainer.resume_training()
            inside.update(file=path, reached=_target_reached(job, path))
            if inside["reached"] is not None:
                ctx.stop()
                return   # the driver checkpoints after the epoch ends here
        if every and ctx.global_step % every == 0:
            _save(trainer, store, events, ctx.epoch, {**state, "global_step": ctx.global_step,
                                                     "wall_s": time.perf_counter() - clock,
                                                     "partial": asdict(ctx.partial())})

    last_eval_file = None
    for epoch in range(state["epoch"] + 1, train["epochs"] + 1):
        ctx = EpochContext(epoch, state["global_step"], schedule, events, train["log_every"],
                           job.processes, resumed=partial, on_step=mid_epoch)
        partial = PartialEpoch()
        inside.clear()
        trainer.train_epoch(ctx)
        loss, epoch_s = ctx.mean_loss(), ctx.train_s()
        state.update(epoch=epoch, global_step=ctx.global_step, samples=state["samples"] + ctx.samples,
                     train_s=state["train_s"] + epoch_s)
        events.emit("epoch_end", epoch=epoch, step=ctx.global_step, loss=float(loss), lr=ctx.lr(),
                    train_s=epoch_s, samples=ctx.samples, wall_s=time.perf_counter() - clock,
                    timers=ctx.timers(), stopped=ctx.stopped)
        if rank != 0:
            continue   # rank 0 evaluates and checkpoints; the others go on to the next epoch's steps
        reached = None
        if ctx.stopped:   # an evaluation inside the epoch reached the target: it is the run's last
            last_eval_file, reached = inside["file"], inside["reached"]
        elif epoch % train["eval_every"] == 0 or epoch == train["epochs"]:
            last_eval_file = _evaluate(trainer, job, events, epoch, clock, step=ctx.global_step)
            trainer.on_evaluated(epoch, last_eval_file)   # e.g. to keep a best-accuracy checkpoint
            reached = _target_reached(job, last_eval_file)
        state["wall_s"] = time.perf_counter() - clock
        _save(trainer, store, events, epoch, dict(state))
        if reached is not None:   # train.stop_at_target: the steps and epochs left are not trained
            events.emit("target_reached", epoch=epoch, step=ctx.global_step, seq_acc=reached,
                        target=train["target_acc"])
            break
    digests = report_weights(trainer, rank)
    events.emit("train_end", epochs=state["epoch"], steps=state["global_step"], samples=state["samples"],
                train_s=state["train_s"], wall_s=time.perf_counter() - clock, weights_sha256=digests)
    if rank != 0:
        return

    final = predictions / "eval.tsv"
    if last_eval_file is None:  # resumed after the last epoch, or nothing left to train
        last_eval_file = _evaluate(trainer, job, events, state["epoch"], clock, step=state["global_step"])
    with writing("the final predictions", final):
        atomic.write_bytes(final, last_eval_file.read_bytes())
    events.emit("predictions", path=str(final.relative_to(job.run_dir)))

    _export_all(trainer, job, events)
    events.emit("done", peak_rss_mb=peak_rss_mb())


def _target_reached(job: Job, predictions: Path) -> float | None:
    """With ``train.stop_at_target``: the sequence accuracy of the evaluation in ``predictions`` when it
    reaches ``train.target_acc``, else None. Scored by ``ocrbench.protocol`` (the rule of metrics.json's
    ``seq_acc``, which the core computes again from the same file), not a second implementation."""
    train = job.train
    if not train.get("stop_at_target") or train.get("target_acc") is None:
        return None
    labels = {s.path: s.text for s in read_label_file(job.dataset_dir / job.dataset.eval)}
    acc = sequence_accuracy(paired_with_labels(predictions, labels), Protocol(**job.eval["protocol"]),
                            job.charset.chars)
    return acc if acc >= train["target_acc"] else None


def _save(trainer: Trainer, store: CheckpointStore, events: Events, epoch: int, state: dict) -> None:
    """A checkpoint after ``state["global_step"]`` (in epoch ``epoch``): the backend's files in a staging
    directory, committed with ``state`` (``ocrbench.worker.checkpoints``). On any failure the staging
    directory is removed, so the previous checkpoint stays the latest; a full disk is named."""
    started = time.perf_counter()
    staging = store.stage(state["global_step"])
    try:
        with writing(f"the checkpoint after step {state['global_step']}", staging):
            saved = trainer.save(staging, epoch)
            final = store.commit(staging, state)
    finally:
        store.discard_staging()
    files = [final / p.relative_to(staging) for p in saved]
    events.emit("checkpoint", epoch=epoch, step=state["global_step"],
                files=[str(p.relative_to(trainer.job.run_dir)) for p in files],
                bytes=sum(p.stat().st_size for p in files), partial=bool(state.get("partial")),
                seconds=time.perf_counter() - started)


def _latest_checkpoint(store: CheckpointStore, events: Events, fall_back: bool = True):
    """The newest intact checkpoint (``CheckpointStore.latest``). Resuming (``fall_back``), a newer one
    that fails verification is passed over and reported in a ``checkpoint_skipped`` event, naming its
    problem (training redoes those steps); otherwise (export, predict: the run's final model is asked
    for) it is an error naming the problem."""
    checkpoint = store.latest()
    if checkpoint.passed_over and not fall_back:
        raise CheckpointError(f"the run's last checkpoint is damaged: {'; '.join(checkpoint.passed_over)} "
                              f"(the newest intact one, {checkpoint.directory.name}, is older than the "
                              "trained model); run the recipe again")
    for problem in checkpoint.passed_over:
        print(f"ocrbench: checkpoint {problem}: using {checkpoint.directory.name}", file=sys.stderr,
              flush=True)
        events.emit("checkpoint_skipped", problem=problem, using=checkpoint.directory.name)
    return checkpoint


def _remove_stale_native(job: Job) -> list[str]:
    """Remove what a killed or failed native conversion left (``*.tmp`` directories inside the backend's
    native directory and ``<native>.tmp`` beside it); the caller holds the native-data lock, so no live
    process is writing them. Returns the names removed."""
    native = job.native_dir
    stale = [*native.glob("*.tmp"), *native.glob(".*.tmp"), native.with_name(native.name + ".tmp")]
    removed = []
    for path in stale:
        if path.exists():
            atomic.remove_tree(path)
            removed.append(path.name)
    return sorted(set(removed))


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
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
    atomic.write_bytes(directory / PROBE_OUTPUT, buffer.getvalue())
    events.emit("probe", path=str((directory / PROBE_OUTPUT).relative_to(job.run_dir)))


def _evaluate(trainer: Trainer, job: Job, events: Events, epoch: int, clock: float, step: int,
              **inside: float) -> Path:
    """The eval split through ``trainer.predict`` into a predictions file and an ``eval`` event. At an
    epoch's end the file is ``eval-epoch<E>.tsv``; inside an epoch (``train.eval_every_steps``; ``inside``
    then holds the step's ``lr``, the epoch's mean ``loss`` so far and its ``train_s``) it is
    ``eval-step<S>.tsv`` and the event has ``mid_epoch`` true and those figures."""
    name = f"eval-step{step:08d}.tsv" if inside else f"eval-epoch{epoch:04d}.tsv"
    path = job.path("predictions") / name
    started = time.perf_counter()
    n = write_predictions(path, trainer.predict("eval"), job.charset)
    seconds = time.perf_counter() - started
    events.emit("eval", epoch=epoch, step=step, n=n, seconds=seconds, images_per_s=n / max(seconds, 1e-9),
                predictions=str(path.relative_to(job.run_dir)), wall_s=time.perf_counter() - clock,
                mid_epoch=bool(inside), **inside)
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
    """Export every requested format; a failure is recorded with its reason, not raised — except a full
    disk, which stops the run (``DiskFullError`` naming the export), the export's directory removed."""
    exports = job.path("exports")
    reference = None
    for fmt in job.export["formats"]:
        target = exports / fmt
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        try:
            with _export_writes(fmt, target):
                files = ([_write_weights(trainer, job, target)] if fmt == WEIGHTS_FORMAT
                         else trainer.export(fmt, target, job.export["onnx_opset"]))
        except DiskFullError:
            raise
        except Exception as exc:  # the reason goes into metrics.json; other formats still run
            _log_traceback()
            events.emit("export", format=fmt, ok=False, error=f"{type(exc).__name__}: {exc}")
            continue
        with _export_writes(fmt, target):
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


@contextlib.contextmanager
def _export_writes(fmt: str, target: Path) -> Iterator[None]:
    """A full disk while writing the ``fmt`` export: its directory is removed (freeing the space at once,
    so that the error can still be recorded) and :class:`DiskFullError` raised, naming the export."""
    try:
        with writing(f"the {fmt} export", target):
            yield
    except DiskFullError:
        atomic.remove_tree(target)
        raise


def _log_traceback() -> None:
    """The current exception's traceback to native.log (stderr); nothing if even that cannot be written."""
    try:
        print(traceback.format_exc(), file=sys.stderr, flush=True)
    except OSError:
        pass


def _write_weights(trainer: Trainer, job: Job, directory: Path) -> Path:
    """The ``weights`` export: the trained network as a neutral weights file (``ocrbench.weights``)."""
    meta = weights.metadata(job.model["params"], job.charset.chars,
                            source=f"{trainer.framework} {trainer.version()}, run {job.run_id}",
                            arch=job.model["arch"])
    return weights.write(directory / weights.FILE_NAME, trainer.neutral_weights(), meta)


def write_reference(path: Path, ids: list[str], inputs: np.ndarray, outputs: np.ndarray) -> None:
    """``reference.npz``: ``ids`` (str), ``inputs`` and ``outputs`` (float32), no pickled objects."""
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.asarray(ids, dtype=str), inputs=np.asarray(inputs, dtype=np.float32),
             outputs=np.asarray(outputs, dtype=np.float32))
    atomic.write_bytes(path, buffer.getvalue())


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
        _report_error(events, "Interrupted", "the worker was interrupted")
        raise SystemExit(130)
    except Exception as exc:
        _log_traceback()
        _report_error(events, type(exc).__name__, str(exc))
        raise SystemExit(1)
    finally:
        try:
            events.close()
        except OSError:
            pass


def _report_error(events: Events, kind: str, message: str) -> None:
    """The ``error`` event; if even that cannot be written (a full disk), the reason goes to native.log and
    the core reports the exit code."""
    try:
        events.emit("error", type=kind, message=message, peak_rss_mb=peak_rss_mb())
    except OSError as exc:
        print(f"ocrbench worker: cannot write the error event ({exc}): {kind}: {message}", file=sys.stderr,
              flush=True)
