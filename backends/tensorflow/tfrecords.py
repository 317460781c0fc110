"""CRNN_Tensorflow's native data: TFRecords + ``char_dict.json`` / ``ord_map.json``, written and read.

Layout under a native directory (one per input width and resize policy, since records hold resized
pixels: ``<W>x32`` stretched, ``<W>x32-keepratio`` keeping the aspect ratio)::

    tfrecords/train_1.tfrecords ... train_4.tfrecords   (the eval split is upstream's ``val``)
    tfrecords/val_1.tfrecords ...
    char_dict/char_dict.json    {"<ord>_ord": "<char>"}
    char_dict/ord_map.json      {"<index>_index": "<ord>", "<ord>_ord": "<index>"}

Each record has upstream's features: ``images`` (raw uint8 bytes, 32 x W x 3, HWC, **BGR**, resized
bilinear), ``labels`` (int64 list of character indices, 0-based in charset order; the CTC blank is the
index after the last character) and ``imagepaths`` (bytes: the canonical dataset's sample id).
Dictionaries follow the dataset charset's order, so they are the same on every run (upstream builds them
from a Python set, whose order is not).

A keep-ratio copy (the shared crnn's ``keep_ratio: true``) holds each image resized to height 32 keeping
its aspect ratio, ``w = min(W, ceil(32 * width / height))`` columns (``preprocess.keep_ratio_width``),
**unpadded**: ``images`` is 32 x w x 3 bytes and the extra feature ``widths`` (int64) is w. The padding to W
is not in the records because it is zeros *after* normalising, which no uint8 pixel is; the worker's
``transform`` pads each normalised image (``batches``).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from ocrbench.labels import read_label_file
from ocrbench.preprocess import keep_ratio_width

HEIGHT = 32
SHARDS = 4
# Batches prefetched. Not tf.data.AUTOTUNE: measured with it, ending the second epoch's iterator stalled
# ~40 s (each run, the same place); with a fixed buffer of 2 it does not, at the same step speed.
PREFETCH_BATCHES = 2
FLAGS = {"train": "train", "eval": "val"}
STREAM_CHUNK = 64   # records read per call of the streaming generator (data.cache: none)
KEEP_RATIO_SUFFIX = "-keepratio"


def _without_autotune() -> tf.data.Options:
    """tf.data options with the autotuning model off. Its optimisation thread belongs to the iterator, whose
    destructor waits for it: with it on, ending the first epoch's iterator stalled 25-57 s (one core busy)
    in 5 of 6 two-epoch captcha runs, and some second epochs 10-21 s (2-core VM; py-spy, 2026-12-07: the
    main thread in ``RootDataset::Iterator::~Iterator`` waiting for an ``UnboundedThreadPool`` thread); with
    it off, 0.1 s. The parallel maps then run at the machine's core count instead of a tuned one; the
    order is unchanged (deterministic)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def native_name(width: int, keep_ratio: bool) -> str:
    """The native directory of one input width and resize policy: ``<W>x32`` (stretched, upstream's
    pixels) or ``<W>x32-keepratio`` (aspect ratio kept, unpadded), so the two copies never mix."""
    return f"{width}x{HEIGHT}{KEEP_RATIO_SUFFIX if keep_ratio else ''}"


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


