"""Faults during work, with the real frameworks (issue 19): a SIGKILLed worker resumed with --resume, a full
disk at a checkpoint, and (PyTorch) a kill of core and worker while a checkpoint is written, a full disk at
the native dataset, the exports and the core's own files.

These prove recovery, not learning: the tiny fault recipe (tests/faults.py) trains 2 epochs of 20 steps,
and a resumed run must end where an uninterrupted one does.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest

from conftest import run_cli, tree_digest
from faults import (CHECKPOINT_EVERY, EPOCHS, STEPS_PER_EPOCH, epoch_losses, events_of, fault_recipe,
                    kill_worker_at_random_step, max_weight_diff, metrics_of, predictions, small_filesystem,
                    start_run, tree_bytes, wait_for)
from ocrbench import envs
from ocrbench.backend import get_backend
from ocrbench.results import validate_metrics
from ocrbench.worker.checkpoints import CheckpointStore

pytestmark = pytest.mark.e2e

BACKENDS = ["pytorch", "mxnet", "tensorflow", "mindspore", "paddleocr"]
# max |Δ| of the final weights, resumed vs uninterrupted, allowed per backend (measured: see the README's
# "Faults and limits"); equal predictions are required of every backend
WEIGHT_TOLERANCE = {"pytorch": 0.0, "mxnet": 0.0, "tensorflow": 0.0, "mindspore": 0.0, "paddleocr": 0.0}


@pytest.fixture(scope="module", params=BACKENDS)
def straight(request, tmp_path_factory):
    """One uninterrupted run of the fault recipe per backend: ``(backend, recipe, run_dir)``."""
    backend = request.param
    envs.resolve_python(get_backend(backend))
    out = tmp_path_factory.mktemp(f"straight-{backend}")
    recipe = fault_recipe(out, backend)
    result = run_cli("run", recipe, "--out", out / "runs")
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = (out / "runs").iterdir()
    return backend, recipe, run_dir


def check_same_as(straight_dir, run_dir, backend: str) -> float:
    """The resumed run ended as the uninterrupted one: status ok, every epoch, the same eval predictions,
    epoch losses within 1e-5 relative and weights within the backend's tolerance. Returns max |Δ|."""
    metrics = metrics_of(run_dir)
    validate_metrics(metrics)
    assert metrics["status"] == "ok" and metrics["train"]["steps"] == EPOCHS * STEPS_PER_EPOCH
    assert predictions(run_dir) == predictions(straight_dir)
    assert epoch_losses(run_dir) == pytest.approx(epoch_losses(straight_dir), rel=1e-5)
    diff = max_weight_diff(straight_dir, run_dir)
    print(f"{backend}: resumed vs uninterrupted, final weights max |diff| {diff:.3g}")
    assert diff <= WEIGHT_TOLERANCE[backend]
    return diff


def room_for(straight_dir, checkpoints: float) -> tuple[int, int]:
    """A filesystem size (bytes) for a run like ``straight_dir``: its small files twice over, 64 KiB and
    ``checkpoints`` times its checkpoint's size. Returns the size and the checkpoint's bytes."""
    checkpoint = metrics_of(straight_dir)["model"]["checkpoint_bytes"]
    others = tree_bytes(straight_dir, leave_out=("checkpoints", "exports"))
    return 2 * others + 64 * 1024 + int(checkpoints * checkpoint), checkpoint


def run_out_of_space(recipe, out) -> tuple:
    """``ocrbench run recipe --out out`` on a filesystem too small for it: exit 1 without a traceback, a
    schema-valid metrics.json with status failed and a DiskFullError. Returns the run dir and metrics."""
    result = run_cli("run", recipe, "--out", out)
    (run_dir,) = out.iterdir()
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    metrics = metrics_of(run_dir)
    validate_metrics(metrics)
    assert metrics["status"] == "failed" and metrics["error"]["type"] == "DiskFullError", metrics["error"]
    return run_dir, metrics


