"""Distributed launches without running a framework, what holds for every backend: options, batch/lr
arithmetic, the capability checks, the launch of {1 GPU, 2 GPUs, 2 nodes} as far as the core makes it,
and the Slurm script (run with stand-in ``srun`` / ``scontrol`` that print what each node would start).
Each backend's own launch commands are checked in test_launch_<backend>.py."""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from launch_checks import RECIPE, cli, commands, flat, print_command, two_gpus, two_nodes
from ocrbench import distributed
from ocrbench.backend import BackendSpec, get_backend, load_backends
from ocrbench.errors import OcrbenchError
from ocrbench.plan import check_topology

BACKENDS = list(load_backends())
DISTRIBUTED = [name for name, spec in load_backends().items() if spec.launcher is not None]


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
    options = {"gpus": 0, "nproc": None, "nnodes": 1, "node_rank": 0, "master_addr": None,
               "master_port": None, "hosts": None, **kwargs}
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
                                                    "global_batch": 256, "lr_scaling": "none",
                                                    "base_lr": 0.01, "lr": 0.01}
    glob = distributed.scaling(train(scope="global", rule="linear"), 4, "r")
    assert (glob["per_device_batch"], glob["global_batch"], glob["lr"]) == (16, 64, pytest.approx(0.04))
    assert distributed.scaling(train(rule="sqrt"), 4, "r")["lr"] == pytest.approx(0.02)
    assert distributed.scaling(train(rule="linear"), 1, "r")["lr"] == 0.01
    with pytest.raises(OcrbenchError, match=r"r: train.batch_size 64 with batch_scope global .* 3 devices"):
        distributed.scaling(train(scope="global"), 3, "r")


def test_capability_errors_before_anything_starts(monkeypatch):
    spec = get_backend("pytorch")
    single = dataclasses.replace(spec, launcher=None)
    with pytest.raises(OcrbenchError, match="trains on one device only"):
        check_topology(distributed.Topology(nproc=2), single, check_visible=False)
    no_cpu = dataclasses.replace(spec, launcher=dataclasses.replace(spec.launcher, cpu_data_parallel=False))
    with pytest.raises(OcrbenchError, match="cannot train data-parallel on CPUs"):
        check_topology(distributed.Topology(nproc=2), no_cpu, check_visible=False)
    check_topology(distributed.Topology(gpus=2), no_cpu, check_visible=False)   # GPUs are fine
    monkeypatch.setattr("ocrbench.hardware.gpus", lambda: [])
    with pytest.raises(OcrbenchError, match="--gpus 2: only 0 GPU"):
        check_topology(distributed.Topology(gpus=2), spec)


def test_a_launcher_must_be_a_launcher_object():
    """The launcher name string of earlier versions is refused when the spec is made (a plugin's spec
    module then fails to load with this message)."""
    spec = get_backend("pytorch")
    with pytest.raises(OcrbenchError, match=r"backend 'pytorch': BackendSpec.launcher is 'torchrun', not an "
                                            r"ocrbench.distributed.Launcher"):
        dataclasses.replace(spec, launcher="torchrun")
    one_device = BackendSpec(name="x", framework="X", distribution="x", worker="x.worker",
                             requirements=Path("requirements.txt"))
    assert one_device.launcher is None


# --------------------------------------------------------------------------- generated commands: 1 GPU
@pytest.mark.parametrize("backend", BACKENDS)
def test_one_gpu_is_a_plain_worker(backend):
    out = print_command(backend, "--gpus", "1")
    [argv] = commands(out)
    assert argv[0] == "PYTHONUNBUFFERED=1" and "CUDA_VISIBLE_DEVICES=" not in out
    python = next(a for a in argv if a.endswith("/python"))
    assert argv[argv.index(python) + 1].endswith("ocrbench/worker/bootstrap.py")
    assert argv[-1].endswith("/job.json") and get_backend(backend).worker in argv
    assert "-m" not in argv


# -------------------------------------------------------------------------- generated commands: 2 GPUs
@pytest.mark.parametrize("backend", DISTRIBUTED)
def test_two_gpus_scale_batch_and_lr(backend):
    """Every backend's 2-GPU launch is one command line (its own words: test_launch_<backend>.py)."""
    header, _argv = two_gpus(backend)
    assert "world size 2 (1 node(s) x 2 gpu)" in header
    assert "per-device batch 32, global batch 64, lr 0.002 (lr_scaling linear)" in header


# ------------------------------------------------------------------------- generated commands: 2 nodes
@pytest.mark.parametrize("backend", DISTRIBUTED)
def test_two_nodes_each_get_their_own_run_directory(backend):
    out, nodes = two_nodes(backend)
    assert "world size 4 (2 node(s) x 2 gpu)" in out.splitlines()[0]
    assert set(nodes) == {0, 1}
    for rank, argvs in nodes.items():
        assert f"{'-node1' if rank else ''}-<YYYYmmdd-HHMMSS>/job.json" in flat(argvs)


# ---------------------------------------------------------------------------------------------- Slurm
def fake_slurm(bin_dir: Path) -> None:
    """Stand-ins for Slurm's scontrol and srun: srun runs its command once per node (SLURM_NODEID 0..N-1)
    with --print-command added, so each node's `ocrbench run` prints what it would start."""
    scripts = {
        "scontrol": '#!/bin/bash\n[ "$1 $2" = "show hostnames" ] && printf "nodeA\\nnodeB\\n"\n',
        "srun": '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\n'
                'for node in $(seq 0 $((SLURM_NNODES - 1))); do '
                'SLURM_NODEID=$node "$@" --print-command || exit 1; done\n',
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_slurm_script_runs_the_native_launch_on_every_node(tmp_path):
    code, out = cli("run", str(RECIPE), "--backend", "pytorch", "--gpus", "2", "--nnodes", "2",
                    "--launcher", "slurm", "--out", str(tmp_path / "runs"), "--set", "train.epochs=1")
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
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_NNODES="2",
               SLURM_JOB_NODELIST="node[A-B]")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    launches = [line for line in result.stdout.splitlines() if "torch.distributed.run" in line]
    assert len(launches) == 2
    for rank, line in enumerate(launches):
        assert (f"--nnodes=2 --nproc-per-node=2 --node-rank={rank} "
                "--master-addr=nodeA --master-port=29500") in line


def test_slurm_single_node_cpu_and_submit_without_sbatch(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))   # no sbatch here
    code, out = cli("run", str(RECIPE), "--backend", "mxnet", "--nproc", "2", "--launcher", "slurm",
                    "--submit", "--out", str(tmp_path / "runs"))
    assert code == 2 and "sbatch is not on this machine's PATH" in out and "Traceback" not in out
    [script] = (tmp_path / "runs").glob("*.sbatch")
    text = script.read_text()
    assert "#SBATCH --nodes=1" in text and "--gpus-per-node" not in text and "--nproc 2" in text
    code, out = cli("run", str(RECIPE), "--submit")
    assert code == 2 and "--launcher slurm" in out
