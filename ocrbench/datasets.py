"""The canonical dataset: prepared once per fingerprint, shared by every backend.

Layout of a prepared dataset directory (``$OCRBENCH_HOME/datasets/<source>-<key>/``)::

    images/train/00000000.png ...   the images (captcha: PNG, RGB; imports: the original bytes)
    images/eval/...
    train.txt, eval.txt             label files, one ``relative/path<TAB>text`` line per image
    charset.txt                     one character per line; line k is class k+1 (class 0 = CTC blank)
    manifest.json                   counts, skips, generator versions, sha256 fingerprint

The directory name is a hash of the data recipe (plus generator versions, and for imports the label
files' contents and the images' sizes and times), so a second run with the same recipe reuses it. The
directory is built under a temporary name and renamed into place: it is either complete or absent.

Captchas are drawn by ``ocrbench.captcha_renderer``: every image's bytes depend only on the recipe.

Also ``files.tsv`` (every image's size and sha256: the quick check on reuse, ``ocrbench prepare --verify``)
and, beside the directory, ``.<name>.lock`` (processes preparing it at once take turns).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ocrbench import atomic, errors, images
from ocrbench.captcha_renderer import font_problem, render_captcha
from ocrbench.errors import OcrbenchError
from ocrbench.home import datasets_dir
from ocrbench.labels import (LabelFileError, Sample, format_label_lines, is_safe_relative, iter_label_file,
                             read_label_file)

FORMAT = "ocrbench.dataset/1"
SYNTHETIC = ("captcha", "textlines")
SPLITS = ("train", "eval")
CHUNK = 200  # captcha samples per task handed to a worker process


@dataclass
class PreparedDataset:
    """A complete canonical dataset on disk."""

    root: Path
    manifest: dict

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def charset(self) -> str:
        return self.manifest["charset"]

    def samples(self, split: str) -> list[Sample]:
        return read_label_file(self.root / f"{split}.txt")

    def labels(self, split: str) -> dict[str, str]:
        """Image path (the sample id) -> text."""
        return {s.path: s.text for s in self.samples(split)}


def open_prepared(root: Path) -> PreparedDataset:
    """An already prepared dataset directory (as recorded in a run's metrics.json)."""
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise OcrbenchError(f"{root}: the run's dataset is gone (no manifest.json)",
                            hint="prepare it again with `ocrbench prepare RECIPE` "
                                 "(same recipe, same fingerprint)")
    return PreparedDataset(root, json.loads(manifest.read_text()))


# -------------------------------------------------------------------------------- synthetic sources
def _renderer(source: str) -> Callable[[dict, str, int], tuple[bytes, str]]:
    """The pure ``(config, split, index) -> (png bytes, text)`` function of a synthetic source."""
    if source == "captcha":
        return render_captcha
    from ocrbench.textlines import render_line

    return render_line


def _render_chunk(task: tuple[dict, str, int, int, str]) -> list[tuple[str, str, str]]:
    """Render samples [start, stop) of a split into ``out``; returns (relpath, sha256, text) rows."""
    config, split, start, stop, out = task
    render = _renderer(config["source"])
    rows = []
    for index in range(start, stop):
        png, text = render(config, split, index)
        relpath = f"images/{split}/{index:08d}.png"
        (Path(out) / relpath).write_bytes(png)
        rows.append((relpath, hashlib.sha256(png).hexdigest(), text))
    return rows


# ----------------------------------------------------------------------------------------- preparing
def versions() -> dict[str, str]:
    """Versions of the libraries that shape the dataset's bytes."""
    found = {}
    for dist in ("ocrbench", "captcha", "pillow", "lmdb", "numpy", "pylopdf-fonts-zh-cn", "matplotlib",
                 "english-words"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "unknown"
    return found


def prepare(data: dict, base_dir: Path, log: Callable[[str], None] = print,
            rebuild: bool = False) -> PreparedDataset:
    """Prepare (or reuse) the canonical dataset for a recipe's resolved ``data`` section.

    ``base_dir`` resolves relative paths in the recipe (the recipe file's directory). Processes that need
    the same dataset at once take turns (a file lock beside it): the first builds, the others wait and
    reuse it. A reused dataset is checked against its file list (every image present with its size,
    :func:`check_files`); ``rebuild`` deletes it (and its native copies) and builds it again.
    """
    config = _content_config(data, base_dir)
    key = hashlib.sha256(json.dumps({"format": FORMAT, "config": config, "versions": versions()},
                                    sort_keys=True).encode()).hexdigest()[:16]
    root = datasets_dir() / f"{data['source']}-{key}"
    root.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(root, log):
        if rebuild and root.exists():
            _remove(root)
            log(f"dataset: removed {root} to rebuild it")
        if (root / "manifest.json").is_file():
            manifest = json.loads((root / "manifest.json").read_text())
            problem = check_files(root)
            if problem:
                raise OcrbenchError(f"{root}: the prepared dataset is damaged: {problem}",
                                    hint="rebuild it: `ocrbench prepare RECIPE --rebuild` (the same recipe; "
                                         "its native copies are rebuilt by the next run)")
            log(f"dataset: reusing {root} ({manifest['fingerprint'][:12]})")
            return PreparedDataset(root, manifest)
        manifest = _build(data, config, key, root, log)
    log(f"dataset: wrote {root} — {manifest['splits']['train']['n']} train / "
        f"{manifest['splits']['eval']['n']} eval images in {manifest['seconds']:.1f} s "
        f"({manifest['images_per_s']:.0f} images/s)")
    return PreparedDataset(root, manifest)


def _build(data: dict, config: dict, key: str, root: Path, log) -> dict:
    """Build the dataset under a temporary name and rename it to ``root`` (complete or absent)."""
    tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    for stale in root.parent.glob(f".{root.name}.*.tmp"):   # left by a killed build (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    for split in SPLITS:
        (tmp / "images" / split).mkdir(parents=True)
    started = time.monotonic()
    try:
        with errors.writing("the canonical dataset", tmp):
            build = _build_synthetic if data["source"] in SYNTHETIC else _build_import
            rows, charset, counts = build(data, config, tmp, log)
            manifest = _finish(tmp, config, key, rows, charset, counts, time.monotonic() - started)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.rename(tmp, root)
    return manifest


@contextlib.contextmanager
def _exclusive(root: Path, log):
    """Hold the dataset's lock file (``.<name>.lock`` beside it, ``fcntl.flock``), saying so when another
    process holds it (it is preparing the same dataset)."""
    with open(root.with_name(f".{root.name}.lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"dataset: another process is preparing {root.name}; waiting for it ...")
            started = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            log(f"dataset: waited {time.monotonic() - started:.1f} s")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove(root: Path) -> None:
    """Delete a dataset directory: renamed away first, so it is gone at once even if deleting is cut short."""
    trash = root.with_name(f".{root.name}.{os.getpid()}.removed.tmp")
    os.rename(root, trash)
    shutil.rmtree(trash, ignore_errors=True)


FILES = "files.tsv"   # relpath<TAB>bytes<TAB>sha256 for every image, written with the dataset


def _file_list(root: Path) -> list[tuple[str, int, str]] | None:
    path = root / FILES
    if not path.is_file():
        return None   # prepared before file lists existed: nothing to check against
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        relpath, size, sha = line.split("\t")
        rows.append((relpath, int(size), sha))
    return rows


def check_files(root: Path) -> str | None:
    """The quick check made whenever a dataset is reused: every image in its file list is present with its
    recorded size, and the label files and charset are there. Returns the first problem (naming the file)
    or None. A same-size change of content is found by :func:`verify`."""
    for name in ("train.txt", "eval.txt", "charset.txt"):
        if not (root / name).is_file():
            return f"{name} is missing"
    for relpath, size, _ in _file_list(root) or []:
        try:
            found = (root / relpath).stat().st_size
        except FileNotFoundError:
            return f"{relpath} is missing"
        if found != size:
            return f"{relpath} is {found} bytes, {size} when prepared"
    return None


def verify(root: Path) -> list[str]:
    """Every problem of a prepared dataset: the quick check, each image's sha256 against the file list, and
    the fingerprint recomputed from the label files, images and charset against the manifest's."""
    problem = check_files(root)
    if problem:
        return [problem]
    manifest = json.loads((root / "manifest.json").read_text())
    listed = _file_list(root)
    if listed is None:
        return [f"{FILES} is missing (prepared by an older ocrbench): rebuild to verify it"]
    problems, digests = [], {}
    for relpath, _, sha in listed:
        digests[relpath] = hashlib.sha256((root / relpath).read_bytes()).hexdigest()
        if digests[relpath] != sha:
            problems.append(f"{relpath} does not match its sha256 (changed since it was prepared)")
    digest = hashlib.sha256()
    for split in SPLITS:
        for sample in read_label_file(root / f"{split}.txt"):
            digest.update(f"{split}\t{sample.path}\t{digests.get(sample.path, '')}\t{sample.text}\n".encode())
    charset = "".join(line for line in (root / "charset.txt").read_text(encoding="utf-8").split("\n"))
    digest.update(("charset\t" + charset).encode())
    if not problems and digest.hexdigest() != manifest["fingerprint"]:
        problems.append("the label files or charset.txt changed: the fingerprint no longer matches "
                        "manifest.json")
    return problems


class RowSpool:
    """One split's ``(relpath, sha256, text)`` rows, appended to ``.rows-<split>.tsv`` inside the dataset
    being built instead of held in memory: preparing N images then takes the same memory for any N.
    Read back in order by iterating. A text never holds a newline (labels are single lines)."""

    def __init__(self, out: Path, split: str):
        self.path = out / f".rows-{split}.tsv"
        self._file = self.path.open("w", encoding="utf-8", newline="\n")
        self.n = 0
        self.max_len = 0

    def add(self, relpath: str, sha: str, text: str) -> None:
        self._file.write(f"{relpath}\t{sha}\t{text}\n")
        self.n += 1
        self.max_len = max(self.max_len, len(text))

    def extend(self, rows: Iterable[tuple[str, str, str]]) -> None:
        for row in rows:
            self.add(*row)

    def __iter__(self) -> Iterator[tuple[str, str, str]]:
        self._file.flush()
        with self.path.open(encoding="utf-8", newline="\n") as rows:
            for line in rows:
                relpath, sha, text = line[:-1].split("\t", 2)
                yield relpath, sha, text

    def remove(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def _finish(tmp: Path, config: dict, key: str, rows: dict[str, RowSpool], charset: str,
            counts: dict[str, dict[str, dict[str, int]]], seconds: float) -> dict:
    """Write label files, charset, the file list (FILES) and the manifest, streaming each split's rows
    once (files inside ``tmp`` need no temporary names: ``tmp`` becomes the dataset by one rename); the
    fingerprint covers images, labels and charset. ``counts``: per split, the samples ``skipped`` and the
    images ``converted`` to 8-bit, by reason / original mode."""
    digest = hashlib.sha256()
    with (tmp / FILES).open("w", encoding="utf-8", newline="\n") as files:
        for split in SPLITS:
            if not rows[split].n:
                raise OcrbenchError(f"data: the {split} split is empty after preparation")
            with (tmp / f"{split}.txt").open("w", encoding="utf-8", newline="\n") as labels:
                for relpath, sha, text in rows[split]:
                    digest.update(f"{split}\t{relpath}\t{sha}\t{text}\n".encode())
                    labels.write(format_label_lines([Sample(relpath, text)]))
                    files.write(f"{relpath}\t{(tmp / relpath).stat().st_size}\t{sha}\n")
    digest.update(("charset\t" + charset).encode())
    atomic.write_text(tmp / "charset.txt", "".join(c + "\n" for c in charset))
    for spool in rows.values():
        spool.remove()
    total = sum(spool.n for spool in rows.values())
    manifest = {
        "format": FORMAT,
        "key": key,
        "fingerprint": digest.hexdigest(),
        "source": config["source"],
        "config": config,
        "charset": charset,
        "splits": {s: {"n": rows[s].n, "labels": f"{s}.txt", "max_len": rows[s].max_len} for s in SPLITS},
        "skipped": counts["skipped"],
        "converted": counts["converted"],
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(seconds, 3),
        "images_per_s": round(total / max(seconds, 1e-9), 1),
    }
    atomic.write_json(tmp / "manifest.json", manifest)
    return manifest


def _content_config(data: dict, base_dir: Path) -> dict:
    """The part of the data section that determines the dataset's content, paths made absolute."""
    config = {k: v for k, v in data.items() if k not in ("workers", "online")}
    if data["source"] == "captcha":
        config["fonts"] = [str(_font(base_dir, f, f"data.fonts[{i}]", data["font_sizes"]))
                           for i, f in enumerate(data["fonts"])]
        return config
    if data["source"] == "textlines":
        return _textlines_config(config, base_dir)
    for field in ("train", "eval", "root", "charset_file"):
        if config.get(field):
            config[field] = str(_existing(base_dir, config[field], f"data.{field}"))
    config["signature"] = _import_signature(config)
    return config


def _existing(base_dir: Path, value: str, key: str) -> Path:
    path = (base_dir / Path(value).expanduser()).resolve()
    if not path.exists():
        raise OcrbenchError(f"{key}: {path} does not exist", hint="paths are relative to the recipe file")
    return path


def _textlines_config(config: dict, base_dir: Path) -> dict:
    """Resolve a textlines section: the charset's characters, font files (with their sha256, so a changed
    font changes the dataset) checked to cover the charset, and the word file's path and sha256."""
    from ocrbench import fonts

    if config.get("charset_file"):
        path = _existing(base_dir, config["charset_file"], "data.charset_file")
        config["charset_file"] = str(path)
        config["charset_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    config["charset_chars"] = _dictionary_charset(config, base_dir)
    if config.get("words_file"):
        path = _existing(base_dir, config["words_file"], "data.words_file")
        config["words_file"] = str(path)
        config["words_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    resolved, digests = [], []
    for i, value in enumerate(config["fonts"]):
        path = _font(base_dir, value, f"data.fonts[{i}]", config["font_sizes"])
        missing = fonts.missing_glyphs(path, config["charset_chars"])
        if missing:
            raise OcrbenchError(f"data.fonts[{i}]: {value} ({path.name}) has no glyph for {len(missing)} of "
                                f"the charset's characters (e.g. {missing[:10]!r})",
                                hint="use a font that covers the charset: noto-sans-sc / noto-serif-sc for "
                                     "Chinese, dejavu-sans for Latin")
        resolved.append(str(path))
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    config["fonts"], config["font_sha256"] = resolved, digests
    return config


def _dictionary_charset(data: dict, base_dir: Path) -> str | None:
    """``data.charset``, or the characters of ``data.charset_file`` (ocrbench.dictionaries), with the
    space added under ``use_space_char``; None when neither is set (imports derive it from the labels)."""
    from ocrbench import dictionaries

    if data.get("charset"):
        chars = data["charset"]
        return chars + " " if data.get("use_space_char") and " " not in chars else chars
    if not data.get("charset_file"):
        return None
    path = _existing(base_dir, data["charset_file"], "data.charset_file")
    try:
        return dictionaries.read(path, data.get("charset_encoding", "utf-8"),
                                 data.get("use_space_char", False))
    except dictionaries.DictionaryError as exc:
        raise OcrbenchError(f"data.charset_file: {exc}") from None


def _font(base_dir: Path, value: str, key: str, sizes: list[int]) -> Path:
    """A font (a built-in name, ``ocrbench.fonts``, or a file) that pillow can load at every size, checked
    before rendering."""
    from ocrbench import fonts

    path = fonts.resolve(value, base_dir, key)
    problem = font_problem(str(path), sizes)
    if problem is not None:
        raise OcrbenchError(f"{key}: {path} cannot be loaded as a font ({problem})",
                            hint="give a TrueType/OpenType file (.ttf, .otf), or leave data.fonts empty for "
                                 "the captcha package's default font")
    return path


def _import_signature(config: dict) -> str:
    """Changes when the imported files change: label-file bytes and image/db sizes and times."""
    digest = hashlib.sha256()
    for field in ("train", "eval", "charset_file"):
        if not config.get(field):
            continue
        path = Path(config[field])
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for item in files:
            if item.is_file():
                digest.update(f"{item}:{item.stat().st_size}".encode())
                digest.update(hashlib.sha256(item.read_bytes()).digest() if item.suffix != ".mdb"
                              else str(item.stat().st_mtime_ns).encode())
    if config.get("root") and config["source"] == "csv":
        for item in sorted(Path(config["root"]).rglob("*")):
            with contextlib.suppress(OSError):
                stat = item.stat()
                digest.update(f"{item}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    elif config.get("root"):
        for split in ("train", "eval"):
            try:
                samples = read_label_file(config[split], config.get("delimiter", "\t"))
            except (LabelFileError, OSError, UnicodeDecodeError):
                continue  # reported properly while importing
            for sample in samples:
                image = Path(config["root"]) / sample.path
                with contextlib.suppress(OSError):
                    stat = image.stat()
                    digest.update(f"{sample.path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _build_synthetic(data: dict, config: dict, out: Path, log) -> tuple[dict, str, dict]:
    """Render both splits of a captcha or textlines source in chunks of CHUNK samples over ``workers``
    processes; every sample's bytes depend only on the recipe, not on the process that drew it."""
    workers = data.get("workers") or os.cpu_count() or 1
    total = data["train_size"] + data["eval_size"]
    log(f"dataset: rendering {total} {data['source']} images with {workers} process(es) ...")
    tasks = [(config, split, start, min(start + CHUNK, size), str(out))
             for split, size in (("train", data["train_size"]), ("eval", data["eval_size"]))
             for start in range(0, size, CHUNK)]
    rows = {s: RowSpool(out, s) for s in SPLITS}
    if workers == 1:
        for task in tasks:
            rows[task[1]].extend(_render_chunk(task))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for task, chunk in zip(tasks, pool.map(_render_chunk, tasks)):
                rows[task[1]].extend(chunk)
    charset = config.get("charset_chars") or data["charset"]
    return rows, charset, {"skipped": {s: {} for s in SPLITS}, "converted": {s: {} for s in SPLITS}}


# ------------------------------------------------------------------------------------------- imports
class _Importer:
    """Checks and copies imported samples, applying the bad-sample policy (error, or counted skip)."""

    def __init__(self, data: dict, out: Path, split: str, charset: str | None):
        self.policy = data["on_bad_sample"]
        self.out = out
        self.split = split
        self.charset = set(charset) if charset else None
        self.rows = RowSpool(out, split)
        self.skipped: dict[str, int] = {}
        self.converted: dict[str, int] = {}   # images made 8-bit (ocrbench.images), by original mode

    def bad(self, where: str, reason: str, problem: str) -> None:
        if self.policy == "error":
            raise OcrbenchError(f"{where}: {problem}",
                                hint="fix the data, or set data.on_bad_sample: skip to skip and count such "
                                     "samples")
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def add(self, where: str, image: bytes | None, text: str) -> None:
        if image is None:
            return self.bad(where, "missing_image", "image file not found")
        if text == "":
            return self.bad(where, "empty_label", "empty label")
        if self.charset is not None and set(text) - self.charset:
            unknown = "".join(sorted(set(text) - self.charset))
            return self.bad(where, "outside_charset", f"label {text!r} has characters outside the charset: "
                                                      f"{unknown!r}")
        try:
            image, ext, converted = images.canonical(image)
        except images.ImageProblem as exc:
            return self.bad(where, exc.reason, str(exc))
        if converted:
            self.converted[converted] = self.converted.get(converted, 0) + 1
        relpath = f"images/{self.split}/{self.rows.n:08d}{ext}"
        (self.out / relpath).write_bytes(image)
        self.rows.add(relpath, hashlib.sha256(image).hexdigest(), text)

    def add_from_root(self, where: str, root: Path, relpath: str, text: str) -> None:
        """Add the image at ``root / relpath``; a path that escapes ``root`` is a bad sample."""
        image_path = root / relpath
        if not is_safe_relative(relpath) or not image_path.resolve().is_relative_to(root):
            return self.bad(where, "path_outside_root", f"image path {relpath!r} escapes {root}")
        self.add(where, image_path.read_bytes() if image_path.is_file() else None, text)


def _import_charset(data: dict, config: dict) -> str | None:
    return _dictionary_charset(config, Path("/"))


def _derived_charset(rows: dict[str, RowSpool], given: str | None) -> str:
    """The given charset, or every character of the labels in sorted order."""
    if given:
        return given
    chars = sorted({c for split in SPLITS for _, _, text in rows[split] for c in text})
    if not chars:
        raise OcrbenchError("data: cannot derive a charset from empty labels")
    return "".join(chars)


def _build_import(data: dict, config: dict, out: Path, log) -> tuple[dict, str, dict]:
    """Import both splits of a labelfile, lmdb, filenames or csv source through one ``_Importer`` each."""
    charset = _import_charset(data, config)
    feed = _FEEDS[data["source"]]
    rows, skipped, converted = {}, {}, {}
    for split in SPLITS:
        importer = _Importer(data, out, split, charset)
        origin = feed(data, config, split, importer)
        rows[split], skipped[split], converted[split] = importer.rows, importer.skipped, importer.converted
        log(f"dataset: imported {importer.rows.n} {split} samples from {origin}"
            + (f", skipped {importer.skipped}" if importer.skipped else "")
            + (f", made 8-bit {importer.converted}" if importer.converted else ""))
    return rows, _derived_charset(rows, charset), {"skipped": skipped, "converted": converted}


# Each feed hands one split's samples to the importer and returns what it read them from (for the log).
def _feed_labelfile(data: dict, config: dict, split: str, importer: _Importer) -> str:
    """``path<TAB>text`` lines; image paths are relative to ``data.root``."""
    label_path = Path(config[split])
    try:
        samples_with_lines = _read_with_lines(label_path, data["delimiter"])
    except UnicodeDecodeError:
        raise OcrbenchError(f"data.{split}: {label_path} is not UTF-8 text") from None
    for line, sample in samples_with_lines:
        importer.add_from_root(f"{label_path}:{line}", Path(config["root"]), sample.path, sample.text)
    return str(label_path)


def _read_with_lines(path: Path, delimiter: str) -> list[tuple[int, Sample]]:
    try:
        return list(iter_label_file(path, delimiter))
    except LabelFileError as exc:
        raise OcrbenchError(str(exc)) from None


def _feed_lmdb(data: dict, config: dict, split: str, importer: _Importer) -> str:
    """A DTRB / crnn.pytorch LMDB database; an unreadable record is a bad sample."""
    from ocrbench.lmdb_layout import LmdbReader

    try:
        reader = LmdbReader(config[split])
    except (FileNotFoundError, ValueError) as exc:
        raise OcrbenchError(f"data.{split}: {exc}") from None
    try:
        for index in range(len(reader)):
            where = f"{config[split]} sample {index + 1}"
            try:
                image, text = reader[index]
            except (KeyError, UnicodeDecodeError) as exc:
                importer.bad(where, "unreadable_record", f"cannot read record ({exc})")
                continue
            importer.add(where, image, text)
    finally:
        reader.close()
    return config[split]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _feed_filenames(data: dict, config: dict, split: str, importer: _Importer) -> str:
    """A directory of ``<index>-<text>.<ext>`` images (WarpCTC's layout), in natural index order."""
    separator = data["separator"]
    folder = Path(config[split])
    if not folder.is_dir():
        raise OcrbenchError(f"data.{split}: {folder} is not a directory",
                            hint="point it at a folder of <index>-<text>.png images (WarpCTC: data/train)")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: _natural_key(p, separator))
    for path in files:
        if not path.resolve().is_relative_to(folder.resolve()):
            importer.bad(str(path), "path_outside_root", f"a link to {path.resolve()}, outside {folder}")
            continue
        _, found, text = path.stem.partition(separator)
        if not found:
            importer.bad(str(path), "no_label_in_name",
                         f"file name has no {separator!r} followed by the label")
            continue
        importer.add(str(path), path.read_bytes(), text)
    return str(folder)


def _natural_key(path: Path, separator: str) -> tuple:
    """Order ``2-x.png`` before ``10-y.png`` (the numeric index before ``separator`` first, then the name)."""
    head = path.stem.split(separator, 1)[0]
    return (0, int(head), path.name) if head.isdigit() else (1, 0, path.name)


AUTO_ENCODINGS = ("utf-8-sig", "gb18030")  # gb18030 decodes GB2312 and GBK files


def _decode_csv(path: Path, encoding: str, key: str) -> tuple[str, str]:
    """The file's text and the encoding used; ``auto`` tries UTF-8 first, then GB18030."""
    raw = path.read_bytes()
    candidates = AUTO_ENCODINGS if encoding == "auto" else (encoding,)
    last: UnicodeDecodeError | None = None
    for codec in candidates:
        try:
            return raw.decode(codec), codec
        except LookupError:
            raise OcrbenchError(f"data.encoding: unknown encoding {encoding!r}",
                                hint="use auto, or a Python codec name such as gb2312, gbk or "
                                     "utf-8") from None
        except UnicodeDecodeError as exc:
            last = exc
    raise OcrbenchError(f"{key}: {path} cannot be decoded as {' or '.join(candidates)} "
                        f"({last})",
                        hint="set data.encoding to the file's encoding (e.g. gb2312, gbk, big5)")


def _feed_csv(data: dict, config: dict, split: str, importer: _Importer) -> str:
    """A ``name,value`` CSV file (competition layout) naming images under ``data.root``; GB2312 detected
    or given."""
    import csv

    path = Path(config[split])
    text, codec = _decode_csv(path, data["encoding"], f"data.{split}")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    wanted = (data["name_column"], data["text_column"])
    missing = [c for c in wanted if c not in (reader.fieldnames or [])]
    if missing:
        raise OcrbenchError(f"data.{split}: {path} has no column(s) {missing}; its header is "
                            f"{reader.fieldnames}", hint="set data.name_column / data.text_column")
    for record in reader:
        name, label = record[wanted[0]] or "", record[wanted[1]] or ""
        importer.add_from_root(f"{path}:{reader.line_num}", Path(config["root"]), name, label)
    return f"{path} ({codec})"


_FEEDS = {"labelfile": _feed_labelfile, "lmdb": _feed_lmdb, "filenames": _feed_filenames, "csv": _feed_csv}
