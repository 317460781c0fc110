"""The worker contract without a framework: a tiny numpy-only backend (a real subclass of
``ocrbench.worker.Trainer``) driven through ``run_job`` — train, evaluate, checkpoint, resume, export, the
export stage — and the core's ``assemble`` turning its output into a schema-valid metrics.json."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ocrbench.backend import BackendSpec
from ocrbench.codec import Charset
from ocrbench.compare import Run, build
from ocrbench.datasets import PreparedDataset
from ocrbench.distributed import Topology
from ocrbench.job import Job
from ocrbench.metrics import Protocol
from ocrbench.predictions import read_predictions, write_predictions
from ocrbench.recipe import validate_data
from ocrbench.report import grid, preamble
from ocrbench.results import EvalScorer, assemble, read_events, validate_metrics
from ocrbench.plan import Plan
from ocrbench.runner import Runner, job_spec
from ocrbench.worker import Events, LossSpec, Trainer, run_job
from ocrbench.worker.checkpoints import CheckpointStore

CHARSET = "0123456789"
TRAIN, EVAL = 10, 6          # samples; train batches of 4: 2 full + 1 partial of 2
BATCH = 4
HARDWARE = {"cpu_model": "test", "cores": 1, "ram_gb": 1.0, "gpus": []}


class NumpyTrainer(Trainer):
    """A "model" of one weight vector. Training moves it deterministically (so resume is checkable);
    predict returns every even-numbered eval sample's label and "0" for the others (seq acc 0.5)."""

    framework = "numpy"

    def version(self) -> str:
        return np.__version__

    def setup(self) -> dict:
        self.require_gpus(lambda: 0, hint="a numpy backend has none")
        return {"device": "cpu", "threads": self.threads()}

    def seed_framework(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def prepare(self) -> dict:
        native = self.job.native_dir / "labels.json"
        reused = native.is_file()
        if not reused:
            labels = {}
            for split in ("train", "eval"):
                for line in (self.job.dataset_dir / f"{split}.txt").read_text(encoding="utf-8").splitlines():
                    key, text = line.split("\t")
                    labels[key] = text
            native.parent.mkdir(parents=True, exist_ok=True)
            native.write_text(json.dumps(labels))
        self.labels = json.loads(native.read_text())
        return {"format": "json", "path": str(native), "reused": reused}

    def build(self) -> dict:
        self.weights = self.rng.standard_normal(3).astype(np.float32)
        self.batch = self.job.train["batch_size"]
        return {"arch": self.job.model["arch"], "params": 3, "classes": self.job.charset.num_classes}

    def steps_per_epoch(self) -> int:
        return self.epoch_steps(len(self.sample_ids("train")), self.batch)

    def train_epoch(self, ctx) -> None:
        ids = self.sample_ids("train")
        order = self.epoch_order(ctx.epoch, len(ids))
        stop = len(ids) - len(ids) % self.batch if self.drop_last(len(ids), self.batch) else len(ids)
        batches = (order[start: start + self.batch] for start in range(0, stop, self.batch))
        for chosen in ctx.batches(batches):
            self.weights = self.weights * np.float32(1 - ctx.lr()) + np.float32(len(chosen) / 100)
            loss = float(np.abs(self.weights).sum())
            ctx.step(len(chosen), lambda value=loss: value)

    def _paths(self, ids: list[str]) -> np.ndarray:
        """Best paths (batch, time) whose greedy decode is the label (even positions) or "0"."""
        charset = self.job.charset
        steps = 2 * self.max_label_len + 1
        paths = np.zeros((len(ids), steps), dtype=np.int64)
        for row, key in enumerate(ids):
            index = self.sample_ids("eval").index(key)
            text = self.labels[key] if index % 2 == 0 else "0"
            for position, cls in enumerate(charset.encode(text)):
                paths[row, 2 * position + 1] = cls   # blank between characters: repeats survive
        return paths

    def predict(self, split: str):
        ids = self.sample_ids(split)
        for start in range(0, len(ids), self.job.eval["batch_size"]):
            chunk = ids[start: start + self.job.eval["batch_size"]]
            yield chunk, self._paths(chunk)

    def save(self, directory: Path, epoch: int) -> list[Path]:
        path = directory / "weights.npy"
        np.save(path, self.weights)
        return [path]

    def load(self, directory: Path) -> None:
        self.weights = np.load(directory / "weights.npy")

    def export(self, fmt: str, directory: Path, opset: int) -> list[Path]:
        if fmt != "npy":
            raise ValueError(f"unknown export format {fmt!r}")
        path = directory / "model.npy"
        np.save(path, self.weights)
        return [path]

    def input_spec(self) -> dict:
        return {"shape": [None, 1, 32, 64], "layout": "NCHW", "color": "gray", "dtype": "float32",
                "pixels": "none", "resize": "none"}

    def loss_spec(self) -> LossSpec:
        return LossSpec(reduction="mean", logged="per_sample", native="numpy")

    def predict_exported(self, fmt: str, directory: Path):
        np.load(directory / "model.npy")
        return self.predict("eval")

    def reference_batch(self, n: int):
        ids = self.sample_ids("eval")[:n]
        return ids, np.zeros((len(ids), 1, 32, 64), np.float32), np.zeros((3, len(ids), 11), np.float32)

    def weight_arrays(self):
        return [[self.weights]]


RECIPE = {"name": "fake", "backend": "numpy", "model": {"arch": "numpy"},
          "data": {"source": "captcha", "train_size": TRAIN, "eval_size": EVAL},
          "train": {"epochs": 2, "batch_size": BATCH, "log_every": 1, "seed": 5,
                    "lr_schedule": {"name": "cosine"}},
          "export": {"formats": ["npy", "broken"]}}


def latest(job: Job):
    """The run's newest intact checkpoint."""
    return CheckpointStore(job.path("checkpoints")).latest()


def resolved(**train) -> dict:
    recipe = {**RECIPE, "train": {**RECIPE["train"], **train}}
    return validate_data(recipe, "test").resolved()


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "dataset"
    root.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", TRAIN), ("eval", EVAL)):
        texts = ["".join(rng.choice(list(CHARSET), size=3 + i % 2)) for i in range(n)]
        (root / f"{split}.txt").write_text("".join(f"images/{split}/{i:08d}.png\t{t}\n"
                                                   for i, t in enumerate(texts)))
    return root


def make_job(dataset: Path, run_dir: Path, recipe: dict, **changes) -> Job:
    """The job as the core writes it (``runner.job_spec`` for a one-device launch) and the worker reads it
    (through JSON)."""
    run_dir.mkdir(exist_ok=True)
    spec = BackendSpec(name="numpy", framework="numpy", distribution="numpy", worker="backends.numpy.worker",
                       requirements=dataset / "requirements.txt", native_archs={"numpy": None})
    p = Plan(validate_data(recipe, "test"), recipe, spec, None, dataset)
    splits = {split: [line.split("\t")[1] for line in (dataset / f"{split}.txt").read_text().splitlines()]
              for split in ("train", "eval")}
    prepared = PreparedDataset(dataset, {"fingerprint": "f" * 64, "charset": CHARSET, "source": "captcha",
                                         "splits": {k: {"n": len(v), "max_len": max(map(len, v))}
                                                    for k, v in splits.items()}})
    launch = Runner(p, run_dir.parent, Topology(), None, [], None).launch(Path(sys.executable), run_dir)
    job = job_spec(p, run_dir, prepared, launch, resume=False)
    job = Job.from_json(json.loads(json.dumps(job.to_json())))
    return dataclasses.replace(job, **changes)


def events_of(run_dir: Path, name: str = "events.jsonl") -> list[dict]:
    return read_events(run_dir / name)


def run(job: Job) -> list[dict]:
    events = Events(job.path("events"))
    try:
        run_job(NumpyTrainer(job), events)
    finally:
        events.close()
    return events_of(job.run_dir, job.paths["events"])


def launch_job(job: Job) -> dict:
    """The launch's ``job`` dict the core keeps for metrics.json (what ``Distributed`` was made from)."""
    return {k: v for k, v in job.distributed.to_json().items() if v is not None}


def metrics_of(job: Job, recipe: dict, dataset: Path) -> dict:
    labels = dict(line.split("\t") for line in (dataset / "eval.txt").read_text().splitlines())
    scorer = EvalScorer(job.run_dir, labels, Protocol(), CHARSET)
    manifest = {"fingerprint": "f" * 64, "charset": CHARSET, "source": "captcha", "dir": str(dataset),
                "splits": {"train": {"n": TRAIN}, "eval": {"n": EVAL}}}
    metrics = assemble(run_id=job.run_id, recipe=recipe, recipe_hash="0" * 64, recipe_path=None,
                       spec_framework="numpy", command=["test"], hardware=HARDWARE, dataset=manifest,
                       events=events_of(job.run_dir), scorer=scorer, failure=None, created="now",
                       distributed=launch_job(job))
    validate_metrics(metrics)
    return metrics


def test_run_job_trains_evaluates_checkpoints_and_exports(dataset, tmp_path):
    recipe = resolved()
    job = make_job(dataset, tmp_path / "run", recipe)
    events = run(job)
    names = [e["event"] for e in events]
    assert names[:4] == ["start", "prepared", "model", "train_begin"] and names[-1] == "done"
    begin = events[3]
    assert begin["steps_per_epoch"] == 2 and begin["drop_last"] is True      # 10 samples, batches of 4
    assert begin["loss"] == {"reduction": "mean", "logged": "per_sample", "native": "numpy"}
    assert [e["samples"] for e in events if e["event"] == "epoch_end"] == [8, 8]   # the partial batch dropped
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4]
    assert [e["epoch"] for e in events if e["event"] == "checkpoint"] == [1, 2]
    assert latest(job).state["epoch"] == 2 and len(CheckpointStore(job.path("checkpoints")).committed()) == 2
    train_end = next(e for e in events if e["event"] == "train_end")
    assert len(train_end["weights_sha256"]) == 1 and train_end["samples"] == 16

    predictions = read_predictions(job.run_dir / "predictions" / "eval.tsv")
    assert list(predictions) == [line.split("\t")[0]
                                 for line in (dataset / "eval.txt").read_text().splitlines()]
    exports = {e["format"]: e for e in events if e["event"] == "export"}
    assert exports["npy"]["ok"] and exports["npy"]["predictions"] == "exports/npy/eval.tsv"
    assert not exports["broken"]["ok"] and "unknown export format" in exports["broken"]["error"]
    meta = json.loads((job.run_dir / "exports" / "npy" / "ocrbench-export.json").read_text())
    # the default output_spec
    assert meta["blank"] == 0 and meta["layout"] == "TBC" and meta["charset"] == CHARSET
    with np.load(job.run_dir / "exports" / "npy" / "reference.npz", allow_pickle=False) as reference:
        assert reference["inputs"].shape == (6, 1, 32, 64)

    metrics = metrics_of(job, recipe, dataset)
    assert metrics["status"] == "ok" and metrics["eval"]["n"] == EVAL and metrics["eval"]["seq_acc"] == 0.5
    assert metrics["train"]["steps"] == 4 and metrics["train"]["samples"] == 16
    assert metrics["train"]["loss"]["reduction"] == "mean" and len(metrics["train"]["curve"]) == 2
    assert [x["format"] for x in metrics["exports"]] == ["npy", "broken"]


