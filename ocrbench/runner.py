"""``ocrbench run``: resolve a recipe, prepare data, start the backend worker, follow it, write metrics.

The worker runs as a subprocess of the backend's interpreter (no shell), inside the run directory::

    <out>/<name>-<backend>-<YYYYmmdd-HHMMSS>/
        recipe.yaml     the resolved recipe (every default filled in)
        job.json        the job spec the worker reads
        environment.json  interpreter, framework version, hardware, ocrbench version
        events.jsonl    JSON-lines events written by the worker
        native.log      the worker's own stdout/stderr (framework logs, tracebacks)
        checkpoints/    native checkpoints + state.json (resume)
        predictions/    eval.tsv (final) and eval-epochNNNN.tsv (``id<TAB>prediction``)
        exports/<fmt>/  exported models + ocrbench-export.json
        metrics.json    written last, atomically
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

import ocrbench
from ocrbench import atomic, datasets, envs, hardware, neutral
from ocrbench.backend import BackendSpec, get_backend
from ocrbench.codec import Charset
from ocrbench.errors import OcrbenchError
from ocrbench.metrics import Protocol
from ocrbench.recipe import Recipe, validate_arch_params, validate_data
from ocrbench.results import EvalScorer, assemble, export_record, read_events, validate_metrics
from ocrbench.worker import JOB_SCHEMA

POLL_S = 0.2


@dataclass
class Plan:
    """A validated recipe bound to its backend."""

    recipe: Recipe
    resolved: dict
    spec: BackendSpec
    recipe_path: Path | None
    base_dir: Path


def plan(recipe: Recipe, recipe_path: Path | None) -> Plan:
    """Check the recipe against its backend: architecture, its parameters, export formats."""
    origin = str(recipe_path) if recipe_path else "recipe"
    spec = get_backend(recipe.backend)
    archs = spec.archs
    arch = recipe.model.arch
    if arch not in archs:
        raise OcrbenchError(f"{origin}: model.arch: backend {spec.name!r} has no architecture {arch!r} "
                            f"(it has: {', '.join(archs)})")
    params = validate_arch_params(arch, recipe.model.params, archs[arch], origin)
    formats = export_formats(recipe.export.formats, spec)
    unsupported = [f for f in formats if f not in spec.export_formats]
    if unsupported:
        raise OcrbenchError(f"{origin}: export.formats: {spec.name} cannot export {unsupported} "
                            f"(it can: {', '.join(spec.export_formats)}, or 'native' for {spec.export_formats[0]})")
    if getattr(recipe.data, "online", False) and not spec.online_data:
        raise OcrbenchError(f"{origin}: data.online: backend {spec.name!r} cannot stream captchas on the fly",
                            hint="set data.online: false (train on the prepared dataset)")
    resolved = recipe.resolved()
    resolved["model"]["params"] = params
    resolved["export"]["formats"] = formats
    recipe = validate_data(resolved, origin)  # round-trip: the resolved recipe is itself a valid recipe
    base_dir = recipe_path.parent if recipe_path else Path.cwd()
    return Plan(recipe, recipe.resolved(), spec, recipe_path, base_dir)


def export_formats(requested: list[str], spec: BackendSpec) -> list[str]:
    """The recipe's export formats with ``native`` replaced by the backend's own format (its first one,
    e.g. torchscript, mxnet, savedmodel, mindir, paddle), so one recipe can ask every backend for its
    native export and ONNX."""
    formats: list[str] = []
    for fmt in requested:
        concrete = spec.export_formats[0] if fmt == "native" and spec.export_formats else fmt
        if concrete not in formats:
            formats.append(concrete)
    return formats


def check_gpus(requested: int) -> list[dict]:
    """Fail before anything starts if fewer GPUs are visible than requested."""
    visible = hardware.gpus()
    if requested > len(visible):
        raise OcrbenchError(f"--gpus {requested}: only {len(visible)} GPU(s) visible on this machine",
                            hint="use --gpus 0 to run on the CPU, or check nvidia-smi / CUDA_VISIBLE_DEVICES")
    if requested > 1:
        raise OcrbenchError(f"--gpus {requested}: data-parallel training over several devices is not "
                            "available yet; this version trains on one device",
                            hint="use --gpus 1 (or 0 for the CPU)")
    return visible


def new_run_dir(out: Path, name: str, backend: str) -> Path:
    """Create a fresh run directory; an existing run is never reused or overwritten."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        suffix = "" if attempt == 0 else f"-{attempt + 1}"
        candidate = out / f"{name}-{backend}-{stamp}{suffix}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise OcrbenchError(f"{out}: cannot find a free run directory name for {name}-{backend}-{stamp}")


