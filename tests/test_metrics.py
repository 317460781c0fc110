"""Metric definitions on hand-computed cases."""

import pytest

from ocrbench.errors import OcrbenchError
from ocrbench.metrics import Protocol, score, score_files


def test_exact_match_and_edit_distances():
    pairs = [("1234", "1234"),   # exact
             ("1234", "124"),    # one deletion: lev 1, max len 4
             ("12", "1299"),     # two insertions: lev 2, max len 4
             ("5", "")]          # empty prediction: lev 1, max len 1
    s = score(pairs)
    assert s["n"] == 4
    assert s["seq_acc"] == pytest.approx(1 / 4)
    assert s["cer"] == pytest.approx((0 + 1 + 2 + 1) / (4 + 4 + 2 + 1))
    assert s["char_acc"] == pytest.approx(1 - 4 / 11)
    assert s["ned"] == pytest.approx(1 - (0 + 1 / 4 + 2 / 4 + 1 / 1) / 4)


def test_char_acc_is_clamped_at_zero_when_cer_exceeds_one():
    s = score([("1", "12345")])
    assert s["cer"] == pytest.approx(4.0)
    assert s["char_acc"] == 0.0


def test_two_empty_strings_match():
    s = score([("", "")])
    assert s["seq_acc"] == 1.0 and s["ned"] == 1.0 and s["cer"] == 0.0


def test_protocol_normalisation():
    pairs = [("Hello World", "hello  world ")]
    assert score(pairs)["seq_acc"] == 0.0
    assert score(pairs, Protocol(case="lower", spaces="remove"))["seq_acc"] == 1.0
    assert score([("a1b", "ab")], Protocol(charset_filter=True), charset="ab")["seq_acc"] == 1.0
    assert score([(" x ", "x")], Protocol(spaces="strip"))["seq_acc"] == 1.0


def test_predictions_file_must_cover_the_eval_split(tmp_path):
    path = tmp_path / "eval.tsv"
    path.write_text("a.png\t12\nb.png\t\n", encoding="utf-8")
    s = score_files(path, {"a.png": "12", "b.png": "3"}, Protocol(), None)
    assert s["seq_acc"] == 0.5
    with pytest.raises(OcrbenchError, match="1 missing"):
        score_files(path, {"a.png": "12", "b.png": "3", "c.png": "4"}, Protocol(), None)


def test_empty_split_is_an_error():
    with pytest.raises(OcrbenchError, match="empty"):
        score([])


def test_an_earlier_attempts_error_does_not_fail_a_resumed_run(tmp_path):
    from ocrbench.results import latest_attempt

    events = [{"event": "start"}, {"event": "error", "type": "Interrupted", "message": "x"},
              {"event": "start"}, {"event": "done", "peak_rss_mb": 1.0}]
    assert latest_attempt(events) == events[2:]
    assert latest_attempt([{"event": "error"}]) == [{"event": "error"}]
