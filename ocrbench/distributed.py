"""Training on several devices or machines through each framework's own distributed engine.

The core never joins a collective itself: it works out *where* a run trains (a :class:`Topology` from
``--gpus``, ``--nproc``, ``--nnodes``, ``--node-rank``, ``--master-addr``, ``--master-port``,
``--hosts``), the batch and learning-rate arithmetic (:func:`scaling`), and supervises the processes of
this node's :class:`Launch`. *Which* processes a distributed run starts is the backend's: its spec's
:class:`Launcher` (``backends/<name>/launch.py``) plans the framework's native launch — ``torchrun`` for
PyTorch, ``python -m paddle.distributed.launch`` for Paddle, ``msrun`` for MindSpore, MXNet's ps-lite
roles (scheduler, server, worker) for a ``dist_sync`` kvstore, and one process with a device list for
MXNet's single-machine kvstores and TensorFlow's MirroredStrategy (``TF_CONFIG`` for
MultiWorkerMirroredStrategy). One device is always one plain process, planned here.

Conventions: ``world_size`` counts data-parallel replicas (devices) over all nodes; a replica is a GPU,
or on the CPU a worker process (PyTorch, Paddle, MindSpore) or a logical CPU device (TensorFlow, MXNet).
Rank 0 is the only rank that writes results; the worker learns its rank from ``rank_env``, a variable
the native launcher sets (or the launch plan itself, where one process per node joins: TF_CONFIG,
MXNet's ps-lite, whose own worker numbering follows registration order and is used only to pick each
worker's data shard).
"""

from __future__ import annotations

import abc
import math
import os
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path

from ocrbench.errors import OcrbenchError

DEFAULT_PORT = 29500
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Topology:
    """Where a run trains. ``gpus``: GPUs per node (0 = CPU); ``nproc``: CPU data-parallel workers per
    node (1 on GPUs, where there is one worker per GPU); ``hosts``: every node's ``host[:port]`` (needed by
    TensorFlow's MultiWorkerMirroredStrategy, whose TF_CONFIG lists them all)."""

    gpus: int = 0
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    hosts: tuple[str, ...] = ()

    @property
    def per_node(self) -> int:
        """Data-parallel replicas on each node."""
        return self.gpus if self.gpus else self.nproc

    @property
    def world_size(self) -> int:
        return self.per_node * self.nnodes

    @property
    def device(self) -> str:
        return "gpu" if self.gpus else "cpu"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def port(self) -> int:
        """The rendezvous port: as given, else 29500 across machines, else a free local port."""
        if self.master_port is not None:
            return self.master_port
        return DEFAULT_PORT if self.nnodes > 1 else free_port()


def topology(gpus: int, nproc: int | None, nnodes: int, node_rank: int, master_addr: str | None,
             master_port: int | None, hosts: str | None) -> Topology:
    """Validate the command-line options into a Topology (errors name the option and what to do)."""
    if nproc is not None and gpus > 0 and nproc != gpus:
        raise OcrbenchError(f"--nproc {nproc} with --gpus {gpus}: on GPUs there is one worker per GPU",
                            hint="use --gpus N alone for GPUs, or --nproc N alone for CPU worker processes")
    if nnodes < 1:
        raise OcrbenchError(f"--nnodes {nnodes}: must be at least 1")
    if not 0 <= node_rank < nnodes:
        raise OcrbenchError(f"--node-rank {node_rank}: must be between 0 and --nnodes - 1 ({nnodes - 1})")
    if master_port is not None and not 1 <= master_port <= 65535:
        raise OcrbenchError(f"--master-port {master_port}: not a TCP port (1-65535)")
    if nnodes > 1 and not master_addr:
        raise OcrbenchError(f"--nnodes {nnodes}: give --master-addr, node 0's address as every node reaches "
                            "it", hint="127.0.0.1 runs every node on this machine (a loopback test)")
    if nnodes == 1 and (node_rank or hosts):
        raise OcrbenchError("--node-rank and --hosts are for runs over several machines (--nnodes N)")
    host_list = tuple(h.strip() for h in hosts.split(",")) if hosts else ()
    if host_list and (len(host_list) != nnodes or not all(host_list)):
        raise OcrbenchError(f"--hosts {hosts!r}: give one address per node ({nnodes}), comma-separated")
    return Topology(gpus=gpus, nproc=1 if gpus else (nproc or 1), nnodes=nnodes, node_rank=node_rank,
                    master_addr=master_addr or "127.0.0.1", master_port=master_port, hosts=host_list)


def scaling(train: dict, world_size: int, origin: str) -> dict:
    """Batch and learning rate for ``world_size`` replicas, by the recipe's explicit rules.

    ``train.batch_scope``: ``per_device`` (batch_size on each device) or ``global`` (batch_size over all
    devices, split evenly). ``train.lr_scaling``: the optimizer's lr times 1 (none), world_size (linear)
    or sqrt(world_size) (sqrt)."""
    batch, scope, rule = train["batch_size"], train["batch_scope"], train["lr_scaling"]
    if scope == "global":
        if batch % world_size:
            raise OcrbenchError(f"{origin}: train.batch_size {batch} with batch_scope global does not split "
                                f"evenly over {world_size} devices",
                                hint=f"use a multiple of {world_size}, or batch_scope: per_device")
        per_device = batch // world_size
    else:
        per_device = batch
    factor = {"none": 1.0, "linear": float(world_size), "sqrt": math.sqrt(world_size)}[rule]
    base_lr = train["optimizer"]["lr"]
    return {"batch_scope": scope, "per_device_batch": per_device, "global_batch": per_device * world_size,
            "lr_scaling": rule, "base_lr": base_lr, "lr": base_lr * factor}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------- launches