def test_drop_last_false_trains_the_partial_batch(dataset, tmp_path):
    job = make_job(dataset, tmp_path / "run", resolved(drop_last=False))
    events = run(job)
    assert next(e for e in events if e["event"] == "train_begin")["steps_per_epoch"] == 3
    assert [e["samples"] for e in events if e["event"] == "epoch_end"] == [10, 10]


class InterruptedAtEpoch3(NumpyTrainer):
    def train_epoch(self, ctx) -> None:
        if ctx.epoch == 3:
            raise KeyboardInterrupt
        super().train_epoch(ctx)


def test_resume_continues_after_the_last_checkpoint(dataset, tmp_path):
    recipe = resolved(epochs=3)
    straight = make_job(dataset, tmp_path / "straight", recipe)
    run(straight)
    job = make_job(dataset, tmp_path / "resumed", recipe)
    events = Events(job.path("events"))
    with pytest.raises(KeyboardInterrupt):
        run_job(InterruptedAtEpoch3(job), events)
    events.close()
    assert latest(job).state["epoch"] == 2
    events = run(dataclasses.replace(job, resume=True))
    assert [e["epoch"] for e in events if e["event"] == "resumed"] == [2]
    assert [e["epoch"] for e in events if e["event"] == "epoch_end"] == [1, 2, 3]   # both attempts
    # the same weights as training straight through: the schedule went on from global step 4 of 6
    assert np.array_equal(np.load(latest(straight).directory / "weights.npy"),
                          np.load(latest(job).directory / "weights.npy"))
    metrics = metrics_of(job, recipe, dataset)
    assert [p["epoch"] for p in metrics["train"]["curve"]] == [1, 2, 3] and metrics["train"]["epochs"] == 3


