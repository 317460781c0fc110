"""Logging ocrbench runs to MLflow, from the core (the worker environments never import MLflow).

One ocrbench run is one MLflow run, in the experiment named after the recipe (``--backend all`` puts one
MLflow run per backend in it, so MLflow's own compare view works). What goes where:

- **params**: the resolved recipe flattened to dotted keys (``train.optimizer.lr``), values as text;
- **tags**: ``ocrbench.backend``, ``ocrbench.framework`` and ``ocrbench.framework_version``,
  ``ocrbench.dataset_fingerprint``, ``ocrbench.world_size``, ``ocrbench.run_dir``, ``ocrbench.status``,
  and ``mlflow.runName`` = the run id;
- **metrics with their global step**: from every ``step`` event ``train_loss``, ``lr`` and
  ``samples_per_s``; from every per-epoch evaluation ``epoch``, ``eval_seq_acc``, ``eval_char_acc``,
  ``eval_ned`` (1 − normalised edit distance) and ``epoch_loss``;
- **at the end**: the final figures (``final_seq_acc``, ``final_char_acc``, ``final_cer``, ``final_ned``,
  ``train_wall_s``, ``train_samples_per_s``, ``peak_rss_mb``, ``time_to_target_s`` when reached) and as
  artifacts ``metrics.json``, ``recipe.yaml``, ``curves.png`` (the run's curves) and ``exports/``.

Live (``ocrbench run --mlflow``) the step metrics are logged as the worker's events arrive and the eval
points as the core scores them; afterwards (``ocrbench log mlflow RUN_DIR``) the same metrics are read
from the run's ``events.jsonl`` and ``metrics.json``. Both go through :class:`MlflowRun`, so a run
logged either way looks the same in MLflow.

MLflow is an optional extra (``pip install 'ocrbench[mlflow]'``); without it :func:`require_mlflow`
raises a named error. The tracking URI is the one given, else ``$MLFLOW_TRACKING_URI``, else MLflow's own
default (MLflow 3: ``sqlite:///mlflow.db`` in the current directory, which ``mlflow ui`` opens as it is).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocrbench.errors import OcrbenchError

INSTALL_HINT = "pip install 'ocrbench[mlflow]' (in ocrbench's own environment; the backend envs need nothing)"
BATCH = 200               # metrics per MLflow call (log_batch accepts up to 1,000)
MAX_PARAM_CHARS = 6000    # MLflow's limit on one param value


def require_mlflow():
    """The ``mlflow`` module, or a named error saying how to install it."""
    try:
        import mlflow
    except ImportError as exc:
        raise OcrbenchError(f"--mlflow needs MLflow, which is not installed here ({exc})",
                            hint=INSTALL_HINT) from None
    return mlflow


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts as dotted keys (``{"train": {"lr": 1}}`` -> ``{"train.lr": "1"}``); lists and
    scalars become their text, cut to MLflow's limit on a param value."""
    if isinstance(tree, dict):
        flat: dict[str, str] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    text = "null" if tree is None else str(tree)
    return {prefix.rstrip("."): text[:MAX_PARAM_CHARS]}


def step_metrics(event: dict) -> list[tuple[str, float, int]]:
    """``(key, value, global step)`` for one worker event (``step`` and ``epoch_end``; others none)."""
    if event["event"] == "step":
        values = {"train_loss": event.get("loss"), "lr": event.get("lr"),
                  "samples_per_s": event.get("samples_per_s")}
    elif event["event"] == "epoch_end":
        values = {"epoch": event["epoch"], "epoch_loss": event.get("loss")}
    else:
        return []
    return [(key, float(value), int(event["step"])) for key, value in values.items() if value is not None]


def eval_metrics(point: dict) -> list[tuple[str, float, int]]:
    """``(key, value, global step)`` of one scored evaluation (a metrics.json ``train.curve`` point)."""
    keys = ("eval_seq_acc", "eval_char_acc", "eval_ned")
    return [(key, float(point[key]), int(point["step"])) for key in keys if point.get(key) is not None]


