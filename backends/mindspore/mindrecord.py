"""The MindSpore backend's native data: one MindRecord file per split, written with mindspore.mindrecord
and read with mindspore.dataset.

Each record: ``image`` (the canonical dataset's encoded image bytes), ``label`` (int32[max_len]: charset
indices, 0-based in charset order, padded with the blank = len(charset), as WarpCTC pads its labels),
``length`` (int32: the number of real characters) and ``id`` (the sample id).

The records hold encoded images, so one copy serves every input size and resize policy; decoding and
resizing happen in the ``mindspore.dataset`` map, per batch. Nothing whole-split is held in memory while
reading: ``MindDataset``'s shuffle permutes row indices and reads each row from the file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from mindspore import dataset as ds
from mindspore.dataset import vision
from mindspore.mindrecord import FileWriter

from backends.mindspore.model import WARPCTC_MEAN, WARPCTC_STD
from ocrbench.labels import read_label_file
from ocrbench.preprocess import keep_ratio_width, pad_right

SCHEMA = {"image": {"type": "bytes"}, "label": {"type": "int32", "shape": [-1]},
          "length": {"type": "int32"}, "id": {"type": "string"}}
SPLITS = ("train", "eval")
PAGE_BYTES = 1 << 22  # 4 MiB MindRecord pages (the 32 MiB default makes a 64-image file 50 MB)


def record_path(native: Path, split: str) -> Path:
    return native / f"{split}.mindrecord"


def write_native(dataset_dir: Path, charset: str, native: Path, max_len: int) -> None:
    """Canonical dataset -> ``train.mindrecord`` / ``eval.mindrecord`` (+ their ``.db`` index files),
    written in a temporary directory and renamed into place."""
    tmp = native.with_name(native.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    index = {c: i for i, c in enumerate(charset)}
    blank = len(charset)
    for split in SPLITS:
        writer = FileWriter(str(record_path(tmp, split)), shard_num=1, overwrite=True)
        writer.set_page_size(PAGE_BYTES)
        writer.add_schema(SCHEMA, f"ocrbench {split}")
        rows = []
        for sample in read_label_file(dataset_dir / f"{split}.txt"):
            label = np.full(max_len, blank, dtype=np.int32)
            label[: len(sample.text)] = [index[c] for c in sample.text]
            rows.append({"image": (dataset_dir / sample.path).read_bytes(), "label": label,
                         "length": np.int32(len(sample.text)), "id": sample.path})
            if len(rows) == 1000:
                writer.write_raw_data(rows)
                rows = []
        if rows:
            writer.write_raw_data(rows)
        writer.commit()
    shutil.rmtree(native, ignore_errors=True)
    os.replace(tmp, native)


def _gray_chw(image: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> gray float32 (1, H, W) with ITU-R 601 weights (as PIL's "L")."""
    return (image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[None]


class KeepRatioResize:
    """RGB uint8 (h, w, 3) -> (height, min(max_width, ceil(height * w / h)), 3) (``keep_ratio_width``),
    resized with ``vision.Resize(..., Inter.LINEAR)`` — the op and interpolation of the stretched crnn
    pipeline, run eagerly on the one image because its output width depends on the image (a native
    ``Resize`` has a fixed size). The ops are made once per output width."""

    def __init__(self, height: int, max_width: int):
        self.height, self.max_width = height, max_width
        self.ops: dict[int, vision.Resize] = {}

    def __call__(self, image: np.ndarray) -> np.ndarray:
        width = keep_ratio_width(image.shape[0], image.shape[1], self.height, self.max_width)
        if width not in self.ops:
            self.ops[width] = vision.Resize((self.height, width), vision.Inter.LINEAR)
        return self.ops[width](image)


class PadRight:
    """Normalised float32 (C, H, w) -> (C, H, width): zeros (0.0, after normalising) on the right."""

    def __init__(self, width: int):
        self.width = width

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return pad_right(image, self.width, axis=2)


def pipeline(native: Path, split: str, arch: str, height: int, width: int, batch_size: int,
             shuffle: bool, workers: int, drop_remainder: bool,
             shard: tuple[int, int] = (1, 0), keep_ratio: bool = False) -> ds.Dataset:
    """Batches of (images float32 NCHW, label int32 (B, max_len), length int32 (B,)); ``shard``:
    (number of shards, this rank's) for data-parallel training.

    * ``warpctc``: decode -> BGR -> x / 255 -> normalise with WarpCTC's mean/std -> resize to H x W
      (bilinear) -> CHW (WarpCTC's order of operations).
    * ``crnn``: decode -> resize to 32 x W (bilinear) -> gray -> x / 127.5 - 1 -> (1, 32, W).
    * ``crnn`` with ``keep_ratio``: decode -> resize to 32 x min(W, ceil(32 w / h)) (the same bilinear,
      ``KeepRatioResize``) -> gray -> x / 127.5 - 1 -> (1, 32, w) padded with zeros on the right to
      (1, 32, W) (``PadRight``).
    """
    shards = {"num_shards": shard[0], "shard_id": shard[1]} if shard[0] > 1 else {}
    data = ds.MindDataset(str(record_path(native, split)), columns_list=["image", "label", "length"],
                          shuffle=shuffle, num_parallel_workers=workers, **shards)
    if arch == "warpctc":
        ops = [vision.Decode(), vision.ConvertColor(vision.ConvertMode.COLOR_RGB2BGR),
               vision.Rescale(1.0 / 255.0, 0.0),
               vision.Normalize(mean=list(WARPCTC_MEAN), std=list(WARPCTC_STD)),
               vision.Resize((height, width), vision.Inter.LINEAR), vision.HWC2CHW()]
    elif keep_ratio:
        ops = [vision.Decode(), KeepRatioResize(height, width), _gray_chw, vision.Rescale(1.0 / 127.5, -1.0),
               PadRight(width)]
    else:
        ops = [vision.Decode(), vision.Resize((height, width), vision.Inter.LINEAR), _gray_chw,
               vision.Rescale(1.0 / 127.5, -1.0)]
    data = data.map(operations=ops, input_columns="image", num_parallel_workers=workers)
    return data.batch(batch_size, drop_remainder=drop_remainder)
