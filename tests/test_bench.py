"""``ocrbench bench`` and the timers behind it (issue 21).

The framework-free tests check the arithmetic: the epoch timers, the timing record of metrics.json, the
steady rate, the ratio and the warnings, the minimal loops' shared batch. ``test_bench_short_all_backends``
runs the real thing for all five backends on a tiny dataset (``--threads 1``, 2 timed minimal steps): it
proves the plumbing — every minimal loop trains and infers in its framework, every backend sets and reports
the threads it was given and fills metrics.json ``timing`` — not any speed (the figures are one run's and
are not asserted; the full bench is a documented command, docs/benchmarks.md).
"""

import json
import sys
import time

import numpy as np
import pytest
from conftest import RECIPES, ROOT, run_cli

from ocrbench import bench
from ocrbench.results import build_curve, steady_samples_per_s, time_to_target, timing_record
from ocrbench.schedule import Schedule
from ocrbench.worker.events import EpochContext, Events

sys.path.insert(0, str(ROOT / "benchmarks" / "minimal"))
import harness  # noqa: E402

BACKENDS = ["pytorch", "mxnet", "tensorflow", "mindspore", "paddleocr"]


def test_epoch_timers_split_the_epoch_into_data_steps_and_the_rest(tmp_path):
    schedule = Schedule(base_lr=0.1, steps_per_epoch=4, epochs=1, name="constant")
    ctx = EpochContext(1, 0, schedule, Events(tmp_path / "e.jsonl"), log_every=100)

    def slow_batches():
        for index in range(4):
            time.sleep(0.02)        # loading a batch
            yield index

    for _ in ctx.batches(slow_batches()):
        time.sleep(0.03)            # the step
        ctx.step(8, 1.0)
        time.sleep(0.01)            # bookkeeping after the step
    timers, wall = ctx.timers(), ctx.train_s()
    assert timers["data_s"] >= 4 * 0.02
    assert timers["step_s"] >= 4 * 0.03
    assert timers["other_s"] >= 4 * 0.01 * 0.9
    assert timers["data_s"] + timers["step_s"] + timers["other_s"] == pytest.approx(wall, abs=0.01)
    assert 0 <= timers["cpu_s"] <= wall + 0.05   # sleeping uses no CPU


def test_an_evaluation_inside_the_epoch_is_not_training_time_and_stop_ends_the_batches(tmp_path):
    schedule = Schedule(base_lr=0.1, steps_per_epoch=6, epochs=1, name="constant")
    ctx = EpochContext(1, 0, schedule, Events(tmp_path / "e.jsonl"), log_every=1)
    taken = []
    for index in ctx.batches(iter(range(6))):
        time.sleep(0.02)            # the step
        ctx.step(8, 1.0)
        taken.append(index)
        if index == 1:
            with ctx.evaluating():
                time.sleep(0.2)     # an evaluation after step 2
        if index == 3:
            ctx.stop()              # the target reached after step 4: no fifth batch
    timers = ctx.timers()
    assert taken == [0, 1, 2, 3] and ctx.stopped
    assert timers["eval_s"] >= 0.2 and ctx.train_s() < 0.2
    assert timers["data_s"] + timers["step_s"] + timers["other_s"] == pytest.approx(ctx.train_s(), abs=0.01)
    steps = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert all(e["train_s"] < 0.2 for e in steps)   # the logged rates leave the evaluation out
    assert steps[-1]["samples_per_s"] > 32 / 0.2


def events_of_a_run():
    """Events of a 2-epoch run whose worker began at t=100 (unix seconds)."""
    return [{"event": "start", "time": 103.0, "threads": 2},
            {"event": "prepared", "time": 103.5, "seconds": 0.5},
            {"event": "model", "time": 105.0},
            {"event": "step", "time": 106.0, "epoch": 1, "step": 10},
            {"event": "epoch_end", "time": 110.0, "epoch": 1, "train_s": 5.0,
             "timers": {"data_s": 1.0, "step_s": 3.5, "other_s": 0.5, "cpu_s": 9.0}},
            {"event": "eval", "time": 111.0, "seconds": 1.0},
            {"event": "checkpoint", "time": 111.2, "seconds": 0.2},
            {"event": "step", "time": 112.0, "epoch": 2, "step": 20},
            {"event": "step", "time": 113.0, "epoch": 2, "step": 30},
            {"event": "step", "time": 114.0, "epoch": 2, "step": 40},
            {"event": "step", "time": 115.0, "epoch": 2, "step": 50},
            {"event": "epoch_end", "time": 116.0, "epoch": 2, "train_s": 4.0,
             "timers": {"data_s": 0.1, "step_s": 3.7, "other_s": 0.2, "cpu_s": 7.0}},
            {"event": "eval", "time": 117.0, "seconds": 1.0},
            {"event": "checkpoint", "time": 117.3, "seconds": 0.3},
            {"event": "train_end", "time": 117.4},
            {"event": "done", "time": 118.0}]