@dataclass
class Process:
    """One process this node starts: its role, argv (no shell) and the variables added to its env."""

    role: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    path_prefix: str | None = None   # a directory put first on PATH (msrun runs `python` from PATH)
    unset: tuple[str, ...] = ()      # variables removed from its environment

    def shell(self) -> str:
        """The command as one shell line (for --print-command and the Slurm script), quoted."""
        unset = [f"-u {name}" for name in self.unset]
        assignments = [f"{k}={shlex.quote(v)}" for k, v in self.env.items() if k not in self.unset]
        if self.path_prefix:
            assignments.append(f'PATH={shlex.quote(self.path_prefix)}:"$PATH"')
        return " ".join([*(["env", *unset] if unset else []), *assignments, shlex.join(self.argv)])

    def environ(self, inherited: dict[str, str]) -> dict[str, str]:
        """The process's whole environment: ``inherited`` plus what the core sets, less ``unset``."""
        env = {**inherited, **self.env}
        if self.path_prefix:
            env["PATH"] = os.pathsep.join([self.path_prefix, inherited.get("PATH", "")])
        for name in self.unset:
            env.pop(name, None)
        return env


@dataclass
class Launch:
    """How this node starts its part of a run. ``job`` is what the worker needs to join (written into
    the job spec's ``distributed`` section); ``processes`` are started together, the last is the one whose
    exit ends the run."""

    processes: list[Process]
    job: dict


@dataclass(frozen=True)
class Launcher(abc.ABC):
    """A backend's native distributed launch: ``BackendSpec.launcher`` (None: the backend trains on one
    device only). Each bundled backend defines its own in ``backends/<name>/launch.py``, which must be
    importable in the core environment (no framework import); a third-party backend brings its own the
    same way, with no change to ocrbench.

    The core works out the :class:`Topology`, refuses what no launcher can do (no ``cpu_data_parallel``
    with ``--nproc``), calls :meth:`check` before anything starts, and starts one plain process itself
    for a world size of 1; :meth:`plan` is only asked for distributed runs (world size > 1)."""

    cpu_data_parallel: bool = False   # its collectives work on CPUs (--nproc N); GPUs are assumed to work

    def check(self, t: Topology) -> None:
        """Refuse a distributed topology this launch cannot start, with an OcrbenchError naming the
        option and what to do instead. The default accepts every topology."""

    @abc.abstractmethod
    def plan(self, t: Topology, python: str, worker_args: list[str], run_dir: Path, base: dict) -> Launch:
        """This node's processes for ``t`` (world size > 1, already checked). ``python``: the backend
        env's interpreter; ``worker_args``: the bootstrap script and its arguments, to run after it (or
        after the launcher's own module and options); ``run_dir``: this node's run directory (absolute),
        for the launcher's logs; ``base``: the job's ``distributed`` keys every run has (:func:`base_job`),
        which the returned ``Launch.job`` extends and overrides (``launcher``, ``engine``, ``comm``,
        ``rank_env``, ``local_rank_env``, ``local_replicas``, ``processes``, ...)."""


def base_job(t: Topology) -> dict:
    """The job's ``distributed`` section of a one-process run on this topology, which a launcher's plan
    starts from (docs/backends.md, "The job spec")."""
    return {"world_size": t.world_size, "nnodes": t.nnodes, "node_rank": t.node_rank,
            "nproc_per_node": t.per_node, "device": t.device, "launcher": "python", "rank_env": None,
            "local_rank_env": None, "local_replicas": 1, "processes": 1}


def plan_launch(launcher: Launcher | None, t: Topology, python: Path, worker_args: list[str],
                run_dir: Path) -> Launch:
    """The launch of ``worker_args`` (bootstrap script and its arguments) on this node: one plain process
    on one device, else ``launcher``'s native launch (``t`` must have passed plan.check_topology)."""
    base = base_job(t)
    if not t.distributed:
        return Launch([Process("worker", [str(python), *worker_args])], base)
    if launcher is None:   # (refused earlier, with the options to use: plan.check_topology)
        raise OcrbenchError(f"world size {t.world_size}: this backend has no distributed launcher",
                            hint="use --gpus 1 or --gpus 0")
    return launcher.plan(t, str(python), worker_args, run_dir, base)


def node_hosts(t: Topology, what: str) -> list[str]:
    """Every node's address, node 0 first: ``--hosts``, or on loopback ``--master-addr`` once per node
    (all "nodes" on this machine). Without either, an error saying that ``what`` needs ``--hosts``."""
    if t.hosts:
        return list(t.hosts)
    if t.master_addr not in LOOPBACK:
        raise OcrbenchError(f"{what} needs every node's address: give --hosts host0,host1,... "
                            f"({t.nnodes} of them, node 0 first)")
    return [t.master_addr] * t.nnodes
