"""``ocrbench predict RUN_DIR IMAGE...``: what a trained run reads in the user's images.

Inputs are image files, folders (every image file below them, in sorted order) and label files
(``.txt`` / ``.tsv``: ``path<TAB>text`` lines, the canonical layout, with paths relative to the label
file's folder): with labels, each result also shows the truth and the summary the accuracy (the run's eval
protocol). Output: a table, JSON lines or CSV (``--format``), to the terminal or a file written
atomically (``--output``). Confidence: ``ocrbench.recognition`` (mean or min of the per-step maximum
probability). An input that cannot be read is named, and the others still get their results.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from ocrbench.codec import Charset
from ocrbench.engines import BATCH, Outcome, open_engine
from ocrbench.errors import OcrbenchError
from ocrbench.labels import LabelFileError, iter_label_file
from ocrbench.metrics import score
from ocrbench.protocol import Protocol
from ocrbench.recognition import CONFIDENCES
from ocrbench.stage import finished_run

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
LABEL_SUFFIXES = (".txt", ".tsv")
FORMATS = ("table", "jsonl", "csv")
SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}


@dataclass(frozen=True)
class Item:
    """One image to read: its file, the name shown for it, and its label when a label file gave one."""

    path: Path
    name: str
    truth: str | None = None


def collect(inputs: list[Path]) -> list[Item]:
    """The images named by ``inputs`` (files, folders, label files), in order; a missing path, an empty
    folder or a malformed label file is an error naming it."""
    items: list[Item] = []
    for given in inputs:
        if given.is_dir():
            found = sorted(p for p in given.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise OcrbenchError(f"{given}: no image files in this folder or below "
                                    f"({', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)})")
            items += [Item(p, str(p)) for p in found]
        elif given.is_file() and given.suffix.lower() in LABEL_SUFFIXES:
            items += _from_label_file(given)
        elif given.is_file():
            items.append(Item(given, str(given)))
        else:
            raise OcrbenchError(f"{given}: no such file or folder")
    return items


def _from_label_file(path: Path) -> list[Item]:
    try:
        lines = list(iter_label_file(path))
    except LabelFileError as exc:
        raise OcrbenchError(f"{exc} (a label file holds 'image path<TAB>text' lines)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OcrbenchError(f"{path}: cannot read the label file ({exc})") from None
    if not lines:
        raise OcrbenchError(f"{path}: the label file has no lines")
    return [Item(path.parent / s.path, s.path, s.text) for _, s in lines]


@dataclass
class Prediction:
    """The whole answer: the items, what the engine gave and the run's charset and protocol."""

    items: list[Item]
    outcome: Outcome
    engine: str
    protocol: Protocol
    charset: Charset

    def rows(self, confidence: str) -> list[dict]:
        """One dict per item (input order): image, text, confidence (the chosen one), both confidences,
        truth and correct when labelled, error for an input that got no result."""
        rows = []
        for index, item in enumerate(self.items):
            row: dict = {"image": item.name}
            result = self.outcome.results.get(index)
            if result is None:
                row["error"] = self.outcome.failures[index].reason
            else:
                row.update(text=result.text, confidence=round(result.confidence(confidence), 6),
                           confidence_mean=round(result.confidence_mean, 6),
                           confidence_min=round(result.confidence_min, 6))
            if item.truth is not None:
                row["truth"] = item.truth
                if result is not None:
                    row["correct"] = self.protocol.same(item.truth, result.text, self.charset.chars)
            rows.append(row)
        return rows

    def accuracy(self) -> dict | None:
        """The run's metrics over the labelled items that got a result (None without labels)."""
        pairs = [(item.truth, self.outcome.results[i].text) for i, item in enumerate(self.items)
                 if item.truth is not None and i in self.outcome.results]
        return score(pairs, self.protocol, self.charset.chars) if pairs else None


