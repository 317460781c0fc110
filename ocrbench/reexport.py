"""``ocrbench export``: export a finished run again from its last checkpoint, in its backend's env."""

from __future__ import annotations

import json
from pathlib import Path

from ocrbench import atomic, datasets, export_parity
from ocrbench.codec import Charset
from ocrbench.errors import OcrbenchError
from ocrbench.metrics import Protocol
from ocrbench.results import export_record, validate_metrics
from ocrbench.stage import finished_run, run_stage


def export_run(run_dir: Path, formats: list[str] | None, console,
               command: list[str]) -> tuple[dict, list[str]]:
    """``ocrbench export``: export a finished run again from its last checkpoint (all of the recipe's
    formats, or ``formats``), in the backend's environment; the new results replace those formats in
    metrics.json, and an ONNX export is checked in onnxruntime. The worker reads ``job-export.json`` and
    writes ``events-export.jsonl``, so the training record stays as it was."""
    metrics = finished_run(run_dir, "export")
    events = run_stage(run_dir, "export", console, command, export_formats=formats)
    exported = [e["format"] for e in events if e["event"] == "export"]
    for event in (e for e in events if e["event"] == "export"):
        metrics["exports"] = [x for x in metrics["exports"] if x["format"] != event["format"]] + [
            export_record(event)]
    dataset = datasets.open_prepared(Path(json.loads((run_dir / "job.json").read_text())["dataset"]["dir"]))
    protocol = Protocol(**{k: v for k, v in metrics["eval"]["protocol"].items() if k != "decoder"})
    export_parity.attach_parity(metrics, run_dir, dataset.root, Charset(dataset.charset), protocol)
    validate_metrics(metrics)
    atomic.write_json(run_dir / "metrics.json", metrics)
    if not exported:
        raise OcrbenchError(f"export of {run_dir}: the worker exported nothing")
    return metrics, exported
