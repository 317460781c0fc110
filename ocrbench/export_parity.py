"""Parity of a run's exports with the trained model, checked in the core environment — no framework.

An ONNX export runs in onnxruntime on the eval split and is checked against the framework's own
predictions (``ocrbench eval RUN_DIR --exported onnx``, and after every export); a native export that its
framework reloaded in the worker has its eval predictions scored here and compared (``check_reloaded``).

Inputs come from the export's own description (``ocrbench.preprocess``); outputs are decoded by the
core's one greedy CTC decoder with the blank index and layout the export's metadata states
(``ocrbench-export.json``: ``blank``, ``layout`` "TBC" time-major or "BTC" batch-major). Recorded per
export, in metrics.json ``exports[].parity``:

* ``seq_acc`` of the export on the eval split and ``native_seq_acc`` of the framework's predictions;
* ``identical`` — the share of eval samples whose decoded text equals the framework's (goal ≥ 0.999);
* ``max_abs_diff`` — on the fixed reference batch the worker saved with the framework's outputs
  (``reference.npz``: the same inputs, so this is the conversion error alone), and
  ``preprocess_max_diff`` — how far ocrbench.preprocess's inputs are from the worker's own pipeline's;
* ``latency_ms_p50`` / ``latency_ms_p95`` at batch 1 and ``throughput_ips`` (images/s) at batch 32,
  onnxruntime CPU execution provider, after a warm-up.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ocrbench import atomic, datasets, preprocess
from ocrbench.codec import Charset
from ocrbench.errors import OcrbenchError
from ocrbench.labels import read_label_file
from ocrbench.metrics import Protocol, score_files
from ocrbench.predictions import read_predictions, write_predictions
from ocrbench.recognition import blank_first_order
from ocrbench.results import validate_metrics

GOAL_IDENTICAL = 0.999
THROUGHPUT_BATCH = 32
LATENCY_RUNS = 50


def export_meta(export_dir: Path) -> dict:
    path = export_dir / "ocrbench-export.json"
    if not path.is_file():
        raise OcrbenchError(f"{export_dir}: no ocrbench-export.json (was this format exported by ocrbench?)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if "preprocess" not in (meta.get("input") or {}) or "layout" not in meta:
        raise OcrbenchError(f"{path}: no machine-readable preprocess / layout "
                            "(exported by an older ocrbench)",
                            hint="re-export it: ocrbench export RUN_DIR")
    return meta


def class_indices(meta: dict, charset: Charset) -> np.ndarray:
    """Maps the export's class k to ocrbench's (blank 0, charset[i] = i + 1)."""
    return np.argsort(blank_first_order(meta["blank"], meta["classes"]))


class OnnxModel:
    """An ONNX export in onnxruntime, returning ocrbench class ids (B, T) per batch."""

    def __init__(self, model_path: Path, meta: dict, charset: Charset):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(model_path), options,
                                                    providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        batch = self.session.get_inputs()[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) else None   # e.g. MindSpore's ONNX: batch 1
        self.meta = meta
        self.to_ocrbench = class_indices(meta, charset)

    def raw(self, inputs: np.ndarray) -> np.ndarray:
        """Outputs for any number of inputs; a fixed-batch model is run chunk by chunk (zero-padded)."""
        if self.fixed_batch is None or len(inputs) == self.fixed_batch:
            return self.session.run(None, {self.input_name: inputs})[0]
        size, outputs = self.fixed_batch, []
        for start in range(0, len(inputs), size):
            chunk = inputs[start:start + size]
            padded = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            outputs.append(self.session.run(None, {self.input_name: padded})[0])
        axis = 1 if self.meta["layout"] == "TBC" else 0
        return np.take(np.concatenate(outputs, axis=axis), np.arange(len(inputs)), axis=axis)

    def classes(self, inputs: np.ndarray) -> np.ndarray:
        out = self.raw(inputs)
        if self.meta["layout"] == "TBC":
            out = out.transpose(1, 0, 2)
        return self.to_ocrbench[out.argmax(axis=2)]


def _timed(fn, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def check_onnx(run_dir: Path, export: dict, dataset_dir: Path, charset: Charset, protocol: Protocol,
               batch_size: int = THROUGHPUT_BATCH) -> dict:
    """Run the ONNX export on the eval split and measure it; writes ``exports/onnx/eval.tsv``."""
    export_dir = run_dir / Path(export["path"]).parent
    meta = export_meta(export_dir)
    model = OnnxModel(run_dir / export["path"], meta, charset)
    samples = read_label_file(dataset_dir / "eval.txt")
    spec = meta["input"]["preprocess"]

    def batches():
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            inputs = preprocess.batch([dataset_dir / s.path for s in chunk], spec)
            yield [s.path for s in chunk], model.classes(inputs)

    predictions = export_dir / "eval.tsv"
    write_predictions(predictions, batches(), charset)   # the workers' writer: same decoder, same format

    one = preprocess.batch([dataset_dir / samples[0].path], spec)
    full = preprocess.batch([dataset_dir / s.path for s in samples[:batch_size]], spec)
    _timed(lambda: model.raw(one), 5)                                   # warm-up
    latency = np.asarray(_timed(lambda: model.raw(one), LATENCY_RUNS)) * 1000
    throughput = len(full) * 5 / sum(_timed(lambda: model.raw(full), 5))
    return {"runtime": f"onnxruntime {ort_version()} (CPU)", "input_batch": model.fixed_batch or "dynamic",
            **agreement(run_dir, predictions, dataset_dir, charset, protocol),
            **_reference_diffs(export_dir, model, dataset_dir, spec),
            "latency_ms_p50": float(np.percentile(latency, 50)),
            "latency_ms_p95": float(np.percentile(latency, 95)),
            "throughput_ips": throughput}


def evaluate_run(run_dir: Path, exported: str = "onnx") -> dict:
    """``ocrbench eval``: run a finished run's ONNX export on its eval split, record the result in its
    metrics.json (``exports[].parity``, validated before it is written) and return it."""
    if exported != "onnx":
        raise OcrbenchError(f"--exported {exported!r}: only onnx runs in the core (native formats are "
                            "checked by their framework at export time)")
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise OcrbenchError(f"{run_dir}: no metrics.json (not a finished run directory)")
    metrics = json.loads(path.read_text(encoding="utf-8"))
    export = next((x for x in metrics["exports"] if x["format"] == "onnx" and x["ok"]), None)
    if metrics["status"] != "ok" or export is None:
        raise OcrbenchError(f"{run_dir}: no successful ONNX export in this run",
                            hint="add onnx to export.formats (see `ocrbench backends` for who can export it)")
    dataset = datasets.open_prepared(Path(metrics["dataset"]["dir"]))
    protocol = Protocol(**{k: v for k, v in metrics["eval"]["protocol"].items() if k != "decoder"})
    export["parity"] = check_onnx(run_dir, export, dataset.root, Charset(dataset.charset), protocol)
    validate_metrics(metrics)
    atomic.write_json(path, metrics)
    return export["parity"]


def _identical(a: Path, b: Path) -> float:
    """Share of ids with the same decoded text in two prediction files (``id<TAB>text``)."""
    mine, theirs = read_predictions(a), read_predictions(b)
    if set(mine) != set(theirs):
        raise OcrbenchError(f"{a} and {b} predict different samples")
    return sum(mine[k] == theirs[k] for k in mine) / max(len(mine), 1)


def _reference_diffs(export_dir: Path, model: OnnxModel, dataset_dir: Path, spec: dict) -> dict:
    """On the worker's fixed batch (``reference.npz``): ``max_abs_diff`` = max |framework output - ONNX
    output| for the same inputs (the conversion alone), and ``preprocess_max_diff`` = max |the worker's
    inputs - ocrbench.preprocess's inputs| (does the description reproduce the framework's pipeline?)."""
    path = export_dir / "reference.npz"
    if not path.is_file():
        return {"max_abs_diff": None, "preprocess_max_diff": None}
    with np.load(path, allow_pickle=False) as reference:
        ids, inputs, outputs = [str(i) for i in reference["ids"]], reference["inputs"], reference["outputs"]
    ours = preprocess.batch([dataset_dir / i for i in ids], spec)
    return {"max_abs_diff": float(np.abs(model.raw(inputs) - outputs).max()),
            "preprocess_max_diff": float(np.abs(ours - inputs).max())}


def attach_parity(metrics: dict, run_dir: Path, dataset_dir: Path, charset: Charset,
                  protocol: Protocol) -> None:
    """Check every successful ONNX export of a finished run; the result (or why it could not run) goes
    into ``exports[].parity``. Never raises: a broken export must not lose the run's metrics."""
    if metrics["status"] != "ok":
        return
    for export in metrics["exports"]:
        try:
            if export["format"] == "onnx" and export["ok"]:
                export["parity"] = check_onnx(run_dir, export, dataset_dir, charset, protocol)
            elif export.get("predictions"):
                export["parity"] = check_reloaded(run_dir, export, dataset_dir, charset, protocol,
                                                  metrics["backend"]["framework"])
        except Exception as exc:  # onnxruntime or a missing description: recorded, not raised
            export["parity"] = {"error": f"{type(exc).__name__}: {exc}"}


