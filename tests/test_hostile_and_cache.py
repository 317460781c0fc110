"""Hostile input files, corrupted dataset caches and concurrent preparation (issue 19, cases 4-6), without
a framework: the core's import, check and lock code on real files and real processes.

- Hostile files: a symlink out of the data root, a decompression bomb, 16-bit / CMYK / palette images, a
  zero-byte file, a label file in another encoding than declared — each a named error or imported and
  counted.
- A corrupted cache: an image deleted or changed in a prepared dataset is found on reuse (sizes) or by
  ``ocrbench prepare --verify`` (sha256 and fingerprint), named with the repairing command;
  ``--rebuild`` repairs it to the very same bytes.
- Two ``ocrbench prepare`` processes at once on one dataset: one builds, the other waits and reuses it.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import OCRBENCH, ROOT, TINY_CAPTCHA, quiet, run_cli, tree_digest, write
from ocrbench import datasets, engines, images, preprocess
from ocrbench.errors import OcrbenchError
from ocrbench.recipe import CaptchaData, CsvData, FilenamesData, LabelFileData


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` 8-bit gray pixels, with one tiny IDAT: a few
    hundred bytes that would expand to 10 GB if decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + chunk(b"IEND", b""))


def gray16(value: int = 40_000) -> Image.Image:
    return Image.fromarray(np.full((10, 20), value, dtype=np.uint16))   # mode I;16


def cmyk() -> Image.Image:
    return Image.new("CMYK", (20, 10), (0, 0, 0, 128))


def palette() -> Image.Image:
    return Image.new("RGB", (20, 10), (200, 30, 30)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)


# ---------------------------------------------------------------------------------------- hostile files
def labelfile_dataset(tmp_path, files: dict[str, bytes], lines: list[str], **extra) -> dict:
    root = tmp_path / "imgs"
    root.mkdir(exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    write(tmp_path / "train.txt", "".join(f"{line}\n" for line in lines))
    write(tmp_path / "eval.txt", "ok.png\t7\n")
    (root / "ok.png").write_bytes(encoded(Image.new("L", (20, 10), 200)))
    return LabelFileData(source="labelfile", root=str(root), train=str(tmp_path / "train.txt"),
                         eval=str(tmp_path / "eval.txt"), charset="0123456789",
                         **extra).model_dump(mode="json")


@pytest.mark.parametrize("name, data, problem", [
    ("bomb.png", bomb_png(8000, 8000), "8000x8000 pixels, more than the 40,000,000"),
    ("huge.png", bomb_png(), "image is too large to decode"),
    ("empty.png", b"", "image cannot be decoded"),
    ("truncated.png", encoded(Image.new("L", (20, 10), 9))[:40], "image cannot be decoded"),
])
def test_a_hostile_image_is_a_named_error(isolated_home, tmp_path, name, data, problem):
    data_section = labelfile_dataset(tmp_path, {name: data}, ["ok.png\t1", f"{name}\t12"])
    with pytest.raises(OcrbenchError) as info:
        datasets.prepare(data_section, tmp_path, quiet)
    assert f"{tmp_path / 'train.txt'}:2" in str(info.value) and problem in str(info.value)
    assert not list((isolated_home / "datasets").glob("labelfile-*")), "nothing half-written is left"


def test_a_symlink_out_of_the_data_root_is_refused(isolated_home, tmp_path):
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(encoded(Image.new("L", (20, 10), 50)))
    data = labelfile_dataset(tmp_path, {}, ["ok.png\t1", "link.png\t12"])
    (tmp_path / "imgs" / "link.png").symlink_to(secret)
    with pytest.raises(OcrbenchError, match=r"train.txt:2: .*'link.png' escapes"):
        datasets.prepare(data, tmp_path, quiet)

    folder = tmp_path / "named"          # the filenames source: a link among the files of the folder
    folder.mkdir()
    (folder / "0-12.png").write_bytes(encoded(Image.new("L", (20, 10), 50)))
    (folder / "1-34.png").symlink_to(secret)
    (folder / "2-56.png").write_bytes(encoded(Image.new("L", (20, 10), 50)))
    section = FilenamesData(source="filenames", train=str(folder), eval=str(folder), charset="0123456789",
                            on_bad_sample="skip").model_dump(mode="json")
    prepared = datasets.prepare(section, tmp_path, quiet)
    assert prepared.manifest["skipped"]["train"] == {"path_outside_root": 1}
    assert [s.text for s in prepared.samples("train")] == ["12", "56"]


def test_16_bit_cmyk_and_palette_images_are_made_8_bit_and_counted(isolated_home, tmp_path):
    files = {"g16.png": encoded(gray16()), "cmyk.jpg": encoded(cmyk(), "JPEG"), "pal.png": encoded(palette()),
             "empty.png": b""}
    lines = ["g16.png\t1", "cmyk.jpg\t2", "pal.png\t3", "empty.png\t4", "ok.png\t5"]
    data = labelfile_dataset(tmp_path, files, lines, on_bad_sample="skip")
    prepared = datasets.prepare(data, tmp_path, quiet)
    assert prepared.manifest["converted"]["train"] == {"I;16": 1, "CMYK": 1, "P": 1}
    assert prepared.manifest["skipped"]["train"] == {"unreadable_image": 1}
    stored = {s.text: Image.open(prepared.root / s.path) for s in prepared.samples("train")}
    assert {text: image.mode for text, image in stored.items()} == {"1": "L", "2": "RGB", "3": "RGB",
                                                                     "5": "L"}
    assert np.asarray(stored["1"]).max() == round(40_000 / 257)       # 16-bit scaled to 8-bit, not clipped
    assert tuple(np.asarray(stored["3"])[0, 0]) == (200, 30, 30)        # the palette's colour


def test_a_label_file_in_another_encoding_than_declared(isolated_home, tmp_path):
    data = labelfile_dataset(tmp_path, {}, ["ok.png\t1"])
    (tmp_path / "train.txt").write_bytes("ok.png\t中文码\n".encode("gbk"))   # not valid UTF-8
    with pytest.raises(OcrbenchError, match=r"data.train: .*train.txt is not UTF-8 text"):
        datasets.prepare(data, tmp_path, quiet)
    images_dir = tmp_path / "csv" / "images"
    images_dir.mkdir(parents=True)
    (images_dir / "a.png").write_bytes(encoded(Image.new("L", (20, 10), 50)))
    for split in ("train", "eval"):
        (tmp_path / "csv" / f"{split}.csv").write_bytes("name,value\na.png,中文\n".encode("gbk"))
    declared = CsvData(source="csv", root="images", train="train.csv", eval="eval.csv", encoding="utf-8")
    with pytest.raises(OcrbenchError) as info:
        datasets.prepare(declared.model_dump(mode="json"), tmp_path / "csv", quiet)
    assert "train.csv" in str(info.value) and "data.encoding" in info.value.hint


def test_predict_checks_images_the_same_way(tmp_path):
    bomb, empty, deep = tmp_path / "bomb.png", tmp_path / "empty.png", tmp_path / "g16.png"
    bomb.write_bytes(bomb_png())
    empty.write_bytes(b"")
    deep.write_bytes(encoded(gray16(65535)))
    assert "image is too large to decode" in engines.image_problem(bomb)
    assert engines.image_problem(empty).startswith("not an image that can be decoded")
    assert engines.image_problem(tmp_path / "missing.png") == "no such file"
    assert engines.image_problem(deep) is None
    # a 16-bit white image reaches a network as the 8-bit white one does
    white = tmp_path / "white.png"
    white.write_bytes(encoded(Image.new("L", (20, 10), 255)))
    assert np.array_equal(preprocess._decode(deep, "pil", "gray"), preprocess._decode(white, "pil", "gray"))


def test_open_checked_reads_only_the_header_of_a_bomb():
    with pytest.raises(images.ImageProblem) as info:
        images.open_checked(bomb_png(60_000, 60_000))
    assert info.value.reason == "too_large"


# ------------------------------------------------------------------------------------ corrupted caches
def captcha_section(**overrides) -> dict:
    base = dict(source="captcha", width=80, height=32, font_sizes=[24], train_size=30, eval_size=10, seed=5)
    return CaptchaData(**{**base, **overrides}).model_dump(mode="json")


def test_a_deleted_or_resized_image_is_found_on_reuse(isolated_home, tmp_path):
    prepared = datasets.prepare(captcha_section(), tmp_path, quiet)
    victim = prepared.root / prepared.samples("train")[3].path
    victim.unlink()
    with pytest.raises(OcrbenchError) as info:
        datasets.prepare(captcha_section(), tmp_path, quiet)
    assert f"{prepared.root}: the prepared dataset is damaged: {victim.relative_to(prepared.root)} is " \
           "missing" in str(info.value)
    assert "ocrbench prepare RECIPE --rebuild" in info.value.hint


def test_prepare_verify_finds_a_same_size_change_and_rebuild_repairs_it(isolated_home, tmp_path):
    recipe = write(tmp_path / "tiny.yml", TINY_CAPTCHA)
    env = {"OCRBENCH_HOME": str(isolated_home)}
    first = run_cli("prepare", recipe, env=env)
    assert first.returncode == 0, first.stderr
    root = next((isolated_home / "datasets").glob("captcha-*"))
    before = tree_digest(root)
    assert "verified" in run_cli("prepare", recipe, "--verify", env=env).stderr
    image = next((root / "images" / "train").iterdir())
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF                      # same size, one byte changed: the quick check cannot see it
    image.write_bytes(bytes(data))
    assert run_cli("prepare", recipe, env=env).returncode == 0      # reuse checks sizes only
    result = run_cli("prepare", recipe, "--verify", env=env)
    said = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in said
    assert f"{image.relative_to(root)} does not match its sha256" in said
    assert f"ocrbench prepare {recipe} --rebuild" in said.replace("\n", "")
    rebuilt = run_cli("prepare", recipe, "--rebuild", env=env)
    assert rebuilt.returncode == 0 and "to rebuild it" in rebuilt.stderr
    assert tree_digest(root) == before
    assert run_cli("prepare", recipe, "--verify", env=env).returncode == 0


def test_label_file_edits_break_the_fingerprint(isolated_home, tmp_path):
    prepared = datasets.prepare(captcha_section(), tmp_path, quiet)
    labels = prepared.root / "eval.txt"
    first, rest = labels.read_text().split("\n", 1)
    path, text = first.split("\t")
    labels.write_text(f"{path}\t{text[::-1]}x\n{rest}")
    assert datasets.verify(prepared.root) == ["the label files or charset.txt changed: the fingerprint no "
                                              "longer matches manifest.json"]


# ------------------------------------------------------------------------------------- concurrent use
def test_two_prepares_at_once_build_once_and_match_a_single_build(tmp_path):
    recipe = write(tmp_path / "tiny.yml", TINY_CAPTCHA.replace("train_size: 24", "train_size: 1500"))
    homes = {name: tmp_path / name for name in ("together", "alone")}
    procs = [subprocess.Popen([*OCRBENCH, "prepare", str(recipe)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OCRBENCH_HOME": str(homes["together"])}) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    logs = [err for _, err in outputs]
    assert sum("wrote" in log for log in logs) == 1 and sum("reusing" in log for log in logs) == 1
    assert any("another process is preparing" in log for log in logs)
    fingerprints = {out.split()[-1] for out, _ in outputs}
    assert len(fingerprints) == 1
    alone = run_cli("prepare", recipe, env={"OCRBENCH_HOME": str(homes["alone"])})
    assert alone.stdout.split()[-1] in fingerprints
    (together,) = (homes["together"] / "datasets").glob("captcha-*")
    (single,) = (homes["alone"] / "datasets").glob("captcha-*")
    assert tree_digest(together) == tree_digest(single)
    assert not [p.name for p in (homes["together"] / "datasets").iterdir() if p.name.endswith(".tmp")]


def test_manifest_and_file_list_agree(isolated_home, tmp_path):
    prepared = datasets.prepare(captcha_section(), tmp_path, quiet)
    listed = [line.split("\t") for line in (prepared.root / datasets.FILES).read_text().splitlines()]
    assert len(listed) == prepared.manifest["splits"]["train"]["n"] + prepared.manifest["splits"]["eval"]["n"]
    assert all(int(size) == (prepared.root / path).stat().st_size for path, size, _ in listed)
    assert json.loads((prepared.root / "manifest.json").read_text())["converted"] == {"train": {}, "eval": {}}