class KilledAtStep(NumpyTrainer):
    """Stops (as a kill would, no handler) right after global step ``STOP``."""

    STOP = 4

    def train_epoch(self, ctx) -> None:
        step = ctx.step

        def counted(samples, loss):
            step(samples, loss)
            if ctx.global_step == self.STOP:
                raise KeyboardInterrupt

        ctx.step = counted
        super().train_epoch(ctx)


def test_checkpoint_every_resumes_inside_an_epoch_as_if_never_stopped(dataset, tmp_path):
    # drop_last false: 3 steps per epoch; a checkpoint every 2 steps -> step 4 is epoch 2's first step
    recipe = resolved(epochs=3, drop_last=False, checkpoint_every=2)
    straight = make_job(dataset, tmp_path / "straight", recipe)
    straight_events = run(straight)
    assert [e["step"] for e in straight_events if e["event"] == "checkpoint"] == [2, 3, 4, 6, 8, 9]
    job = make_job(dataset, tmp_path / "killed", recipe)
    events = Events(job.path("events"))
    with pytest.raises(KeyboardInterrupt):
        run_job(KilledAtStep(job), events)
    events.close()
    checkpoint = latest(job)    # the one after step 4 (epoch 2, one step in)
    assert checkpoint.directory.name == "step-00000004"
    assert checkpoint.state["epoch"] == 1 and checkpoint.state["partial"]["steps"] == 1
    events = run(dataclasses.replace(job, resume=True))    # both attempts' events
    resumed = events[next(i for i, e in enumerate(events) if e["event"] == "resumed"):]
    assert (resumed[0]["epoch"], resumed[0]["epoch_step"]) == (1, 1)
    assert [e["step"] for e in resumed if e["event"] == "step"] == [5, 6, 7, 8, 9]   # none repeated
    assert np.array_equal(np.load(latest(straight).directory / "weights.npy"),
                          np.load(latest(job).directory / "weights.npy"))
    # the epoch losses and image counts are the uninterrupted run's, the steps before the kill included
    def ends(events):
        return [(e["epoch"], e["loss"], e["samples"]) for e in events if e["event"] == "epoch_end"]

    assert ends(resumed) == ends(straight_events)[1:]
    assert [p.name for p in CheckpointStore(job.path("checkpoints")).committed()] == ["step-00000008",
                                                                                      "step-00000009"]