def final_metrics(metrics: dict) -> dict[str, float]:
    """The figures of a finished metrics.json worth a number in MLflow (missing ones left out)."""
    e, t = metrics.get("eval") or {}, metrics.get("train") or {}
    values = {"final_seq_acc": e.get("seq_acc"), "final_char_acc": e.get("char_acc"),
              "final_cer": e.get("cer"), "final_ned": e.get("ned"), "train_wall_s": t.get("wall_s"),
              "train_samples_per_s": t.get("samples_per_s"), "peak_rss_mb": t.get("peak_rss_mb"),
              "time_to_target_s": t.get("time_to_target_s"), "eval_images_per_s": e.get("images_per_s")}
    return {key: float(value) for key, value in values.items() if value is not None}


def run_tags(run_dir: Path, *, backend: str, framework: str, version: str | None, fingerprint: str | None,
             world_size: int, status: str = "running") -> dict[str, str]:
    """The tags that identify a run in MLflow (module docstring)."""
    return {"mlflow.runName": run_dir.name, "ocrbench.backend": backend, "ocrbench.framework": framework,
            "ocrbench.framework_version": version or "unknown",
            "ocrbench.dataset_fingerprint": fingerprint or "unknown", "ocrbench.world_size": str(world_size),
            "ocrbench.run_dir": str(run_dir.resolve()), "ocrbench.status": status}


def tags_of_finished(run_dir: Path, metrics: dict) -> dict[str, str]:
    """:func:`run_tags` from a finished run's metrics.json."""
    backend = metrics["backend"]
    return run_tags(run_dir, backend=backend["name"], framework=backend["framework"],
                    version=backend["version"], fingerprint=metrics["dataset"]["fingerprint"],
                    world_size=metrics.get("world_size") or 1, status=metrics["status"])


def curves_png(metrics_path: Path, metrics: dict) -> bytes | None:
    """The run's curves as ``ocrbench compare --plot`` draws them (None for a run without a curve)."""
    if not (metrics.get("train") or {}).get("curve"):
        return None
    from ocrbench import compare
    from ocrbench.plots import figure_png

    return figure_png(compare.build([compare.Run(metrics_path, metrics)], force=True))


@dataclass(frozen=True)
class Tracking:
    """Where ``ocrbench run --mlflow`` logs: ``uri`` (None: ``$MLFLOW_TRACKING_URI`` or MLflow's
    default) and ``experiment`` (None: the recipe's name)."""
    uri: str | None = None
    experiment: str | None = None

    def open(self, recipe_name: str) -> "MlflowRun":
        return MlflowRun(self.uri, self.experiment or recipe_name)


class MlflowRun:
    """One ocrbench run as one MLflow run, through ``MlflowClient`` (no global active-run state, so
    several can be open in one process). Metrics are buffered and sent in batches; a failure to reach the
    tracking store while training is reported once and does not stop the run."""

    def __init__(self, uri: str | None, experiment: str):
        mlflow = require_mlflow()
        from mlflow.tracking import MlflowClient

        self.uri = uri or mlflow.get_tracking_uri()
        self._entities = mlflow.entities
        try:
            self.client = MlflowClient(self.uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (found.experiment_id if found is not None
                                  else self.client.create_experiment(experiment))
        except Exception as exc:   # any store error: named, before anything is trained
            raise OcrbenchError(f"MLflow tracking URI {self.uri!r}: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}",
                                hint="give a writable URI, e.g. --mlflow sqlite:///mlflow.db or "
                                     "--mlflow http://HOST:5000") from None
        self.run_id: str | None = None
        self._pending: list = []
        self.warned = False

    def start(self, tags: dict[str, str], params: dict[str, str]) -> str:
        """Create the MLflow run with its tags and params; returns its run id."""
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=tags.get("mlflow.runName"))
        self.run_id = run.info.run_id
        items = [self._entities.Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), 100):   # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start:start + 100])
        return self.run_id

    def log(self, values: list[tuple[str, float, int]]) -> None:
        """Queue ``(key, value, step)`` metrics; sent once a batch is full (and by :meth:`flush`)."""
        import time

        now = int(time.time() * 1000)
        self._pending += [self._entities.Metric(key, value, now, step) for key, value, step in values]
        if len(self._pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), BATCH):
            self.client.log_batch(self.run_id, metrics=pending[start:start + BATCH])

    def finish(self, run_dir: Path, metrics: dict, png: bytes | None) -> None:
        """Final metrics, status tag and the artifacts; ends the MLflow run (FINISHED or FAILED)."""
        self.log([(key, value, int((metrics.get("train") or {}).get("steps") or 0))
                  for key, value in final_metrics(metrics).items()])
        self.flush()
        self.client.set_tag(self.run_id, "ocrbench.status", metrics.get("status", "failed"))
        for name in ("metrics.json", "recipe.yaml"):
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        if png is not None:
            with tempfile.TemporaryDirectory() as scratch:
                path = Path(scratch) / "curves.png"
                path.write_bytes(png)
                self.client.log_artifact(self.run_id, str(path))
        if (run_dir / "exports").is_dir() and any((run_dir / "exports").iterdir()):
            self.client.log_artifacts(self.run_id, str(run_dir / "exports"), "exports")
        self.client.set_terminated(self.run_id, "FINISHED" if metrics.get("status") == "ok" else "FAILED")


