"""End to end with the real PyTorch backend on the tiny smoke set (needs `ocrbench env install pytorch`)."""

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import OCRBENCH, ROOT, run_cli
from e2e_checks import latest_checkpoint
from e2e_checks import (PLUMBING, check_chinese_lines, check_complete_run, check_exports, check_learned,
                        check_onnx_parity, check_partial_batch_policy, check_reloaded_parity, recipe_epochs)
from ocrbench import envs
from ocrbench.backend import get_backend
from ocrbench.recipe import CrnnParams
from ocrbench.results import validate_metrics
from pins import pinned_version

pytestmark = pytest.mark.e2e
SMOKE = ROOT / "backends" / "pytorch" / "smoke.yml"


@pytest.fixture(scope="module")
def torch_python():
    python, _ = envs.resolve_python(get_backend("pytorch"))  # a clear error if the env is missing
    return python


@pytest.fixture(scope="module")
def smoke_run(pytorch_smoke_run):
    return pytorch_smoke_run


def test_smoke_run_writes_a_complete_valid_run(smoke_run):
    metrics = check_complete_run(smoke_run[0], "pytorch", epochs=recipe_epochs(SMOKE), eval_n=64)
    check_learned(metrics)
    assert metrics["backend"]["version"].startswith(pinned_version("pytorch", "torch"))
    assert metrics["model"]["params"] == CrnnParams(**metrics["model"]["arch_params"]).param_count(11)


def test_exports_are_present_and_recorded(smoke_run):
    metrics = json.loads((smoke_run[0] / "metrics.json").read_text())
    exports = check_exports(smoke_run[0], metrics, {"torchscript", "onnx"})
    assert all(x["ok"] for x in exports.values()), exports


def test_onnx_export_runs_without_the_framework(smoke_run):
    metrics = json.loads((smoke_run[0] / "metrics.json").read_text())
    onnx = next(x for x in metrics["exports"] if x["format"] == "onnx")
    parity = check_onnx_parity(smoke_run[0], onnx)
    assert parity["preprocess_max_diff"] == 0.0   # PIL gray + bilinear: the core repeats it exactly
    assert parity["identical"] == 1.0 and parity["native_seq_acc"] == metrics["eval"]["seq_acc"]
    torchscript = next(x for x in metrics["exports"] if x["format"] == "torchscript")
    assert check_reloaded_parity(smoke_run[0], torchscript)["runtime"] == "PyTorch (the export reloaded)"
    with np.load(smoke_run[0] / "exports" / "onnx" / "reference.npz", allow_pickle=False) as reference:
        assert reference["inputs"].shape == (8, 1, 32, 64) and reference["outputs"].shape[1] == 8


def test_export_and_eval_commands(smoke_run, tmp_path):
    import shutil

    run_dir = tmp_path / smoke_run[0].name
    shutil.copytree(smoke_run[0], run_dir)
    (run_dir / "exports" / "onnx" / "model.onnx").unlink()
    result = run_cli("export", run_dir, "--format", "onnx")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "identical predictions 100.00 %" in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    exports = {x["format"]: x for x in metrics["exports"]}
    assert exports["onnx"]["ok"] and exports["onnx"]["parity"]["identical"] == 1.0
    assert exports["torchscript"]["ok"]                          # untouched
    events = (run_dir / "events.jsonl").read_text()
    assert events == (smoke_run[0] / "events.jsonl").read_text()   # the training record stays as it was
    result = run_cli("eval", run_dir, "--exported", "onnx")
    assert result.returncode == 0 and "batch-1 latency p50" in result.stdout, result.stdout + result.stderr
    bad = run_cli("export", tmp_path / "nope")
    assert bad.returncode == 2 and "no such run directory" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("eval", run_dir, "--exported", "torchscript")
    assert bad.returncode == 2 and "only onnx runs in the core" in bad.stderr


