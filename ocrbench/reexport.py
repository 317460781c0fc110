"""``ocrbench export``: export a finished run again from its last checkpoint, in its backend's env."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

from ocrbench import atomic, datasets, distributed, envs, export_parity, processes
from ocrbench.codec import Charset
from ocrbench.errors import OcrbenchError
from ocrbench.metrics import Protocol
from ocrbench.plan import plan
from ocrbench.recipe import validate_data
from ocrbench.results import export_record, read_events, validate_metrics
from ocrbench.runner import Runner, job_spec


def export_run(run_dir: Path, formats: list[str] | None, console,
               command: list[str]) -> tuple[dict, list[str]]:
    """``ocrbench export``: export a finished run again from its last checkpoint (all of the recipe's
    formats, or ``formats``), in the backend's environment; the new results replace those formats in
    metrics.json, and an ONNX export is checked in onnxruntime. The worker reads ``job-export.json`` and
    writes ``events-export.jsonl``, so the training record stays as it was."""
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file() or json.loads(metrics_path.read_text())["status"] != "ok":
        raise OcrbenchError(f"{run_dir}: not a finished run (no metrics.json with status ok)",
                            hint="export needs the run's checkpoint: finish it first (ocrbench run --resume)")
    data = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
    if formats:
        data["export"]["formats"] = formats
    recorded = json.loads((run_dir / "job.json").read_text())   # where the recipe and its data were
    p = plan(validate_data(data, str(run_dir / "recipe.yaml")),
             Path(recorded["recipe_path"]) if recorded.get("recipe_path") else None)
    dataset = datasets.open_prepared(Path(recorded["dataset"]["dir"]))
    runner = Runner(p, run_dir.parent, distributed.Topology(), None, command, console, resume_dir=run_dir)
    python, _ = envs.resolve_python(p.spec, runner.python_override)
    launch = runner.launch(python, run_dir, "job-export.json")   # one process, on the CPU
    job = job_spec(p, run_dir, dataset, launch, resume=False)
    job = dataclasses.replace(job, stage="export", gpus=0,
                              paths={**job.paths, "events": "events-export.jsonl"})
    atomic.write_json(run_dir / "job-export.json", job.to_json())
    (run_dir / "events-export.jsonl").unlink(missing_ok=True)
    processes.follow(launch, run_dir, console, runner.make_scorer(run_dir, dataset), "events-export.jsonl")
    events = read_events(run_dir / "events-export.jsonl")
    failed = [e for e in events if e["event"] == "error"]
    if failed or not any(e["event"] == "done" for e in events):
        reason = failed[-1]["message"] if failed else "the worker ended without finishing"
        raise OcrbenchError(f"export of {run_dir} failed: {reason}",
                            hint=f"details in {run_dir / 'native.log'}")
    metrics = json.loads(metrics_path.read_text())
    exported = [e["format"] for e in events if e["event"] == "export"]
    for event in (e for e in events if e["event"] == "export"):
        metrics["exports"] = [x for x in metrics["exports"] if x["format"] != event["format"]] + [
            export_record(event)]
    export_parity.attach_parity(metrics, run_dir, dataset.root, Charset(dataset.charset),
                          Protocol(**p.resolved["eval"]["protocol"]))
    validate_metrics(metrics)
    atomic.write_json(metrics_path, metrics)
    return metrics, exported
