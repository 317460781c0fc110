"""Label files in the canonical layout: one ``relative/path<TAB>text`` line per image.

This is PaddleOCR's SimpleDataSet and DTRB's ground-truth convention. Paths are relative to the dataset
directory and use ``/``. Standard library only (imported by workers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator


@dataclass(frozen=True)
class Sample:
    """One labelled image: ``path`` relative to the dataset root, ``text`` its transcription."""

    path: str
    text: str


class LabelFileError(ValueError):
    """A malformed line; the message names the file and line number."""


def parse_line(line: str, where: str, delimiter: str = "\t") -> Sample:
    """Parse one label line; ``where`` (``file:line``) goes into the error message."""
    if delimiter not in line:
        raise LabelFileError(f"{where}: expected 'path{delimiter!r}text', found no delimiter")
    path, text = line.split(delimiter, 1)
    if not path:
        raise LabelFileError(f"{where}: empty image path")
    return Sample(path, text)


def iter_label_file(path: str | Path, delimiter: str = "\t") -> Iterator[tuple[int, Sample]]:
    """Yield ``(line_number, sample)`` for a UTF-8 label file; blank lines are skipped and a malformed
    line raises LabelFileError naming ``file:line``."""
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if line.strip():
                yield number, parse_line(line, f"{path}:{number}", delimiter)


def read_label_file(path: str | Path, delimiter: str = "\t") -> list[Sample]:
    """All samples of a label file (see :func:`iter_label_file`)."""
    return [sample for _, sample in iter_label_file(path, delimiter)]


def format_label_lines(samples: list[Sample]) -> str:
    """The text of a canonical label file for ``samples``."""
    return "".join(f"{s.path}\t{s.text}\n" for s in samples)


def is_safe_relative(path: str) -> bool:
    """True if ``path`` is relative and stays inside its root (no ``..`` escape, no absolute path)."""
    pure = PurePosixPath(path.replace("\\", "/"))
    return not pure.is_absolute() and ".." not in pure.parts and not (pure.parts and ":" in pure.parts[0])
