"""Process supervision for a run: start this node's launch, follow rank 0's events, stop what is left.

Every process runs without a shell, in its own session (so Ctrl-C reaches the core, which then stops them
in order), with stdout and stderr appended to the run's ``native.log``. ``follow`` streams the worker's
``events.jsonl`` into the live display (``ocrbench.progress``) as it is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Callable

from ocrbench.distributed import Launch
from ocrbench.results import EvalScorer

POLL_S = 0.2   # seconds between reads of events.jsonl when nothing new arrived


def follow(launch: Launch, run_dir: Path, console, scorer: EvalScorer | None,
           events_name: str = "events.jsonl", on_event: Callable[[dict], None] | None = None) -> int:
    """Start this node's processes and follow rank 0's events until the last process exits; returns
    the first non-zero exit code (0 when every process succeeded). Each event goes to the live display,
    then to ``on_event`` (e.g. MLflow, ``ocrbench.tracking``). If the main process (the last) fails, the
    others (MXNet's ps-lite server and scheduler) are stopped."""
    from ocrbench.progress import EventProgress

    events_path = run_dir / events_name
    events_path.touch()
    with open(run_dir / "native.log", "ab") as log, EventProgress(console, scorer) as progress:
        processes = [subprocess.Popen(p.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      cwd=run_dir, env=p.environ(dict(os.environ)), start_new_session=True)
                     for p in launch.processes]   # own sessions: Ctrl-C reaches the core, which stops them
        main = processes[-1]
        try:
            with events_path.open(encoding="utf-8") as stream:
                stream.seek(0, os.SEEK_END)
                pending = ""
                while True:
                    chunk = stream.read()
                    pending += chunk
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        if line.strip():
                            event = json.loads(line)
                            progress.handle(event)
                            if on_event is not None:
                                on_event(event)
                    if main.poll() is not None and not chunk:
                        break
                    if not chunk:
                        time.sleep(POLL_S)
            stop(processes, wait_s=60 if main.returncode == 0 else 0)
        except BaseException:
            stop(processes, wait_s=0)
            raise
    return next((p.returncode for p in processes if p.returncode), 0)


def stop(processes: list[subprocess.Popen], wait_s: float) -> None:
    """Let ``processes`` end by themselves for up to ``wait_s`` seconds; then SIGTERM those still running
    (the launchers pass it on to their ranks; SIGKILL after 30 s), and last SIGTERM — SIGKILL after 10 s
    — whatever they had started that is still there: a launcher may exit on SIGTERM and leave its ranks
    (msrun starts them in their own sessions) or helpers (msrun's ``tail -f`` of the worker logs)."""
    import psutil

    deadline = time.monotonic() + wait_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    running = [process for process in processes if process.poll() is None]
    family = []
    for process in running:   # snapshot the descendants before anything exits and orphans them
        try:
            family += psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    for process in running:
        process.terminate()
    for process in running:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for child in family:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, left = psutil.wait_procs(family, timeout=10)
    for child in left:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
