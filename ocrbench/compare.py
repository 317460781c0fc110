"""``ocrbench compare``: runs side by side, from their metrics.json files alone.

This module is the data model — finding and validating metrics files, the parity guards, seed
aggregation, recipe parameters that differ, best values and baseline ratios. ``ocrbench.report`` renders
it (terminal table, markdown, csv, json, html) and ``ocrbench.plots`` draws the curves.

Units: accuracies are fractions in [0, 1]; times are seconds; memory MiB; file sizes MB (10^6 bytes).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ocrbench.errors import OcrbenchError
from ocrbench.results import validate_metrics

HIGHER, LOWER = "higher", "lower"


@dataclass(frozen=True)
class Metric:
    """One numeric column. ``better`` declares once which direction wins (None: not ranked)."""

    key: str
    title: str
    better: str | None
    get: Callable[[dict], float | None]
    digits: int


def _export_bytes(m: dict, native: bool) -> float | None:
    """Size in MB of the run's first successful native (non-ONNX) export, or of its ONNX export."""
    for export in m["exports"]:
        if export["ok"] and export["bytes"] is not None and (export["format"] != "onnx") == native:
            return export["bytes"] / 1e6
    return None


def _onnx_parity(m: dict, key: str) -> float | None:
    """A figure of the ONNX export's parity check in onnxruntime (ocrbench.export_parity), if it ran."""
    for export in m["exports"]:
        if export["format"] == "onnx" and export["ok"]:
            value = (export.get("parity") or {}).get(key)
            return None if value is None else float(value)
    return None


LOSS_UNITS = {"per_sample": "per sample", "per_char": "per char"}


def loss_reduction(m: dict) -> str:
    """How the run's backend reduced its CTC loss, e.g. ``mean, per sample`` (``-``: not recorded)."""
    loss = m["train"].get("loss")
    if not loss:
        return "-"
    return f"{loss['reduction']}, {LOSS_UNITS.get(loss['logged'], loss['logged'])}"


def native_format(m: dict) -> str:
    formats = [x["format"] for x in m["exports"] if x["format"] != "onnx"]
    return formats[0] if formats else "-"


def _mb(nbytes: int | None) -> float | None:
    return None if nbytes is None else nbytes / 1e6


# In reading order: what a comparison is for first (accuracy, speed, memory), sizes and export checks after.
METRICS: tuple[Metric, ...] = (
    Metric("seq_acc", "seq acc", HIGHER, lambda m: m["eval"]["seq_acc"], 4),
    Metric("samples_per_s", "train samples/s", HIGHER, lambda m: m["train"]["samples_per_s"], 1),
    Metric("time_to_target_s", "to target s", LOWER, lambda m: m["train"]["time_to_target_s"], 1),
    Metric("train_s", "train s", LOWER, lambda m: m["train"]["wall_s"], 1),
    Metric("peak_rss_mb", "peak RSS MiB", LOWER, lambda m: m["train"]["peak_rss_mb"], 0),
    Metric("char_acc", "char acc", HIGHER, lambda m: m["eval"]["char_acc"], 4),
    Metric("ned", "1-NED", HIGHER, lambda m: m["eval"]["ned"], 4),
    Metric("images_per_s", "eval img/s", HIGHER, lambda m: m["eval"]["images_per_s"], 0),
    Metric("params", "params", None, lambda m: m["model"]["params"], 0),
    Metric("checkpoint_mb", "ckpt MB", LOWER, lambda m: _mb(m["model"]["checkpoint_bytes"]), 2),
    Metric("native_export_mb", "native export MB", LOWER, lambda m: _export_bytes(m, native=True), 2),
    Metric("onnx_mb", "ONNX MB", LOWER, lambda m: _export_bytes(m, native=False), 2),
    Metric("onnx_p50_ms", "ONNX p50 ms", LOWER, lambda m: _onnx_parity(m, "latency_ms_p50"), 2),
    Metric("onnx_identical", "ONNX identical", HIGHER, lambda m: _onnx_parity(m, "identical"), 4),
)


# ------------------------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class Run:
    path: Path          # the metrics.json file
    metrics: dict

    @property
    def run_id(self) -> str:
        return self.metrics["run_id"]