def test_timing_record_adds_up_the_attempt():
    timing = timing_record(events_of_a_run(), {"core_s": 20.0, "worker_s": 18.5, "worker_began": 100.0})
    assert timing["overhead_s"] == pytest.approx(1.5)
    assert timing["startup_s"] == pytest.approx(3.0)
    assert timing["prepare_s"] == pytest.approx(0.5)
    assert timing["build_s"] == pytest.approx(1.5)
    assert timing["train_s"] == pytest.approx(9.0)
    assert (timing["data_s"], timing["step_s"], timing["other_s"]) == pytest.approx((1.1, 7.2, 0.7))
    assert timing["eval_s"] == pytest.approx(2.0) and timing["checkpoint_s"] == pytest.approx(0.5)
    assert timing["export_s"] == pytest.approx(0.6)
    assert timing["threads"] == 2 and timing["cpu_utilisation"] == pytest.approx(16.0 / 9.0)
    assert timing_record(events_of_a_run(), None) is None   # runs written before ocrbench timed them


def test_steady_rate_uses_the_last_epoch_after_its_first_quarter():
    # epoch 2 logs steps 20..50: the quarter is 7.5 steps, so the rate runs from step 30 (t=113) to 50
    assert steady_samples_per_s(events_of_a_run(), batch=32) == pytest.approx(20 * 32 / 2.0)
    assert steady_samples_per_s(events_of_a_run(), batch=32, processes=2) == pytest.approx(20 * 64 / 2.0)
    assert steady_samples_per_s([{"event": "step", "time": 1.0, "epoch": 1, "step": 10}], 32) is None


def test_curve_has_a_point_per_evaluation_inside_epochs_and_time_to_target_uses_them():
    """Epoch 1 ends at step 10 and is evaluated there; epoch 2 is evaluated after step 14 (0.8) and
    step 18 (0.96), where ``stop_at_target`` ended it: one point for that evaluation and the epoch's end."""
    scores = {"e1.tsv": 0.5, "s14.tsv": 0.8, "s18.tsv": 0.96}

    def scorer(path):
        return {"seq_acc": scores[path], "char_acc": scores[path], "ned": scores[path]}

    def figures(epoch, step, wall):
        return {"epoch": epoch, "step": step, "loss": 1.0, "lr": 0.1, "wall_s": wall, "train_s": wall}

    events = [{"event": "epoch_end", **figures(1, 10, 5.0)},
              {"event": "eval", "epoch": 1, "step": 10, "mid_epoch": False, "predictions": "e1.tsv",
               "wall_s": 6.0},
              {"event": "eval", "mid_epoch": True, "predictions": "s14.tsv", **figures(2, 14, 8.0)},
              {"event": "eval", "mid_epoch": True, "predictions": "s18.tsv", **figures(2, 18, 10.0)},
              {"event": "epoch_end", **figures(2, 18, 10.5)}]
    curve = build_curve(events, scorer)
    assert [(p["epoch"], p["step"], p["eval_seq_acc"]) for p in curve] == [(1, 10, 0.5), (2, 14, 0.8),
                                                                          (2, 18, 0.96)]
    assert curve[-1]["wall_s"] == 10.5 and curve[-1]["eval_wall_s"] == 10.0
    assert time_to_target(curve, 0.95) == 10.0 and time_to_target(curve, 0.7) == 8.0
    old = [{"event": "epoch_end", **figures(1, 10, 5.0)},   # files written before evals carried a step
           {"event": "eval", "epoch": 1, "predictions": "e1.tsv", "wall_s": 6.0}]
    assert build_curve(old, scorer)[0]["eval_seq_acc"] == 0.5


def test_judge_gives_the_ratio_and_warns_about_idle_cores_and_slower_threads():
    row = bench.BackendBench(backend="paddleocr", threads=2,
                             minimal={"train_samples_per_s": 100.0},
                             minimal_1_thread={"train_samples_per_s": 150.0},
                             run={"steady_samples_per_s": 80.0, "timing": {"cpu_utilisation": 1.0}})
    bench.judge(row)
    assert row.ratio == pytest.approx(0.8)
    assert any("kept 1.00 of the 2 cores" in w for w in row.warnings)
    assert any("slower with 2 threads (100 samples/s) than with 1 (150)" in w for w in row.warnings)
    busy = bench.BackendBench(backend="pytorch", threads=2, minimal={"train_samples_per_s": 300.0},
                              minimal_1_thread={"train_samples_per_s": 170.0},
                              run={"steady_samples_per_s": 290.0, "timing": {"cpu_utilisation": 1.9}})
    bench.judge(busy)
    assert busy.warnings == [] and busy.ratio == pytest.approx(290 / 300)


