"""Dataset preparation at scale: images/s, the core's peak RSS and disk bytes per image.

    .venv/bin/python benchmarks/prepare_scale.py [--sizes 20000,200000] [--processes 1,2] [--out DIR]

For each size and process count, ``ocrbench prepare`` renders the main job's captchas
(``recipes/captcha_pytorch.yml`` with ``data.train_size`` = size) into a fresh, private dataset directory
(``OCRBENCH_DATASETS``), alone, and this script samples from outside every 0.25 s:

- ``core_peak_mb``: the resident memory of the ``ocrbench prepare`` process itself (MiB) — issue 19: it must
  not grow with the dataset beyond the per-image bookkeeping (one label row per image);
- ``renderers_peak_mb``: the largest sum over its rendering processes (``data.workers`` > 1);
- ``images_per_s``: as the manifest records it (rendering, hashing and writing the label files);
- ``bytes_per_image``: the dataset directory's size on disk (``du``: blocks, not file lengths) over the
  images, label files and manifest included.

The dataset is deleted after each case. A JSON copy goes to ``DIR/prepare_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from common import SAMPLE_S, write_table

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "captcha_pytorch.yml"


def disk_bytes(root: Path) -> int:
    """Bytes the files under ``root`` take on disk (allocated blocks)."""
    return sum(p.lstat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def prepare(size: int, processes: int, home: Path) -> dict:
    """One ``ocrbench prepare`` of ``size`` training captchas with ``processes`` renderers."""
    ocrbench = Path(sys.executable).parent / "ocrbench"
    command = [str(ocrbench), "prepare", str(RECIPE), "--set", f"data.train_size={size}",
               "--set", f"data.workers={processes}"]
    process = subprocess.Popen(command, env={**os.environ, "OCRBENCH_DATASETS": str(home)},
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    core, renderers = 0, 0
    watched = psutil.Process(process.pid)
    started = time.monotonic()
    while process.poll() is None:
        try:
            core = max(core, watched.memory_info().rss)
            renderers = max(renderers, sum(child.memory_info().rss for child in watched.children(True)))
        except psutil.NoSuchProcess:
            pass
        time.sleep(SAMPLE_S)
    wall = time.monotonic() - started
    out = process.stdout.read()
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command, out)
    (root,) = home.glob("captcha-*")
    manifest = json.loads((root / "manifest.json").read_text())
    images = manifest["splits"]["train"]["n"] + manifest["splits"]["eval"]["n"]
    return {"train_images": size, "images": images, "processes": processes,
            "images_per_s": round(manifest["images_per_s"], 1), "wall_s": round(wall, 1),
            "core_peak_mb": round(core / 2**20, 1), "renderers_peak_mb": round(renderers / 2**20, 1),
            "bytes_per_image": round(disk_bytes(root) / images)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,200000", help="comma-separated train split sizes")
    parser.add_argument("--processes", default="1,2", help="comma-separated renderer process counts")
    parser.add_argument("--out", type=Path, default=Path("build/prepare-scale"))
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for processes in (int(p) for p in args.processes.split(",")):
            home = Path(tempfile.mkdtemp(prefix="ocrbench-prepare-scale-"))
            try:
                row = prepare(size, processes, home)
            finally:
                shutil.rmtree(home, ignore_errors=True)
            rows.append(row)
            print(f"{size:>7} train captchas, {processes} process(es): {row['images_per_s']:7.0f} images/s, "
                  f"core peak RSS {row['core_peak_mb']:6.1f} MiB, renderers {row['renderers_peak_mb']:6.1f} "
                  f"MiB, {row['bytes_per_image']} bytes/image on disk", flush=True)
    write_table(rows, args.out / "prepare_scale.json")


if __name__ == "__main__":
    main()
