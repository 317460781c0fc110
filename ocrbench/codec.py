"""The one label convention and the one CTC decoder every backend shares.

Convention at every boundary between a backend and the core (job spec, predictions, export metadata):

* class 0 is the CTC **blank**;
* the character at position ``i`` (0-based) of the charset is class ``i + 1``;
* so a model over a charset of ``n`` characters has ``n + 1`` output classes.

A backend whose native convention differs (blank = last class in MindSpore WarpCTC and CRNN_Tensorflow)
converts at its own boundary, so the core only ever sees this one.

Standard library and numpy only (imported by workers).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Sequence

import numpy as np

BLANK = 0


@dataclass(frozen=True)
class Charset:
    """An ordered set of characters; position ``i`` is class ``i + 1`` (class 0 is the blank)."""

    chars: str

    def __post_init__(self) -> None:
        if not self.chars:
            raise ValueError("a charset needs at least one character")
        if len(set(self.chars)) != len(self.chars):
            dupes = sorted({c for c in self.chars if self.chars.count(c) > 1})
            raise ValueError(f"charset repeats characters: {''.join(dupes)!r}")

    @property
    def num_classes(self) -> int:
        """Number of model outputs: the characters plus the blank."""
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        """Class indices (1-based, blank excluded) of ``text``; raises KeyError for unknown characters."""
        table = self._table
        return [table[c] for c in text]

    @cached_property
    def _table(self) -> dict[str, int]:
        return {c: i + 1 for i, c in enumerate(self.chars)}

    def to_lines(self) -> str:
        """The PaddleOCR dict convention: one character per line, in class order (line k is class k+1)."""
        return "".join(c + "\n" for c in self.chars)


def ctc_collapse(path: Sequence[int] | np.ndarray, blank: int = BLANK) -> list[int]:
    """Greedy CTC post-processing of one best path: merge repeated classes, then drop blanks."""
    out: list[int] = []
    previous = None
    for k in (int(v) for v in path):
        if k != previous and k != blank:
            out.append(k)
        previous = k
    return out


def decode_best_paths(paths: np.ndarray, charset: Charset) -> list[str]:
    """Decode a batch of argmax paths into strings.

    ``paths`` is an integer array of shape (batch, time) — **batch-major** — holding the argmax class per
    time step in the convention above (blank = 0).
    """
    paths = np.asarray(paths)
    if paths.ndim != 2:
        raise ValueError(f"expected best paths of shape (batch, time), got {paths.shape}")
    if paths.size and (paths.min() < 0 or paths.max() >= charset.num_classes):
        raise ValueError(f"best paths hold classes outside 0..{charset.num_classes - 1} "
                         f"(min {paths.min()}, max {paths.max()}): wrong blank convention or charset?")
    chars = charset.chars
    return ["".join(chars[k - 1] for k in ctc_collapse(row)) for row in paths]


def from_blank_last(paths: np.ndarray, num_classes: int) -> np.ndarray:
    """Convert class indices from the *blank-last* convention (``charset[k]`` is class k, the blank is
    ``num_classes - 1``; used by CRNN_Tensorflow and MindSpore WarpCTC) to ocrbench's blank-0 convention
    (blank 0, ``charset[k]`` is class k + 1). Works on any integer array shape."""
    return (np.asarray(paths, dtype=np.int64) + 1) % num_classes


def pad_targets(texts: Iterable[str], charset: Charset, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode texts as a zero-padded (batch, max_len) int array plus a (batch,) length array."""
    texts = list(texts)
    targets = np.zeros((len(texts), max_len), dtype=np.int64)
    lengths = np.zeros(len(texts), dtype=np.int64)
    for row, text in enumerate(texts):
        ids = charset.encode(text)
        targets[row, : len(ids)] = ids
        lengths[row] = len(ids)
    return targets, lengths