def test_the_ratio_divides_by_the_minimal_rates_around_the_run_and_warns_when_they_drift():
    steady = bench.BackendBench(backend="mxnet", threads=2, minimal_before={"train_samples_per_s": 290.0},
                                minimal={"train_samples_per_s": 310.0},
                                run={"steady_samples_per_s": 285.0, "timing": {"cpu_utilisation": 1.9}})
    bench.judge(steady)
    assert steady.ratio == pytest.approx(285 / 300) and steady.drift == pytest.approx(20 / 300)
    assert steady.warnings == []
    moved = bench.BackendBench(backend="mxnet", threads=2, minimal_before={"train_samples_per_s": 340.0},
                               minimal={"train_samples_per_s": 260.0},
                               run={"steady_samples_per_s": 270.0, "timing": {"cpu_utilisation": 1.9}})
    bench.judge(moved)
    assert moved.ratio == pytest.approx(0.9) and moved.drift == pytest.approx(80 / 300)
    assert moved.warnings == ["the minimal loop ran at 340 samples/s before the run and 260 after it (27% "
                              "apart): the machine's speed moved, so a ratio within 0.27 of 1 is not a "
                              "measured difference"]


def test_run_overrides_leave_threads_to_ocrbench_unless_given():
    assert "train.threads=1" not in bench.run_overrides(bench.BenchSettings())
    overrides = bench.run_overrides(bench.BenchSettings(threads=1, epochs=3, overrides=["train.epochs=4"]))
    assert overrides[:2] == ["train.epochs=3", "train.threads=1"] and overrides[-1] == "train.epochs=4"
    assert "export.formats=[]" in overrides


def test_the_minimal_batch_follows_the_stated_conventions():
    cfg = harness.Config(classes=11, channels=[16] * 7, hidden=8, input_width=40, batch=6, eval_batch=3,
                         max_len=4)
    batch = harness.fixed_batch(cfg)
    assert batch.inputs.shape == (6, 1, 32, 40) and batch.inputs.dtype == np.float32
    assert batch.inputs.min() >= -1.0 and batch.inputs.max() <= 1.0
    assert batch.targets.shape == (6, 4) and batch.targets.min() >= 1 and batch.targets.max() <= 10
    assert (batch.lengths == 4).all() and batch.eval_inputs.shape == (3, 1, 32, 40)
    assert np.array_equal(harness.fixed_batch(cfg).inputs, batch.inputs)   # seeded


def test_bench_refuses_a_bad_mode_and_another_architecture(tmp_path):
    result = run_cli("bench", "--mode", "paddleocr", "--out", tmp_path)
    assert result.returncode == 2
    assert "--mode 'paddleocr': write it as KEY=VALUE" in result.stdout + result.stderr
    result = run_cli("bench", RECIPES / "captcha_mxnet_example.yml", "--backend", "mxnet", "--out", tmp_path)
    assert result.returncode == 2
    assert "ocrbench bench measures the shared crnn" in result.stdout + result.stderr
    assert not (tmp_path / "captcha").exists() and list(tmp_path.iterdir()) == []


def test_bench_short_all_backends(tmp_path):
    """Plumbing for all five: a 1-epoch run of 8 steps (64 images, batch 8) and 2 timed minimal steps,
    at 1 thread."""
    out = tmp_path / "bench.json"
    result = run_cli("bench", RECIPES / "captcha.yml", "--backend", ",".join(BACKENDS), "--threads", "1",
                     "--steps", "2", "--rounds", "2", "--warmup", "1", "--epochs", "1",
                     "--out", tmp_path / "runs",
                     "--json", out, "--set", "data.train_size=64", "--set", "data.eval_size=32",
                     "--set", "train.batch_size=8", "--set", "train.log_every=1", timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["schema"] == "ocrbench.bench/1" and [r["backend"] for r in doc["backends"]] == BACKENDS
    for row in doc["backends"]:
        name = row["backend"]
        assert row["error"] is None, name
        assert row["minimal"]["train_samples_per_s"] > 0 and row["minimal"]["infer_samples_per_s"] > 0, name
        assert row["minimal"]["threads"] == 1 and row["minimal_before"]["threads"] == 1, name
        assert row["minimal_before"]["train_samples_per_s"] > 0 and row["drift"] >= 0, name
        assert row["minimal_1_thread"] is None, name      # 1 thread given: nothing to compare with
        run = row["run"]
        assert run["status"] == "ok" and run["steady_samples_per_s"] > 0 and row["ratio"] > 0, name
        timing = run["timing"]
        assert timing["threads"] == 1, name               # the worker set the thread count it was given
        parts = timing["data_s"] + timing["step_s"] + timing["other_s"]
        assert parts == pytest.approx(timing["train_s"], rel=0.05, abs=0.05), name
        assert timing["core_s"] >= timing["worker_s"] > timing["train_s"] > 0, name
        assert timing["cpu_utilisation"] > 0, name
    assert "ocrbench bench" in result.stdout and "minimal before /s" in result.stdout