def find_metrics_files(paths: list[Path]) -> list[Path]:
    """metrics.json files named directly, in run directories, or anywhere under a folder of runs.
    Run directories still in progress (no metrics.json yet) under a folder are skipped."""
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif (path / "metrics.json").is_file():
            found.append(path / "metrics.json")
        elif path.is_dir():
            under = sorted(path.rglob("metrics.json"))
            if not under:
                raise OcrbenchError(f"{path}: no metrics.json in this folder or below",
                                    hint="give run directories, metrics.json files or a folder of runs")
            found.extend(under)
        else:
            raise OcrbenchError(f"{path}: no such file or directory")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise OcrbenchError("nothing to compare: give run directories, metrics.json files or a folder of "
                            "runs")
    return unique


def load_run(path: Path) -> Run:
    """One metrics.json, parsed and checked against the schema; errors name the file."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OcrbenchError(f"{path}: not a readable metrics.json ({exc})") from None
    if not isinstance(metrics, dict):
        raise OcrbenchError(f"{path}: not a metrics.json (the top level is not an object)")
    try:
        validate_metrics(metrics)
    except OcrbenchError as exc:
        raise OcrbenchError(f"{path}: {exc.message}",
                            hint="compare reads files written by `ocrbench run` "
                                 "(schema ocrbench.metrics/1)") from None
    return Run(path, metrics)


def load_runs(paths: list[Path]) -> list[Run]:
    runs = [load_run(p) for p in find_metrics_files(paths)]
    return sorted(runs, key=lambda r: (r.metrics["backend"]["name"], r.metrics["created"], r.run_id))


def on_other_dataset(runs: list[Run], fingerprint: str) -> list[Run]:
    """The runs as scored on another dataset (``ocrbench eval RUN --data ...``): each finished run's
    ``eval`` figures (seq/char acc, 1-NED, eval images/s, n, protocol) replaced by those of its record
    ``evals/<fingerprint>.json`` and that dataset put under ``eval_on``; every other figure stays the
    training run's. A finished run without such a record is an error naming the command that makes it."""
    from ocrbench.cross_eval import find_eval

    swapped = []
    for run in runs:
        if run.metrics["status"] != "ok":
            swapped.append(run)
            continue
        record = find_eval(run.path.parent, fingerprint)
        if record is None:
            raise OcrbenchError(f"{run.path.parent}: no evaluation on a dataset {fingerprint}... "
                                "(no matching record in its evals/)",
                                hint=f"score it first: ocrbench eval {run.path.parent} --data "
                                     "RECIPE_OR_LABELFILE")
        metrics = {**run.metrics, "eval": {**run.metrics["eval"], **record["eval"]},
                   "eval_on": {**record["dataset"], "engine": record["engine"]["name"]}}
        swapped.append(Run(run.path, metrics))
    return swapped


# -------------------------------------------------------------------------------------- parity guards
def input_size(m: dict) -> str | None:
    """Model input as ``HxWxC`` from the shape and layout the worker reported (``?`` = dynamic)."""
    spec = m["model"].get("input")
    if not spec or "shape" not in spec:
        return None
    shape = ["?" if d is None else str(d) for d in spec["shape"]]
    if spec.get("layout") == "NHWC":
        return "x".join(shape[1:4])
    return "x".join([shape[2], shape[3], shape[1]])  # NCHW


def init_mode(m: dict) -> str:
    """How the run's weights started: ``framework``, ``shared`` or ``file`` (metrics.json ``model.init``;
    files written before it was recorded started from the framework's initialiser)."""
    return (m["model"].get("init") or {}).get("mode", "framework")


PARITY: dict[str, Callable[[dict], Any]] = {
    "init (model.init)": init_mode,
    "evaluated on (compare --eval)": lambda m: (m.get("eval_on") or {}).get("fingerprint"),
    "dataset fingerprint": lambda m: m["dataset"]["fingerprint"],
    "charset": lambda m: m["dataset"]["charset"],
    "eval protocol": lambda m: json.dumps(m["eval"]["protocol"], sort_keys=True),
    "input size (HxWxC)": input_size,
}


