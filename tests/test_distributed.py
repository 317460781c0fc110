"""Distributed launches without running a framework: options, batch/lr arithmetic, the native launch
commands of every backend for {1 GPU, 2 GPUs, 2 nodes}, and the Slurm script (run with stand-in
``srun`` / ``scontrol`` that print what each node would start)."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ocrbench import distributed
from ocrbench.backend import get_backend
from ocrbench.cli import app
from ocrbench.errors import OcrbenchError
from ocrbench.runner import check_topology

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "captcha.yml"
BACKENDS = ["pytorch", "mxnet", "tensorflow", "mindspore", "paddleocr"]
runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def print_command(backend: str, *args: str) -> str:
    code, out = cli("run", str(RECIPE), "--backend", backend, "--print-command", *args)
    assert code == 0, out
    return out


def commands(output: str) -> list[list[str]]:
    """The command lines of --print-command output, split into words (comments dropped)."""
    return [shlex.split(line.removesuffix("  &")) for line in output.splitlines() if line and not line.startswith("#")]


# ------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("kwargs, message", [
    ({"gpus": 2, "nproc": 3}, "one worker per GPU"),
    ({"nnodes": 2, "node_rank": 2, "master_addr": "10.0.0.1"}, "--node-rank 2"),
    ({"nnodes": 2}, "give --master-addr"),
    ({"nnodes": 2, "master_addr": "10.0.0.1", "hosts": "a,b,c"}, "one address per node (2)"),
    ({"node_rank": 1}, "--nnodes"),
    ({"master_port": 70000}, "not a TCP port"),
])
def test_topology_refuses_inconsistent_options(kwargs, message):
    options = {"gpus": 0, "nproc": None, "nnodes": 1, "node_rank": 0, "master_addr": None, "master_port": None,
               "hosts": None, **kwargs}
    with pytest.raises(OcrbenchError, match=re.escape(message)):
        distributed.topology(**options)


def test_topology_counts_replicas():
    t = distributed.topology(0, 3, 2, 1, "10.0.0.1", None, None)
    assert (t.per_node, t.world_size, t.device, t.port()) == (3, 6, "cpu", 29500)
    g = distributed.topology(4, None, 1, 0, None, None, None)
    assert (g.per_node, g.world_size, g.device, g.distributed) == (4, 4, "gpu", True)
    assert not distributed.topology(1, None, 1, 0, None, None, None).distributed


def train(batch=64, scope="per_device", rule="none", lr=0.01) -> dict:
    return {"batch_size": batch, "batch_scope": scope, "lr_scaling": rule, "optimizer": {"lr": lr}}


def test_scaling_rules():
    assert distributed.scaling(train(), 4, "r") == {"batch_scope": "per_device", "per_device_batch": 64,
                                                    "global_batch": 256, "lr_scaling": "none", "base_lr": 0.01,
                                                    "lr": 0.01}
    glob = distributed.scaling(train(scope="global", rule="linear"), 4, "r")
    assert (glob["per_device_batch"], glob["global_batch"], glob["lr"]) == (16, 64, pytest.approx(0.04))
    assert distributed.scaling(train(rule="sqrt"), 4, "r")["lr"] == pytest.approx(0.02)
    assert distributed.scaling(train(rule="linear"), 1, "r")["lr"] == 0.01
    with pytest.raises(OcrbenchError, match=r"r: train.batch_size 64 with batch_scope global .* 3 devices"):
        distributed.scaling(train(scope="global"), 3, "r")


def test_capability_errors_before_anything_starts(monkeypatch):
    spec = get_backend("pytorch")
    single = dataclasses.replace(spec, launcher="")
    with pytest.raises(OcrbenchError, match="trains on one device only"):
        check_topology(distributed.Topology(nproc=2), single, check_visible=False)
    no_cpu = dataclasses.replace(spec, cpu_data_parallel=False)
    with pytest.raises(OcrbenchError, match="cannot train data-parallel on CPUs"):
        check_topology(distributed.Topology(nproc=2), no_cpu, check_visible=False)
    check_topology(distributed.Topology(gpus=2), no_cpu, check_visible=False)   # GPUs are fine
    monkeypatch.setattr("ocrbench.hardware.gpus", lambda: [])
    with pytest.raises(OcrbenchError, match="--gpus 2: only 0 GPU"):
        check_topology(distributed.Topology(gpus=2), spec)
    code, out = cli("run", str(RECIPE), "--backend", "tensorflow", "--nproc", "2", "--nnodes", "2",
                    "--master-addr", "127.0.0.1", "--print-command")
    assert code == 2 and "MultiWorkerMirroredStrategy uses one CPU device per machine" in out
    code, out = cli("run", str(RECIPE), "--backend", "tensorflow", "--gpus", "1", "--nnodes", "2",
                    "--master-addr", "10.0.0.1", "--print-command")
    assert code == 2 and "give --hosts" in out and "Traceback" not in out


# --------------------------------------------------------------------------- generated commands: 1 GPU
@pytest.mark.parametrize("backend", BACKENDS)
def test_one_gpu_is_a_plain_worker(backend):
    out = print_command(backend, "--gpus", "1")
    [argv] = commands(out)
    assert argv[0] == "PYTHONUNBUFFERED=1" and "CUDA_VISIBLE_DEVICES=" not in out
    python = next(a for a in argv if a.endswith("/python"))
    assert argv[argv.index(python) + 1].endswith("ocrbench/worker/bootstrap.py")
    assert argv[-1].endswith("/job.json") and f"backends.{backend}.worker" in argv
    assert "-m" not in argv


# -------------------------------------------------------------------------- generated commands: 2 GPUs
EXPECTED_TWO_GPUS = {
    "pytorch": ["-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2", "--node-rank=0",
                "--master-addr=127.0.0.1"],
    "paddleocr": ["-m", "paddle.distributed.launch", "--devices", "0,1"],
    "mindspore": ["-m", "mindspore.parallel.cluster.run", "--worker_num=2", "--local_worker_num=2",
                  "--master_addr=127.0.0.1", "--node_rank=0", "--join=True"],
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_gpus_use_the_native_launcher(backend):
    out = print_command(backend, "--gpus", "2", "--set", "train.batch_size=32", "--set", "train.lr_scaling=linear")
    header = out.splitlines()[0]
    assert "world size 2 (1 node(s) x 2 gpu)" in header
    assert "per-device batch 32, global batch 64, lr 0.002 (lr_scaling linear)" in header
    [argv] = commands(out)
    if backend in EXPECTED_TWO_GPUS:
        words = EXPECTED_TWO_GPUS[backend]
        module = argv.index("-m")
        assert argv[module - 1].endswith("/python") and argv[module + 1] == words[1]
        assert all(word in argv for word in words), argv
        assert argv[-1].endswith("/job.json")
    elif backend == "tensorflow":
        assert "tf.distribute.MirroredStrategy" in header and "-m" not in argv
    else:
        assert "gluon.Trainer over 2 gpu contexts, kvstore device" in header and "-m" not in argv
    if backend == "mindspore":   # msrun starts `python` from PATH: the env's comes first
        assert any(w.startswith("PATH=") and w.endswith("/bin:$PATH") for w in argv)


# ------------------------------------------------------------------------- generated commands: 2 nodes
def node_sections(out: str) -> dict[int, list[list[str]]]:
    sections: dict[int, list[str]] = {}
    node = None
    for line in out.splitlines():
        found = re.match(r"# node (\d+) of 2:", line)
        if found:
            node = int(found.group(1))
            sections[node] = []
        elif node is not None and not line.startswith("#"):
            sections[node].append(line)
    return {n: commands("\n".join(lines)) for n, lines in sections.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_nodes_commands(backend):
    out = print_command(backend, "--gpus", "2", "--nnodes", "2", "--master-addr", "10.1.2.3", "--master-port",
                        "23456", "--hosts", "10.1.2.3,10.1.2.4")
    assert "world size 4 (2 node(s) x 2 gpu)" in out.splitlines()[0]
    nodes = node_sections(out)
    assert set(nodes) == {0, 1}
    for rank, argvs in nodes.items():
        flat = " ".join(" ".join(a) for a in argvs)
        assert f"{'-node1' if rank else ''}-<YYYYmmdd-HHMMSS>/job.json" in flat
        if backend == "pytorch":
            assert f"--node-rank={rank} --master-addr=10.1.2.3 --master-port=23456" in flat
            assert "--nnodes=2 --nproc-per-node=2" in flat
        elif backend == "paddleocr":
            assert f"--nnodes 2 --master 10.1.2.3:23456 --rank {rank}" in flat and "--devices 0,1" in flat
        elif backend == "mindspore":
            assert f"--worker_num=4 --local_worker_num=2 --master_addr=10.1.2.3 --master_port=23456 " \
                   f"--node_rank={rank}" in flat
        elif backend == "tensorflow":
            [argv] = argvs
            config = next(w for w in argv if w.startswith("TF_CONFIG="))
            assert config == ('TF_CONFIG={"cluster":{"worker":["10.1.2.3:23456","10.1.2.4:23456"]},'
                              f'"task":{{"type":"worker","index":{rank}}}}}')
            assert f"OCRBENCH_RANK={rank}" in argv
        else:   # MXNet ps-lite: scheduler on node 0 only, a server and a worker on every node
            roles = [next(w for w in argv if w.startswith("DMLC_ROLE=")) for argv in argvs]
            assert roles == (["DMLC_ROLE=scheduler"] if rank == 0 else []) + ["DMLC_ROLE=server", "DMLC_ROLE=worker"]
            assert "DMLC_PS_ROOT_URI=10.1.2.3 DMLC_PS_ROOT_PORT=23456 DMLC_NUM_SERVER=2 DMLC_NUM_WORKER=2" in flat
            assert "kvstore dist_device_sync" in out


def test_print_command_one_node_of_several():
    out = print_command("pytorch", "--nproc", "2", "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.9")
    assert "# node 1 of 2" in out and "# node 0" not in out
    [argv] = commands(out)
    assert "CUDA_VISIBLE_DEVICES=" in argv and "--nproc-per-node=2" in argv and "--node-rank=1" in argv
    assert any(w.startswith("OMP_NUM_THREADS=") for w in argv)   # the cores shared by the node's 2 workers


def test_cpu_paddle_launch_drops_cuda_visible_devices():
    [argv] = commands(print_command("paddleocr", "--nproc", "2"))
    assert argv[:3] == ["env", "-u", "CUDA_VISIBLE_DEVICES"] and "--nproc_per_node" in argv
    assert not any(w.startswith("CUDA_VISIBLE_DEVICES=") for w in argv)


# ---------------------------------------------------------------------------------------------- Slurm
def fake_slurm(bin_dir: Path) -> None:
    """Stand-ins for Slurm's scontrol and srun: srun runs its command once per node (SLURM_NODEID 0..N-1)
    with --print-command added, so each node's `ocrbench run` prints what it would start."""
    scripts = {
        "scontrol": '#!/bin/bash\n[ "$1 $2" = "show hostnames" ] && printf "nodeA\\nnodeB\\n"\n',
        "srun": '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\n'
                'for node in $(seq 0 $((SLURM_NNODES - 1))); do SLURM_NODEID=$node "$@" --print-command || exit 1; done\n',
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_slurm_script_runs_the_native_launch_on_every_node(tmp_path):
    code, out = cli("run", str(RECIPE), "--backend", "pytorch", "--gpus", "2", "--nnodes", "2", "--launcher", "slurm",
                    "--out", str(tmp_path / "runs"), "--set", "train.epochs=1")
    assert code == 0, out
    [script] = (tmp_path / "runs").glob("captcha-pytorch-*.sbatch")
    text = script.read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --job-name=ocrbench-captcha-pytorch"):
        assert line in text
    assert text.count("-m torch.distributed.run") == 2   # the preview of each node's launch, as comments
    assert "--set train.epochs=1" in text and "--gpus 2" in text
    subprocess.run(["bash", "-n", str(script)], check=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_slurm(bin_dir)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_NNODES="2", SLURM_JOB_NODELIST="node[A-B]")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    launches = [line for line in result.stdout.splitlines() if "torch.distributed.run" in line]
    assert len(launches) == 2
    for rank, line in enumerate(launches):
        assert f"--nnodes=2 --nproc-per-node=2 --node-rank={rank} --master-addr=nodeA --master-port=29500" in line


def test_slurm_single_node_cpu_and_submit_without_sbatch(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))   # no sbatch here
    code, out = cli("run", str(RECIPE), "--backend", "mxnet", "--nproc", "2", "--launcher", "slurm", "--submit",
                    "--out", str(tmp_path / "runs"))
    assert code == 2 and "sbatch is not on this machine's PATH" in out and "Traceback" not in out
    [script] = (tmp_path / "runs").glob("*.sbatch")
    text = script.read_text()
    assert "#SBATCH --nodes=1" in text and "--gpus-per-node" not in text and "--nproc 2" in text
    code, out = cli("run", str(RECIPE), "--submit")
    assert code == 2 and "--launcher slurm" in out
