"""Synthetic text lines (data.source: textlines), dictionary files, fonts, CTC feasibility."""


import numpy as np
import pytest
from PIL import Image

from competition import HANZI, tiny_lines, write_competition_layout
from conftest import quiet, tree_digest
from ocrbench import ctc_feasibility, datasets, dictionaries, fonts
from ocrbench.errors import OcrbenchError
from ocrbench.recipe import CsvData, LabelFileData, TextLinesData, validate_data


# ------------------------------------------------------------------------------------- text lines
def test_same_seed_same_bytes_for_one_or_two_processes(isolated_home, tmp_path, monkeypatch):
    one = datasets.prepare(tiny_lines(workers=1), tmp_path, quiet)
    monkeypatch.setenv("OCRBENCH_HOME", str(tmp_path / "other-home"))
    two = datasets.prepare(tiny_lines(workers=2), tmp_path, quiet)
    assert one.root != two.root and one.fingerprint == two.fingerprint
    assert tree_digest(one.root) == tree_digest(two.root)
    assert datasets.prepare(tiny_lines(seed=12), tmp_path, quiet).fingerprint != one.fingerprint


def test_lines_are_gray_32_high_within_the_length_range(isolated_home, tmp_path):
    ds = datasets.prepare(tiny_lines(), tmp_path, quiet)
    widths = set()
    for sample in ds.samples("train") + ds.samples("eval"):
        assert 2 <= len(sample.text) <= 4 and set(sample.text) <= set(HANZI)
        with Image.open(ds.root / sample.path) as image:
            assert image.mode == "L" and image.height == 32
            widths.add(image.width)
            pixels = np.asarray(image)
        assert pixels.min() < np.median(pixels) - 40          # ink darker than the background
    assert len(widths) > 5                                      # the width follows the text
    assert ds.charset == HANZI and ds.manifest["splits"]["train"]["n"] == 48


def test_english_words_come_from_the_word_list(isolated_home, tmp_path):
    data = TextLinesData(source="textlines", charset="0123456789abcdefghijklmnopqrstuvwxyz",
                         wordlist="english", min_len=1, max_len=12, fonts=["dejavu-sans", "dejavu-serif"],
                         train_size=40, eval_size=8).model_dump(mode="json")
    ds = datasets.prepare(data, tmp_path, quiet)
    texts = [s.text for s in ds.samples("train")]
    assert all(t.isalpha() and t.islower() and 1 <= len(t) <= 12 for t in texts)
    assert len(set(texts)) > 30


def test_a_words_file_is_filtered_by_charset_and_length(isolated_home, tmp_path):
    (tmp_path / "words.txt").write_text("cat\ndog\nzebra\nCAT\nox\nelephant\n", encoding="utf-8")
    data = TextLinesData(source="textlines", charset="abcdefghijklmnopqrstuvwxyz", words_file="words.txt",
                         min_len=3, max_len=5, fonts=["dejavu-sans"], train_size=30,
                         eval_size=4).model_dump(mode="json")
    texts = {s.text for s in datasets.prepare(data, tmp_path, quiet).samples("train")}
    assert texts <= {"cat", "dog", "zebra"} and len(texts) >= 2


def test_a_font_without_the_charset_glyphs_is_named(isolated_home, tmp_path):
    with pytest.raises(OcrbenchError) as info:
        datasets.prepare(tiny_lines(fonts=["noto-sans-sc", "dejavu-sans"]), tmp_path, quiet)
    assert "data.fonts[1]" in str(info.value) and "no glyph" in str(info.value)
    with pytest.raises(OcrbenchError) as info:
        datasets.prepare(tiny_lines(fonts=["no-such-font"]), tmp_path, quiet)
    assert "built-in font" in str(info.value)


def test_builtin_fonts_are_installed_files():
    for name in fonts.BUILTIN:
        assert fonts.builtin_path(name).is_file()
    assert fonts.missing_glyphs(fonts.builtin_path("noto-serif-sc"), HANZI) == ""


def test_recipe_errors_name_the_key(tmp_path):
    base = {"name": "t", "data": {"source": "textlines", "charset": "ab"}}
    for data, expected in (({"min_len": 5, "max_len": 2}, "min_len"),
                           ({"font_sizes": [40]}, "larger than the image height"),
                           ({"charset": None}, "a charset is needed"),
                           ({"augment": {"ink": [90, 10]}}, "data.augment")):
        with pytest.raises(OcrbenchError) as info:
            validate_data({**base, "data": {**base["data"], **data}}, "r.yml")
        assert expected in str(info.value)


# ----------------------------------------------------------------------------------- dictionaries
def test_paddleocr_dictionary_with_use_space_char(tmp_path):
    path = tmp_path / "ppocr_keys.txt"
    path.write_bytes("的\n一\n是\nA\n".encode("utf-8"))
    assert dictionaries.read(path) == "的一是A"
    assert dictionaries.read(path, use_space_char=True) == "的一是A "      # the space is the last class