def parity_problems(runs: list[Run]) -> list[str]:
    """What differs between the runs that makes them not like-for-like (values unknown to a failed run
    are ignored), one sentence per property naming the runs on each side."""
    problems = []
    for name, get in PARITY.items():
        by_value: dict[Any, list[str]] = {}
        for run in runs:
            value = get(run.metrics)
            if value is not None:
                by_value.setdefault(value, []).append(run.run_id)
        if len(by_value) > 1:
            sides = "; ".join(f"{_short(value)} in {', '.join(ids)}" for value, ids in by_value.items())
            problems.append(f"{name} differs: {sides}")
    return problems


def _short(value: Any, limit: int = 16) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


# ------------------------------------------------------------------------------- recipe parameters
# columns of their own, or not the experiment
NOT_PARAMETERS = ("backend", "runtime", "export.formats", "train.seed")


def flatten(recipe: dict, prefix: str = "") -> dict[str, str]:
    """Nested recipe -> ``{"train.optimizer.lr": "0.001", ...}`` (values as compact JSON)."""
    flat: dict[str, str] = {}
    for key, value in recipe.items():
        dotted = f"{prefix}{key}"
        if any(dotted == p or dotted.startswith(p + ".") for p in NOT_PARAMETERS):
            continue
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return flat


def recipe_parameters(run: Run) -> dict[str, str]:
    resolved = run.metrics["recipe"].get("resolved")
    return flatten(resolved) if resolved else {"recipe.hash": run.metrics["recipe"]["hash"][:12]}


def split_parameters(runs: list[Run]) -> tuple[dict[str, str], list[str]]:
    """(parameters equal in every run, names of those that differ)."""
    params = [recipe_parameters(r) for r in runs]
    keys = sorted(set().union(*params)) if params else []
    common, varying = {}, []
    for key in keys:
        values = {p.get(key, "(unset)") for p in params}
        if len(values) == 1:
            common[key] = values.pop()
        else:
            varying.append(key)
    return common, varying


# ------------------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Stat:
    """A figure over ``n`` runs: mean, and sample standard deviation when n > 1."""

    mean: float | None
    std: float | None = None
    n: int = 1


def aggregate(values: list[float | None]) -> Stat:
    known = [v for v in values if v is not None]
    if not known:
        return Stat(None, None, 0)
    if len(known) == 1:
        return Stat(float(known[0]), None, 1)
    return Stat(statistics.fmean(known), statistics.stdev(known), len(known))


@dataclass
class Row:
    label: str
    runs: list[Run]
    text: dict[str, str]                     # backend, framework, arch, seeds, status
    values: dict[str, Stat]
    params: dict[str, str]                   # the varying recipe parameters of this row
    ok: bool = True


@dataclass
class Comparison:
    rows: list[Row]
    common: dict[str, str]
    varying: list[str]
    mismatches: list[str] = field(default_factory=list)   # non-empty only when forced
    baseline: Row | None = None
    metrics: tuple[Metric, ...] = METRICS

    @property
    def eval_on(self) -> dict | None:
        """The other dataset the accuracy columns were scored on (``compare --eval``), or None."""
        return next((r.metrics["eval_on"] for row in self.rows for r in row.runs if "eval_on" in r.metrics),
                    None)

    @property
    def like_for_like(self) -> bool:
        return not self.mismatches

    @property
    def show_devices(self) -> bool:
        """Whether the runs trained on different device sets (then a ``devices`` column is shown)."""
        return len({r.text["devices"] for r in self.rows if r.runs}) > 1

    @property
    def show_loss(self) -> bool:
        """Whether the runs' losses are reduced differently (then a ``loss`` column and a note are shown:
        their loss levels and curves are not on one scale)."""
        return len({r.text["loss"] for r in self.rows if r.runs and r.text["loss"] != "-"}) > 1

    @property
    def show_seeds(self) -> bool:
        return (len({r.text["seeds"] for r in self.rows if r.runs}) > 1
                or any(len(r.runs) > 1 for r in self.rows))

    def best(self, metric: Metric) -> set[int]:
        """Indices of the rows holding the best value of a ranked metric (ties all win; nothing when fewer
        than 2 rows have a value or every row ties)."""
        if metric.better is None:
            return set()
        scored = [(i, r.values[metric.key].mean) for i, r in enumerate(self.rows)
                  if r.ok and r.values[metric.key].mean is not None]
        if len(scored) < 2:
            return set()
        pick = max if metric.better == HIGHER else min
        target = pick(v for _, v in scored)
        winners = {i for i, v in scored if abs(v - target) <= 1e-12 * max(1.0, abs(target))}
        return winners if len(winners) < len(scored) else set()

    def ratio(self, row: Row, metric: Metric) -> float | None:
        """The row's figure divided by the baseline's (None without a baseline or a value)."""
        if self.baseline is None:
            return None
        mine, base = row.values[metric.key].mean, self.baseline.values[metric.key].mean
        if mine is None or base in (None, 0):
            return None
        return mine / base