def predict(run_dir: Path, inputs: list[Path], engine: str, console, command: list[str],
            batch_size: int = BATCH) -> Prediction:
    """Read every image of ``inputs`` with the run's model (module docstring)."""
    metrics = finished_run(run_dir, "predict")
    items = collect(inputs)
    charset = Charset(metrics["dataset"]["charset"])
    chosen = open_engine(engine, run_dir, metrics, charset, console, command)
    with _progress(console, len(items)) as advance:
        outcome = chosen.run([item.path for item in items], batch_size, advance)
    protocol = Protocol(**{k: v for k, v in metrics["eval"]["protocol"].items() if k != "decoder"})
    return Prediction(items, outcome, chosen.name, protocol, charset)


class _progress:
    """A progress bar over the images when there are more than a few batches (else nothing)."""

    def __init__(self, console, total: int):
        self.console, self.total, self.bar = console, total, None

    def __enter__(self):
        if self.total <= 4 * BATCH:
            return lambda n: None
        from rich.progress import Progress

        self.bar = Progress(console=self.console, transient=True)
        self.bar.__enter__()
        task = self.bar.add_task("reading images", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)


def render(prediction: Prediction, fmt: str, confidence: str) -> str:
    """The rows as JSON lines or CSV text (the table is printed by :func:`print_table`)."""
    rows = prediction.rows(confidence)
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    columns = ["image", "text", "confidence", "confidence_mean", "confidence_min", "truth", "correct",
               "error"]
    present = [c for c in columns if any(c in row for row in rows)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, present, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def print_table(console, prediction: Prediction, confidence: str) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    rows = prediction.rows(confidence)
    labelled = any("truth" in row for row in rows)
    table = Table(box=box.SIMPLE_HEAVY)
    for title in ["image", "text", f"confidence ({confidence})"] + (["truth", ""] if labelled else []):
        table.add_column(title, overflow="fold")
    for row in rows:
        if "error" in row:
            cells = [row["image"], f"[red]{escape(row['error'])}[/red]", ""]
        else:
            cells = [escape(row["image"]), escape(row["text"]), f"{row['confidence']:.4f}"]
        if labelled:
            mark = {True: "ok", False: "[red]x[/red]"}.get(row.get("correct"), "")
            cells += [escape(row.get("truth", "")), mark]
        table.add_row(*cells)
    console.print(table)


def summary(prediction: Prediction) -> list[str]:
    """Lines under the result: counts, accuracy when labelled, engine and speed."""
    o = prediction.outcome
    lines = [f"{len(o.results)} of {len(prediction.items)} images read"
             + (f"; {len(o.failures)} could not be read" if o.failures else "")]
    acc = prediction.accuracy()
    if acc is not None:
        lines.append(f"labelled: seq acc {acc['seq_acc']:.4f}, char acc {acc['char_acc']:.4f} over "
                     f"{acc['n']} images (the run's eval protocol)")
    speed = f"{o.images_per_s:.0f} images/s" if o.images_per_s else "-"
    lines.append(f"engine {prediction.engine}: {o.runtime}; start {o.start_s:.1f} s, "
                 f"{o.run_s:.2f} s for the images ({speed}, decoding and preprocessing included)")
    return lines


def check_options(fmt: str | None, output: Path | None, confidence: str) -> str:
    """The output format (``--format``, else from ``--output``'s suffix, else table), checked."""
    if confidence not in CONFIDENCES:
        raise OcrbenchError(f"--confidence {confidence!r}: choose one of {', '.join(CONFIDENCES)}")
    if fmt is None:
        fmt = SUFFIX_FORMATS.get(output.suffix.lower(), "table") if output else "table"
    if fmt not in FORMATS:
        raise OcrbenchError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "table" and output is not None:
        raise OcrbenchError(f"--output {output}: a file gets jsonl or csv",
                            hint="add --format jsonl or --format csv (or name the file .jsonl / .csv)")
    return fmt