def check_reloaded(run_dir: Path, export: dict, dataset_dir: Path, charset: Charset, protocol: Protocol,
                   framework: str) -> dict:
    """A native export reloaded by its framework in the worker (``exports/<fmt>/eval.tsv``), scored here
    and compared with the trained model's predictions."""
    return {"runtime": f"{framework} (the export reloaded)",
            **agreement(run_dir, run_dir / export["predictions"], dataset_dir, charset, protocol)}


def agreement(run_dir: Path, predictions: Path, dataset_dir: Path, charset: Charset,
              protocol: Protocol) -> dict:
    """An export's eval predictions against the labels and against the trained model's predictions
    (``predictions/eval.tsv``): ``n``, ``seq_acc``, ``native_seq_acc``, ``identical``, ``predictions``."""
    labels = {s.path: s.text for s in read_label_file(dataset_dir / "eval.txt")}
    trained = run_dir / "predictions" / "eval.tsv"
    ours = score_files(predictions, labels, protocol, charset.chars)
    return {"n": ours["n"], "seq_acc": ours["seq_acc"],
            "native_seq_acc": score_files(trained, labels, protocol, charset.chars)["seq_acc"],
            "identical": _identical(predictions, trained),
            "predictions": str(predictions.relative_to(run_dir))}


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
