"""The canonical dataset: deterministic captchas, imports, bad-data policy, LMDB layout."""

import io
import json

import lmdb
import numpy as np
import pytest
from PIL import Image

from conftest import quiet, tree_digest
from ocrbench import datasets
from ocrbench.errors import OcrbenchError
from ocrbench.lmdb_layout import LmdbReader, write_lmdb
from ocrbench.recipe import CaptchaData, CsvData, FilenamesData, LabelFileData, LmdbData


def captcha(**overrides) -> dict:
    base = dict(source="captcha", width=80, height=32, font_sizes=[24], train_size=30, eval_size=10, seed=5)
    return CaptchaData(**{**base, **overrides}).model_dump(mode="json")


def test_same_seed_same_bytes_whatever_the_worker_count(isolated_home, tmp_path, monkeypatch):
    one = datasets.prepare(captcha(workers=1), tmp_path, quiet)
    monkeypatch.setenv("OCRBENCH_HOME", str(tmp_path / "other-home"))
    two = datasets.prepare(captcha(workers=2), tmp_path, quiet)
    assert one.root != two.root
    assert one.fingerprint == two.fingerprint
    assert tree_digest(one.root) == tree_digest(two.root)
    assert one.manifest["splits"]["train"]["n"] == 30 and one.manifest["splits"]["eval"]["n"] == 10


def test_clean_text_is_deterministic_and_dark_on_light(isolated_home, tmp_path, monkeypatch):
    clean = captcha(noise=False, workers=1, min_len=2, max_len=3)
    one = datasets.prepare(clean, tmp_path, quiet)
    monkeypatch.setenv("OCRBENCH_HOME", str(tmp_path / "other-home"))
    two = datasets.prepare({**clean, "workers": 2}, tmp_path, quiet)
    assert one.fingerprint == two.fingerprint and tree_digest(one.root) == tree_digest(two.root)
    assert one.fingerprint != datasets.prepare(captcha(min_len=2, max_len=3), tmp_path, quiet).fingerprint
    for sample in one.samples("train"):
        with Image.open(one.root / sample.path) as image:
            gray = np.asarray(image.convert("L"))
        assert (gray <= 80).any() and np.median(gray) >= 215   # dark text (gray 0-80) on light (215-255)


def test_different_seed_different_fingerprint(isolated_home, tmp_path):
    assert datasets.prepare(captcha(seed=1), tmp_path, quiet).fingerprint != \
        datasets.prepare(captcha(seed=2), tmp_path, quiet).fingerprint


def test_prepared_dataset_is_reused(isolated_home, tmp_path):
    first = datasets.prepare(captcha(), tmp_path, quiet)
    messages = []
    second = datasets.prepare(captcha(), tmp_path, messages.append)
    assert second.root == first.root and "reusing" in messages[0]


def test_layout_labels_charset_and_manifest(isolated_home, tmp_path):
    ds = datasets.prepare(captcha(min_len=3, max_len=4), tmp_path, quiet)
    lines = (ds.root / "train.txt").read_text(encoding="utf-8").splitlines()
    path, text = lines[0].split("\t")
    assert path == "images/train/00000000.png" and 3 <= len(text) <= 4 and text.isdigit()
    with Image.open(ds.root / path) as img:
        assert img.size == (80, 32)
    assert (ds.root / "charset.txt").read_text() == "".join(c + "\n" for c in "0123456789")
    manifest = json.loads((ds.root / "manifest.json").read_text())
    assert manifest["versions"]["captcha"] == "0.7.1"
    assert len(manifest["fingerprint"]) == 64 and manifest["images_per_s"] > 0



def test_a_corrupt_font_is_named_before_rendering(isolated_home, tmp_path):
    (tmp_path / "fonts").mkdir()
    (tmp_path / "fonts" / "broken.ttf").write_bytes(b"this is not a TrueType file")
    with pytest.raises(OcrbenchError) as info:
        datasets.prepare(captcha(fonts=["fonts/broken.ttf"]), tmp_path, quiet)
    assert "data.fonts[0]" in str(info.value) and "broken.ttf" in str(info.value)
    assert not (isolated_home / "datasets").exists(), "nothing was rendered"

def _png(color=128) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (20, 10), color).save(buffer, format="PNG")
    return buffer.getvalue()


def labelfile_setup(tmp_path, train_lines):
    root = tmp_path / "imgs"
    root.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (root / name).write_bytes(_png())
    (root / "broken.png").write_bytes(b"not an image")
    (tmp_path / "train.txt").write_text("".join(f"{line}\n" for line in train_lines), encoding="utf-8")
    (tmp_path / "eval.txt").write_text("c.png\t7\n", encoding="utf-8")
    return dict(source="labelfile", root=str(root), train=str(tmp_path / "train.txt"),
                eval=str(tmp_path / "eval.txt"))


