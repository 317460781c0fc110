"""The shared CTC decoder (blank 0) and learning-rate schedules."""

import numpy as np
import pytest

from ocrbench import dictionaries
from ocrbench.codec import Charset, ctc_collapse, decode_best_paths, from_blank_last, pad_targets
from ocrbench.schedule import Schedule


def test_collapse_merges_repeats_then_drops_blank():
    assert ctc_collapse([0, 1, 1, 0, 1, 2, 2, 0, 0, 3]) == [1, 1, 2, 3]


def test_decode_best_paths_batch_major():
    charset = Charset("0123456789")
    paths = np.array([[0, 2, 2, 0, 2, 10], [5, 0, 0, 0, 0, 0]])
    assert decode_best_paths(paths, charset) == ["119", "4"]


def test_blank_last_paths_convert_to_blank_zero():
    charset = Charset("0123456789")   # blank-last: digit d is class d, the blank is class 10
    paths = np.array([[10, 1, 1, 10, 1, 9], [4, 10, 10, 10, 10, 10]])
    converted = from_blank_last(paths, charset.num_classes)
    assert converted.tolist() == [[0, 2, 2, 0, 2, 10], [5, 0, 0, 0, 0, 0]]
    assert decode_best_paths(converted, charset) == ["119", "4"]


def test_charset_rejects_duplicates_and_encodes_one_based():
    with pytest.raises(ValueError, match="repeats"):
        Charset("aab")
    charset = Charset("abc")
    assert charset.num_classes == 4 and charset.encode("cab") == [3, 1, 2]
    targets, lengths = pad_targets(["ab", "c"], charset, 3)
    assert targets.tolist() == [[1, 2, 0], [3, 0, 0]] and lengths.tolist() == [2, 1]


def test_charset_file_round_trip(tmp_path):
    path = tmp_path / "dict.txt"
    path.write_text(Charset("a b").to_lines(), encoding="utf-8")
    assert dictionaries.read(path) == "a b"     # the space is a character of its own line


def test_schedules():
    constant = Schedule(base_lr=0.1, steps_per_epoch=10, epochs=3)
    assert constant.lr_at(0) == constant.lr_at(29) == 0.1
    multistep = Schedule(0.1, 10, 3, name="multistep", milestones=(1, 2), gamma=0.1)
    assert [round(multistep.lr_at(s), 6) for s in (9, 10, 20)] == [0.1, 0.01, 0.001]
    cosine = Schedule(0.1, 10, 2, name="cosine", warmup_epochs=1)
    assert cosine.lr_at(0) == pytest.approx(0.01) and cosine.lr_at(9) == pytest.approx(0.1)
    assert cosine.lr_at(10) == pytest.approx(0.1) and cosine.lr_at(20) == pytest.approx(0.0)
    poly = Schedule(0.01, 10, 1, name="poly", power=0.1, end_lr=1e-6)
    assert poly.lr_at(0) == pytest.approx(0.01) and poly.lr_at(10) == pytest.approx(1e-6)


def test_decoder_rejects_classes_outside_the_charset():
    with pytest.raises(ValueError, match="outside 0..3"):
        decode_best_paths(np.array([[4, 0]]), Charset("abc"))
