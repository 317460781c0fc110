"""The MindSpore backend's native data: one MindRecord file per split, written with mindspore.mindrecord
and read with mindspore.dataset.

Each record: ``image`` (the canonical dataset's encoded image bytes), ``label`` (int32[max_len]: charset
indices, 0-based in charset order, padded with the blank = len(charset), as WarpCTC pads its labels),
``length`` (int32: the number of real characters) and ``id`` (the sample id).
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


def pipeline(native: Path, split: str, arch: str, height: int, width: int, batch_size: int,
             shuffle: bool, workers: int, drop_remainder: bool,
             shard: tuple[int, int] = (1, 0)) -> ds.Dataset:
    """Batches of (images float32 NCHW, label int32 (B, max_len), length int32 (B,)); ``shard``:
    (number of shards, this rank's) for data-parallel training.

    * ``warpctc``: decode -> BGR -> x / 255 -> normalise with WarpCTC's mean/std -> resize to H x W
      (bilinear) -> CHW (WarpCTC's order of operations).
    * ``crnn``: decode -> resize to 32 x W (bilinear) -> gray -> x / 127.5 - 1 -> (1, 32, W).
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
        ops = [vision.Decode(), vision.Resize((height, width), vision.Inter.LINEAR), _gray_chw,
               vision.Rescale(1.0 / 127.5, -1.0)]
    data = data.map(operations=ops, input_columns="image", num_parallel_workers=workers)
    return data.batch(batch_size, drop_remainder=drop_remainder)