def test_crnn_chinese_char_std_dictionary_gbk_with_blank_entry(tmp_path):
    path = tmp_path / "char_std_5990.txt"
    dictionaries.write(path, HANZI[:10], encoding="gbk", blank_entry=True)
    assert path.read_bytes().startswith(b"blank\n")
    chars = dictionaries.read(path, encoding="gbk")
    assert chars == HANZI[:10]          # 11 entries: the blank (class 0) + 10 characters (classes 1..10)
    with pytest.raises(dictionaries.DictionaryError) as info:
        dictionaries.read(path)         # GBK bytes read as UTF-8: the line is named
    assert f"{path}:2:" in str(info.value) and "gbk" in str(info.value)
    assert dictionaries.read(path, encoding="auto") == HANZI[:10]


@pytest.mark.parametrize("text, problem", [("a\nbc\n", ":2: line holds 'bc'"),
                                           ("a\n\nb\n", ":2: line is empty"),
                                           ("a\nb\na\n", ":3: 'a' repeats line 1"),
                                           ("a\nblank\n", ":2: line holds 'blank'")])
def test_dictionary_errors_name_the_line(tmp_path, text, problem):
    path = tmp_path / "dict.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(dictionaries.DictionaryError) as info:
        dictionaries.read(path)
    assert problem in str(info.value)


def test_textlines_and_imports_read_both_dictionary_formats(isolated_home, tmp_path):
    dictionaries.write(tmp_path / "char_std.txt", HANZI, encoding="gbk", blank_entry=True)
    gbk = tiny_lines(charset=None, charset_file="char_std.txt", charset_encoding="gbk")
    assert datasets.prepare(gbk, tmp_path, quiet).charset == HANZI
    layout = write_competition_layout(tiny_lines(), tmp_path / "competition")
    dictionaries.write(layout / "keys.txt", HANZI)
    data = CsvData(source="csv", root="images", train="train.csv", eval="eval.csv", charset_file="keys.txt",
                   use_space_char=True).model_dump(mode="json")
    ds = datasets.prepare(data, layout, quiet)
    assert ds.charset == HANZI + " " and ds.manifest["splits"]["train"]["n"] == 48
    with pytest.raises(OcrbenchError) as info:
        datasets.prepare({**data, "charset_encoding": "gbk-typo"}, layout, quiet)
    assert "unknown encoding" in str(info.value)


def test_the_competition_layout_is_gb2312_csv_read_by_the_csv_source(isolated_home, tmp_path):
    layout = write_competition_layout(tiny_lines(), tmp_path / "competition")
    assert (layout / "train.csv").read_bytes().decode("gb2312").startswith("name,value\r\n")
    data = CsvData(source="csv", root="images", train="train.csv", eval="eval.csv").model_dump(mode="json")
    imported = datasets.prepare(data, layout, quiet)
    original = datasets.prepare(tiny_lines(), tmp_path, quiet)
    assert [s.text for s in imported.samples("eval")] == [s.text for s in original.samples("eval")]


# -------------------------------------------------------------------------------- CTC feasibility
def test_required_steps_count_a_blank_between_repeats():
    assert ctc_feasibility.required_steps("abc") == 3
    assert ctc_feasibility.required_steps("aab") == 4
    assert ctc_feasibility.required_steps("aaaa") == 7


def feasibility_dataset(tmp_path, policy):
    images = tmp_path / "img"
    images.mkdir(exist_ok=True)
    Image.new("L", (40, 32), 200).save(images / "a.png")
    (tmp_path / "train.txt").write_text("a.png\tab\na.png\taaaa\na.png\tabcde\na.png\tba\n", encoding="utf-8")
    (tmp_path / "eval.txt").write_text("a.png\tab\na.png\tbbbb\n", encoding="utf-8")
    data = LabelFileData(source="labelfile", root="img", train="train.txt", eval="eval.txt",
                         on_bad_sample=policy).model_dump(mode="json")
    return datasets.prepare(data, tmp_path, quiet)


def test_an_infeasible_label_is_an_error_naming_file_line_and_steps(isolated_home, tmp_path):
    ds = feasibility_dataset(tmp_path, "error")
    with pytest.raises(OcrbenchError) as info:
        ctc_feasibility.check(ds.root, 5, "error", "model.params.input_width 16")
    message = str(info.value)
    assert "train.txt:2" in message and "'aaaa' needs 7 CTC steps" in message and "T = 5" in message
    assert "on_bad_sample: skip" in info.value.hint


def test_skip_leaves_infeasible_training_labels_out_and_counts_them(isolated_home, tmp_path):
    ds = feasibility_dataset(tmp_path, "skip")
    result = ctc_feasibility.check(ds.root, 5, "skip", "")
    assert result.skipped == 1 and result.eval_infeasible == 1 and result.train == "train.ctc5.txt"
    kept = (ds.root / result.train).read_text(encoding="utf-8").splitlines()
    assert [line.split("\t")[1] for line in kept] == ["ab", "abcde", "ba"]
    assert ctc_feasibility.check(ds.root, 7, "error", "").train == "train.txt"   # all fit: nothing filtered
