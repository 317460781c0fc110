"""The evaluation protocol: how labels and predictions are normalised before they are compared.

Used by the core's scoring (``ocrbench.metrics``) and, for the one decision a worker takes from its own
evaluations (PaddleOCR's ``best_accuracy`` checkpoint), by :func:`sequence_accuracy` — the same
normalisation and the same exact-match rule as metrics.json's ``seq_acc``. Standard library only
(imported inside backend environments).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


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

    def same(self, truth: str, prediction: str, charset: str | None = None) -> bool:
        """Whether ``prediction`` reads as ``truth`` under this protocol (metrics.json's exact match)."""
        return self.apply(prediction, charset) == self.apply(truth, charset)


def sequence_accuracy(pairs: Iterable[tuple[str, str]], protocol: Protocol, charset: str | None) -> float:
    """The share of ``(ground_truth, prediction)`` pairs that are exact matches under ``protocol``
    (0-1; an empty sequence of pairs scores 0)."""
    pairs = list(pairs)
    return sum(protocol.same(truth, prediction, charset) for truth, prediction in pairs) / max(len(pairs), 1)
