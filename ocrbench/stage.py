"""A finished run's worker started again for one stage — ``export`` (``ocrbench export``) or ``predict``
(``ocrbench predict --engine native``) — from its last checkpoint, in its backend's environment, on one CPU
process. The stage has its own job file and events file, so the run's training record stays as it was."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

from ocrbench import atomic, datasets, distributed, envs, processes
from ocrbench.errors import OcrbenchError
from ocrbench.plan import Plan, plan
from ocrbench.recipe import validate_data
from ocrbench.results import read_events
from ocrbench.runner import Runner, job_spec
from ocrbench.worker.checkpoints import CheckpointStore


def finished_run(run_dir: Path, what: str) -> dict:
    """The metrics.json of a finished run (status ok), or an error naming the directory and what to do."""
    path = run_dir / "metrics.json"
    if not run_dir.is_dir():
        raise OcrbenchError(f"{run_dir}: no such run directory",
                            hint="give a directory made by `ocrbench run`")
    if not path.is_file():
        raise OcrbenchError(f"{run_dir}: not a finished run directory (no metrics.json)",
                            hint=f"{what} needs a run made by `ocrbench run` (finish an interrupted one with "
                                 "`ocrbench run --resume`)")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OcrbenchError(f"{path}: not a readable metrics.json ({exc})") from None
    if metrics.get("status") != "ok":
        raise OcrbenchError(f"{run_dir}: the run did not finish "
                            f"(metrics.json status {metrics.get('status')!r})",
                            hint="finish it first: ocrbench run --resume RUN_DIR")
    return metrics


def run_plan(run_dir: Path, data: dict | None = None, export_formats: list[str] | None = None) -> Plan:
    """The run's recipe (``recipe.yaml``; ``data`` and ``export.formats`` replaced when given) bound to its
    backend, relative paths resolved as when the run was made."""
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
    if data is not None:
        recipe = {**recipe, "data": data}
    if export_formats:
        recipe = {**recipe, "export": {**recipe["export"], "formats": export_formats}}
    recorded = json.loads((run_dir / "job.json").read_text(encoding="utf-8"))
    return plan(validate_data(recipe, str(run_dir / "recipe.yaml")),
                Path(recorded["recipe_path"]) if recorded.get("recipe_path") else None)


def run_stage(run_dir: Path, stage: str, console, command: list[str], *,
              dataset: datasets.PreparedDataset | None = None, predictions: str | None = None,
              export_formats: list[str] | None = None) -> list[dict]:
    """Run the worker of the finished run ``run_dir`` for ``stage`` (from the last checkpoint in
    ``checkpoints/``) and return its events. ``dataset``: the dataset it reads (default: the run's);
    ``predictions``: where its predict stage writes (a path relative to the run); ``export_formats``: what
    the export stage exports (default: the recipe's). Files: ``job-<stage>.json``,
    ``events-<stage>.jsonl``; the worker's log goes to the run's ``native.log``. A failed stage raises,
    naming the log."""
    if not CheckpointStore(run_dir / "checkpoints").exists():
        raise OcrbenchError(f"{run_dir}: no checkpoint (nothing committed in checkpoints/)",
                            hint="the run's framework needs its checkpoint; re-run the recipe")
    p = run_plan(run_dir, export_formats=export_formats)
    if dataset is None:
        recorded = json.loads((run_dir / "job.json").read_text(encoding="utf-8"))
        dataset = datasets.open_prepared(Path(recorded["dataset"]["dir"]))
    runner = Runner(p, run_dir.parent, distributed.Topology(), None, command, console, resume_dir=run_dir)
    python, _ = envs.resolve_python(p.spec, runner.python_override)
    job_name, events_name = f"job-{stage}.json", f"events-{stage}.jsonl"
    launch = runner.launch(python, run_dir, job_name)   # one process, on the CPU
    job = job_spec(p, run_dir, dataset, launch, resume=False)
    paths = {**job.paths, "events": events_name, **({"predictions": predictions} if predictions else {})}
    job = dataclasses.replace(job, stage=stage, gpus=0, paths=paths, init_weights=None,
                              dataset=dataclasses.replace(job.dataset, online=None))
    atomic.write_json(run_dir / job_name, job.to_json())
    (run_dir / events_name).unlink(missing_ok=True)
    scorer = runner.make_scorer(run_dir, dataset) if stage == "export" else None
    processes.follow(launch, run_dir, console, scorer, events_name)
    events = read_events(run_dir / events_name)
    failed = [e for e in events if e["event"] == "error"]
    if failed or not any(e["event"] == "done" for e in events):
        reason = failed[-1]["message"] if failed else "the worker ended without finishing"
        raise OcrbenchError(f"{stage} of {run_dir} failed: {reason}",
                            hint=f"details in {run_dir / 'native.log'}")
    return events
