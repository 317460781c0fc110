"""Build metrics.json from a run's events and prediction files, and validate it against the schema.

The worker reports what happened (timings, losses, file paths); every accuracy figure here is computed by
:mod:`ocrbench.metrics` from the prediction files — the same code for every backend.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ocrbench.errors import OcrbenchError
from ocrbench.metrics import Protocol, score_files

SCHEMA_ID = "ocrbench.metrics/1"
DECODER = "greedy CTC (argmax, merge repeats, drop blank 0) in ocrbench.codec"


@lru_cache(maxsize=1)
def schema() -> dict:
    """The versioned JSON Schema of metrics.json shipped in the package."""
    text = resources.files("ocrbench").joinpath("schemas/metrics-1.schema.json").read_text()
    return json.loads(text)


def validate_metrics(metrics: dict) -> None:
    """Raise OcrbenchError naming the first key that breaks the schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(metrics), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path) or "(top level)"
        raise OcrbenchError(f"metrics.json does not match {SCHEMA_ID}: {where}: {first.message}")


def read_events(path: Path) -> list[dict]:
    """All complete events of a run (a torn last line from a killed worker is ignored)."""
    events = []
    if not path.is_file():
        return events
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


class EvalScorer:
    """Scores prediction files against the eval split, caching per file (live progress reuses it)."""

    def __init__(self, run_dir: Path, labels: dict[str, str], protocol: Protocol, charset: str):
        self.run_dir = run_dir
        self.labels = labels
        self.protocol = protocol
        self.charset = charset
        self._cache: dict[str, dict] = {}

    def __call__(self, relpath: str) -> dict:
        if relpath not in self._cache:
            self._cache[relpath] = score_files(self.run_dir / relpath, self.labels, self.protocol,
                                               self.charset)
        return self._cache[relpath]


def _last(events: list[dict], name: str) -> dict | None:
    found = [e for e in events if e["event"] == name]
    return found[-1] if found else None


def latest_attempt(events: list[dict]) -> list[dict]:
    """The events of the worker's latest start (a resumed run holds one run of events per attempt)."""
    starts = [i for i, e in enumerate(events) if e["event"] == "start"]
    return events[starts[-1]:] if starts else events


def build_curve(events: list[dict], scorer: EvalScorer | None) -> list[dict]:
    """The training curve, one point per epoch end and per evaluation inside an epoch
    (``train.eval_every_steps``), in step order (the latest attempt wins after a resume), with eval
    scores where evaluated. An epoch's point has that epoch's mean loss and training seconds; a point
    inside an epoch has the epoch's mean loss and training seconds so far (an epoch that
    ``stop_at_target`` ended at such an evaluation has one point for both)."""
    points: dict[tuple[int, int], dict] = {}   # (epoch, step) -> point
    ends: dict[int, tuple[int, int]] = {}      # epoch -> its end point's key

    def figures(event: dict) -> dict:
        return {k: event[k] for k in ("epoch", "step", "loss", "lr", "wall_s", "train_s")}

    def score(point: dict, event: dict) -> None:
        if scorer is not None:
            scores = scorer(event["predictions"])
            point.update(eval_seq_acc=scores["seq_acc"], eval_char_acc=scores["char_acc"],
                         eval_ned=scores["ned"], eval_wall_s=event["wall_s"])

    for event in events:
        if event["event"] == "epoch_end":
            key = ends[event["epoch"]] = (event["epoch"], event["step"])
            points.setdefault(key, {}).update(figures(event))
        elif event["event"] == "eval" and event.get("mid_epoch"):
            key = (event["epoch"], event["step"])
            points[key] = figures(event)
            score(points[key], event)
        elif event["event"] == "eval" and event["epoch"] in ends:
            score(points[ends[event["epoch"]]], event)
    return [points[k] for k in sorted(points, key=lambda k: (k[1], k[0]))]


MAX_LOSS_POINTS = 500


