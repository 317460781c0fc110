"""From a model's outputs to recognised text with a confidence: the one decoder both ``ocrbench predict``
engines use (onnxruntime in the core, the framework in its worker), and the ``recognitions.jsonl`` file a
worker's predict stage writes.

Conventions:

* **outputs** are float32 ``(batch, time, classes)``, batch-major, as a model gives them: in its own class
  order (``blank``: 0 or the last class, ``ocrbench-export.json``) and its own ``activation`` (``logits``,
  or ``softmax`` for PaddleOCR's inference models); :func:`probabilities` turns them into softmax
  probabilities in ocrbench's order (class 0 the CTC blank, ``charset[i]`` class ``i + 1``);
* **text** is the greedy CTC decoding of the argmax path (``ocrbench.codec``), the same decoder as every
  prediction file;
* **confidence** is computed from the per-step maximum probability ``p_t = max_c P(c | t)`` over all ``T``
  time steps (blank steps included): ``confidence_mean`` = mean over t of ``p_t``,
  ``confidence_min`` = min over t of ``p_t`` — both in [0, 1].

Standard library and numpy only (imported by workers).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ocrbench import atomic
from ocrbench.codec import Charset, decode_best_paths
from ocrbench.errors import OcrbenchError

ACTIVATIONS = ("logits", "softmax")
CONFIDENCES = ("mean", "min")


@dataclass(frozen=True)
class Recognition:
    """One image's result: ``id`` (the caller's key), ``text``, and the two confidences (module docstring)."""

    id: str
    text: str
    confidence_mean: float
    confidence_min: float

    def confidence(self, which: str) -> float:
        return self.confidence_mean if which == "mean" else self.confidence_min


def blank_first_order(blank: int, classes: int) -> np.ndarray:
    """The column order that puts a model's classes into ocrbench's (blank 0): ``ours = theirs[..., order]``.
    A model with the blank last (charset[k] is class k) gives ``[classes - 1, 0, 1, ..., classes - 2]``."""
    if blank == 0:
        return np.arange(classes)
    if blank == classes - 1:
        return np.concatenate([[classes - 1], np.arange(classes - 1)])
    raise OcrbenchError(f"model output: blank index {blank} is neither 0 nor the last class ({classes - 1})")


def probabilities(outputs: np.ndarray, blank: int, activation: str) -> np.ndarray:
    """Softmax probabilities ``(B, T, C)`` in ocrbench's class order from a model's ``outputs``
    ``(B, T, C)`` (module docstring); float64 for a stable softmax."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim != 3:
        raise OcrbenchError(f"model output: expected (batch, time, classes), got shape {outputs.shape}")
    if activation not in ACTIVATIONS:
        raise OcrbenchError(f"model output: activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
    if activation == "logits":
        shifted = np.exp(outputs - outputs.max(axis=2, keepdims=True))
        outputs = shifted / shifted.sum(axis=2, keepdims=True)
    return outputs[..., blank_first_order(blank, outputs.shape[2])]


def recognise(ids: list[str], probs: np.ndarray, charset: Charset) -> list[Recognition]:
    """Text and confidences for a batch of ocrbench-ordered probabilities ``(B, T, C)``."""
    texts = decode_best_paths(probs.argmax(axis=2), charset)
    step_max = probs.max(axis=2)                                    # (B, T): p_t
    return [Recognition(key, text, float(row.mean()), float(row.min()))
            for key, text, row in zip(ids, texts, step_max)]


def write_recognitions(path: Path, recognitions: Iterable[Recognition]) -> int:
    """``recognitions.jsonl`` (one JSON object per image, the :class:`Recognition` fields), atomically;
    returns the number of lines."""
    lines = [json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in recognitions]
    atomic.write_text(path, "".join(lines))
    return len(lines)


def read_recognitions(path: Path) -> list[Recognition]:
    """The lines of a ``recognitions.jsonl``; a bad line is an error naming the file and line."""
    found = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise OcrbenchError(f"{path}: cannot read recognitions ({exc})") from None
    for number, line in enumerate(lines, start=1):
        try:
            found.append(Recognition(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as exc:
            raise OcrbenchError(f"{path}:{number}: not a recognition line ({exc})") from None
    return found
