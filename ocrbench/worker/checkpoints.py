"""A run's checkpoints on disk: each one a complete step directory, committed by one atomic rename, so a
kill or a full disk at any moment leaves the last committed checkpoint intact. Standard library only
(the core reads it too).

Layout of ``<run>/checkpoints/``::

    step-00000120/      a committed checkpoint: the backend's native files (``Trainer.save``) and
                        state.json (epoch, step, counters, and every file's size and sha256)
    step-00000150/      the newest one; the one before it is kept, older ones are removed
    .staging-*/         a checkpoint being written (a leftover from a kill is removed on the next save)
    best_accuracy.*     files a backend keeps across checkpoints (PaddleOCR's best model)

Writing: :meth:`CheckpointStore.stage` gives an empty staging directory, the backend writes into it,
:meth:`CheckpointStore.commit` fsyncs it, records the files' sizes and digests in its state.json and
renames it to ``step-NNNNNNNN``. Reading: :meth:`CheckpointStore.latest` takes the newest step directory
whose files still match their record (size and sha256) and says why it passed over any newer one, so a
truncated or changed checkpoint is detected, never loaded. Runs written before step directories (their
state.json directly in ``checkpoints/``) are read as one unverified checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ocrbench import atomic

STATE = "state.json"
STEP_DIR = re.compile(r"step-(\d{8,})")
KEEP = 2   # committed checkpoints kept: the newest and the one before it


class CheckpointError(RuntimeError):
    """No checkpoint in the run can be loaded; the message names each one and what is wrong with it."""


@dataclass
class Checkpoint:
    """One committed checkpoint: its directory and its state (``epoch``: epochs completed, ``epoch_step``:
    steps already taken in epoch ``epoch + 1``, ``global_step``, ``samples``, ``train_s``, ``wall_s``,
    ``epoch_loss``/``epoch_batches``: the partial epoch's summed loss and its steps)."""

    directory: Path
    state: dict
    passed_over: list[str] = field(default_factory=list)   # newer checkpoints that failed verification


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    """The checkpoints of one run (``root`` = ``<run>/checkpoints``)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # ------------------------------------------------------------------------------------ writing
    def stage(self, global_step: int) -> Path:
        """A fresh, empty staging directory for the checkpoint after ``global_step`` (leftovers of an
        earlier kill are removed first)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.discard_staging()
        staging = self.root / f".staging-{global_step:08d}"
        staging.mkdir()
        return staging

    def commit(self, staging: Path, state: dict) -> Path:
        """Record ``state`` and the staged files' sizes and digests, fsync, rename the staging directory
        to ``step-NNNNNNNN`` (``state["global_step"]``), then remove all but the newest KEEP checkpoints."""
        files = {str(p.relative_to(staging)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                 for p in sorted(staging.rglob("*")) if p.is_file()}
        atomic.write_json(staging / STATE, {**state, "files": files})
        _fsync_tree(staging)
        final = self.root / f"step-{int(state['global_step']):08d}"
        if final.exists():   # a resumed run saving the same step again: the new one replaces it
            shutil.rmtree(final)
        os.rename(staging, final)
        for old in self.committed()[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def discard_staging(self) -> None:
        """Remove staging directories (a checkpoint that was being written when its process died or
        failed)."""
        for leftover in self.root.glob(".staging-*"):
            atomic.remove_tree(leftover)

    # ------------------------------------------------------------------------------------ reading
    def committed(self) -> list[Path]:
        """Step directories, oldest first."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir()
                 if p.is_dir() and (m := STEP_DIR.fullmatch(p.name))]
        return [p for _, p in sorted(found)]

    def exists(self) -> bool:
        """Whether the run has any checkpoint (verified or not)."""
        return bool(self.committed()) or (self.root / STATE).is_file()

    def latest(self) -> Checkpoint:
        """The newest checkpoint whose files match their record; raises :class:`CheckpointError` naming
        every checkpoint and its problem when none does."""
        problems = []
        for directory in reversed(self.committed()):
            problem = verify(directory)
            if problem is None:
                state = json.loads((directory / STATE).read_text(encoding="utf-8"))
                return Checkpoint(directory, state, problems)
            problems.append(f"{directory.name}: {problem}")
        if not problems and (self.root / STATE).is_file():   # a run from before step directories
            return Checkpoint(self.root, json.loads((self.root / STATE).read_text(encoding="utf-8")))
        if not problems:
            raise CheckpointError(f"no checkpoint in {self.root}")
        raise CheckpointError(f"no intact checkpoint in {self.root}: " + "; ".join(problems))


def verify(directory: Path) -> str | None:
    """None if every file recorded in ``directory``'s state.json is there with its recorded size and
    sha256; otherwise what is wrong (naming the file)."""
    try:
        state = json.loads((directory / STATE).read_text(encoding="utf-8"))
        files = state["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{STATE} cannot be read ({type(exc).__name__}: {exc})"
    for name, record in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != record["bytes"]:
            return f"{name} is {size} bytes, {record['bytes']} when written (truncated or changed)"
        if sha256_file(path) != record["sha256"]:
            return f"{name} does not match its sha256 (changed since it was written)"
    return None