@pytest.mark.parametrize("line, problem", [
    ("broken.png\t12", "image cannot be decoded"),
    ("a.png\t", "empty label"),
    ("a.png\t1x", "outside the charset"),
    ("../secret.png\t12", "escapes"),
    ("missing.png\t12", "image file not found"),
])
def test_bad_samples_are_errors_naming_file_and_line(isolated_home, tmp_path, line, problem):
    data = labelfile_setup(tmp_path, ["a.png\t12", line])
    data = LabelFileData(**data, charset="0123456789").model_dump(mode="json")
    with pytest.raises(OcrbenchError) as info:
        datasets.prepare(data, tmp_path, quiet)
    assert f"{tmp_path / 'train.txt'}:2" in str(info.value) and problem in str(info.value)
    assert not list((isolated_home / "datasets").glob("labelfile-*")), "nothing half-written is left"


def test_skip_policy_counts_every_skip(isolated_home, tmp_path):
    lines = ["a.png\t12", "broken.png\t1", "b.png\t", "b.png\t1y", "../x.png\t1"]
    data = LabelFileData(**labelfile_setup(tmp_path, lines), charset="0123456789",
                         on_bad_sample="skip").model_dump(mode="json")
    ds = datasets.prepare(data, tmp_path, quiet)
    assert ds.manifest["splits"]["train"]["n"] == 1
    assert ds.manifest["skipped"]["train"] == {"unreadable_image": 1, "empty_label": 1, "outside_charset": 1,
                                               "path_outside_root": 1}


def test_labelfile_charset_is_derived_when_not_given(isolated_home, tmp_path):
    data = LabelFileData(**labelfile_setup(tmp_path, ["a.png\tba", "b.png\t9"])).model_dump(mode="json")
    assert datasets.prepare(data, tmp_path, quiet).charset == "79ab"


def warpctc_dirs(tmp_path, train_names):
    """WarpCTC's upstream layout: data/train and data/test of <index>-<digits>.png."""
    for split, names in (("train", train_names), ("test", ["0-7.png"])):
        folder = tmp_path / "data" / split
        folder.mkdir(parents=True)
        for i, name in enumerate(names):
            (folder / name).write_bytes(_png(i))
    return dict(source="filenames", train="data/train", eval="data/test")


def test_filenames_source_reads_warpctc_layout_in_index_order(isolated_home, tmp_path):
    data = FilenamesData(**warpctc_dirs(tmp_path, ["10-5.png", "2-0931.png", "1-12.png", "notes.txt"]),
                         charset="0123456789").model_dump(mode="json")
    ds = datasets.prepare(data, tmp_path, quiet)
    assert [s.text for s in ds.samples("train")] == ["12", "0931", "5"]   # 1, 2, 10: natural order
    assert [s.text for s in ds.samples("eval")] == ["7"] and ds.charset == "0123456789"



def test_filenames_natural_order_uses_the_configured_separator(isolated_home, tmp_path):
    names = ["10_5.png", "2_0931.png", "1_12.png"]
    data = FilenamesData(**warpctc_dirs(tmp_path, names), separator="_").model_dump(mode="json")
    (tmp_path / "data" / "test" / "0-7.png").rename(tmp_path / "data" / "test" / "0_7.png")
    ds = datasets.prepare(data, tmp_path, quiet)
    assert [s.text for s in ds.samples("train")] == ["12", "0931", "5"]   # 1, 2, 10: natural order

def test_filenames_source_names_a_file_without_label(isolated_home, tmp_path):
    data = FilenamesData(**warpctc_dirs(tmp_path, ["1-12.png", "nolabel.png"])).model_dump(mode="json")
    with pytest.raises(OcrbenchError) as info:
        datasets.prepare(data, tmp_path, quiet)
    assert "nolabel.png" in str(info.value) and "on_bad_sample" in info.value.hint


def csv_setup(tmp_path, train_text: str, encoding: str) -> dict:
    """A competition layout: images/ + train.csv / eval.csv with name,value columns."""
    images = tmp_path / "images"
    images.mkdir(parents=True)
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        (images / name).write_bytes(_png(i))
    (tmp_path / "train.csv").write_bytes(train_text.encode(encoding))
    (tmp_path / "eval.csv").write_bytes("name,value\nc.png,验证\n".encode(encoding))
    return dict(source="csv", root="images", train="train.csv", eval="eval.csv")