def job_spec(p: Plan, run_dir: Path, dataset: datasets.PreparedDataset, gpus: int, resume: bool) -> dict:
    """The file contract between core and worker (docs/backends.md)."""
    r = p.resolved
    return {
        "schema": JOB_SCHEMA,
        "run_id": run_dir.name,
        "run_dir": str(run_dir),
        "backend": p.spec.name,
        "recipe_path": str(p.recipe_path) if p.recipe_path else None,
        "resume": resume,
        "dataset": {"dir": str(dataset.root), "fingerprint": dataset.fingerprint, "charset": dataset.charset,
                    "online": r["data"] if r["data"].get("online") else None,
                    "train": "train.txt", "eval": "eval.txt",
                    "max_label_len": max(s["max_len"] for s in dataset.manifest["splits"].values()),
                    "native_dir": str(dataset.root / "native" / p.spec.name)},
        "model": r["model"],
        "train": r["train"],
        "eval": r["eval"],
        "export": r["export"],
        "device": {"gpus": gpus},
        "paths": {"events": "events.jsonl", "native_log": "native.log", "checkpoints": "checkpoints",
                  "predictions": "predictions", "exports": "exports"},
    }


def worker_command(spec: BackendSpec, python: Path, job_path: Path) -> list[str]:
    bootstrap = Path(ocrbench.__file__).parent / "worker" / "bootstrap.py"
    top = spec.worker.split(".")[0]
    return [str(python), str(bootstrap),
            "--package", f"ocrbench={Path(ocrbench.__file__).parent}",
            "--package", f"{top}={spec.package_root}",
            spec.worker, str(job_path)]


class Runner:
    """Runs one plan end to end and returns the path of its metrics.json."""

    def __init__(self, p: Plan, out: Path, gpus: int, python_override: str | None, command: list[str],
                 console, resume_dir: Path | None = None):
        self.p = p
        self.out = out.resolve()   # the worker runs inside the run directory: every path it gets is absolute
        self.gpus = gpus
        self.python_override = python_override or p.recipe.runtime.python.get(p.spec.name)
        self.command = command
        self.console = console
        self.resume_dir = resume_dir

    def run(self) -> tuple[Path, dict]:
        spec = self.p.spec
        check_gpus(self.gpus)
        python, version = envs.resolve_python(spec, self.python_override)
        dataset = datasets.prepare(self.p.resolved["data"], self.p.base_dir, log=self.console.print)
        run_dir = self.resume_dir or new_run_dir(self.out, self.p.recipe.name, spec.name)
        created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        job = job_spec(self.p, run_dir, dataset, self.gpus, resume=self.resume_dir is not None)
        if self.resume_dir is None:
            atomic.write_text(run_dir / "recipe.yaml", yaml.safe_dump(self.p.resolved, sort_keys=False,
                                                                      allow_unicode=True))
        atomic.write_json(run_dir / "job.json", job)
        hw = hardware.describe()
        atomic.write_json(run_dir / "environment.json", {
            "ocrbench": ocrbench.__version__, "core_python": sys.version.split()[0],
            "worker_python": str(python), "framework": spec.distribution, "framework_version": version,
            "hardware": hw, "command": self.command})
        (run_dir / "metrics.json").unlink(missing_ok=True)  # a resumed run is incomplete until it ends
        self.console.print(f"run: {run_dir}")
        scorer = self._scorer(run_dir, dataset)  # scores each eval file once: live display, then metrics
        failure = None
        try:
            returncode = self._follow(spec, python, run_dir, scorer)
            if returncode != 0 and not read_events(run_dir / "events.jsonl"):
                failure = {"type": "WorkerError", "stage": "worker",
                           "message": f"the worker exited with code {returncode} before reporting anything"}
        except KeyboardInterrupt:
            failure = {"type": "Interrupted", "message": "interrupted by the user", "stage": "worker"}
        metrics = self._metrics(run_dir, dataset, scorer, hw, created, failure)
        return run_dir / "metrics.json", metrics

    def _scorer(self, run_dir: Path, dataset: datasets.PreparedDataset) -> EvalScorer:
        protocol = Protocol(**self.p.resolved["eval"]["protocol"])
        return EvalScorer(run_dir, dataset.labels("eval"), protocol, dataset.charset)

    def _follow(self, spec: BackendSpec, python: Path, run_dir: Path, scorer: EvalScorer,
                job_name: str = "job.json", events_name: str = "events.jsonl") -> int:
        """Start the worker and follow its events until it exits; returns its exit code."""
        from ocrbench.progress import EventProgress

        command = worker_command(spec, python, run_dir / job_name)
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONNOUSERSITE="1")
        if self.gpus == 0:
            env["CUDA_VISIBLE_DEVICES"] = ""
        if self.p.recipe.train.threads:  # frameworks that size their pools at import (MXNet) read this
            env["OMP_NUM_THREADS"] = str(self.p.recipe.train.threads)
        events_path = run_dir / events_name
        events_path.touch()
        with open(run_dir / "native.log", "ab") as log, EventProgress(self.console, scorer) as progress:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=run_dir, env=env)
            try:
                with events_path.open(encoding="utf-8") as stream:
                    stream.seek(0, os.SEEK_END)
                    pending = ""
                    while True:
                        chunk = stream.read()
                        pending += chunk
                        *lines, pending = pending.split("\n")
                        for line in lines:
                            if line.strip():
                                progress.handle(json.loads(line))
                        if process.poll() is not None and not chunk:
                            break
                        if not chunk:
                            time.sleep(POLL_S)
            except BaseException:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise
        return process.returncode

    def _metrics(self, run_dir: Path, dataset, scorer: EvalScorer, hw: dict, created: str,
                 failure: dict | None) -> dict:
        events = read_events(run_dir / "events.jsonl")
        context = dict(run_id=run_dir.name, recipe=self.p.resolved,
                       recipe_hash=self.p.recipe.content_hash(),
                       recipe_path=str(self.p.recipe_path) if self.p.recipe_path else None,
                       spec_framework=self.p.spec.framework, command=self.command, hardware=hw,
                       dataset={**dataset.manifest, "dir": str(dataset.root)}, events=events, created=created)
        try:
            metrics = assemble(**context, scorer=scorer, failure=failure)
        except OcrbenchError as exc:  # e.g. a predictions file that does not match the eval split
            metrics = assemble(**context, scorer=None, failure={"type": "ScoringError", "message": exc.message,
                                                                "stage": "scoring"})
        neutral.attach_parity(metrics, run_dir, dataset.root, Charset(dataset.charset),
                              Protocol(**self.p.resolved["eval"]["protocol"]))
        validate_metrics(metrics)
        atomic.write_json(run_dir / "metrics.json", metrics)
        return metrics


