"""Helpers of the fault tests (test_faults.py): a tiny fault recipe per backend, a run killed at a step,
a small filesystem mounted for a test, and comparisons of two runs' final models."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import OCRBENCH, ROOT, write
from ocrbench import weights

CHECKPOINT_EVERY = 5   # steps
EPOCHS, STEPS_PER_EPOCH = 2, 20   # 320 train images in batches of 16

FAULT_RECIPE = """
# The fault tests' job: the shared crnn, small, on 320 clean captchas; 2 epochs of 20 Adam steps, a
# checkpoint every 5 steps; the neutral weights exported so that two runs' final models can be compared.
name: faults
backend: {backend}
model:
  arch: crnn
  params: {{input_width: 64, channels: [8, 16, 16, 16, 32, 32, 32], hidden: 32}}
data:
  source: captcha
  noise: false
  width: 100
  height: 40
  min_len: 2
  max_len: 3
  font_sizes: [28]
  train_size: 320
  eval_size: 32
  seed: 11
train:
  epochs: {epochs}
  batch_size: 16
  optimizer: {{name: adam, lr: 0.002}}
  seed: 3
  log_every: 1
  checkpoint_every: {every}
export:
  formats: [weights]
"""


def fault_recipe(directory: Path, backend: str, every: int = CHECKPOINT_EVERY, epochs: int = EPOCHS) -> Path:
    return write(directory / f"faults-{backend}.yml", FAULT_RECIPE.format(backend=backend, every=every,
                                                                          epochs=epochs))


def events_of(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]   # a last line may be half-written


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def start_run(recipe: Path, out: Path, *extra: str, env: dict | None = None) -> tuple[subprocess.Popen, Path]:
    """``ocrbench run`` in the background; returns the process and its (new) run directory."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    log = open(out.parent / f"{out.name}.core.log", "ab")
    process = subprocess.Popen([*OCRBENCH, "run", str(recipe), "--out", str(out), *extra], cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                               start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        new = [p for p in set(out.iterdir()) - before if p.is_dir()]
        if new:
            return process, new[0]
        if process.poll() is not None:
            raise AssertionError(f"ocrbench run ended ({process.returncode}) before making a run directory: "
                                 + (out.parent / f"{out.name}.core.log").read_text(errors="replace"))
        time.sleep(0.05)
    raise AssertionError("no run directory after 300 s")


def wait_for(run_dir: Path, condition, process: subprocess.Popen, what: str, timeout: float = 600,
             poll: float = 0.05) -> list[dict]:
    """Poll the run's events until ``condition(events)`` holds; fail naming ``what`` if the run ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = events_of(run_dir)
        if condition(events):
            return events
        if process.poll() is not None:
            raise AssertionError(f"the run ended ({process.returncode}) before {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def kill_worker_at_random_step(recipe: Path, out: Path, rng: random.Random) -> tuple[Path, dict]:
    """Run ``recipe``, SIGKILL its worker (no handler runs) at a random step after the first mid-epoch
    checkpoint, and let the core finish. Returns the run directory and what happened."""
    process, run_dir = start_run(recipe, out)
    target = rng.randint(CHECKPOINT_EVERY + 1, EPOCHS * STEPS_PER_EPOCH - 2)
    events = wait_for(run_dir, lambda ev: any(e["event"] == "step" and e["step"] >= target for e in ev),
                      process, f"step {target}")
    worker = next(e["pid"] for e in events if e["event"] == "start")
    os.kill(worker, signal.SIGKILL)
    process.wait(timeout=300)
    events = events_of(run_dir)
    last_step = max(e["step"] for e in events if e["event"] == "step")
    return run_dir, {"target": target, "last_step": last_step, "core_exit": process.returncode}


def final_weights(run_dir: Path) -> dict[str, np.ndarray]:
    return weights.read(run_dir / "exports" / "weights" / weights.FILE_NAME).tensors


def max_weight_diff(a: Path, b: Path) -> float:
    """Max |Δ| over every tensor of two runs' final neutral weights."""
    first, second = final_weights(a), final_weights(b)
    assert set(first) == set(second)
    return max(float(np.abs(first[k] - second[k]).max()) for k in first)


def predictions(run_dir: Path) -> list[str]:
    return (run_dir / "predictions" / "eval.tsv").read_text(encoding="utf-8").splitlines()


def epoch_losses(run_dir: Path) -> list[float]:
    """Each epoch's mean loss, from its ``epoch_end`` event (a resumed run's latest attempt wins)."""
    ends = {e["epoch"]: e["loss"] for e in events_of(run_dir) if e["event"] == "epoch_end"}
    return [ends[epoch] for epoch in sorted(ends)]


@contextlib.contextmanager
def small_filesystem(path: Path, size: int):
    """A tmpfs of ``size`` bytes mounted at ``path`` for the test (needs root or CAP_SYS_ADMIN, as on the
    CI machine); yields a function that resizes it. Unmounted at the end."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({mounted.stderr.strip()}): needs root or CAP_SYS_ADMIN")

    def resize(new_size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new_size}", str(path)], check=True)

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


PAGE = 4096   # a tmpfs gives every file whole pages


def tree_bytes(root: Path, leave_out: tuple[str, ...] = ()) -> int:
    """Bytes that every file under ``root`` but those under the top-level names ``leave_out`` takes on a
    tmpfs (each file's size rounded up to whole pages)."""
    return sum(-(-p.stat().st_size // PAGE) * PAGE for p in root.rglob("*")
               if p.is_file() and p.relative_to(root).parts[0] not in leave_out)
