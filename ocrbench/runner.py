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

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable

import yaml

import ocrbench
from ocrbench import (atomic, ctc_feasibility, datasets, distributed, envs, export_parity, hardware,
                      processes, tracking, weights)
from ocrbench.backend import BackendSpec
from ocrbench.codec import Charset
from ocrbench.errors import LOW_SPACE_BYTES, OcrbenchError, disk_full_error, free_bytes
from ocrbench.job import Dataset as JobDataset
from ocrbench.job import Distributed, Job
from ocrbench.metrics import Protocol
from ocrbench.plan import Plan, check_topology, resolve_cache
from ocrbench.recipe import Recipe, validate_data
from ocrbench.results import EvalScorer, assemble, read_events, validate_metrics
from ocrbench.tracking import Tracking


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


def job_spec(p: Plan, run_dir: Path, dataset: datasets.PreparedDataset, launch: distributed.Launch,
             resume: bool, ctc: ctc_feasibility.Feasibility | None = None) -> Job:
    """The file contract between core and worker (``ocrbench.job``, docs/backends.md). ``train`` holds what
    one device uses: the per-device batch and the scaled learning rate (the recipe's values are in
    ``distributed``, made from the launch's ``job`` dict here)."""
    r = p.resolved
    dist = Distributed.from_json(launch.job)
    train = {**r["train"], "batch_size": dist.per_device_batch,
             "optimizer": {**r["train"]["optimizer"], "lr": dist.lr}}
    train["threads"] = process_threads(train["threads"], launch.job)
    return Job(
        run_id=run_dir.name,
        run_dir=run_dir,
        backend=p.spec.name,
        recipe_path=str(p.recipe_path) if p.recipe_path else None,
        resume=resume,
        dataset=JobDataset(dir=dataset.root, fingerprint=dataset.fingerprint, charset=dataset.charset,
                           online=r["data"] if r["data"].get("online") else None,
                           max_label_len=max(s["max_len"] for s in dataset.manifest["splits"].values()),
                           train=ctc.train if ctc else "train.txt",
                           cache=resolve_cache(r["data"]["cache"], dataset.manifest["splits"]["train"]["n"],
                                               r["model"]["params"]),
                           # a filtered train split has its own native copy
                           native_dir=dataset.root / "native" / (
                               f"{p.spec.name}-ctc{ctc.steps}" if ctc and ctc.filtered else p.spec.name)),
        model=r["model"],
        train=train,
        eval=r["eval"],
        export=r["export"],
        gpus=dist.nproc_per_node if dist.device == "gpu" else 0,
        distributed=dist,
    )


def worker_args(spec: BackendSpec, job_path: Path) -> list[str]:
    """The worker's command after the interpreter: the bootstrap script, the packages it may import, the
    worker module and the job spec (every launcher runs this)."""
    bootstrap = Path(ocrbench.__file__).parent / "worker" / "bootstrap.py"
    top = spec.worker.split(".")[0]
    return [str(bootstrap), "--package", f"ocrbench={Path(ocrbench.__file__).parent}",
            "--package", f"{top}={spec.package_root}", spec.worker, str(job_path)]


