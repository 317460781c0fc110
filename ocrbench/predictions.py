"""Prediction files: one ``id<TAB>prediction`` line per eval sample, in the eval split's order.

The one writer (workers, and the core for the exports it runs itself: ``ocrbench.export_parity``) and the one
reader (the core's scoring, ``ocrbench.metrics``, and ``paired_with_labels``). Predictions are decoded
from best paths by the shared greedy CTC decoder (``ocrbench.codec``), so every file in every run means
the same thing. A prediction
may be empty; an id holds no tab or newline (ids are the canonical label files' image paths).

Standard library and numpy only (imported by workers, inside every backend's environment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from ocrbench import atomic
from ocrbench.codec import Charset, decode_best_paths
from ocrbench.errors import OcrbenchError


def format_line(key: str, text: str) -> str:
    return f"{key}\t{text}\n"


def write_predictions(path: Path, batches: Iterable[tuple[list[str], np.ndarray]], charset: Charset) -> int:
    """Decode each batch's best paths ``(ids, int array (batch, time))`` with the shared CTC decoder and
    write the ``id<TAB>prediction`` lines atomically; returns the number of lines."""
    lines = []
    for ids, paths in batches:
        for key, text in zip(ids, decode_best_paths(paths, charset)):
            lines.append(format_line(key, text))
    atomic.write_text(path, "".join(lines))
    return len(lines)


def read_predictions(path: Path) -> dict[str, str]:
    """Read an ``id<TAB>prediction`` file into id -> prediction (in file order); a line without a tab or an
    id seen twice is an error naming the file and line."""
    predictions: dict[str, str] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise OcrbenchError(f"{path}: cannot read predictions ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        if "\t" not in line:
            raise OcrbenchError(f"{path}:{number}: expected 'id<TAB>prediction'")
        key, text = line.split("\t", 1)
        if key in predictions:
            raise OcrbenchError(f"{path}:{number}: id {key!r} appears twice")
        predictions[key] = text
    return predictions


def paired_with_labels(path: Path, labels: dict[str, str]) -> list[tuple[str, str]]:
    """``(ground_truth, prediction)`` for every label (id -> text) in the labels' order, from the
    predictions file ``path``; a missing or unknown id is an error naming the file."""
    predictions = read_predictions(path)
    missing = [key for key in labels if key not in predictions]
    extra = [key for key in predictions if key not in labels]
    if missing or extra:
        raise OcrbenchError(
            f"{path}: predictions do not match the eval split "
            f"({len(missing)} missing, e.g. {missing[:2]}; {len(extra)} unknown, e.g. {extra[:2]})")
    return [(labels[key], predictions[key]) for key in labels]
