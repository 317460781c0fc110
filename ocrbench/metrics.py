"""Recognition metrics, computed once, here, from prediction files and labels.

Definitions (all fractions in [0, 1]; ``lev`` is the Levenshtein distance, via rapidfuzz):

* ``seq_acc``  = exact matches / n, after the protocol's normalisation;
* ``cer``      = sum(lev(pred, gt)) / sum(len(gt))  — may exceed 1 when predictions insert a lot;
* ``char_acc`` = max(0, 1 - cer);
* ``ned``      = 1 - mean(lev(pred, gt) / max(len(pred), len(gt))), PaddleOCR's ``norm_edit_dis``
  (a pair of two empty strings has distance 0). Higher is better.

The protocol (``ocrbench.protocol``: case folding, space handling, charset filter) is applied to both
sides first and is written into every result next to the numbers. Prediction files are read by
``ocrbench.predictions``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rapidfuzz.distance import Levenshtein

from ocrbench.errors import OcrbenchError
from ocrbench.predictions import paired_with_labels
from ocrbench.protocol import Protocol

__all__ = ["Protocol", "score", "score_files"]


def score(pairs: Iterable[tuple[str, str]], protocol: Protocol = Protocol(),
          charset: str | None = None) -> dict[str, float | int]:
    """Score ``(ground_truth, prediction)`` pairs; returns n, seq_acc, cer, char_acc and ned."""
    n = exact = distance_sum = gt_chars = 0
    ned_sum = 0.0
    for truth, prediction in pairs:
        truth = protocol.apply(truth, charset)
        prediction = protocol.apply(prediction, charset)
        distance = Levenshtein.distance(prediction, truth)
        n += 1
        exact += prediction == truth   # (protocol.same, on the already normalised pair)
        distance_sum += distance
        gt_chars += len(truth)
        longest = max(len(prediction), len(truth))
        ned_sum += distance / longest if longest else 0.0
    if n == 0:
        raise OcrbenchError("nothing to score: the evaluation split is empty")
    cer = distance_sum / gt_chars if gt_chars else float(distance_sum > 0)
    return {
        "n": n,
        "seq_acc": exact / n,
        "cer": cer,
        "char_acc": max(0.0, 1.0 - cer),
        "ned": 1.0 - ned_sum / n,
    }


def score_files(predictions_path: Path, labels: dict[str, str], protocol: Protocol,
                charset: str | None) -> dict[str, float | int]:
    """Score a predictions file against ``labels`` (id -> text); every label needs exactly one prediction."""
    return score(paired_with_labels(predictions_path, labels), protocol, charset)
