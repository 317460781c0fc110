"""What the benchmark scripts share: run a recipe through ``ocrbench run`` and read what it wrote.

The scripts are run with the core's interpreter (``.venv/bin/python benchmarks/<name>.py``); every run is a
separate ``ocrbench run`` process, one at a time, so a figure is never measured next to another run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

BACKENDS = ["pytorch", "mxnet", "tensorflow", "mindspore", "paddleocr"]
SAMPLE_S = 0.25   # seconds between memory samples of a running benchmark


def backend_parser(doc: str, out: str) -> argparse.ArgumentParser:
    """The options every benchmark has: ``--backend a,b`` (default: all five) and ``--out DIR``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--backend", default=",".join(BACKENDS), help="comma-separated backends")
    parser.add_argument("--out", type=Path, default=Path(out), help="directory for the runs and the table")
    return parser


def run_recipe(recipe: Path, backend: str, out: Path, overrides: list[str] = (),
               memory: MemoryPeaks | None = None) -> Path:
    """``ocrbench run RECIPE --backend BACKEND --out OUT [--set K=V ...]``; returns the new run directory.
    With ``memory``, the run's process tree is sampled into it while it runs.

    Fails (``CalledProcessError``) when the run fails: a benchmark never reports a failed run's figures."""
    ocrbench = Path(sys.executable).parent / "ocrbench"
    before = set(out.glob("*")) if out.exists() else set()
    command = [str(ocrbench), "run", str(recipe), "--backend", backend, "--out", str(out)]
    for override in overrides:
        command += ["--set", override]
    process = subprocess.Popen(command)
    while process.poll() is None:
        if memory is not None:
            memory.sample(process.pid)
        time.sleep(SAMPLE_S)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    (run_dir,) = set(out.glob("*")) - before
    return run_dir



@dataclass
class MemoryPeaks:
    """Peaks of the worker processes' memory (MiB) over one run, sampled every ``SAMPLE_S`` seconds:

    - ``anonymous``: the largest sum over the run's worker processes (everything below the ``ocrbench``
      process) of resident memory not backed by a file (psutil ``rss - shared``: heap, tensors, caches);
    - ``file_backed``: the largest sum of their resident file-backed pages (memory-mapped files such as an
      LMDB being read, shared libraries) — page cache the kernel can drop, which ``ru_maxrss`` (metrics.json's
      ``peak_rss_mb``) counts as well."""

    anonymous: float = 0.0
    file_backed: float = 0.0

    def sample(self, root_pid: int) -> None:
        try:
            workers = psutil.Process(root_pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        anonymous = file_backed = 0
        for worker in workers:
            try:
                info = worker.memory_info()
            except psutil.NoSuchProcess:
                continue
            anonymous += info.rss - info.shared
            file_backed += info.shared
        self.anonymous = max(self.anonymous, anonymous / 2**20)
        self.file_backed = max(self.file_backed, file_backed / 2**20)


def metrics(run_dir: Path) -> dict:
    """The run's metrics.json."""
    return json.loads((run_dir / "metrics.json").read_text())


def job_spec(run_dir: Path) -> dict:
    """The run's job.json (what the core resolved for the worker, e.g. ``dataset.cache``)."""
    return json.loads((run_dir / "job.json").read_text())


def write_table(rows: list[dict], path: Path) -> None:
    """The benchmark's rows as JSON (the printed table's machine-readable copy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2) + "\n")