def build_loss_curve(events: list[dict]) -> list[dict]:
    """Training loss against the global step from the logged step events (``train.log_every``), the
    latest attempt winning for a step logged twice (resume); thinned evenly to at most MAX_LOSS_POINTS."""
    by_step = {e["step"]: e["loss"] for e in events if e["event"] == "step" and e.get("loss") is not None}
    points = [{"step": step, "loss": by_step[step]} for step in sorted(by_step)]
    stride = -(-len(points) // MAX_LOSS_POINTS)  # ceil
    return points[::stride] if stride > 1 else points


def steady_samples_per_s(events: list[dict], batch: int, processes: int = 1) -> float | None:
    """Training images per second after warm-up, from the ``step`` events (``train.log_every``) of the
    latest attempt: within its last epoch that logged two or more steps, from the first step event past a
    quarter of that epoch's logged steps to the last one, in the epoch's training seconds (evaluations
    inside the epoch left out; wall time for events written before they carried ``train_s``) — so a
    framework's graph compilation, first-step allocations and first-epoch image decoding (with
    ``data.cache: memory``) are left out. ``batch`` is the per-process batch; None when there are too few
    step events or they span no time."""
    steps = [e for e in latest_attempt(events) if e["event"] == "step"]
    if not steps:
        return None
    last_epoch = [e for e in steps if e.get("epoch") == steps[-1].get("epoch")]
    logged = last_epoch if len(last_epoch) >= 2 else steps
    if len(logged) < 2:
        return None
    quarter = (logged[-1]["step"] - logged[0]["step"]) / 4
    first = next(e for e in logged if e["step"] - logged[0]["step"] >= quarter)
    last = logged[-1]
    clock = "train_s" if "train_s" in first and "train_s" in last else "time"   # train_s: evals left out
    if last[clock] <= first[clock] or last["step"] <= first["step"]:
        return None
    return (last["step"] - first["step"]) * batch * processes / (last[clock] - first[clock])


TIMER_KEYS = ("data_s", "step_s", "other_s", "cpu_s")


def timing_record(events: list[dict], core: dict | None) -> dict | None:
    """Where this attempt's time went (seconds), for ``ocrbench bench`` and the README's overhead figures:
    ``core_s`` (the core's ``run`` from start to metrics.json), ``worker_s`` (the worker processes' wall
    time), ``overhead_s`` (their difference: the core's own share), ``startup_s`` (worker start to its
    ``start`` event: imports and device setup), ``prepare_s`` (native data), ``build_s`` (model and
    pipeline), ``train_s`` and, inside it, the epochs' ``data_s``/``step_s``/``other_s``
    (``EpochContext.timers``), ``eval_s``, ``checkpoint_s``, ``export_s`` (final predictions and exports);
    ``cpu_s`` (the training process's CPU time while training), ``threads`` (what the worker set) and
    ``cpu_utilisation`` (``cpu_s / train_s``: cores kept busy on average). None without a ``core`` record
    (files written before ocrbench timed runs); absent values are null."""
    if core is None:
        return None
    attempt = latest_attempt(events)
    by_name = {e["event"]: e for e in attempt}   # the last of each kind
    epochs = [e for e in attempt if e["event"] == "epoch_end"]
    totals = {k: sum(e.get("timers", {}).get(k, 0.0) for e in epochs) if epochs else None for k in TIMER_KEYS}
    train_s = sum(e["train_s"] for e in epochs) if epochs else None

    def between(first: str, last: str) -> float | None:
        if first in by_name and last in by_name:
            return max(0.0, by_name[last]["time"] - by_name[first]["time"])
        return None

    def summed(name: str) -> float:
        return sum(e.get("seconds", 0.0) for e in attempt if e["event"] == name)

    start = by_name.get("start")
    cpu = totals["cpu_s"]
    return {"core_s": core["core_s"], "worker_s": core["worker_s"],
            "overhead_s": max(0.0, core["core_s"] - core["worker_s"]),
            "startup_s": max(0.0, start["time"] - core["worker_began"]) if start else None,
            "prepare_s": by_name.get("prepared", {}).get("seconds"), "build_s": between("prepared", "model"),
            "train_s": train_s, **{k: totals[k] for k in ("data_s", "step_s", "other_s")},
            "eval_s": summed("eval"), "checkpoint_s": summed("checkpoint"),
            "export_s": between("train_end", "done"), "cpu_s": cpu,
            "threads": start.get("threads") if start else None,
            "cpu_utilisation": cpu / train_s if cpu is not None and train_s else None}


def time_to_target(curve: list[dict], target: float | None) -> float | None:
    """Wall seconds from training start to the end of the first evaluation reaching ``target``."""
    if target is None:
        return None
    for point in curve:
        if point.get("eval_seq_acc") is not None and point["eval_seq_acc"] >= target:
            return point["eval_wall_s"]
    return None


def export_record(event: dict) -> dict:
    """metrics.json's entry for one ``export`` event."""
    files = event.get("files") or []
    record = {"format": event["format"], "ok": event["ok"], "path": files[0] if files else None,
              "files": files, "bytes": event.get("bytes"), "error": event.get("error")}
    if event.get("predictions"):
        record["predictions"] = event["predictions"]
    return record


DISTRIBUTED_KEYS = ("world_size", "nnodes", "nproc_per_node", "device", "launcher", "engine", "comm",
                    "kvstore", "strategy", "processes", "batch_scope", "per_device_batch", "global_batch",
                    "lr_scaling", "base_lr", "lr")


def distributed_record(dist: dict | None, start: dict) -> dict | None:
    """metrics.json's ``distributed`` block: how many devices and processes trained, through which
    native engine, and the batch / learning-rate arithmetic (from the job spec), plus what the rank-0
    worker reported about its engine (``start.distributed``)."""
    if not dist:
        return None
    record = {k: dist[k] for k in DISTRIBUTED_KEYS if k in dist}
    return {**record, **(start.get("distributed") or {})}


def init_record(init, event: dict | None) -> dict:
    """metrics.json ``model.init``: how the run's weights started (``mode`` framework, shared or file) and,
    for neutral weights, the file, the sha256 of its tensors and who wrote it (the worker's ``init``
    event; the first attempt's, as a resumed run continues from it)."""
    mode = init if isinstance(init, str) else "file"
    if event is None:
        return {"mode": mode}
    return {"mode": mode, "path": event.get("path"), "sha256": event.get("sha256"),
            "source": event.get("source")}


def assemble(*, run_id: str, recipe: dict, recipe_hash: str, recipe_path: str | None,
             spec_framework: str, command: list[str], hardware: dict, dataset: dict | None,
             events: list[dict], scorer: EvalScorer | None, failure: dict | None, created: str,
             distributed: dict | None = None, timing: dict | None = None) -> dict[str, Any]:
    """The metrics.json document of a run, complete or failed."""
    attempt = latest_attempt(events)  # outcome of this attempt; the curve spans every attempt (resume)
    start = _last(attempt, "start") or {}
    model = _last(attempt, "model") or {}
    prepared = _last(attempt, "prepared") or {}
    train_begin = _last(attempt, "train_begin") or {}
    train_end = _last(attempt, "train_end")
    done = _last(attempt, "done")
    error_event = _last(attempt, "error")
    checkpoint = _last(events, "checkpoint")
    final = _last(attempt, "predictions")
    evals = [e for e in attempt if e["event"] == "eval"]
    curve = build_curve(events, scorer)
    target = recipe["train"]["target_acc"]

    if failure is None and error_event is not None:
        failure = {"type": error_event["type"], "message": error_event["message"], "stage": "worker"}
    if failure is None and done is None:
        failure = {"type": "WorkerError", "message": "the worker ended without reporting completion",
                   "stage": "worker"}

    scores = {"n": None, "seq_acc": None, "char_acc": None, "cer": None, "ned": None}
    if failure is None and final is not None and scorer is not None:
        scores = scorer(final["path"])
    rss = (done or error_event or {}).get("peak_rss_mb")
    samples_per_s = None
    if train_end and train_end["train_s"] > 0:
        samples_per_s = train_end["samples"] / train_end["train_s"]

    exports = []
    for event in attempt:
        if event["event"] == "export":
            exports = [x for x in exports if x["format"] != event["format"]]
            exports.append(export_record(event))
    if failure is not None:
        failure.setdefault("log", "native.log")

    return {
        "schema": SCHEMA_ID,
        "run_id": run_id,
        "status": "ok" if failure is None else "failed",
        "error": failure,
        "created": created,
        "command": command,
        "recipe": {"name": recipe["name"], "hash": recipe_hash, "path": recipe_path, "resolved": recipe},
        "backend": {"name": recipe["backend"], "framework": spec_framework, "version": start.get("version"),
                    "arch": recipe["model"]["arch"], "python": start.get("python"),
                    "device": start.get("device")},
        "dataset": {"fingerprint": dataset["fingerprint"] if dataset else None,
                    "charset": dataset["charset"] if dataset else None,
                    "source": dataset["source"] if dataset else None,
                    "dir": dataset.get("dir") if dataset else None,
                    "splits": {k: v["n"] for k, v in dataset["splits"].items()} if dataset else None,
                    "ctc": dataset.get("ctc") if dataset else None},
        "hardware": hardware,
        "seed": recipe["train"]["seed"],
        "world_size": distributed["world_size"] if distributed else 1,
        "distributed": distributed_record(distributed, start),
        "train": {
            "epochs": train_end["epochs"] if train_end else (curve[-1]["epoch"] if curve else None),
            "steps": train_end["steps"] if train_end else (curve[-1]["step"] if curve else None),
            "samples": train_end["samples"] if train_end else None,
            "batch_size": recipe["train"]["batch_size"],
            "wall_s": train_end["wall_s"] if train_end else None,
            "train_s": train_end["train_s"] if train_end else None,
            "prepare_s": prepared.get("seconds"),
            "samples_per_s": samples_per_s,
            "peak_rss_mb": rss,
            "target_acc": target,
            "time_to_target_s": time_to_target(curve, target),
            "curve": curve,
            "loss_curve": build_loss_curve(events),
            "loss": train_begin.get("loss"),
        },
        "eval": {
            "protocol": {**recipe["eval"]["protocol"], "decoder": DECODER},
            **scores,
            "images_per_s": evals[-1]["images_per_s"] if evals and failure is None else None,
            "predictions": final["path"] if final and failure is None else None,
        },
        "model": {"params": model.get("params"), "classes": model.get("classes"),
                  "arch_params": recipe["model"]["params"], "input": model.get("input"),
                  "checkpoint_bytes": checkpoint["bytes"] if checkpoint else None,
                  "init": init_record(recipe["model"].get("init", "framework"), _last(events, "init"))},
        "exports": exports,
        "timing": timing_record(events, timing),
    }
