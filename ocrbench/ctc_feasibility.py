"""CTC feasibility: a label fits a model only if the model has enough output steps for it.

CTC emits one class per time step and must put a blank between two equal neighbours, so a label needs
``len(label) + (number of adjacent equal pairs)`` steps: ``"abc"`` needs 3, ``"aab"`` needs 4. A label that
needs more than the model's T steps has probability zero: its loss is infinite (or NaN, or silently
zeroed, depending on the framework). ocrbench checks every label against T before a worker starts:

* ``data.on_bad_sample: error`` (default): the first such label is an error naming the label file, its
  line, the label, the steps it needs and T;
* ``data.on_bad_sample: skip``: such training samples are left out — the core writes a filtered label
  file ``train.ctc<T>.txt`` beside ``train.txt`` and the worker trains on it — and counted in the run's
  metrics (``dataset.ctc.skipped``). Evaluation samples are never dropped (every backend is scored on
  the same split); those a model cannot emit are counted (``dataset.ctc.eval_infeasible``) and score as
  errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ocrbench import atomic
from ocrbench.errors import OcrbenchError
from ocrbench.labels import format_label_lines, iter_label_file


def required_steps(text: str) -> int:
    """CTC output steps ``text`` needs: its length plus one blank between each pair of equal neighbours."""
    return len(text) + sum(1 for a, b in zip(text, text[1:]) if a == b)


@dataclass
class Feasibility:
    """The outcome of the check: label files the worker reads and what was left out or cannot be emitted."""

    steps: int
    train: str = "train.txt"
    eval: str = "eval.txt"
    skipped: int = 0
    eval_infeasible: int = 0
    longest_needed: dict[str, int] = field(default_factory=dict)

    @property
    def filtered(self) -> bool:
        return self.train != "train.txt"

    def as_dict(self) -> dict:
        return {"time_steps": self.steps, "train_labels": self.train, "skipped": self.skipped,
                "eval_infeasible": self.eval_infeasible, "longest_needed": self.longest_needed}


def check(dataset_dir, steps: int, policy: str, where: str) -> Feasibility:
    """Check both splits of a prepared dataset against ``steps`` (T); ``where`` names the setting that
    fixes T (e.g. ``model.params.input_width = 160 (crnn: T = W / 4 + 1 = 41)``) for the error."""
    result = Feasibility(steps)
    for split in ("train", "eval"):
        path = dataset_dir / f"{split}.txt"
        kept, bad = [], 0
        longest = 0
        for line, sample in iter_label_file(path):
            needed = required_steps(sample.text)
            longest = max(longest, needed)
            if needed <= steps:
                kept.append(sample)
                continue
            if policy == "error":
                raise OcrbenchError(
                    f"{path}:{line}: label {sample.text!r} needs {needed} CTC steps ({len(sample.text)} "
                    f"characters + {needed - len(sample.text)} blanks between repeats) but the model has "
                    f"T = {steps} ({where})",
                    hint="widen the model's input (model.params.input_width), shorten the labels "
                         "(data.max_len), or set data.on_bad_sample: skip to leave such training samples out")
            bad += 1
            if split == "eval":
                kept.append(sample)
        result.longest_needed[split] = longest
        if split == "eval":
            result.eval_infeasible = bad
        elif bad:
            result.skipped = bad
            result.train = f"train.ctc{steps}.txt"
            atomic.write_text(dataset_dir / result.train, format_label_lines(kept))
    return result