class Runner:
    """Runs one plan end to end and returns the path of its metrics.json. On a node other than node 0
    of a multi-machine run it starts this node's share of the native launch and returns no metrics
    (node 0 writes them)."""

    def __init__(self, p: Plan, out: Path, topology: distributed.Topology, python_override: str | None,
                 command: list[str], console, resume_dir: Path | None = None,
                 mlflow: Tracking | None = None):
        self.p = p
        self.mlflow = mlflow
        self.out = out.resolve()   # the worker runs inside the run directory: every path it gets is absolute
        self.topology = topology
        self.python_override = python_override or p.recipe.runtime.python.get(p.spec.name)
        self.command = command
        self.console = console
        self.resume_dir = resume_dir
        self.ctc: ctc_feasibility.Feasibility | None = None   # set once the dataset is prepared

    def launch(self, python: Path, run_dir: Path, job_name: str = "job.json") -> distributed.Launch:
        """This node's native launch of the worker, with the batch/lr arithmetic and the environment the
        core adds (``--print-command`` shows exactly this)."""
        t = self.topology
        origin = str(self.p.recipe_path or "recipe")
        launch = distributed.plan_launch(self.p.spec.launcher, t, python,
                                         worker_args(self.p.spec, run_dir / job_name), run_dir)
        launch.job.update(distributed.scaling(self.p.resolved["train"], t.world_size, origin))
        threads = process_threads(self.p.recipe.train.threads, launch.job)
        for process in launch.processes:
            process.env = {**worker_env(t, threads), **process.env}
        return launch

    def run(self) -> tuple[Path | None, dict | None]:
        spec, t = self.p.spec, self.topology
        began = time.perf_counter()
        check_topology(t, spec)
        if self.resume_dir is not None and t.nnodes > 1:
            raise OcrbenchError("--resume continues runs on one machine; a multi-machine run starts afresh")
        python, version = envs.resolve_python(spec, self.python_override)
        # an unusable tracking store fails before anything is prepared or trained
        mlrun = self.mlflow.open(self.p.recipe.name) if self.mlflow and t.node_rank == 0 else None
        dataset = datasets.prepare(self.p.resolved["data"], self.p.base_dir, log=self.console.print)
        self.ctc = self.p.check_ctc(dataset.root)
        if self.ctc.skipped or self.ctc.eval_infeasible:
            self.console.print(f"dataset: {self.ctc.skipped} training label(s) need more than T = "
                               f"{self.ctc.steps} CTC steps and are left out; {self.ctc.eval_infeasible} "
                               "evaluation label(s) cannot be emitted (scored as errors)")
        # a weights file that does not fit the network fails before a run directory is made
        from_file = isinstance(self.p.resolved["model"]["init"], dict)
        init = self.init_weights(None, dataset) if from_file else None
        backend_dir = spec.name if t.node_rank == 0 else f"{spec.name}-node{t.node_rank}"
        run_dir = self.resume_dir or new_run_dir(self.out, self.p.recipe.name, backend_dir)
        created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        launch = self.launch(python, run_dir)
        if self.p.recipe.train.stop_at_target and launch.job["processes"] > 1:
            if self.resume_dir is None:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise OcrbenchError(f"train.stop_at_target stops one worker process; this run has "
                                f"{launch.job['processes']} (a data-parallel run's ranks would wait for each "
                                "other)", hint="leave train.stop_at_target out, or train with one process")
        try:
            hw = self._write_run_files(run_dir, dataset, launch, python, version, init)
        except OcrbenchError:   # e.g. a full disk: a new run directory that cannot be set up is removed
            if self.resume_dir is None:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        self.console.print(f"run: {run_dir}")
        if t.distributed:
            self.console.print(f"distributed: {describe_launch(launch.job)}")
        if t.node_rank > 0:
            return self._follow_node(launch, run_dir)
        scorer = self.make_scorer(run_dir, dataset)  # scores each eval file once: live display, then metrics
        live = self._start_tracking(mlrun, run_dir, dataset, version, scorer) if mlrun else None
        failure = None
        clock = {"worker_began": time.time()}
        worker_began = time.perf_counter()
        try:
            returncode = processes.follow(launch, run_dir, self.console, scorer, on_event=live)
            failure = silent_failure(returncode, run_dir)
        except KeyboardInterrupt:
            failure = {"type": "Interrupted", "message": "interrupted by the user", "stage": "worker"}
        clock["worker_s"] = time.perf_counter() - worker_began
        clock["core_began"] = began
        clock["core_s"] = time.perf_counter() - began   # provisional: _metrics sets the final figure
        metrics = self._metrics(run_dir, dataset, scorer, hw, created, failure, launch.job, clock)
        if mlrun is not None:
            self._finish_tracking(mlrun, run_dir, metrics)
        return run_dir / "metrics.json", metrics

    def _start_tracking(self, mlrun: tracking.MlflowRun, run_dir: Path, dataset: datasets.PreparedDataset,
                        version: str, scorer: EvalScorer) -> tracking.LiveTracking:
        """Open the run's MLflow run (tags, the resolved recipe as params) and follow its events."""
        tags = tracking.run_tags(run_dir, backend=self.p.spec.name, framework=self.p.spec.framework,
                                 version=version, fingerprint=dataset.fingerprint,
                                 world_size=self.topology.world_size)
        mlrun.start(tags, tracking.flatten(self.p.resolved))
        self.console.print(f"mlflow: run {mlrun.run_id} in {mlrun.uri}")
        return tracking.LiveTracking(mlrun, scorer, warn=self.console.print)

    def _finish_tracking(self, mlrun: tracking.MlflowRun, run_dir: Path, metrics: dict) -> None:
        """Final metrics and artifacts; a store that fails here costs the MLflow copy, not the run."""
        try:
            mlrun.finish(run_dir, metrics, tracking.curves_png(run_dir / "metrics.json", metrics))
        except Exception as exc:
            self.console.print(f"[yellow]MLflow: the run's end was not logged ({type(exc).__name__}: "
                               f"{exc}); `ocrbench log mlflow {run_dir}` logs it again[/yellow]")

    def _write_run_files(self, run_dir: Path, dataset: datasets.PreparedDataset, launch: distributed.Launch,
                         python: Path, version: str, init: Path | None) -> dict:
        """recipe.yaml (a new run), job.json and environment.json; a resumed run's old metrics.json is
        removed (it is incomplete until it ends). Returns the hardware description."""
        job = job_spec(self.p, run_dir, dataset, launch, resume=self.resume_dir is not None, ctc=self.ctc)
        job = dataclasses.replace(job, init_weights=init or self.init_weights(run_dir, dataset))
        if self.resume_dir is None:
            atomic.write_text(run_dir / "recipe.yaml", yaml.safe_dump(self.p.resolved, sort_keys=False,
                                                                      allow_unicode=True))
        atomic.write_json(run_dir / "job.json", job.to_json())
        hw = hardware.describe()
        atomic.write_json(run_dir / "environment.json", {
            "ocrbench": ocrbench.__version__, "core_python": sys.version.split()[0],
            "worker_python": str(python), "framework": self.p.spec.distribution, "framework_version": version,
            "hardware": hw, "command": self.command,
            "launch": [{"role": p.role, "argv": p.argv, "env": p.env} for p in launch.processes]})
        (run_dir / "metrics.json").unlink(missing_ok=True)
        return hw

    def init_weights(self, run_dir: Path | None, dataset: datasets.PreparedDataset) -> Path | None:
        """The neutral weights the worker starts from (``model.init``; ``ocrbench.weights.init_file``),
        checked here so that a file that does not fit fails before the worker starts (``shared`` draws
        them into ``run_dir``). A resumed run keeps what it started from (its checkpoint has the
        weights)."""
        model = self.p.resolved["model"]
        if self.resume_dir is not None:
            job_file = self.resume_dir / "job.json"
            return Job.read(job_file).init_weights if job_file.is_file() else None
        return weights.init_file(model["init"], model["params"], dataset.charset,
                                 self.p.resolved["train"]["seed"], self.p.base_dir, run_dir, model["arch"])

    def _follow_node(self, launch: distributed.Launch, run_dir: Path) -> tuple[None, None]:
        """Node k > 0: run this node's processes to the end; its ranks write no results."""
        returncode = processes.follow(launch, run_dir, self.console, None)
        if returncode != 0:
            raise OcrbenchError(f"node {self.topology.node_rank}: the launch ended with exit code "
                                f"{returncode}",
                                hint=f"details in {run_dir / 'native.log'}")
        self.console.print(f"node {self.topology.node_rank}: done; node 0 writes the run's metrics.json")
        return None, None

    def make_scorer(self, run_dir: Path, dataset: datasets.PreparedDataset) -> EvalScorer:
        protocol = Protocol(**self.p.resolved["eval"]["protocol"])
        return EvalScorer(run_dir, dataset.labels("eval"), protocol, dataset.charset)

    def _metrics(self, run_dir: Path, dataset, scorer: EvalScorer, hw: dict, created: str,
                 failure: dict | None, dist: dict, clock: dict) -> dict:
        """metrics.json; ``clock`` holds ``worker_began`` (unix time), ``worker_s`` and ``core_began``
        (``time.perf_counter()`` when ``run`` began), from which the timing record's core figures come."""
        events = read_events(run_dir / "events.jsonl")
        context = dict(run_id=run_dir.name, recipe=self.p.resolved,
                       recipe_hash=self.p.recipe.content_hash(),
                       recipe_path=str(self.p.recipe_path) if self.p.recipe_path else None,
                       spec_framework=self.p.spec.framework, command=self.command, hardware=hw,
                       dataset={**dataset.manifest, "dir": str(dataset.root),
                                "ctc": self.ctc.as_dict() if self.ctc else None},
                       events=events, created=created,
                       distributed=dist, timing=clock)
        try:
            metrics = assemble(**context, scorer=scorer, failure=failure)
        except OcrbenchError as exc:  # e.g. a predictions file that does not match the eval split
            metrics = assemble(**context, scorer=None,
                               failure={"type": "ScoringError", "message": exc.message, "stage": "scoring"})
        export_parity.attach_parity(metrics, run_dir, dataset.root, Charset(dataset.charset),
                              Protocol(**self.p.resolved["eval"]["protocol"]))
        if metrics["timing"] is not None:   # the core's share ends here, with metrics.json written
            metrics["timing"]["core_s"] = time.perf_counter() - clock["core_began"]
            metrics["timing"]["overhead_s"] = max(0.0, metrics["timing"]["core_s"] - clock["worker_s"])
        validate_metrics(metrics)
        atomic.write_json(run_dir / "metrics.json", metrics)
        return metrics


