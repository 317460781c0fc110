"""The one decoder of `ocrbench predict` (ocrbench.recognition) and the input/option checks of
ocrbench.predict, without a framework."""

import numpy as np
import pytest

from conftest import write
from ocrbench.codec import Charset
from ocrbench.errors import OcrbenchError
from ocrbench.predict import check_options, collect
from ocrbench.recognition import (Recognition, blank_first_order, probabilities, read_recognitions, recognise,
                                  write_recognitions)

DIGITS = Charset("0123456789")


def test_blank_first_order_moves_a_last_blank_to_the_front():
    assert blank_first_order(0, 4).tolist() == [0, 1, 2, 3]
    assert blank_first_order(3, 4).tolist() == [3, 0, 1, 2]
    with pytest.raises(OcrbenchError, match="blank index 1 is neither 0 nor the last class"):
        blank_first_order(1, 4)


def test_probabilities_from_logits_and_from_softmax_agree():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 11)).astype(np.float32)
    from_logits = probabilities(logits, 0, "logits")
    assert from_logits.shape == (2, 5, 11)
    np.testing.assert_allclose(from_logits.sum(axis=2), 1.0, rtol=1e-12)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    np.testing.assert_allclose(probabilities(softmax, 0, "softmax"), from_logits, rtol=1e-6)
    # a model with the blank last: the same distribution once its columns are rotated
    blank_last = np.concatenate([logits[..., 1:], logits[..., :1]], axis=2)
    np.testing.assert_allclose(probabilities(blank_last, 10, "logits"), from_logits, rtol=1e-12)


def test_probabilities_refuse_a_wrong_shape_or_activation():
    with pytest.raises(OcrbenchError, match=r"expected \(batch, time, classes\)"):
        probabilities(np.zeros((5, 11)), 0, "logits")
    with pytest.raises(OcrbenchError, match="activation 'sigmoid'"):
        probabilities(np.zeros((1, 5, 11)), 0, "sigmoid")


def one_hot_path(classes: list[int], confidence: float, num_classes: int = 11) -> np.ndarray:
    """(T, C) probabilities whose argmax is ``classes`` with probability ``confidence`` at each step."""
    rest = (1 - confidence) / (num_classes - 1)
    probs = np.full((len(classes), num_classes), rest)
    probs[np.arange(len(classes)), classes] = confidence
    return probs


def test_recognise_decodes_greedily_and_states_both_confidences():
    # blank 0, "1" is class 2: path 2 2 0 2 3 -> "112"; steps all at 0.9 but one at 0.6
    probs = one_hot_path([2, 2, 0, 2, 3], 0.9)
    probs[3] = one_hot_path([2], 0.6)[0]
    (result,) = recognise(["a"], probs[None], DIGITS)
    assert result == Recognition("a", "112", pytest.approx((4 * 0.9 + 0.6) / 5), pytest.approx(0.6))
    assert result.confidence("mean") == result.confidence_mean and result.confidence("min") == 0.6
    assert recognise(["b"], one_hot_path([0, 0, 0], 0.99)[None], DIGITS)[0].text == ""


def test_recognitions_round_trip_and_name_a_bad_line(tmp_path):
    path = tmp_path / "recognitions.jsonl"
    results = [Recognition("0", "12", 0.9, 0.5), Recognition("1", "", 0.99, 0.98)]
    assert write_recognitions(path, results) == 2
    assert read_recognitions(path) == results
    path.write_text(path.read_text() + '{"id": "2"}\n')
    with pytest.raises(OcrbenchError, match=r"recognitions.jsonl:3: not a recognition line"):
        read_recognitions(path)
    with pytest.raises(OcrbenchError, match="cannot read recognitions"):
        read_recognitions(tmp_path / "missing.jsonl")


def test_collect_reads_files_folders_and_label_files(tmp_path):
    a = write(tmp_path / "imgs" / "b.png", "x")
    write(tmp_path / "imgs" / "sub" / "a.jpg", "x")
    write(tmp_path / "imgs" / "notes.md", "not an image")
    labels = write(tmp_path / "labels.txt", "imgs/b.png\t42\n\nimgs/sub/a.jpg\t7\n")
    items = collect([a, tmp_path / "imgs", labels])
    assert [i.path for i in items] == [a, tmp_path / "imgs" / "b.png", tmp_path / "imgs" / "sub" / "a.jpg",
                                       tmp_path / "imgs" / "b.png", tmp_path / "imgs" / "sub" / "a.jpg"]
    assert [i.truth for i in items] == [None, None, None, "42", "7"]


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.png", "missing.png: no such file or folder"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "empty: no image files in this folder or below"),
    (lambda d: write(d / "bad.txt", "no tab here\n"), "bad.txt:1: expected 'path"),
    (lambda d: write(d / "blank.tsv", "\n\n"), "blank.tsv: the label file has no lines"),
    (lambda d: (d / "latin1.txt").write_bytes(b"a.png\t\xe9\n") and d / "latin1.txt",
     "latin1.txt: cannot read the label file"),
])
def test_collect_names_each_bad_input(tmp_path, make, message):
    with pytest.raises(OcrbenchError, match=message):
        collect([make(tmp_path)])


def test_output_options_are_checked(tmp_path):
    assert check_options(None, None, "mean") == "table"
    assert check_options(None, tmp_path / "out.csv", "min") == "csv"
    assert check_options(None, tmp_path / "out.jsonl", "mean") == "jsonl"
    with pytest.raises(OcrbenchError, match="--format 'xml'"):
        check_options("xml", None, "mean")
    with pytest.raises(OcrbenchError, match="a file gets jsonl or csv"):
        check_options(None, tmp_path / "out.txt", "mean")
    with pytest.raises(OcrbenchError, match="--confidence 'max'"):
        check_options(None, None, "max")