def export_run(run_dir: Path, formats: list[str] | None, console, command: list[str]) -> tuple[dict, list[str]]:
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
    job = json.loads((run_dir / "job.json").read_text())
    p = plan(validate_data(data, str(run_dir / "recipe.yaml")), Path(job["recipe_path"]) if job.get("recipe_path") else None)
    dataset = datasets.open_prepared(Path(job["dataset"]["dir"]))
    runner = Runner(p, run_dir.parent, 0, None, command, console, resume_dir=run_dir)
    python, _ = envs.resolve_python(p.spec, runner.python_override)
    atomic.write_json(run_dir / "job-export.json", {**job, "stage": "export", "resume": False,
                                                    "run_dir": str(run_dir), "run_id": run_dir.name,
                                                    "export": p.resolved["export"], "device": {"gpus": 0},
                                                    "paths": {**job["paths"], "events": "events-export.jsonl"}})
    (run_dir / "events-export.jsonl").unlink(missing_ok=True)
    runner._follow(p.spec, python, run_dir, runner._scorer(run_dir, dataset), "job-export.json", "events-export.jsonl")
    events = read_events(run_dir / "events-export.jsonl")
    failed = [e for e in events if e["event"] == "error"]
    if failed or not any(e["event"] == "done" for e in events):
        reason = failed[-1]["message"] if failed else "the worker ended without finishing"
        raise OcrbenchError(f"export of {run_dir} failed: {reason}", hint=f"details in {run_dir / 'native.log'}")
    metrics = json.loads(metrics_path.read_text())
    exported = [e["format"] for e in events if e["event"] == "export"]
    for event in (e for e in events if e["event"] == "export"):
        metrics["exports"] = [x for x in metrics["exports"] if x["format"] != event["format"]] + [
            export_record(event)]
    neutral.attach_parity(metrics, run_dir, dataset.root, Charset(dataset.charset),
                          Protocol(**p.resolved["eval"]["protocol"]))
    validate_metrics(metrics)
    atomic.write_json(metrics_path, metrics)
    return metrics, exported


def load_run(run_dir: Path) -> tuple[Recipe, dict]:
    """The resolved recipe and job spec of an existing run (for --resume)."""
    recipe_file, job_file = run_dir / "recipe.yaml", run_dir / "job.json"
    if not recipe_file.is_file() or not job_file.is_file():
        raise OcrbenchError(f"--resume {run_dir}: not a run directory (no recipe.yaml / job.json)")
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file() and json.loads(metrics_file.read_text()).get("status") == "ok":
        raise OcrbenchError(f"--resume {run_dir}: this run already completed (metrics.json status ok)",
                            hint="start a new run instead; a completed run is never overwritten")
    data = yaml.safe_load(recipe_file.read_text(encoding="utf-8"))
    return validate_data(data, str(recipe_file)), json.loads(job_file.read_text())
