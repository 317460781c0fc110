"""What the benchmark scripts share: run a recipe through ``ocrbench run`` and read what it wrote.

The scripts are run with the core's interpreter (``.venv/bin/python benchmarks/<name>.py``); every run is a
separate ``ocrbench run`` process, one at a time, so a figure is never measured next to another run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BACKENDS = ["pytorch", "mxnet", "tensorflow", "mindspore", "paddleocr"]


def run_recipe(recipe: Path, backend: str, out: Path, overrides: list[str] = ()) -> Path:
    """``ocrbench run RECIPE --backend BACKEND --out OUT [--set K=V ...]``; returns the new run directory.

    Fails (``CalledProcessError``) when the run fails: a benchmark never reports a failed run's figures."""
    ocrbench = Path(sys.executable).parent / "ocrbench"
    before = set(out.glob("*")) if out.exists() else set()
    command = [str(ocrbench), "run", str(recipe), "--backend", backend, "--out", str(out)]
    for override in overrides:
        command += ["--set", override]
    subprocess.run(command, check=True)
    (run_dir,) = set(out.glob("*")) - before
    return run_dir


def metrics(run_dir: Path) -> dict:
    """The run's metrics.json."""
    return json.loads((run_dir / "metrics.json").read_text())


def write_table(rows: list[dict], path: Path) -> None:
    """The benchmark's rows as JSON (the printed table's machine-readable copy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2) + "\n")
