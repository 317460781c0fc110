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
from ocrbench.preprocess import crnn_gray, pad_right

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


class CrnnGray:
    """Encoded image bytes (the MindRecord ``image`` column) -> gray float32 (1, height, w) in 0..255:
    the shared crnn's decode and resize, ``ocrbench.preprocess.crnn_gray`` (PIL gray, PIL bilinear; w =
    ``width``, or the keep-ratio width), as in every other backend."""

    def __init__(self, height: int, width: int, keep_ratio: bool):
        self.height, self.width, self.keep_ratio = height, width, keep_ratio

    def __call__(self, encoded: np.ndarray) -> np.ndarray:
        gray = crnn_gray(encoded.tobytes(), self.height, self.width, self.keep_ratio)
        return gray.astype(np.float32)[None]


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
    * ``crnn``: PIL decode -> gray -> PIL bilinear to 32 x W (``CrnnGray``) -> x / 127.5 - 1 -> (1, 32, W).
    * ``crnn`` with ``keep_ratio``: the same to 32 x min(W, ceil(32 w / h)) -> x / 127.5 - 1 -> (1, 32, w)
      padded with zeros on the right to (1, 32, W) (``PadRight``).
    """
    shards = {"num_shards": shard[0], "shard_id": shard[1]} if shard[0] > 1 else {}
    data = ds.MindDataset(str(record_path(native, split)), columns_list=["image", "label", "length"],
                          shuffle=shuffle, num_parallel_workers=workers, **shards)
    if arch == "warpctc":
        ops = [vision.Decode(), vision.ConvertColor(vision.ConvertMode.COLOR_RGB2BGR),
               vision.Rescale(1.0 / 255.0, 0.0),
               vision.Normalize(mean=list(WARPCTC_MEAN), std=list(WARPCTC_STD)),
               vision.Resize((height, width), vision.Inter.LINEAR), vision.HWC2CHW()]
    else:
        ops = [CrnnGray(height, width, keep_ratio), vision.Rescale(1.0 / 127.5, -1.0)]
        ops += [PadRight(width)] if keep_ratio else []
    data = data.map(operations=ops, input_columns="image", num_parallel_workers=workers)
    return data.batch(batch_size, drop_remainder=drop_remainder)
