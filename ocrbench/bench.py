"""``ocrbench bench``: is each backend as fast as its framework allows?

For each backend, back to back on this machine: the framework's minimal loop (``benchmarks/minimal``, in the
backend's env) at the run's threads, a short ``ocrbench run`` of the same configuration, the minimal loop
again at the run's threads and then at 1 thread.
It reports minimal and ocrbench training samples/s, their ratio, where the run's time went (the worker's own
timers: metrics.json ``timing``) and the orchestration overhead (core wall - worker wall), as a table and as
JSON (``ocrbench.bench/1``), and warns when a backend keeps fewer cores busy than it was given or trains
slower with more threads.

The ratio compares steady-state rates: the minimal loop's timed steps after its warm-up, and the run's
training samples/s over the later three quarters of its last epoch's logged steps
(``results.steady_samples_per_s``), so that neither includes a framework's graph compilation or first-step
allocations; the epoch average (compilation and the epoch's setup included) is reported beside it. The
minimal loop brackets the run (once before, once after) and the ratio divides by the mean of the two rates;
their relative difference (``drift``) is how much the machine's speed moved while the run trained: a ratio
within ``drift`` of 1 is not a measured difference, and the bench warns when the drift exceeds 10 %.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ocrbench import envs
from ocrbench.backend import get_backend
from ocrbench.errors import OcrbenchError
from ocrbench.hardware import available_cores
from ocrbench.recipe import Recipe
from ocrbench.results import read_events, steady_samples_per_s

SCHEMA = "ocrbench.bench/1"
MINIMAL_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "minimal"
MINIMAL_TIMEOUT_S = 900
BUSY_FRACTION = 0.75   # a run keeping fewer than this share of its threads busy is warned about
SLOWER_WITH_MORE = 0.95   # minimal at N threads below this share of 1 thread: "slower with more threads"
DRIFT_WARNING = 0.10   # minimal rates before and after the run differing by more: "the machine's speed moved"


@dataclass
class BenchSettings:
    """What one bench measures: ``rounds`` of ``steps`` timed minimal steps after ``warmup`` (the median
    round counts), ``epochs`` of the ocrbench run,
    the ``threads`` both get (None: the cores this process may use), per-backend minimal ``modes``
    (a loop's fast path, e.g. ``paddleocr: to_static``) and recipe ``overrides`` for the run (``--set``)."""

    steps: int = 30
    warmup: int = 5
    infer_batches: int = 5
    rounds: int = 5
    epochs: int = 2
    threads: int | None = None
    modes: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)

    @property
    def cores(self) -> int:
        return self.threads or available_cores()


def check_arch(recipe: Recipe) -> None:
    """The bench measures the shared crnn (the network every backend implements alike)."""
    if recipe.model.arch != "crnn":
        raise OcrbenchError(f"ocrbench bench measures the shared crnn; recipe {recipe.name!r} has model.arch "
                            f"{recipe.model.arch!r}", hint="use recipes/captcha.yml or set model.arch=crnn")


def minimal_config(resolved: dict, settings: BenchSettings, backend: str, threads: int, classes: int) -> dict:
    """The minimal loop's Config (benchmarks/minimal/harness.py) for a resolved recipe's shared crnn:
    its network size, batch sizes, Adam settings and seed, with the bench's steps, threads and mode."""
    model, train = resolved["model"], resolved["train"]
    params, optimizer = model["params"], train["optimizer"]
    return {"classes": classes, "channels": list(params["channels"]), "hidden": params["hidden"],
            "input_width": params["input_width"], "batch": train["batch_size"],
            "eval_batch": resolved["eval"]["batch_size"], "max_len": resolved["data"]["max_len"],
            "lr": optimizer["lr"], "eps": optimizer["eps"], "betas": list(optimizer["betas"]),
            "threads": threads, "steps": settings.steps, "warmup": settings.warmup,
            "infer_batches": settings.infer_batches, "rounds": settings.rounds,
            "mode": settings.modes.get(backend, ""),
            "seed": train["seed"]}