def test_csv_source_detects_gb2312(isolated_home, tmp_path):
    data = CsvData(**csv_setup(tmp_path, "name,value\na.png,中文\nb.png,码12\n",
                               "gb2312")).model_dump(mode="json")
    messages = []
    ds = datasets.prepare(data, tmp_path, messages.append)
    assert [s.text for s in ds.samples("train")] == ["中文", "码12"] and ds.samples("eval")[0].text == "验证"
    assert any("(gb18030)" in m for m in messages)                  # the auto-detected codec is reported
    utf8 = CsvData(**csv_setup(tmp_path / "u", "name,value\na.png,中文\n", "utf-8")).model_dump(mode="json")
    assert [s.text for s in datasets.prepare(utf8, tmp_path / "u", quiet).samples("train")] == ["中文"]


def test_csv_source_errors_name_the_file(isolated_home, tmp_path):
    wrong = CsvData(**csv_setup(tmp_path, "name,value\na.png,中文\n", "gb2312"), encoding="utf-8")
    with pytest.raises(OcrbenchError) as info:
        datasets.prepare(wrong.model_dump(mode="json"), tmp_path, quiet)
    assert "train.csv" in str(info.value) and "data.encoding" in info.value.hint
    other = CsvData(**csv_setup(tmp_path / "o", "file,label\na.png,1\n", "utf-8"))
    with pytest.raises(OcrbenchError) as info:
        datasets.prepare(other.model_dump(mode="json"), tmp_path / "o", quiet)
    assert "['name', 'value']" in str(info.value) and "['file', 'label']" in str(info.value)
    escaping = CsvData(**csv_setup(tmp_path / "e", "name,value\n../x.png,1\n", "utf-8"))
    with pytest.raises(OcrbenchError) as info:
        datasets.prepare(escaping.model_dump(mode="json"), tmp_path / "e", quiet)
    assert "train.csv:2" in str(info.value) and "escapes" in str(info.value)


def test_lmdb_layout_is_one_based_and_readable_like_crnn_pytorch(tmp_path):
    path = tmp_path / "db"
    write_lmdb(path, [(_png(1), "12"), (_png(2), "345")])
    env = lmdb.open(str(path), readonly=True, lock=False, max_readers=1)  # crnn.pytorch's reader settings
    with env.begin() as txn:
        assert txn.get(b"num-samples") == b"2"
        assert txn.get(b"label-000000001") == b"12" and txn.get(b"label-000000002") == b"345"
        assert txn.get(b"image-000000000") is None and txn.get(b"image-000000001") == _png(1)
        with Image.open(io.BytesIO(txn.get(b"image-000000002"))) as img:
            assert img.convert("L").size == (20, 10)
    env.close()
    assert [text for _, text in LmdbReader(path)] == ["12", "345"]


def test_lmdb_reader_reads_the_same_across_its_remaps(tmp_path, monkeypatch):
    # the reader re-opens its memory map every REMAP_EVERY reads (bounded RSS); 3 here, so 10 reads remap 3x
    path = tmp_path / "db"
    samples = [(_png(i % 5 + 1), str(i)) for i in range(7)]
    write_lmdb(path, samples)
    monkeypatch.setattr(LmdbReader, "REMAP_EVERY", 3)
    reader = LmdbReader(path)
    order = [6, 0, 3, 3, 1, 5, 2, 4, 0, 6]
    assert [reader[i] for i in order] == [samples[i] for i in order]


def test_lmdb_source_imports_a_dtrb_database(isolated_home, tmp_path):
    write_lmdb(tmp_path / "train", [(_png(1), "ab"), (_png(2), "ba")])
    write_lmdb(tmp_path / "eval", [(_png(3), "a")])
    data = LmdbData(source="lmdb", train=str(tmp_path / "train"), eval=str(tmp_path / "eval")).model_dump(
        mode="json")
    ds = datasets.prepare(data, tmp_path, quiet)
    assert ds.charset == "ab"
    assert [s.text for s in ds.samples("train")] == ["ab", "ba"]
    assert (ds.root / ds.samples("eval")[0].path).read_bytes() == _png(3)


def test_lmdb_source_rejects_a_directory_without_num_samples(isolated_home, tmp_path):
    env = lmdb.open(str(tmp_path / "train"))
    env.close()
    data = LmdbData(source="lmdb", train=str(tmp_path / "train"), eval=str(tmp_path / "train")).model_dump(
        mode="json")
    with pytest.raises(OcrbenchError, match="no 'num-samples' key"):
        datasets.prepare(data, tmp_path, quiet)


def test_malformed_label_line_names_file_and_line(isolated_home, tmp_path):
    data = LabelFileData(**labelfile_setup(tmp_path,
                                           ["a.png\t12", "no-delimiter-here"])).model_dump(mode="json")
    with pytest.raises(OcrbenchError, match=r"train.txt:2: expected 'path'\\t'text'|train.txt:2: expected"):
        datasets.prepare(data, tmp_path, quiet)
