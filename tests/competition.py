"""The PaddleOCR Chinese street-view competition's file layout, written from a synthetic text-line set: an
image folder plus ``name,value`` CSV label files in GB2312 (the layout ``data.source: csv`` reads)."""

import csv
import io
import shutil
from pathlib import Path

from ocrbench import datasets
from ocrbench.recipe import TextLinesData

# The first 40 GB2312 level-1 hanzi (rows 0xB0.., pinyin order): every one encodes in GB2312.
HANZI = "".join(bytes([0xB0, lo]).decode("gb2312") for lo in range(0xA1, 0xC9))


def tiny_lines(**overrides) -> dict:
    """A tiny Chinese text-line data section (40 classes, 2-4 characters, 32 px high)."""
    base = dict(source="textlines", charset=HANZI, min_len=2, max_len=4, fonts=["noto-sans-sc"],
                font_sizes=[22, 24], train_size=48, eval_size=16, seed=11)
    return TextLinesData(**{**base, **overrides}).model_dump(mode="json")


def write_competition_layout(data: dict, out: Path) -> Path:
    """Prepare ``data`` and write it as ``out/images/*.jpg``-style files (PNG here) with ``train.csv`` /
    ``eval.csv`` (GB2312, header ``name,value``). Returns ``out``."""
    prepared = datasets.prepare(data, out, lambda _m: None)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for split in ("train", "eval"):
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(["name", "value"])
        for index, sample in enumerate(prepared.samples(split)):
            name = f"{split}_{index:05d}.png"
            shutil.copyfile(prepared.root / sample.path, out / "images" / name)
            writer.writerow([name, sample.text])
        (out / f"{split}.csv").write_bytes(text.getvalue().encode("gb2312"))
    return out
