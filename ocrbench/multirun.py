"""One recipe on several backends, one after another: ``run --backend all|a,b`` and ``ocrbench smoke``.

Every backend gets its own run directory (and metrics.json); they share the prepared dataset (the
dataset cache is keyed by the data section, which does not depend on the backend). A backend that fails
— or cannot even start, e.g. its environment is not installed — does not stop the others.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ocrbench import atomic, envs
from ocrbench.backend import get_backend, load_backends
from ocrbench.distributed import Topology
from ocrbench.errors import OcrbenchError
from ocrbench.recipe import Recipe
from ocrbench.plan import plan
from ocrbench.runner import Runner
from ocrbench.tracking import Tracking


@dataclass
class Outcome:
    """What happened on one backend: a finished run (ok or failed) or the reason it never started."""

    backend: str
    metrics_path: Path | None = None
    metrics: dict | None = None
    not_started: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.metrics is not None and self.metrics["status"] == "ok"


def select_backends(choice: str, installed_only: bool) -> tuple[list[str], list[str]]:
    """``all`` or ``a,b,c`` -> (backends to run, backends left out because their env is not installed).
    Only ``all`` with ``installed_only`` leaves any out; a named backend is always attempted."""
    known = load_backends()
    if choice.strip() == "all":
        if not installed_only:
            return list(known), []
        installed = {name for name, spec in known.items() if envs.status(spec).installed}
        return [n for n in known if n in installed], [n for n in known if n not in installed]
    names = [name.strip() for name in choice.split(",") if name.strip()]
    if not names:
        raise OcrbenchError(f"--backend {choice!r}: name a backend, a comma-separated list, or 'all'")
    for name in names:
        get_backend(name)  # unknown names fail here, with a suggestion
    return list(dict.fromkeys(names)), []


def run_each(names: list[str], load: Callable[[str], tuple[Recipe, Path]], out: Path,
             where: Callable[[int], Topology] | None, command: list[str], console,
             install: bool = False, mlflow: Tracking | None = None) -> list[Outcome]:
    """Run ``load(name)``'s recipe on each backend in turn; ``where(recipe's runtime.gpus)`` gives the
    devices (default: the recipe's GPUs, one replica). Ctrl-C stops the series after the current run has
    written its (failed) metrics.json."""
    outcomes = []
    for name in names:
        console.rule(f"[bold]{name}")
        start = time.monotonic()
        try:
            recipe, path = load(name)
            p = plan(recipe, path)
            if install:
                envs.install(p.spec, log=console.print)
            gpus = p.recipe.runtime.gpus
            runner = Runner(p, out, where(gpus) if where else Topology(gpus=gpus), None, command, console,
                            mlflow=mlflow)
            metrics_path, metrics = runner.run()
            outcomes.append(Outcome(name, metrics_path, metrics, seconds=time.monotonic() - start))
        except OcrbenchError as exc:
            console.print(f"[red]{name}: did not start: {exc}[/red]", soft_wrap=True)
            outcomes.append(Outcome(name, not_started=str(exc), seconds=time.monotonic() - start))
            continue
        if metrics["status"] != "ok":
            console.print(f"[red]{name}: failed: {metrics['error']['message']}[/red]", soft_wrap=True)
            if metrics["error"]["type"] == "Interrupted":
                raise KeyboardInterrupt
    return outcomes


# ------------------------------------------------------------------------------------------------ smoke
def smoke_failure(outcome: Outcome) -> str | None:
    """Why a smoke run did not pass (None when it passed): it must complete, be scored, reach its recipe's
    learning threshold (``train.target_acc``, when the recipe sets one) and every export it asked for must
    have been made and checked."""
    if outcome.not_started is not None:
        return outcome.not_started
    metrics = outcome.metrics
    if metrics["status"] != "ok":
        error = metrics["error"]
        return f"{error['stage']}: {error['type']}: {error['message']}"
    if metrics["eval"]["seq_acc"] is None:
        return "no evaluation was scored"
    problems = [f"export {x['format']} failed: {x['error']}" for x in metrics["exports"] if not x["ok"]]
    target = learning_threshold(metrics)
    if target is not None and metrics["eval"]["seq_acc"] < target:
        problems.insert(0, f"did not learn: sequence accuracy {metrics['eval']['seq_acc']:.4f} is below the "
                           f"recipe's train.target_acc {target:g}")
    return "; ".join(problems) or None


def learning_threshold(metrics: dict) -> float | None:
    """The sequence accuracy a smoke run must reach: its recipe's ``train.target_acc`` (None: the recipe
    sets none, and the run proves only that the pipeline works, not that the backend learns)."""
    return metrics["recipe"]["resolved"]["train"]["target_acc"]


def junit_xml(outcomes: list[Outcome]) -> str:
    """JUnit XML, one test case per backend (classname ``ocrbench.smoke``), failures with their reason."""
    failures = [smoke_failure(o) for o in outcomes]
    suite = ET.Element("testsuite", name="ocrbench smoke", tests=str(len(outcomes)),
                       failures=str(sum(f is not None for f in failures)), errors="0",
                       time=f"{sum(o.seconds for o in outcomes):.3f}")
    for outcome, failure in zip(outcomes, failures):
        case = ET.SubElement(suite, "testcase", classname="ocrbench.smoke", name=outcome.backend,
                             time=f"{outcome.seconds:.3f}")
        if failure is not None:
            ET.SubElement(case, "failure", message=failure.splitlines()[0][:500],
                          type="SmokeFailure").text = failure
        details = [f"run: {outcome.metrics_path.parent}" if outcome.metrics_path else "run: not started"]
        if outcome.metrics is not None and outcome.metrics["eval"]["seq_acc"] is not None:
            details.append(f"seq_acc: {outcome.metrics['eval']['seq_acc']:.4f}")
        ET.SubElement(case, "system-out").text = "\n".join(details)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: Path, outcomes: list[Outcome]) -> None:
    atomic.write_text(path, junit_xml(outcomes))
