"""Data-parallel training for real on this CPU machine, every backend through its native engine:

* ``--nproc 2``: two replicas on one machine — torchrun + DDP/gloo, paddle.distributed.launch +
  DataParallel/gloo, msrun + DistributedGradReducer/mccl (two processes each), TensorFlow's
  MirroredStrategy over two logical CPUs and MXNet's kvstore over two CPU contexts (one process);
* ``--nnodes 2`` on loopback: two ``ocrbench run`` commands, node ranks 0 and 1, as two machines would.

Each run must train, its replicas end with identical weights (every rank prints a digest of its
weights to its log), only rank 0 writes results, and metrics.json records the world size and scaling.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import OCRBENCH, ROOT, run_cli
from e2e_checks import PLUMBING
from ocrbench import distributed, envs
from ocrbench.backend import get_backend

pytestmark = pytest.mark.e2e
BACKENDS = ["pytorch", "mxnet", "tensorflow", "mindspore", "paddleocr"]
DIGEST = re.compile(r"ocrbench: rank (\d+) replica (\d+) weights sha256 ([0-9a-f]{64})")
SMOKE_TRAIN, EPOCHS = 256, 2          # the training set (PLUMBING) and epochs of these runs
TWO_EPOCHS = ["--set", f"train.epochs={EPOCHS}"]   # the smoke recipes train 2 to 6 epochs
# exports are tested elsewhere; this is about training
FAST = ["--set", "export.formats=[]", "--set", PLUMBING]
LAUNCHER_LOGS = {"paddle-launch", "msrun-log"}   # per-rank logs of paddle's launch and msrun


@pytest.fixture(params=BACKENDS)
def backend(request):
    envs.resolve_python(get_backend(request.param))   # a clear error if the env is missing
    return request.param


def smoke_recipe(name: str) -> Path:
    return ROOT / "backends" / name / "smoke.yml"


def run_logs(run_dir: Path) -> list[Path]:
    """The run's logs: the core's native.log, and the launcher's own and per-rank logs (paddle's launch
    writes ``default.*.log`` and ``workerlog.K``, msrun ``*.log``)."""
    launcher = [log for folder in sorted(LAUNCHER_LOGS) for pattern in ("*.log", "workerlog.*")
                for log in sorted((run_dir / folder).glob(pattern))]
    return [run_dir / "native.log", *launcher]


def weight_digests(*run_dirs: Path) -> dict[tuple[int, int], str]:
    """(rank, replica) -> weights digest, from every log of the runs."""
    found: dict[tuple[int, int], str] = {}
    for run_dir in run_dirs:
        for log in run_logs(run_dir):
            for rank, replica, digest in DIGEST.findall(log.read_text(errors="replace")):
                found[int(rank), int(replica)] = digest
    return found


def check_data_parallel(run_dir: Path, followers: tuple[Path, ...] = ()) -> dict:
    """Trained over 2 replicas that agree; rank 0 alone wrote; the world size and scaling recorded."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok", metrics["error"]
    dist = metrics["distributed"]
    assert metrics["world_size"] == dist["world_size"] == 2
    assert dist["global_batch"] == 2 * dist["per_device_batch"] == 64 and dist["lr"] == dist["base_lr"]
    assert metrics["train"]["samples"] == EPOCHS * SMOKE_TRAIN            # the replicas' samples together
    assert metrics["train"]["steps"] == EPOCHS * SMOKE_TRAIN // 64        # global batches
    assert all(point["loss"] is not None for point in metrics["train"]["curve"])
    digests = weight_digests(run_dir, *followers)
    assert len(digests) == 2 and len(set(digests.values())) == 1, digests   # the replicas agree
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("start") == 1                  # one writer
    train_end = next(e for e in events if e["event"] == "train_end")
    assert set(train_end["weights_sha256"]) == set(digests.values())
    assert (run_dir / "predictions" / "eval.tsv").is_file() and any((run_dir / "checkpoints").iterdir())
    for follower in followers:   # another node's run directory: what its core wrote, its launcher's logs
        written = {path.name for path in follower.iterdir()} - LAUNCHER_LOGS
        assert written == {"job.json", "recipe.yaml", "environment.json", "native.log",
                           "events.jsonl"}, written
        assert (follower / "events.jsonl").read_text() == ""
    return metrics


