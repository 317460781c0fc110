"""A third-party backend brings its own launcher, with no change to ocrbench: ``BACKEND`` below is
registered through the ``ocrbench.backends`` entry-point group, as a plugin package would register it.
It trains with the bundled PyTorch worker but launches it its own way — one plain ``python`` process per
CPU replica, each told its rank by the variables of PyTorch's ``env://`` rendezvous (which the worker's
``init_process_group`` reads) instead of torchrun. Only the launch is planned here; nothing runs."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from launch_checks import ROOT, cli, commands, print_command
from ocrbench.backend import ENTRY_POINT_GROUP, BackendSpec, get_backend
from ocrbench.distributed import Launch, Launcher, Process, Topology, plan_launch
from ocrbench.errors import OcrbenchError


@dataclass(frozen=True)
class EnvRanks(Launcher):
    """One worker process per CPU replica on this node; global rank = node rank x replicas per node +
    local rank. CPU only (gloo)."""

    cpu_data_parallel: bool = True

    def check(self, t: Topology) -> None:
        if t.gpus:
            raise OcrbenchError(f"--gpus {t.gpus}: the env-ranks launch starts CPU replicas only",
                                hint="use --nproc N")

    def plan(self, t: Topology, python: str, worker_args: list[str], run_dir: Path, base: dict) -> Launch:
        rendezvous = {"MASTER_ADDR": t.master_addr, "MASTER_PORT": str(t.port()),
                      "WORLD_SIZE": str(t.world_size)}
        first = t.node_rank * t.per_node
        processes = [Process(f"rank {first + local}", [python, *worker_args],
                             {**rendezvous, "RANK": str(first + local), "LOCAL_RANK": str(local)})
                     for local in range(t.per_node)]
        return Launch(processes, {**base, "launcher": "env ranks", "engine": "DistributedDataParallel (gloo)",
                                  "comm": "gloo", "rank_env": "RANK", "local_rank_env": "LOCAL_RANK",
                                  "processes": t.world_size})


BACKEND = BackendSpec(name="torch-env", framework="PyTorch", distribution="torch",
                      worker="backends.pytorch.worker",
                      requirements=ROOT / "backends" / "pytorch" / "requirements.txt",
                      export_formats=("torchscript", "onnx"), launcher=EnvRanks())


@pytest.fixture
def registered(monkeypatch):
    """BACKEND as an installed plugin: one more entry point in the group (this module is importable as
    ``test_launch_third_party`` while the tests run)."""
    entry = metadata.EntryPoint(name="torch-env", value=f"{__name__}:BACKEND", group=ENTRY_POINT_GROUP)
    installed = metadata.entry_points

    def entry_points(**selection):
        found = installed(**selection)
        return [*found, entry] if selection.get("group") == ENTRY_POINT_GROUP else found

    monkeypatch.setattr(metadata, "entry_points", entry_points)


def test_its_launcher_plans_the_launch():
    t = Topology(nproc=2, nnodes=2, node_rank=1, master_addr="10.0.0.9", master_port=23456)
    python, worker_args = Path("/env/bin/python"), ["worker.py", "job.json"]
    launch = plan_launch(BACKEND.launcher, t, python, worker_args, Path("/run"))
    assert [p.role for p in launch.processes] == ["rank 2", "rank 3"]
    assert [p.argv for p in launch.processes] == [["/env/bin/python", "worker.py", "job.json"]] * 2
    assert launch.processes[1].env == {"MASTER_ADDR": "10.0.0.9", "MASTER_PORT": "23456", "WORLD_SIZE": "4",
                                       "RANK": "3", "LOCAL_RANK": "1"}
    job = launch.job
    assert (job["launcher"], job["rank_env"], job["processes"], job["world_size"], job["node_rank"]) == \
           ("env ranks", "RANK", 4, 4, 1)


def test_the_cli_runs_its_launch(registered):
    assert get_backend("torch-env") is BACKEND
    out = print_command("torch-env", "--nproc", "2", "--master-port", "23456")
    assert out.splitlines()[0].startswith("# torch-env: world size 2 (1 node(s) x 2 cpu), env ranks: "
                                          "DistributedDataParallel (gloo)")
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    assert lines[0].endswith("  &") and not lines[1].endswith("  &")   # started together; the last ends it
    for rank, argv in enumerate(commands(out)):
        assert f"RANK={rank}" in argv and "WORLD_SIZE=2" in argv and "MASTER_PORT=23456" in argv
        assert "CUDA_VISIBLE_DEVICES=" in argv and "backends.pytorch.worker" in argv and "-m" not in argv


def test_one_device_stays_the_cores_plain_process(registered):
    [argv] = commands(print_command("torch-env", "--gpus", "1"))
    assert "backends.pytorch.worker" in argv and not any(w.startswith("RANK=") for w in argv)


def test_its_check_refuses_before_anything_starts(registered):
    code, out = cli("run", str(ROOT / "recipes" / "captcha.yml"), "--backend", "torch-env", "--gpus", "2",
                    "--print-command")
    assert code == 2 and "--gpus 2: the env-ranks launch starts CPU replicas only" in out
    assert "--nproc N" in out