class LiveTracking:
    """Follows a running worker's events into an :class:`MlflowRun` (``ocrbench run --mlflow``). Eval
    events are scored by the core's ``scorer`` (the one the live display uses, which caches each file)
    and logged at the global step they evaluate (events written before evals carried it: their epoch's
    last step)."""

    def __init__(self, mlrun: MlflowRun, scorer, warn):
        self.mlrun = mlrun
        self.scorer = scorer
        self.warn = warn
        self._epoch_steps: dict[int, int] = {}

    def __call__(self, event: dict) -> None:
        values = step_metrics(event)
        if event["event"] == "epoch_end":
            self._epoch_steps[event["epoch"]] = event["step"]
        elif event["event"] == "eval" and self.scorer is not None:
            try:
                scores = self.scorer(event["predictions"])
            except OcrbenchError:
                scores = {}   # the run's metrics.json reports a predictions file that cannot be scored
            point = {f"eval_{key}": scores.get(key) for key in ("seq_acc", "char_acc", "ned")}
            step = event["step"] if "step" in event else self._epoch_steps.get(event["epoch"], 0)
            values = eval_metrics({"step": step, **point})
        try:
            self.mlrun.log(values)
        except Exception as exc:   # the tracking store went away: training goes on, said once
            if not self.mlrun.warned:
                self.mlrun.warned = True
                self.warn(f"MLflow: could not log ({type(exc).__name__}: {exc}); the run goes on — "
                          "log it afterwards with `ocrbench log mlflow RUN_DIR`")


def replayed_metrics(events: list[dict], curve: list[dict]) -> list[tuple[str, float, int]]:
    """A finished run's step and eval metrics, as live logging would have sent them; a step logged
    twice (a resumed run redoes the steps after its checkpoint) keeps its latest value."""
    latest: dict[tuple[str, int], float] = {}
    for event in events:
        for key, value, step in step_metrics(event):
            latest[key, step] = value
    for point in curve:
        for key, value, step in eval_metrics(point):
            latest[key, step] = value
    return [(key, value, step) for (key, step), value in sorted(latest.items(), key=lambda kv: kv[0][1])]


def log_finished(run_dir: Path, uri: str | None, experiment: str | None = None) -> str:
    """Upload a finished run directory (``ocrbench log mlflow``); returns the MLflow run id. The
    experiment defaults to the recipe's name."""
    import json

    from ocrbench.results import read_events

    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise OcrbenchError(f"{run_dir}: no metrics.json (not a run directory, or a run still going)",
                            hint="give the directory `ocrbench run` printed; a running one can be logged "
                                 "live with `ocrbench run --mlflow` instead")
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    mlrun = MlflowRun(uri, experiment or metrics["recipe"]["name"])
    run_id = mlrun.start(tags_of_finished(run_dir, metrics), flatten(metrics["recipe"]["resolved"]))
    mlrun.log(replayed_metrics(read_events(run_dir / "events.jsonl"), metrics["train"].get("curve") or []))
    mlrun.finish(run_dir, metrics, curves_png(metrics_path, metrics))
    return run_id