def test_a_damaged_checkpoint_is_detected_and_the_previous_one_used(dataset, tmp_path):
    recipe = resolved(epochs=3)
    job = make_job(dataset, tmp_path / "run", recipe)
    run(job)
    store = CheckpointStore(job.path("checkpoints"))
    newest, previous = store.committed()[-1], store.committed()[-2]
    with open(newest / "weights.npy", "r+b") as handle:   # truncated, as by a failing disk
        handle.truncate(10)
    checkpoint = store.latest()
    assert checkpoint.directory == previous
    assert checkpoint.passed_over == [f"{newest.name}: weights.npy is 10 bytes, "
                                      f"{(previous / 'weights.npy').stat().st_size} when written "
                                      "(truncated or changed)"]
    (previous / "weights.npy").write_bytes(b"x" * (previous / "weights.npy").stat().st_size)  # same size
    with pytest.raises(RuntimeError, match="weights.npy does not match its sha256"):
        store.latest()


class DiskFullOnSecondSave(NumpyTrainer):
    saves = 0

    def save(self, directory: Path, epoch: int) -> list[Path]:
        DiskFullOnSecondSave.saves += 1
        if DiskFullOnSecondSave.saves == 2:
            (directory / "weights.npy").write_bytes(b"half")
            raise OSError(28, "No space left on device")
        return super().save(directory, epoch)