def _example(bgr: np.ndarray, label: list[int], sample_id: str, keep_ratio: bool = False) -> bytes:
    feature = {
        "images": tf.train.Feature(bytes_list=tf.train.BytesList(value=[bgr.tobytes()])),
        "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=label)),
        "imagepaths": tf.train.Feature(bytes_list=tf.train.BytesList(value=[sample_id.encode("utf-8")])),
    }
    if keep_ratio:   # the resized width of an unpadded keep-ratio image
        feature["widths"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[bgr.shape[1]]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def load_bgr(path: Path, width: int, keep_ratio: bool = False) -> np.ndarray:
    """An image file -> uint8 (32, width, 3) BGR, resized with PIL's bilinear (aspect ratio not kept); with
    ``keep_ratio`` (32, min(width, ceil(32 * w / h)), 3), the same resize to that width, not padded."""
    with Image.open(path) as img:
        target = keep_ratio_width(img.height, img.width, HEIGHT, width) if keep_ratio else width
        rgb = img.convert("RGB").resize((target, HEIGHT), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[:, :, ::-1])


def write_native(dataset_dir: Path, charset: str, target: Path, width: int, keep_ratio: bool = False) -> None:
    """Canonical dataset -> TFRecords and dictionaries in ``target``, built in a temporary directory and
    renamed into place (a crash never leaves a half-written native copy). ``keep_ratio``: the images are
    resized keeping their aspect ratio and stored unpadded with their ``widths`` (module docstring)."""
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
                    writer.write(_example(load_bgr(dataset_dir / s.path, width, keep_ratio),
                                          encode_label(s.text, ords), s.path, keep_ratio))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def record_files(native: Path, split: str) -> list[str]:
    """The split's shard files in order (``train_1`` before ``train_2``, ... so eval order is stable)."""
    files = sorted((native / "tfrecords").glob(f"{FLAGS[split]}_*.tfrecords"),
                   key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return [str(p) for p in files]


def _parser(width: int, keep_ratio: bool):
    """A serialized record -> (image uint8 (32, W or w, 3) BGR, labels int32 (L,), length int32, id)."""
    features = {"images": tf.io.FixedLenFeature([], tf.string),
                "labels": tf.io.VarLenFeature(tf.int64),
                "imagepaths": tf.io.FixedLenFeature([], tf.string)}
    if keep_ratio:
        features["widths"] = tf.io.FixedLenFeature([], tf.int64)

    def parse(record):
        example = tf.io.parse_single_example(record, features)
        if keep_ratio:
            shape = tf.stack([HEIGHT, tf.cast(example["widths"], tf.int32), 3])
        else:
            shape = (HEIGHT, width, 3)
        image = tf.reshape(tf.io.decode_raw(example["images"], tf.uint8), shape)
        labels = tf.cast(tf.sparse.to_dense(example["labels"]), tf.int32)
        return image, labels, tf.size(labels), example["imagepaths"]

    return parse


def parsed_records(native: Path, split: str, width: int, keep_ratio: bool = False,
                   cache: bool = True) -> tf.data.Dataset:
    """Records -> (image uint8 (32, W, 3) BGR — (32, w, 3) unpadded in a keep-ratio copy —, labels int32
    (L,), length int32, sample id), in file order, parsed with a parallel map; kept in memory after the
    first pass when ``cache`` (``data.cache: memory``), else read from the files on every pass."""
    data = tf.data.TFRecordDataset(record_files(native, split)).map(
        _parser(width, keep_ratio), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return data.cache() if cache else data


class RecordIndex:
    """Where every record of a split's TFRecord shards starts: (shard, byte offset, length) in file order,
    from the TFRecord framing (uint64 length, uint32 CRC of it, the bytes, uint32 CRC of them). It lets a
    training epoch read the records in a shuffled order without holding any of them in memory: only this
    index and the order (three and one int64 per sample) are whole-split."""

    def __init__(self, files: list[str]):
        self.files = files
        entries = []
        for shard, path in enumerate(files):
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                offset = 0
                while offset < size:
                    header = f.read(12)
                    if len(header) < 12:
                        raise ValueError(f"{path}: truncated TFRecord header at byte {offset}")
                    (length,) = struct.unpack("<Q", header[:8])
                    entries.append((shard, offset + 12, length))
                    offset += 12 + length + 4
                    f.seek(offset)
                if offset != size:
                    raise ValueError(f"{path}: truncated TFRecord at byte {size}")
        self.entries = np.asarray(entries, dtype=np.int64).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, order: np.ndarray, chunk: int):
        """The serialized records in ``order`` (indices into file order), ``chunk`` at a time (an object
        array of bytes: one call into Python per chunk, not per record)."""
        handles = [open(path, "rb") for path in self.files]
        try:
            for start in range(0, len(order), chunk):
                records = []
                for shard, offset, length in self.entries[order[start:start + chunk]]:
                    handle = handles[shard]
                    handle.seek(offset)
                    records.append(handle.read(length))
                yield np.array(records, dtype=object)
        finally:
            for handle in handles:
                handle.close()


def shuffled_order(size: int, seed: int, buffer: int) -> np.ndarray:
    """The order ``Dataset.shuffle(buffer, seed, reshuffle_each_iteration=False)`` gives ``size`` elements
    (it draws its positions independently of the elements, so shuffling indices gives the permutation that
    shuffling the parsed records gives: an epoch's order is the same with and without ``cache``)."""
    indices = tf.data.Dataset.range(size).shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
    return next(iter(indices.batch(size))).numpy() if size else np.zeros(0, np.int64)


def streamed_records(native: Path, split: str, width: int, order: np.ndarray, keep_ratio: bool = False,
                     index: RecordIndex | None = None, chunk: int = STREAM_CHUNK) -> tf.data.Dataset:
    """Like ``parsed_records(cache=False)`` but in ``order``: the records are read from the shard files
    (a Python generator seeking to each one, ``chunk`` records per call) and parsed with a parallel map,
    so memory is bounded by the chunks and batches in flight, not by the split."""
    index = index or RecordIndex(record_files(native, split))
    serialized = tf.data.Dataset.from_generator(lambda: index.read(order, chunk),
                                                output_signature=tf.TensorSpec([None], tf.string))
    return serialized.unbatch().map(_parser(width, keep_ratio), num_parallel_calls=tf.data.AUTOTUNE,
                                    deterministic=True)


def batches(records: tf.data.Dataset, batch_size: int, shuffle_seed: int | None = None,
            buffer: int = 0, drop_remainder: bool = False, transform=None) -> tf.data.Dataset:
    """Batches of (images, labels zero-padded (B, Lmax), lengths, ids), shuffled with a fixed seed if
    given (one seed per epoch makes every epoch's order reproducible, also after a resume), prefetched.
    ``transform`` maps each (image, labels, length, id) after the shuffle and before batching (the
    keep-ratio copy's normalise-and-pad)."""
    if shuffle_seed is not None:
        records = records.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
    if transform is not None:
        records = records.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batched = records.padded_batch(batch_size, drop_remainder=drop_remainder).prefetch(PREFETCH_BATCHES)
    return batched.with_options(_without_autotune())