def test_sigkill_of_the_worker_then_resume_ends_as_an_uninterrupted_run(straight, tmp_path):
    backend, recipe, straight_dir = straight
    seed = int(time.time())
    run_dir, killed = kill_worker_at_random_step(recipe, tmp_path / "runs", random.Random(seed))
    print(f"{backend}: killed at step {killed['last_step']} (target {killed['target']}, seed {seed})")
    failed = metrics_of(run_dir)
    assert killed["core_exit"] == 1 and failed["status"] == "failed"
    assert "the worker exited with code -9" in failed["error"]["message"]
    committed = CheckpointStore(run_dir / "checkpoints").latest()
    lost = killed["last_step"] - committed.state["global_step"]
    assert 0 <= lost <= CHECKPOINT_EVERY, (killed, committed.state)

    result = run_cli("run", "--resume", run_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    resumed = next(e for e in events_of(run_dir) if e["event"] == "resumed")
    assert resumed["step"] == committed.state["global_step"]
    check_same_as(straight_dir, run_dir, backend)


def test_a_full_disk_at_a_checkpoint_is_named_and_resume_works_once_there_is_room(straight, tmp_path):
    backend, recipe, straight_dir = straight
    # room for the run's files and one checkpoint, not for the second one (step 10) beside it
    size, checkpoint = room_for(straight_dir, checkpoints=1.5)
    fs = tmp_path / "fs"
    with small_filesystem(fs, size) as resize:
        run_dir, metrics = run_out_of_space(recipe, fs)
        assert "no space left on device while writing the checkpoint after step 10" in \
            metrics["error"]["message"]
        store = CheckpointStore(run_dir / "checkpoints")
        assert not list(store.root.glob(".staging-*"))   # the half-written checkpoint was removed
        latest = store.latest()
        assert latest.directory.name == "step-00000005" and not latest.passed_over
        print(f"{backend}: filesystem of {size} bytes, checkpoint {checkpoint} bytes: {metrics['error']}")

        resize(size + 64 * checkpoint + 16 * 1024 * 1024)
        result = run_cli("run", "--resume", run_dir)
        assert result.returncode == 0, result.stdout + result.stderr
        check_same_as(straight_dir, run_dir, backend)


def test_evaluations_inside_epochs_leave_training_unchanged(straight, tmp_path):
    """``train.eval_every_steps``: evaluations after steps 7, 14, 21, 28 and 35 (not at the epochs' last
    steps 20 and 40, which have their own) appear in the curve, in step order, and leave training as it
    was — the same final weights (bit for bit), epoch losses and predictions as the run without them, so
    evaluating puts the network back in training mode (``Trainer.resume_training``) and draws nothing from
    the training data's random streams."""
    backend, recipe, straight_dir = straight
    result = run_cli("run", recipe, "--out", tmp_path / "runs", "--set", "train.eval_every_steps=7")
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    check_same_as(straight_dir, run_dir, backend)
    inside = [e for e in events_of(run_dir) if e["event"] == "eval" and e["mid_epoch"]]
    assert [(e["epoch"], e["step"]) for e in inside] == [(1, 7), (1, 14), (2, 21), (2, 28), (2, 35)]
    curve = metrics_of(run_dir)["train"]["curve"]
    assert [p["step"] for p in curve] == [7, 14, 20, 21, 28, 35, 40]
    assert all(p["eval_seq_acc"] is not None and p["eval_wall_s"] > 0 for p in curve)
    assert [p["eval_wall_s"] for p in curve] == sorted(p["eval_wall_s"] for p in curve)
    assert (run_dir / "predictions" / "eval-step00000007.tsv").is_file()


# ------------------------------------------------------------------------------------- PyTorch only
@pytest.fixture(scope="module")
def torch_straight(tmp_path_factory):
    envs.resolve_python(get_backend("pytorch"))
    out = tmp_path_factory.mktemp("torch-straight")
    recipe = fault_recipe(out, "pytorch")
    result = run_cli("run", recipe, "--out", out / "runs")
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = (out / "runs").iterdir()
    return recipe, run_dir


def test_kill_of_core_and_worker_while_a_checkpoint_is_written_leaves_the_previous_one(torch_straight,
                                                                                      tmp_path):
    straight_recipe, straight_dir = torch_straight
    recipe = fault_recipe(tmp_path, "pytorch", every=1)     # a checkpoint after every step
    process, run_dir = start_run(recipe, tmp_path / "runs")
    staging = run_dir / "checkpoints"
    # SIGKILL to the core and its worker (as an OOM killer or a power cut would) while a staging
    # directory, a checkpoint being written, exists after step 12 or later
    events = wait_for(run_dir, lambda ev: any(e["event"] == "checkpoint" and e["step"] >= 12 for e in ev),
                      process, "step 12's checkpoint")
    worker = next(e["pid"] for e in events if e["event"] == "start")
    deadline = time.monotonic() + 120
    while not any(staging.glob(".staging-*")):
        assert time.monotonic() < deadline and process.poll() is None, "never saw a checkpoint being written"
    os.kill(process.pid, signal.SIGKILL)
    os.kill(worker, signal.SIGKILL)
    process.wait(timeout=60)
    caught = sorted(p.name for p in staging.glob(".staging-*"))
    print(f"killed while writing {caught}")
    assert caught and not (run_dir / "metrics.json").exists()
    store = CheckpointStore(staging)
    latest = store.latest()                # the previous checkpoint, whole
    assert not latest.passed_over and int(caught[0].split("-")[1]) == latest.state["global_step"] + 1

    result = run_cli("run", "--resume", run_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not list(staging.glob(".staging-*"))
    check_same_as(straight_dir, run_dir, "pytorch")   # checkpointing every step changes nothing


def test_a_truncated_checkpoint_is_passed_over_on_resume_and_refused_by_export(torch_straight, tmp_path):
    import shutil

    _, straight_dir = torch_straight
    run_dir = tmp_path / straight_dir.name
    shutil.copytree(straight_dir, run_dir)
    previous, newest = CheckpointStore(run_dir / "checkpoints").committed()[-2:]
    with open(newest / "last.pt", "r+b") as handle:
        handle.truncate(1000)
    result = run_cli("export", run_dir)
    assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr
    assert "the run's last checkpoint is damaged" in result.stdout + result.stderr
    assert "last.pt is 1000 bytes" in result.stdout + result.stderr

    (run_dir / "metrics.json").unlink()    # as if the run had been killed after its last checkpoint
    result = run_cli("run", "--resume", run_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    skipped = [e for e in events_of(run_dir) if e["event"] == "checkpoint_skipped"]
    assert skipped and skipped[0]["using"] == previous.name and "truncated" in skipped[0]["problem"]
    check_same_as(straight_dir, run_dir, "pytorch")


def test_a_full_disk_while_writing_the_native_dataset(tmp_path):
    """OCRBENCH_DATASETS on a filesystem that holds the canonical dataset but not PyTorch's LMDB copy."""
    recipe = fault_recipe(tmp_path, "pytorch")
    probe_home = tmp_path / "probe-home"
    result = run_cli("prepare", recipe, env={"OCRBENCH_DATASETS": str(probe_home)})
    assert result.returncode == 0, result.stderr
    canonical = tree_bytes(probe_home)
    fs = tmp_path / "home"
    with small_filesystem(fs, canonical + 256 * 1024) as resize:
        env = {"OCRBENCH_DATASETS": str(fs)}
        result = run_cli("run", recipe, "--out", tmp_path / "runs", env=env)
        assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
        (run_dir,) = (tmp_path / "runs").iterdir()
        error = metrics_of(run_dir)["error"]
        assert error["type"] == "DiskFullError" and "while writing the native dataset" in error["message"]
        native = json.loads((run_dir / "job.json").read_text())["dataset"]["native_dir"]
        leftovers = [p for p in os.scandir(native)] if os.path.isdir(native) else []
        assert not [p.name for p in leftovers if p.name.endswith(".tmp")]   # the partial copy removed
        resize(canonical + 64 * 1024 * 1024)
        result = run_cli("run", "--resume", run_dir, env=env)
        assert result.returncode == 1 and "no checkpoint" in result.stdout   # nothing trained yet
        result = run_cli("run", recipe, "--out", tmp_path / "runs2", env=env)
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_full_disk_while_exporting_is_named_and_resume_exports(torch_straight, tmp_path):
    _, straight_dir = torch_straight
    recipe = fault_recipe(tmp_path, "pytorch", every=0)        # one checkpoint per epoch
    recipe.write_text(recipe.read_text().replace("formats: [weights]",
                                                 "formats: [weights, torchscript, onnx]"))
    # two checkpoints fit (and a third while it is staged), the three exports beside them do not
    size, checkpoint = room_for(straight_dir, checkpoints=3.1)
    fs = tmp_path / "fs"
    with small_filesystem(fs, size) as resize:
        run_dir, metrics = run_out_of_space(recipe, fs)
        error = metrics["error"]
        assert "export" in error["message"], error
        print(f"full disk while exporting: {error['message']}")
        resize(size + 64 * 1024 * 1024)
        result = run_cli("run", "--resume", run_dir)
        assert result.returncode == 0, result.stdout + result.stderr
        exports = {x["format"]: x["ok"] for x in metrics_of(run_dir)["exports"]}
        assert exports == {"weights": True, "torchscript": True, "onnx": True}


def test_a_full_disk_for_the_cores_own_files_is_a_named_error(tmp_path):
    recipe = fault_recipe(tmp_path, "pytorch")
    fs = tmp_path / "fs"
    with small_filesystem(fs, 8 * 1024):
        result = run_cli("run", recipe, "--out", fs)
        said = result.stdout + result.stderr
        assert result.returncode == 2 and "Traceback" not in said
        assert "no space left on device while writing" in said and "hint: free space" in said
        assert not list(fs.iterdir())    # the run directory that could not be set up is removed


def test_three_runs_at_once_on_one_dataset_build_it_once(tmp_path):
    """Two PyTorch runs and an MXNet run of one recipe started together on an empty dataset cache: the
    canonical dataset is built once (the others wait, then reuse it), each backend's native copy once, all
    three succeed, and the cache is the one a single build makes."""
    recipes = {name: fault_recipe(tmp_path / name, backend, epochs=1)
               for name, backend in (("a", "pytorch"), ("b", "pytorch"), ("c", "mxnet"))}
    env = {"OCRBENCH_DATASETS": str(tmp_path / "datasets")}
    started = {name: start_run(recipe, tmp_path / "runs" / name, env=env) for name, recipe in recipes.items()}
    for name, (process, run_dir) in started.items():
        assert process.wait(timeout=900) == 0, (tmp_path / "runs" / f"{name}.core.log").read_text()
        assert metrics_of(run_dir)["status"] == "ok"
    logs = [(tmp_path / "runs" / f"{name}.core.log").read_text() for name in started]
    assert sum("dataset: wrote" in log for log in logs) == 1
    assert sum("dataset: reusing" in log for log in logs) == 2
    prepared = {name: next(e for e in events_of(run_dir) if e["event"] == "prepared")
                for name, (_, run_dir) in started.items()}
    assert sorted(p["reused"] for p in (prepared["a"], prepared["b"])) == [False, True]
    assert prepared["c"]["reused"] is False
    fingerprints = {metrics_of(run_dir)["dataset"]["fingerprint"] for _, run_dir in started.values()}
    single = run_cli("prepare", recipes["a"], env={"OCRBENCH_DATASETS": str(tmp_path / "single")})
    assert fingerprints == {single.stdout.split()[-1]}
    (together,) = (tmp_path / "datasets").glob("captcha-*")
    (alone,) = (tmp_path / "single").glob("captcha-*")
    assert tree_digest(together, leave_out=("native",)) == tree_digest(alone)
    assert not [p for p in together.rglob("*.tmp")]


def test_a_native_copy_left_half_built_by_a_kill_is_removed_and_rebuilt(tmp_path):
    recipe = fault_recipe(tmp_path, "pytorch", epochs=1)
    env = {"OCRBENCH_DATASETS": str(tmp_path / "datasets")}
    assert run_cli("prepare", recipe, env=env).returncode == 0
    (root,) = (tmp_path / "datasets").glob("captcha-*")
    leftover = root / "native" / "pytorch" / ".train.99999.tmp"     # as write_lmdb leaves it when killed
    leftover.mkdir(parents=True)
    (leftover / "data.mdb").write_bytes(b"\0" * 4096)
    result = run_cli("run", recipe, "--out", tmp_path / "runs", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    prepared = next(e for e in events_of(run_dir) if e["event"] == "prepared")
    assert prepared["stale_removed"] == [".train.99999.tmp"] and prepared["reused"] is False
    assert not leftover.exists() and metrics_of(run_dir)["status"] == "ok"