def silent_failure(returncode: int, run_dir: Path) -> dict | None:
    """The failure of a worker that exited with ``returncode`` != 0 without an ``error`` event (killed,
    or unable to write one): what the core can tell, including a full disk under the run directory."""
    events = read_events(run_dir / "events.jsonl")
    if returncode == 0 or any(e["event"] in ("error", "done") for e in events):
        return None
    free = free_bytes(run_dir)
    if free is not None and free < LOW_SPACE_BYTES:
        error = disk_full_error("the run's files", run_dir)
        return {"type": "DiskFullError", "stage": "worker",
                "message": f"the worker exited with code {returncode} without reporting why; {error}"}
    when = "after its last event" if events else "before reporting anything"
    return {"type": "WorkerError", "stage": "worker",
            "message": f"the worker exited with code {returncode} {when}"}


def worker_env(t: distributed.Topology, threads: int | None) -> dict[str, str]:
    """Variables the core sets for every process it starts (the rest of its environment is inherited)."""
    env = {"PYTHONUNBUFFERED": "1", "PYTHONNOUSERSITE": "1"}
    if t.distributed:   # ranks under a launcher check that the core is still there (worker.check_parent)
        env["OCRBENCH_CORE_PID"] = str(os.getpid())
    if t.gpus == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
    if threads:  # frameworks that size their pools at import (MXNet) read this
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def process_threads(recipe_threads: int | None, dist: dict) -> int:
    """Framework threads per worker process: the recipe's ``train.threads`` if set; else the cores this
    process may use (``hardware.available_cores``), divided among the worker processes on this machine
    when several CPU workers share it. Always a number: the job spec and ``OMP_NUM_THREADS`` carry it."""
    if recipe_threads:
        return recipe_threads
    per_node = dist["processes"] // dist["nnodes"]
    cores = hardware.available_cores()
    if dist["device"] != "cpu" or per_node <= 1:
        return cores
    return max(1, cores // per_node)


def describe_launch(dist: dict) -> str:
    """One line: world size, launcher and engine, batch and learning rate."""
    return (f"world size {dist['world_size']} ({dist['nnodes']} node(s) x {dist['nproc_per_node']} "
            f"{dist['device']}), {dist['launcher']}: {dist.get('engine', 'one process')}; per-device batch "
            f"{dist['per_device_batch']}, global batch {dist['global_batch']}, lr {dist['lr']:g} "
            f"(lr_scaling {dist['lr_scaling']})")


STAMP_PLACEHOLDER = "<YYYYmmdd-HHMMSS>"


def launch_commands(p: Plan, t: distributed.Topology, out: Path, python_override: str | None,
                    nodes: Iterable[int] | None = None) -> str:
    """``--print-command``: the native launch on each of ``nodes`` (default: every node) — commands and
    the environment the core adds — as shell lines, without running anything, checking GPUs or needing
    the backend's env installed."""
    check_topology(t, p.spec, check_visible=False)
    override = python_override or p.recipe.runtime.python.get(p.spec.name)
    python = Path(override) if override else envs.env_python(envs.env_path(p.spec))
    lines = []
    for node in range(t.nnodes) if nodes is None else nodes:
        node_t = dataclasses.replace(t, node_rank=node)
        backend_dir = p.spec.name if node == 0 else f"{p.spec.name}-node{node}"
        run_dir = out.resolve() / f"{p.recipe.name}-{backend_dir}-{STAMP_PLACEHOLDER}"
        launch = Runner(p, out, node_t, override, [], None).launch(python, run_dir)
        if not lines:
            lines.append(f"# {p.spec.name}: {describe_launch(launch.job)}")
            if t.master_port is None and t.nnodes == 1 and t.distributed:
                lines.append("# the rendezvous port is picked free at each run unless --master-port is given")
        where = f"node {node} of {t.nnodes}: " if t.nnodes > 1 else ""
        lines.append(f"# {where}run directory {run_dir} (created at start, with job.json)")
        lines += [f"{process.shell()}{'  &' if process is not launch.processes[-1] else ''}"
                  for process in launch.processes]
    return "\n".join(lines) + "\n"


def load_run(run_dir: Path) -> tuple[Recipe, Job]:
    """The resolved recipe and job spec of an existing run (for --resume)."""
    recipe_file, job_file = run_dir / "recipe.yaml", run_dir / "job.json"
    if not recipe_file.is_file() or not job_file.is_file():
        raise OcrbenchError(f"--resume {run_dir}: not a run directory (no recipe.yaml / job.json)")
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file() and json.loads(metrics_file.read_text()).get("status") == "ok":
        raise OcrbenchError(f"--resume {run_dir}: this run already completed (metrics.json status ok)",
                            hint="start a new run instead; a completed run is never overwritten")
    data = yaml.safe_load(recipe_file.read_text(encoding="utf-8"))
    return validate_data(data, str(recipe_file)), Job.read(job_file)
