"""The one exception type the CLI turns into a clear message (no traceback), and the full-disk error
(:class:`DiskFullError`, :func:`writing`) the core and the workers raise. Standard library only."""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import shutil
import traceback
from pathlib import Path
from typing import Iterator


class OcrbenchError(Exception):
    """A user-facing error: what is wrong (naming the file, key or value) and what to do about it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
NO_SPACE_TEXT = "no space left on device"
LOW_SPACE_BYTES = 256 * 1024   # a write that failed with less than this free is taken for a full disk


class DiskFullError(OcrbenchError):
    """A write ran out of space: names what was being written, where, and the space left."""


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the filesystem holding ``path`` (its nearest existing ancestor); None if unknown."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def is_disk_full(exc: BaseException, where: str | os.PathLike | None = None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a full disk or quota: errno ENOSPC/EDQUOT,
    a framework's message saying so, or — for frameworks that only say "write failed" (torch.save) — an
    error while less than LOW_SPACE_BYTES were free on the filesystem of ``where``."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in NO_SPACE_ERRNOS:
            return True
        if NO_SPACE_TEXT in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    free = free_bytes(where) if where is not None else None
    return free is not None and free < LOW_SPACE_BYTES


def disk_full_error(what: str, path: str | os.PathLike) -> DiskFullError:
    """The named error for a write of ``what`` at ``path`` that ran out of space."""
    free = free_bytes(path)
    left = f"; {free // 1024} KiB free at that moment" if free is not None else ""
    folder = Path(path).parent
    return DiskFullError(f"no space left on device while writing {what} ({path}{left})",
                         hint=f"free space on the filesystem holding {folder} (df -h {folder}) and run the "
                              "command again; a run that stopped continues with `ocrbench run --resume "
                              "RUN_DIR` from its last checkpoint")


@contextlib.contextmanager
def writing(what: str, path: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk inside the block into :class:`DiskFullError` naming ``what`` and ``path``.

    The framework's exception's frames are cleared first: they hold the failed writer, and with it open
    file handles (torch.save's stream writer) whose space on the full filesystem is released only when it
    is collected — so that the error event and the traceback can be written."""
    said = None
    try:
        yield
    except OcrbenchError:
        raise
    except Exception as exc:
        if not is_disk_full(exc, path):
            raise
        said = last_line(f"{type(exc).__name__}: {exc}")
        traceback.clear_frames(exc.__traceback__)   # the failed writer's locals: its open files
    if said is not None:
        gc.collect()
        error = disk_full_error(what, path)
        error.message += f" [{said[:300]}]"
        raise error


def last_line(text: str) -> str:
    """The last non-empty line of a framework's message (MXNet's and MindSpore's carry their C++ stack
    trace before it)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