def test_two_cpu_replicas_on_one_machine(backend, tmp_path):
    result = run_cli("run", smoke_recipe(backend), "--nproc", "2", "--out", tmp_path, *FAST, *TWO_EPOCHS,
                     timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    metrics = check_data_parallel(run_dir)
    expected = {"pytorch": ("torchrun", "gloo"), "paddleocr": ("paddle.distributed.launch", "gloo"),
                "mindspore": ("msrun", "mccl"), "tensorflow": ("python", None), "mxnet": ("python", None)}
    launcher, comm = expected[backend]
    assert metrics["distributed"]["launcher"] == launcher and metrics["distributed"].get("comm") == comm
    if backend == "tensorflow":
        assert metrics["distributed"]["strategy"] == "MirroredStrategy"
        assert metrics["distributed"]["replicas_in_sync"] == 2
    if backend == "mxnet":
        assert metrics["distributed"]["kvstore"] == "local" and metrics["distributed"]["contexts"] == 2


# Not MindSpore: msrun starts a scheduler on every node whose --master_addr is one of its own addresses, so
# two msrun "nodes" on one machine both start one and race for the port (node 1's msrun then fails, about
# one run in three here); across real machines only node 0 starts it. Its 2-node launch commands are
# checked in test_distributed.py.
LOOPBACK_BACKENDS = ["pytorch", "mxnet", "tensorflow", "paddleocr"]


@pytest.mark.parametrize("backend", LOOPBACK_BACKENDS)
def test_two_nodes_on_loopback(backend, tmp_path):
    envs.resolve_python(get_backend(backend))
    port = str(distributed.free_port())
    common = ["run", str(smoke_recipe(backend)), "--nnodes", "2", "--master-addr", "127.0.0.1",
              "--master-port", port, "--out", str(tmp_path), *FAST, *TWO_EPOCHS]
    node1 = subprocess.Popen([*OCRBENCH, *common, "--node-rank", "1"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        result = run_cli(*common, "--node-rank", "0", timeout=600)
        node1_out, _ = node1.communicate(timeout=120)
    finally:
        node1.kill()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert node1.returncode == 0 and "node 1: done" in node1_out, node1_out[-3000:]
    (run_dir,) = [d for d in tmp_path.iterdir() if "-node1-" not in d.name]
    (follower,) = tmp_path.glob(f"smoke-{backend}-node1-*")
    metrics = check_data_parallel(run_dir, (follower,))
    assert metrics["distributed"]["nnodes"] == 2 and metrics["distributed"]["nproc_per_node"] == 1


def running(marker: str) -> list[str]:
    """Processes whose command line mentions ``marker`` (a run directory)."""
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    return [pid for pid in found if pid.strip()]


def default_sigint() -> None:
    """(preexec_fn) Ctrl-C's default action in the child, even when pytest runs in the background."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_core(args: list[str], out: Path, **popen) -> subprocess.Popen:
    """``ocrbench run ARGS --out OUT`` in the background, its output kept in OUT/core.log."""
    with (out / "core.log").open("wb") as log:
        return subprocess.Popen([*OCRBENCH, "run", *args, "--out", str(out)], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, **popen)


def what_happened(out: Path) -> str:
    """The tails of the core's output and of every log under its run directory, for a failure message."""
    logs = [out / "core.log", *(log for run_dir in sorted(out.iterdir()) if run_dir.is_dir()
                                for log in run_logs(run_dir))]
    return "\n".join(f"--- {log}\n{log.read_text(errors='replace')[-2000:]}" for log in logs if log.is_file())


def wait_for_checkpoint(core: subprocess.Popen, out: Path, timeout_s: float = 120) -> Path:
    """The events.jsonl of the core's run under ``out`` once it records a checkpoint; fails at once, with
    the logs, if the core exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for events in out.glob("*/events.jsonl"):
            if '"checkpoint"' in events.read_text():
                return events
        if core.poll() is not None:
            raise AssertionError(f"the run ended (exit {core.returncode}) before a checkpoint\n"
                                 f"{what_happened(out)}")
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint under {out} within {timeout_s} s\n{what_happened(out)}")


def test_ctrl_c_stops_every_rank_and_resume_keeps_the_devices(tmp_path):
    """Ctrl-C reaches torchrun's ranks through the launcher; --resume continues on 2 replicas."""
    envs.resolve_python(get_backend("pytorch"))
    core = start_core([str(smoke_recipe("pytorch")), "--nproc", "2", "--set", "train.epochs=100", *FAST],
                      tmp_path, preexec_fn=default_sigint)
    try:
        events = wait_for_checkpoint(core, tmp_path)
        core.send_signal(signal.SIGINT)
        assert core.wait(timeout=60) == 1
    finally:
        core.kill()
    run_dir = events.parent
    assert running(str(run_dir)) == []                   # no rank left behind
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["error"]["type"] == "Interrupted"
    result = run_cli("run", "--resume", run_dir, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["train"]["epochs"] == 100
    assert metrics["distributed"]["world_size"] == 2 and metrics["distributed"]["launcher"] == "torchrun"
    assert '"resumed"' in (run_dir / "events.jsonl").read_text()
    digests = weight_digests(run_dir)
    assert {rank for rank, _ in digests} == {0, 1} and len(set(digests.values())) == 1


def test_a_killed_core_takes_its_ranks_down(tmp_path):
    """SIGKILL gives the core no chance to stop torchrun: its ranks notice the core is gone and stop."""
    envs.resolve_python(get_backend("pytorch"))
    core = start_core([str(smoke_recipe("pytorch")), "--nproc", "2", "--set", "train.epochs=200", *FAST],
                      tmp_path)
    try:
        run_dir = wait_for_checkpoint(core, tmp_path).parent
        core.kill()
        core.wait()
        deadline = time.monotonic() + 60
        while running(str(run_dir)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert running(str(run_dir)) == []
    finally:
        core.kill()


@pytest.mark.parametrize("name", ["mindspore", "paddleocr"])
def test_ctrl_c_leaves_nothing_of_other_launchers(name, tmp_path):
    """Ctrl-C during msrun / paddle's launch: every rank stops, and nothing the launcher started stays
    (msrun's `tail -f` of its worker logs outlived it before the core killed the launch's process group)."""
    envs.resolve_python(get_backend(name))
    core = start_core([str(smoke_recipe(name)), "--nproc", "2", "--set", "train.epochs=200", *FAST], tmp_path,
                      preexec_fn=default_sigint)
    try:
        run_dir = wait_for_checkpoint(core, tmp_path).parent
        core.send_signal(signal.SIGINT)
        assert core.wait(timeout=90) == 1
    finally:
        core.kill()
    assert running(str(run_dir)) == []
    assert json.loads((run_dir / "metrics.json").read_text())["error"]["type"] == "Interrupted"
