"""The benchmark scripts' own arithmetic."""

import json
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from vocab_speed import steady_samples_per_s  # noqa: E402


def write_events(path, steps):
    lines = [json.dumps({"event": "train_begin", "time": 0.0})]
    lines += [json.dumps({"event": "step", "step": step, "time": time}) for step, time in steps]
    path.write_text("\n".join(lines) + "\n")


def test_steady_throughput_leaves_out_the_first_quarter(tmp_path):
    events = tmp_path / "events.jsonl"
    # steps 20 to 100 are slow (tracing); the logged steps span 380, so the rate runs from the first one
    # at least 95 steps past step 20 (step 120) to the last: 20 steps of batch 32 every 2 s = 320 images/s
    write_events(events, [(20, 10.0), (40, 12.0), (100, 14.0), (120, 16.0), (140, 18.0), (400, 44.0)])
    assert steady_samples_per_s(events, 32) == pytest.approx((400 - 120) * 32 / (44.0 - 16.0))


def test_steady_throughput_refuses_too_few_events(tmp_path):
    events = tmp_path / "events.jsonl"
    write_events(events, [(20, 1.0)])
    with pytest.raises(SystemExit, match="fewer than two step events spanning time"):
        steady_samples_per_s(events, 32)
