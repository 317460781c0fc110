"""The two ways ``ocrbench predict`` and ``ocrbench eval --data`` run a trained model on images.

* :class:`OnnxEngine` (default): the run's ONNX export in onnxruntime inside the core — no framework, fast
  to start; images are prepared as the export's own description says (``ocrbench.preprocess``).
* :class:`NativeEngine`: the run's last checkpoint in its framework, through the backend worker's
  ``predict`` stage (``ocrbench.stage``): the images are copied into a temporary canonical dataset inside
  the run directory (deleted afterwards), which the worker reads through its own pipeline.

Both give :class:`ocrbench.recognition.Recognition` per image, decoded by the one decoder in
``ocrbench.recognition``. An image that cannot be decoded is a :class:`Failure` naming the file; the
others still get results.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ocrbench import atomic, datasets, images, preprocess
from ocrbench.codec import Charset
from ocrbench.errors import OcrbenchError
from ocrbench.export_parity import OnnxModel, export_meta, ort_version
from ocrbench.labels import Sample, format_label_lines
from ocrbench.recognition import Recognition, probabilities, read_recognitions, recognise
from ocrbench.worker.checkpoints import CheckpointStore

ENGINES = ("onnx", "native")
BATCH = 32


@dataclass(frozen=True)
class Failure:
    """An input that got no result: the file and why."""

    path: Path
    reason: str


@dataclass
class Outcome:
    """What an engine returns: a result per good image (keyed by its position in the input list), the
    failures, and timings in seconds (``start_s``: loading the model or starting the worker; ``run_s``:
    decoding, preprocessing and inference of every image)."""

    results: dict[int, Recognition] = field(default_factory=dict)
    failures: dict[int, Failure] = field(default_factory=dict)
    start_s: float = 0.0
    run_s: float = 0.0
    runtime: str = ""

    @property
    def images_per_s(self) -> float | None:
        return len(self.results) / self.run_s if self.run_s > 0 and self.results else None


def export_activation(meta: dict) -> str:
    """``logits`` or ``softmax``: what the export outputs (its ``activation``; exports written before the
    key existed say it in words: PaddleOCR's start with "probabilities")."""
    if "activation" in meta:
        return meta["activation"]
    return "softmax" if str(meta.get("output", "")).startswith("probabilities") else "logits"


def image_problem(path: Path) -> str | None:
    """Why ``path`` is not an image ocrbench decodes (None when it is): unreadable, not an image, or over
    ``ocrbench.images.MAX_PIXELS``."""
    try:
        images.open_checked(Path(path).read_bytes()).close()
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    except images.ImageProblem as exc:
        return str(exc) if exc.reason == "too_large" else f"not an image that can be decoded ({exc})"
    return None


def onnx_export(run_dir: Path, metrics: dict) -> tuple[dict | None, str]:
    """The run's usable ONNX export record (successful, its file present), or None and why not."""
    export = next((x for x in metrics.get("exports") or [] if x["format"] == "onnx"), None)
    if export is None:
        return None, "it has no ONNX export"
    if not export["ok"]:
        return None, f"its ONNX export failed ({export.get('error')})"
    if not (run_dir / export["path"]).is_file():
        return None, f"its ONNX export {run_dir / export['path']} is missing"
    return export, ""


class OnnxEngine:
    """A run's ONNX export in onnxruntime (CPU execution provider)."""

    name = "onnx"

    def __init__(self, run_dir: Path, metrics: dict, charset: Charset):
        export, why = onnx_export(run_dir, metrics)
        if export is None:
            raise OcrbenchError(f"{run_dir}: {why}")
        started = time.perf_counter()
        self.meta = export_meta(run_dir / Path(export["path"]).parent)
        self.model = OnnxModel(run_dir / export["path"], self.meta, charset)
        self.start_s = time.perf_counter() - started
        self.charset = charset
        self.export_path = export["path"]

    def run(self, paths: list[Path], batch_size: int = BATCH,
            advance: Callable[[int], None] = lambda n: None) -> Outcome:
        outcome = Outcome(start_s=self.start_s, runtime=f"onnxruntime {ort_version()} (CPU), "
                                                        f"{self.export_path}")
        spec, layout = self.meta["input"]["preprocess"], self.meta["layout"]
        started = time.perf_counter()
        for start in range(0, len(paths), batch_size):
            good, inputs = [], []
            for index in range(start, min(start + batch_size, len(paths))):
                try:
                    inputs.append(preprocess.load(paths[index], spec))
                    good.append(index)
                except Exception as exc:  # PIL / OpenCV raise many kinds for a bad file: named, not raised
                    outcome.failures[index] = Failure(paths[index], _reason(paths[index], exc))
            if good:
                out = self.model.raw(np.stack(inputs))
                out = out.transpose(1, 0, 2) if layout == "TBC" else out
                probs = probabilities(out, self.meta["blank"], export_activation(self.meta))
                for index, result in zip(good, recognise([str(i) for i in good], probs, self.charset)):
                    outcome.results[index] = result
            advance(min(batch_size, len(paths) - start))
        outcome.run_s = time.perf_counter() - started
        return outcome


def _reason(path: Path, exc: Exception) -> str:
    problem = image_problem(path)
    return problem or f"{type(exc).__name__}: {exc}"


class NativeEngine:
    """A run's last checkpoint in its own framework, through the backend worker (``predict`` stage)."""

    name = "native"

    def __init__(self, run_dir: Path, metrics: dict, charset: Charset, console, command: list[str]):
        self.run_dir, self.metrics, self.charset = run_dir, metrics, charset
        self.console, self.command = console, command

    def run(self, paths: list[Path], batch_size: int = BATCH,
            advance: Callable[[int], None] = lambda n: None) -> Outcome:
        from ocrbench.stage import run_stage

        outcome = Outcome()
        good = []
        for index, path in enumerate(paths):   # the worker would stop at a bad file: check them here
            problem = image_problem(path)
            if problem is None:
                good.append(index)
            else:
                outcome.failures[index] = Failure(path, problem)
        if not good:
            return outcome
        tmp = self.run_dir / f"predict-{os.getpid()}.tmp"
        try:
            dataset = self._dataset(tmp, [paths[i] for i in good])
            started = time.perf_counter()
            events = run_stage(self.run_dir, "predict", self.console, self.command, dataset=dataset,
                               predictions=str((tmp / "out").relative_to(self.run_dir)))
            wall = time.perf_counter() - started
            done = next(e for e in events if e["event"] == "recognitions")
            start = next(e for e in events if e["event"] == "start")
            outcome.run_s, outcome.start_s = done["seconds"], wall - done["seconds"]
            outcome.runtime = f"{start['framework']} {start['version']} (CPU), the last checkpoint"
            for r in read_recognitions(self.run_dir / done["path"]):
                index = good[int(Path(r.id).stem)]
                outcome.results[index] = Recognition(str(index), r.text, r.confidence_mean, r.confidence_min)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        advance(len(paths))
        return outcome

    def _dataset(self, root: Path, paths: list[Path]) -> datasets.PreparedDataset:
        """A canonical dataset of ``paths`` (copies, ``images/<n>.<suffix>``) for the worker: every image
        in the eval split; the train split (which the worker's native copy needs) holds the first one. The
        labels are a placeholder (the charset's first character): the core keeps the real ones."""
        shutil.rmtree(root, ignore_errors=True)
        (root / "images").mkdir(parents=True)
        placeholder = self.charset.chars[0]
        samples = []
        for n, path in enumerate(paths):
            relpath = f"images/{n:08d}{path.suffix.lower() or '.img'}"
            shutil.copyfile(path, root / relpath)
            samples.append(Sample(relpath, placeholder))
        atomic.write_text(root / "eval.txt", format_label_lines(samples))
        atomic.write_text(root / "train.txt", format_label_lines(samples[:1]))
        atomic.write_text(root / "charset.txt", self.charset.to_lines())
        manifest = {"fingerprint": f"predict-{os.getpid()}", "charset": self.charset.chars,
                    "source": "predict",
                    "splits": {"train": {"n": 1, "max_len": 1}, "eval": {"n": len(samples), "max_len": 1}}}
        return datasets.PreparedDataset(root, manifest)


def has_checkpoint(run_dir: Path) -> bool:
    return CheckpointStore(run_dir / "checkpoints").exists()


def open_engine(name: str, run_dir: Path, metrics: dict, charset: Charset, console,
                command: list[str]) -> OnnxEngine | NativeEngine:
    """The engine asked for; ``onnx`` on a run without a successful ONNX export falls back to ``native``,
    saying so."""
    if name not in ENGINES:
        raise OcrbenchError(f"--engine {name!r}: choose one of {', '.join(ENGINES)}")
    if name == "onnx":
        export, why = onnx_export(run_dir, metrics)
        if export is not None:
            return OnnxEngine(run_dir, metrics, charset)
        if not has_checkpoint(run_dir):
            raise OcrbenchError(f"{run_dir}: {why} and no checkpoint (checkpoints/): nothing to "
                                "predict with", hint="re-run the recipe with onnx in export.formats")
        console.print(f"[yellow]{run_dir.name}: {why}; using the native engine (the framework, through "
                      "its worker)[/yellow]")
    elif not has_checkpoint(run_dir):
        raise OcrbenchError(f"{run_dir}: no checkpoint (checkpoints/) for the native engine",
                            hint="use --engine onnx, or re-run the recipe")
    return NativeEngine(run_dir, metrics, charset, console, command)
