"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

Standard library only (imported by workers too).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ocrbench.errors import NO_SPACE_ERRNOS, disk_full_error


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory and ``os.replace``. A full
    disk raises ``ocrbench.errors.DiskFullError`` naming ``path`` (the temporary file is removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
            raise disk_full_error(path.name, path) from exc
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 text."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented, key-sorted JSON (UTF-8, trailing newline)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def remove_tree(path: str | os.PathLike) -> None:
    """Delete a directory (or file) that a failed write left, truncating every file first: a framework that
    failed mid-write may still hold the file open, and on a full disk its blocks are only released when it
    is emptied — unlinking alone would keep the space taken until the process exits."""
    path = Path(path)
    if path.is_symlink():   # a link is removed, never what it points to
        path.unlink()
        return
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    for item in files:
        try:
            os.truncate(item, 0)
        except OSError:
            pass
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
