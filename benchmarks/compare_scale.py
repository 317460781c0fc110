"""``ocrbench compare`` over hundreds of run directories: seconds and peak RSS.

    .venv/bin/python benchmarks/compare_scale.py RUN_DIR [RUN_DIR ...] [--runs 500] [--out DIR]

Makes ``--runs`` run directories under ``DIR/runs`` from the given finished runs' metrics.json files (the
real files, copied round-robin, each copy with its own run id and ``train.seed`` so that seeds aggregate as
they would in a sweep), then times three commands, one at a time, sampling the ``ocrbench`` process's
resident memory every 0.25 s: the terminal table, ``--format json --output`` and ``--format html --output``
(the html report draws the curves plot). ``--force`` is passed, so runs of different init modes or datasets
may be mixed as sources. A JSON copy goes to ``DIR/compare_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from common import SAMPLE_S, write_table


def make_runs(sources: list[Path], count: int, out: Path) -> None:
    """``count`` run directories holding a copy of one source's metrics.json with a new run id and seed."""
    shutil.rmtree(out, ignore_errors=True)
    originals = [json.loads((source / "metrics.json").read_text()) for source in sources]
    for index in range(count):
        metrics = json.loads(json.dumps(originals[index % len(originals)]))
        name = f"{metrics['recipe']['name']}-{metrics['backend']['name']}-copy{index:04d}"
        metrics["run_id"] = name
        metrics["recipe"]["resolved"]["train"]["seed"] = 1000 + index // len(originals)
        target = out / name
        target.mkdir(parents=True)
        (target / "metrics.json").write_text(json.dumps(metrics))


def timed(command: list[str]) -> dict:
    """Wall seconds and peak RSS (MiB) of one command, which must succeed."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watched, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
        time.sleep(SAMPLE_S / 5)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command, stderr=process.stderr.read())
    return {"seconds": round(time.monotonic() - started, 2), "peak_rss_mb": round(peak / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", type=Path, help="finished run directories to copy")
    parser.add_argument("--runs", type=int, default=500, help="run directories to compare")
    parser.add_argument("--out", type=Path, default=Path("build/compare-scale"))
    args = parser.parse_args()
    runs = args.out / "runs"
    make_runs(args.sources, args.runs, runs)
    ocrbench = str(Path(sys.executable).parent / "ocrbench")
    cases = {"table": [], "json": ["--format", "json", "--output", str(args.out / "report.json")],
             "html": ["--format", "html", "--output", str(args.out / "report.html")]}
    rows = []
    for name, extra in cases.items():
        command = [ocrbench, "compare", str(runs), "--force", *extra]
        row = {"runs": args.runs, "output": name, **timed(command)}
        rows.append(row)
        print(f"compare {args.runs} runs, {name:<5}: {row['seconds']:6.2f} s, "
              f"peak RSS {row['peak_rss_mb']:6.1f} MiB", flush=True)
    write_table(rows, args.out / "compare_scale.json")


if __name__ == "__main__":
    main()
