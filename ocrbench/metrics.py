"""Recognition metrics, computed once, here, from prediction files and labels.

Definitions (all fractions in [0, 1]; ``lev`` is the Levenshtein distance, via rapidfuzz):

* ``seq_acc``  = exact matches / n, after the protocol's normalisation;
* ``cer``      = sum(lev(pred, gt)) / sum(len(gt))  — may exceed 1 when predictions insert a lot;
* ``char_acc`` = max(0, 1 - cer);
* ``ned``      = 1 - mean(lev(pred, gt) / max(len(pred), len(gt))), PaddleOCR's ``norm_edit_dis``
  (a pair of two empty strings has distance 0). Higher is better.

The protocol (case folding, space handling, charset filter) is applied to both sides first and is
written into every result next to the numbers. Prediction files are read by ``ocrbench.predictions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from rapidfuzz.distance import Levenshtein

from ocrbench.errors import OcrbenchError
from ocrbench.predictions import read_predictions


@dataclass(frozen=True)
class Protocol:
    """Normalisation applied to labels and predictions before scoring."""

    case: str = "sensitive"      # sensitive | lower | upper
    spaces: str = "keep"         # keep | strip (ends) | remove (all whitespace)
    charset_filter: bool = False  # drop characters outside the charset

    def apply(self, text: str, charset: str | None = None) -> str:
        if self.case == "lower":
            text = text.lower()
        elif self.case == "upper":
            text = text.upper()
        if self.spaces == "strip":
            text = text.strip()
        elif self.spaces == "remove":
            text = "".join(text.split())
        if self.charset_filter and charset is not None:
            allowed = set(charset)
            text = "".join(c for c in text if c in allowed)
        return text


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
        exact += prediction == truth
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
    predictions = read_predictions(predictions_path)
    missing = [key for key in labels if key not in predictions]
    extra = [key for key in predictions if key not in labels]
    if missing or extra:
        raise OcrbenchError(
            f"{predictions_path}: predictions do not match the eval split "
            f"({len(missing)} missing, e.g. {missing[:2]}; {len(extra)} unknown, e.g. {extra[:2]})")
    return score(((labels[key], predictions[key]) for key in labels), protocol, charset)