def _group_key(run: Run) -> str:
    """Runs that differ only in train.seed (same backend, framework version and recipe) share a row."""
    m = run.metrics
    if m["status"] != "ok":
        return f"failed:{run.path}"
    return json.dumps([m["backend"]["name"], m["backend"]["version"], devices(m), recipe_parameters(run)],
                      sort_keys=True)


def devices(m: dict) -> str:
    """Where a run trained, e.g. ``1 cpu``, ``2 cpu``, ``8 gpu (2 nodes)`` (older files: ``1``)."""
    dist = m.get("distributed")
    if not dist:
        return str(m.get("world_size", 1))
    nodes = f" ({dist['nnodes']} nodes)" if dist["nnodes"] > 1 else ""
    return f"{dist['world_size']} {dist['device']}{nodes}"


def _row(runs: list[Run], varying: list[str]) -> Row:
    first = runs[0].metrics
    seeds = sorted({r.metrics["seed"] for r in runs})
    ok = all(r.metrics["status"] == "ok" for r in runs)
    status = "ok" if ok else f"failed: {first['error']['message']}" if first.get("error") else "failed"
    backend = first["backend"]
    text = {"backend": backend["name"],
            "framework": f"{backend['framework']} {backend['version'] or ''}".strip(),
            "arch": backend["arch"], "seeds": ", ".join(str(s) for s in seeds), "status": status,
            "native format": native_format(first), "devices": devices(first), "loss": loss_reduction(first),
            "init": init_mode(first)}
    label = runs[0].run_id if len(runs) == 1 else f"{backend['name']} ({len(runs)} seeds)"
    values = {m.key: aggregate([m.get(r.metrics) for r in runs]) for m in METRICS}
    params = recipe_parameters(runs[0])
    return Row(label, runs, text, values, {k: params.get(k, "(unset)") for k in varying}, ok)


def not_started_row(backend: str, reason: str) -> Row:
    """A row for a backend whose run could not even start (e.g. its environment is not installed)."""
    text = {"backend": backend, "framework": "-", "arch": "-", "seeds": "", "status": f"failed: {reason}",
            "native format": "-", "devices": "-", "loss": "-", "init": "-"}
    return Row(backend, [], text, {m.key: Stat(None, None, 0) for m in METRICS}, {}, ok=False)


def build(runs: list[Run], force: bool = False, baseline: str | None = None,
          not_started: list[Row] | None = None) -> Comparison:
    """The comparison of ``runs``. Refuses runs that are not like-for-like unless ``force``; then the
    comparison carries the mismatches so every output can say so."""
    problems = parity_problems(runs)
    if problems and not force:
        raise OcrbenchError("these runs are not like-for-like, so they are not compared:\n  - "
                            + "\n  - ".join(problems),
                            hint="compare runs of one dataset and protocol, or add --force to compare anyway "
                                 "(the output is then marked as not like-for-like)")
    common, varying = split_parameters(runs)
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(_group_key(run), []).append(run)
    rows = [_row(group, varying) for group in groups.values()] + list(not_started or [])
    comparison = Comparison(rows, common, varying, problems if force else [])
    if baseline is not None:
        comparison.baseline = find_row(rows, baseline)
    return comparison


def find_row(rows: list[Row], wanted: str) -> Row:
    """The row holding the run named ``wanted`` (run id, run directory or metrics.json path)."""
    for row in rows:
        for run in row.runs:
            names = {run.run_id, str(run.path), str(run.path.parent), run.path.parent.name}
            if wanted in names or (Path(wanted).exists()
                                   and Path(wanted).resolve() in (run.path, run.path.parent)):
                return row
    known = ", ".join(run.run_id for row in rows for run in row.runs)
    raise OcrbenchError(f"--baseline {wanted}: no such run among those compared (runs: {known})")