def test_a_full_disk_while_checkpointing_names_the_write_and_keeps_the_previous(dataset, tmp_path):
    from ocrbench.errors import DiskFullError

    job = make_job(dataset, tmp_path / "run", resolved(epochs=3))
    events = Events(job.path("events"))
    with pytest.raises(DiskFullError, match=r"no space left on device while writing the checkpoint after "
                                            r"step 4 \(.*\.staging-00000004"):
        run_job(DiskFullOnSecondSave(job), events)
    events.close()
    store = CheckpointStore(job.path("checkpoints"))
    assert [p.name for p in store.committed()] == ["step-00000002"] and not list(store.root.glob(".staging*"))
    assert store.latest().state["epoch"] == 1
    events = run(dataclasses.replace(job, resume=True))      # the disk has room again
    assert [e["epoch"] for e in events if e["event"] == "epoch_end"] == [1, 2, 2, 3]   # both attempts


def test_export_stage_only_exports(dataset, tmp_path):
    recipe = resolved()
    job = make_job(dataset, tmp_path / "run", recipe)
    run(job)
    again = dataclasses.replace(job, stage="export", export={**job.export, "formats": ["npy"]},
                                paths={**job.paths, "events": "events-export.jsonl"})
    events = run(again)
    assert [e["event"] for e in events] == ["start", "prepared", "model", "export", "done"]
    assert events[3]["ok"] and events[1]["reused"] is True


def test_the_base_class_declares_the_contract(dataset, tmp_path):
    class Incomplete(Trainer):
        framework = "none"

    with pytest.raises(TypeError, match="abstract"):
        Incomplete(make_job(dataset, tmp_path / "run", resolved()))
    trainer = NumpyTrainer(make_job(dataset, tmp_path / "run", resolved()))
    assert trainer.epoch_seed(3) == 5 * 100_003 + 3 and trainer.seed == 5
    assert (trainer.epoch_steps(10, 4) == 2 and trainer.epoch_steps(3, 4) == 1
            and trainer.epoch_steps(8, 4) == 2)
    assert trainer.drop_last(10, 4) and not trainer.drop_last(3, 4)   # a split under one batch still trains
    assert (trainer.sample_ids("eval")[0] == "images/eval/00000000.png"
            and len(trainer.sample_ids("train")) == TRAIN)
    assert (Trainer.predict_exported(trainer, "x", tmp_path) is None
            and Trainer.reference_batch(trainer, 2) is None)
    assert Trainer.weight_arrays(trainer) is None and Trainer.output_spec(trainer)["blank"] == 0
    gpu = NumpyTrainer(dataclasses.replace(trainer.job, gpus=1))
    with pytest.raises(RuntimeError, match="--gpus asked for 1 GPU.*sees 0.*numpy backend has none"):
        gpu.setup()
    with pytest.raises(ValueError, match="reduction"):
        LossSpec(reduction="median", logged="per_sample", native="x")
    with pytest.raises(ValueError, match="logged"):
        LossSpec(reduction="sum", logged="per_batch", native="x")


def test_compare_says_when_loss_reductions_differ(dataset, tmp_path):
    recipe = resolved()
    runs = []
    for name, reduction in (("a", "mean"), ("b", "char_mean")):
        job = make_job(dataset, tmp_path / name, recipe)
        run(job)
        metrics = metrics_of(job, recipe, dataset)
        runs.append(Run(tmp_path / name / "metrics.json", metrics))
    same = build(runs)
    assert not same.show_loss and not any("reduce the CTC loss" in line for line in preamble(same))
    runs[1].metrics["train"]["loss"] = {"reduction": "char_mean", "logged": "per_char", "native": "x"}
    runs[1].metrics["backend"]["name"] = "other"
    differ = build(runs)
    assert differ.show_loss
    note = next(line for line in preamble(differ) if "reduce the CTC loss" in line)
    assert "numpy: mean, per sample" in note and "other: char_mean, per char" in note
    table = grid(differ)
    assert "loss" in table.headers
    assert ({row[table.headers.index("loss")] for row in table.cells}
            == {"mean, per sample", "char_mean, per char"})


def test_prediction_files_round_trip(tmp_path):
    charset = Charset(CHARSET)
    paths = np.array([[0, 2, 2, 0, 3], [0, 0, 0, 0, 0]])   # repeats merge, blanks drop: "12"; all blank: ""
    n = write_predictions(tmp_path / "p.tsv", [(["a.png", "b.png"], paths)], charset)
    assert n == 2 and (tmp_path / "p.tsv").read_text() == "a.png\t12\nb.png\t\n"
    assert read_predictions(tmp_path / "p.tsv") == {"a.png": "12", "b.png": ""}