def test_default_relative_out_directory(tmp_path, torch_python):
    # `ocrbench run RECIPE` writes to ./runs: the worker, started inside the run directory, must still
    # find its job (the main job, `make captcha`, runs like this)
    result = run_cli("run", SMOKE, "--set", "train.epochs=1", "--set", "export.formats=[]", "--set", PLUMBING,
                     cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (metrics,) = (tmp_path / "runs").glob("*/metrics.json")
    assert json.loads(metrics.read_text())["status"] == "ok"


def test_checkpoint_loads_with_weights_only(smoke_run, torch_python):
    run_dir, _ = smoke_run
    code = ("import sys, torch; s = torch.load(sys.argv[1], weights_only=True); "
            "print(s['epoch'], len(s['model']))")
    out = subprocess.run([str(torch_python), "-c", code, str(latest_checkpoint(run_dir) / "last.pt")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "3"


def test_native_lmdb_is_the_dtrb_layout(smoke_run):
    run_dir, _ = smoke_run
    job = json.loads((run_dir / "job.json").read_text())
    from ocrbench.lmdb_layout import LmdbReader

    reader = LmdbReader(Path(job["dataset"]["native_dir"]) / "eval")
    assert len(reader) == 64
    labels = Path(job["dataset"]["dir"], "eval.txt").read_text(encoding="utf-8").splitlines()
    assert reader[0][1] == labels[0].split("\t")[1]


def test_reference_crnn_parameter_count_in_torch(torch_python):
    code = ("from backends.pytorch.model import CRNN; "
            "m = CRNN(11, [64, 128, 256, 256, 512, 512, 512], 256, 100); "
            "print(sum(p.numel() for p in m.parameters()))")
    out = subprocess.run([str(torch_python), "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    assert int(out.stdout) == CrnnParams().param_count(11) == 8_317_963


def test_a_completed_run_is_not_resumed(smoke_run):
    result = run_cli("run", "--resume", smoke_run[0])
    assert result.returncode == 2 and "already completed" in result.stderr
    assert json.loads((smoke_run[0] / "metrics.json").read_text())["status"] == "ok"


def test_missing_gpu_fails_before_anything_starts(tmp_path):
    result = run_cli("run", SMOKE, "--gpus", "1", "--out", tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2
    assert "--gpus 1: only 0 GPU(s) visible" in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, torch_python):
    out = tmp_path / "runs"
    command = [*OCRBENCH, "run", str(SMOKE), "--out", str(out), "--set", "train.epochs=40", "--set", PLUMBING]
    # a shell starting the suite in the background leaves SIGINT ignored, and Python then keeps it so:
    # give the CLI the default disposition, as in a terminal, so that Ctrl-C (SIGINT) is what is tested
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    checkpoint_seen = False
    while time.monotonic() < deadline and not checkpoint_seen:
        time.sleep(0.2)
        events = list(out.glob("*/events.jsonl"))
        checkpoint_seen = bool(events) and '"checkpoint"' in events[0].read_text()
    assert checkpoint_seen, "the run never wrote a checkpoint"
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    (run_dir,) = out.iterdir()
    interrupted = json.loads((run_dir / "metrics.json").read_text())
    assert interrupted["status"] == "failed" and interrupted["error"]["type"] == "Interrupted"
    done_before = json.loads((latest_checkpoint(run_dir) / "state.json").read_text())["epoch"]
    assert done_before < 40

    result = run_cli("run", "--resume", run_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["train"]["epochs"] == 40
    assert [p["epoch"] for p in metrics["train"]["curve"]] == list(range(1, 41))
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    resumed = [e for e in events if e["event"] == "resumed"]
    assert resumed and resumed[0]["epoch"] == done_before


def test_worker_failure_still_writes_a_failed_metrics_json(smoke_run, tmp_path):
    import shutil

    run_dir = tmp_path / smoke_run[0].name
    shutil.copytree(smoke_run[0], run_dir)
    (run_dir / "metrics.json").unlink()     # as if the core had been killed hard
    shutil.rmtree(run_dir / "checkpoints")  # and nothing to resume from: the worker itself must fail
    result = run_cli("run", "--resume", run_dir)
    assert result.returncode == 1
    assert "no checkpoint" in result.stdout and "Traceback" not in result.stdout + result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    validate_metrics(metrics)
    assert metrics["status"] == "failed" and metrics["error"]["stage"] == "worker"
    assert "no checkpoint" in metrics["error"]["message"] and metrics["eval"]["seq_acc"] is None
    assert "Traceback" in (run_dir / "native.log").read_text()  # the details stay in the native log


def test_partial_last_batch_policy_and_loss_reduction(tmp_path, torch_python):
    check_partial_batch_policy(SMOKE, tmp_path, "pytorch", reduction="char_mean")


def test_chinese_text_lines_keeping_the_aspect_ratio(tmp_path, torch_python):
    check_chinese_lines(tmp_path, "pytorch", ["torchscript", "onnx"], blank=0)


def test_stop_at_target_ends_training_at_the_first_evaluation_reaching_it(tmp_path, torch_python):
    """Learning, not plumbing: the smoke model, evaluated every 100 steps (3 per epoch), must pass 50 %
    within 6 epochs, and training must end at the first evaluation that does — inside an epoch or at its
    end — then checkpoint, final predictions and exports as after a last epoch. A data-parallel run of 2
    processes is refused before anything trains."""
    result = run_cli("run", SMOKE, "--out", tmp_path, "--set", "train.epochs=6", "--set",
                     "train.eval_every_steps=100", "--set", "train.target_acc=0.5",
                     "--set", "train.stop_at_target=true")
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = tmp_path.iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    curve = metrics["train"]["curve"]
    assert [p["step"] for p in curve] == list(range(100, curve[-1]["step"] + 1, 100))
    reached = [p for p in curve if p["eval_seq_acc"] >= 0.5]
    assert reached and reached[0] is curve[-1] and metrics["train"]["steps"] == curve[-1]["step"] < 6 * 300
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    (stop,) = [e for e in events if e["event"] == "target_reached"]
    assert (stop["epoch"], stop["step"]) == (curve[-1]["epoch"], curve[-1]["step"])
    assert stop["seq_acc"] == pytest.approx(curve[-1]["eval_seq_acc"])
    assert metrics["eval"]["seq_acc"] == pytest.approx(curve[-1]["eval_seq_acc"])
    assert metrics["train"]["time_to_target_s"] == pytest.approx(curve[-1]["eval_wall_s"])
    assert [x["format"] for x in metrics["exports"] if x["ok"]] == ["torchscript", "onnx"]
    refused = run_cli("run", SMOKE, "--out", tmp_path / "dp", "--nproc", "2",
                      "--set", "train.stop_at_target=true")
    assert refused.returncode == 2
    assert "train.stop_at_target stops one worker process" in refused.stdout + refused.stderr
    assert not (tmp_path / "dp").exists() or list((tmp_path / "dp").iterdir()) == []