def run_minimal(backend: str, config: dict) -> dict:
    """The backend's minimal loop in its env; its JSON result (an error names the script and its log)."""
    script = MINIMAL_DIR / f"{backend}_loop.py"
    if not script.is_file():
        raise OcrbenchError(f"no minimal loop for backend {backend!r} at {script}",
                            hint="ocrbench bench runs from a source checkout (benchmarks/minimal)")
    python, _ = envs.resolve_python(get_backend(backend))
    try:
        done = subprocess.run([str(python), str(script), "--config", json.dumps(config)], capture_output=True,
                              text=True, timeout=MINIMAL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise OcrbenchError(f"{script.name} ran past {MINIMAL_TIMEOUT_S} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise OcrbenchError(f"{script.name} failed (exit {done.returncode}): {' | '.join(tail)}")
    return json.loads(lines[-1])


@dataclass
class BackendBench:
    """One backend's row: the minimal loop at ``threads`` before the run (``minimal_before``) and after it
    (``minimal``), at 1 thread after that, the run's figures, the ratio (run / mean of the two minimal
    rates), the drift between the two minimal rates (|after - before| / mean), warnings."""

    backend: str
    threads: int
    minimal: dict | None = None
    minimal_1_thread: dict | None = None
    minimal_before: dict | None = None
    run: dict | None = None
    ratio: float | None = None
    drift: float | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def minimal_rate(self) -> float | None:
        """The minimal loop's training samples/s the ratio divides by: the mean of the rates before and
        after the run (one of them when the other is missing)."""
        rates = [m["train_samples_per_s"] for m in (self.minimal_before, self.minimal)
                 if m and m.get("train_samples_per_s")]
        return sum(rates) / len(rates) if rates else None


def run_figures(metrics: dict, run_dir: Path) -> dict:
    """What the table shows of an ocrbench run: epoch-average and steady training samples/s, eval
    images/s, CPU utilisation, threads, and metrics.json ``timing``."""
    timing = metrics.get("timing") or {}
    return {"run_dir": str(run_dir), "status": metrics["status"],
            "samples_per_s": metrics["train"]["samples_per_s"],
            "steady_samples_per_s": steady_samples_per_s(read_events(run_dir / "events.jsonl"),
                                                         metrics["train"]["batch_size"],
                                                         metrics.get("world_size") or 1),
            "eval_images_per_s": metrics["eval"]["images_per_s"], "seq_acc": metrics["eval"]["seq_acc"],
            "timing": timing}


def judge(row: BackendBench) -> None:
    """The ratio, the drift and the warnings: an unsteady machine, fewer cores busy than given, slower with
    more threads."""
    minimal, run = row.minimal or {}, row.run or {}
    steady, rate = run.get("steady_samples_per_s"), row.minimal_rate()
    if steady and rate:
        row.ratio = steady / rate
    before, after = (row.minimal_before or {}).get("train_samples_per_s"), minimal.get("train_samples_per_s")
    if before and after:
        row.drift = abs(after - before) / rate
        if row.drift > DRIFT_WARNING:
            row.warnings.append(f"the minimal loop ran at {before:.0f} samples/s before the run and "
                                f"{after:.0f} after it ({row.drift:.0%} apart): the machine's speed moved, "
                                f"so a ratio within {row.drift:.2f} of 1 is not a measured difference")
    busy = (run.get("timing") or {}).get("cpu_utilisation")
    if busy is not None and row.threads > 1 and busy < BUSY_FRACTION * row.threads:
        row.warnings.append(f"the run kept {busy:.2f} of the {row.threads} cores it was given busy")
    if minimal and row.minimal_1_thread and row.threads > 1:
        more, one = minimal["train_samples_per_s"], row.minimal_1_thread["train_samples_per_s"]
        if more < SLOWER_WITH_MORE * one:
            row.warnings.append(f"the minimal loop is slower with {row.threads} threads ({more:.0f} "
                                f"samples/s) than with 1 ({one:.0f})")


def document(rows: list[BackendBench], recipe: str, settings: BenchSettings) -> dict:
    """The JSON result (``ocrbench.bench/1``)."""
    return {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "recipe": recipe,
            "settings": asdict(settings), "cores": available_cores(),
            "backends": [asdict(row) for row in rows]}


def run_overrides(settings: BenchSettings) -> list[str]:
    """The ``--set`` list of the bench's ocrbench run: its epochs, no exports, one evaluation at the end
    (none inside epochs, no stop at a target), ``train.threads`` only when ``--threads`` was given
    (otherwise the run uses ocrbench's default, which is what is being measured), then the user's
    overrides (last, so they win)."""
    threads = [f"train.threads={settings.threads}"] if settings.threads else []
    return [f"train.epochs={settings.epochs}", *threads, "export.formats=[]",
            f"train.eval_every={settings.epochs}", "train.eval_every_steps=0", "train.stop_at_target=false",
            *settings.overrides]


def classes(recipe: Recipe, path: Path, console) -> int:
    """The recipe's output classes (its charset and the CTC blank), from its prepared dataset (prepared now
    if it is not yet: the run reuses it)."""
    from ocrbench import datasets
    from ocrbench.codec import Charset

    prepared = datasets.prepare(recipe.resolved()["data"], path.parent, log=console.print)
    return Charset(prepared.charset).num_classes


def bench_backend(name: str, recipe_path: Path, settings: BenchSettings, out: Path, command: list[str],
                  console) -> BackendBench:
    """One backend: its minimal loop at ``threads``, the short ocrbench run, the minimal loop at ``threads``
    again and at 1 thread."""
    from ocrbench import multirun
    from ocrbench.recipe import load_recipe

    threads = settings.cores
    row = BackendBench(backend=name, threads=threads)

    def load(backend: str):
        return load_recipe(recipe_path, run_overrides(settings), backend)

    recipe, path = load(name)
    check_arch(recipe)
    config = minimal_config(recipe.resolved(), settings, name, threads, classes(recipe, path, console))
    console.print(f"{name}: minimal loop, {threads} thread(s), before the run")
    try:
        row.minimal_before = run_minimal(name, config)
    except OcrbenchError as exc:
        row.error = exc.message
        return row
    outcome = multirun.run_each([name], load, out, None, command, console)[0]
    if outcome.not_started or not outcome.ok:
        row.error = outcome.not_started or outcome.metrics["error"]["message"]
        return row
    row.run = run_figures(outcome.metrics, outcome.metrics_path.parent)
    console.print(f"{name}: minimal loop, {threads} thread(s) and 1 thread, after the run")
    try:
        row.minimal = run_minimal(name, config)
        if threads > 1:
            row.minimal_1_thread = run_minimal(name, {**config, "threads": 1})
    except OcrbenchError as exc:
        row.error = exc.message
    judge(row)
    return row


def _fmt(value, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


TIMING_ROWS = (("data_s", " data s"), ("step_s", " steps s"), ("other_s", " other s"), ("eval_s", "eval s"),
               ("checkpoint_s", "checkpoint s"), ("startup_s", "worker start s"),
               ("prepare_s", "native data s"), ("build_s", "build s"), ("export_s", "export s"),
               ("worker_s", "worker wall s"), ("core_s", "core wall s"), ("overhead_s", "core-worker s"))


def table_rows(row: BackendBench) -> list[tuple[str, str]]:
    """One backend's column of the table: (measure, value) pairs in display order."""
    minimal, run = row.minimal or {}, row.run or {}
    timing = run.get("timing") or {}
    pairs = [("minimal before /s", _fmt((row.minimal_before or {}).get("train_samples_per_s"))),
             ("minimal after /s", _fmt(minimal.get("train_samples_per_s"))),
             ("minimal 1 thread /s", _fmt((row.minimal_1_thread or {}).get("train_samples_per_s"))),
             ("ocrbench /s", _fmt(run.get("steady_samples_per_s"))),
             ("ratio", _fmt(row.ratio, ".2f")),
             ("drift", _fmt(row.drift, ".2f")),
             ("epoch average /s", _fmt(run.get("samples_per_s"))),
             ("minimal infer /s", _fmt(minimal.get("infer_samples_per_s"))),
             ("ocrbench eval /s", _fmt(run.get("eval_images_per_s"))),
             ("threads", str(row.threads)),
             ("cores busy minimal", _fmt(minimal.get("cpu_utilisation"), ".2f")),
             ("cores busy run", _fmt(timing.get("cpu_utilisation"), ".2f")),
             ("train s", _fmt(timing.get("train_s"), ".1f"))]
    return pairs + [(label, _fmt(timing.get(key), ".1f")) for key, label in TIMING_ROWS]


def table(rows: list[BackendBench]):
    """The terminal table: a column per backend, a row per measure (rates, ratio, where the time went)."""
    from rich.table import Table

    grid = Table(title="ocrbench bench: training samples/s and where a run's time goes", show_header=True)
    grid.add_column("", no_wrap=True)
    for row in rows:
        grid.add_column(row.backend, justify="right", no_wrap=True)
    columns = [table_rows(row) for row in rows]
    for index, (label, _) in enumerate(columns[0] if columns else []):
        grid.add_row(label, *(column[index][1] for column in columns))
    return grid


def notes(rows: list[BackendBench]) -> list[str]:
    """The lines under the table: each backend's warnings and errors."""
    lines = []
    for row in rows:
        lines += [f"{row.backend}: warning: {w}" for w in row.warnings]
        if row.error:
            lines.append(f"{row.backend}: error: {row.error}")
    return lines
