"""CRNN_Tensorflow's native data: TFRecords + ``char_dict.json`` / ``ord_map.json``, written and read.

Layout under a native directory (one per input width, since records hold resized pixels)::

    tfrecords/train_1.tfrecords ... train_4.tfrecords   (the eval split is upstream's ``val``)
    tfrecords/val_1.tfrecords ...
    char_dict/char_dict.json    {"<ord>_ord": "<char>"}
    char_dict/ord_map.json      {"<index>_index": "<ord>", "<ord>_ord": "<index>"}

Each record has upstream's features: ``images`` (raw uint8 bytes, 32 x W x 3, HWC, **BGR**, resized
bilinear), ``labels`` (int64 list of character indices, 0-based in charset order; the CTC blank is the
index after the last character) and ``imagepaths`` (bytes: the canonical dataset's sample id).
Dictionaries follow the dataset charset's order, so they are the same on every run (upstream builds them
from a Python set, whose order is not).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from ocrbench.labels import read_label_file

HEIGHT = 32
SHARDS = 4
# Batches prefetched. Not tf.data.AUTOTUNE: measured with it, ending the second epoch's iterator stalled
# ~40 s (each run, the same place); with a fixed buffer of 2 it does not, at the same step speed.
PREFETCH_BATCHES = 2
FLAGS = {"train": "train", "eval": "val"}


def char_dict(charset: str) -> dict[str, str]:
    return {f"{ord(c)}_ord": c for c in charset}


def ord_map(charset: str) -> dict[str, str]:
    mapping = {}
    for index, c in enumerate(charset):
        mapping[f"{index}_index"] = str(ord(c))
        mapping[f"{ord(c)}_ord"] = str(index)
    return mapping


def encode_label(text: str, ords: dict[str, str]) -> list[int]:
    return [int(ords[f"{ord(c)}_ord"]) for c in text]


def _example(bgr: np.ndarray, label: list[int], sample_id: str) -> bytes:
    feature = {
        "images": tf.train.Feature(bytes_list=tf.train.BytesList(value=[bgr.tobytes()])),
        "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=label)),
        "imagepaths": tf.train.Feature(bytes_list=tf.train.BytesList(value=[sample_id.encode("utf-8")])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def load_bgr(path: Path, width: int) -> np.ndarray:
    """An image file -> uint8 (32, width, 3) BGR, resized bilinear (aspect ratio not kept)."""
    with Image.open(path) as img:
        rgb = img.convert("RGB").resize((width, HEIGHT), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[:, :, ::-1])


def write_native(dataset_dir: Path, charset: str, target: Path, width: int) -> None:
    """Canonical dataset -> TFRecords and dictionaries in ``target``, built in a temporary directory and
    renamed into place (a crash never leaves a half-written native copy)."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "tfrecords").mkdir(parents=True)
    (tmp / "char_dict").mkdir()
    ords = ord_map(charset)
    (tmp / "char_dict" / "char_dict.json").write_text(json.dumps(char_dict(charset), indent=2,
                                                                 ensure_ascii=False))
    (tmp / "char_dict" / "ord_map.json").write_text(json.dumps(ords, indent=2, ensure_ascii=False))
    for split, flag in FLAGS.items():
        samples = read_label_file(dataset_dir / f"{split}.txt")
        for shard, chunk in enumerate(np.array_split(np.arange(len(samples)), min(SHARDS, len(samples))), 1):
            with tf.io.TFRecordWriter(str(tmp / "tfrecords" / f"{flag}_{shard}.tfrecords")) as writer:
                for i in chunk:
                    s = samples[i]
                    writer.write(_example(load_bgr(dataset_dir / s.path, width), encode_label(s.text, ords),
                                          s.path))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def record_files(native: Path, split: str) -> list[str]:
    """The split's shard files in order (``train_1`` before ``train_2``, ... so eval order is stable)."""
    files = sorted((native / "tfrecords").glob(f"{FLAGS[split]}_*.tfrecords"),
                   key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return [str(p) for p in files]


def parsed_records(native: Path, split: str, width: int) -> tf.data.Dataset:
    """Records -> (image uint8 (32, W, 3) BGR, labels int32 (L,), length int32, sample id), in file order,
    parsed with a parallel map and cached in memory."""
    features = {"images": tf.io.FixedLenFeature([], tf.string),
                "labels": tf.io.VarLenFeature(tf.int64),
                "imagepaths": tf.io.FixedLenFeature([], tf.string)}

    def parse(record):
        example = tf.io.parse_single_example(record, features)
        image = tf.reshape(tf.io.decode_raw(example["images"], tf.uint8), (HEIGHT, width, 3))
        labels = tf.cast(tf.sparse.to_dense(example["labels"]), tf.int32)
        return image, labels, tf.size(labels), example["imagepaths"]

    files = record_files(native, split)
    return tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                                              deterministic=True).cache()


def batches(records: tf.data.Dataset, batch_size: int, shuffle_seed: int | None = None,
            buffer: int = 0, drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches of (images, labels zero-padded (B, Lmax), lengths, ids), shuffled with a fixed seed if
    given (one seed per epoch makes every epoch's order reproducible, also after a resume), prefetched."""
    if shuffle_seed is not None:
        records = records.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
    return records.padded_batch(batch_size, drop_remainder=drop_remainder).prefetch(PREFETCH_BATCHES)
