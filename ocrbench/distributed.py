"""Training on several devices or machines through each framework's own distributed engine.

The core never joins a collective itself: it works out *where* a run trains (a :class:`Topology` from
``--gpus``, ``--nproc``, ``--nnodes``, ``--node-rank``, ``--master-addr``, ``--master-port``,
``--hosts``), the batch and learning-rate arithmetic (:func:`scaling`), and the **native launch** of the
backend's worker on this node (:class:`Launch`): ``torchrun`` for PyTorch, ``python -m
paddle.distributed.launch`` for Paddle, ``msrun`` for MindSpore, MXNet's ps-lite roles (scheduler,
server, worker) for a ``dist_sync`` kvstore, and one process with a device list for MXNet's
single-machine kvstores and TensorFlow's MirroredStrategy (``TF_CONFIG`` for MultiWorkerMirroredStrategy).

Conventions: ``world_size`` counts data-parallel replicas (devices) over all nodes; a replica is a GPU,
or on the CPU a worker process (PyTorch, Paddle, MindSpore) or a logical CPU device (TensorFlow, MXNet).
Rank 0 is the only rank that writes results; the worker learns its rank from ``rank_env``, a variable
the launcher sets (or the core, where one process per node joins: TF_CONFIG, MXNet's ps-lite, whose own
worker numbering follows registration order and is used only to pick each worker's data shard).
"""

from __future__ import annotations

import json
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


def plan_launch(launcher: str, t: Topology, python: Path, worker_args: list[str], run_dir: Path) -> Launch:
    """The native launch of ``worker_args`` (bootstrap script and its arguments) on this node."""
    base = {"world_size": t.world_size, "nnodes": t.nnodes, "node_rank": t.node_rank,
            "nproc_per_node": t.per_node, "device": t.device, "launcher": "python", "rank_env": None,
            "local_rank_env": None, "local_replicas": 1, "processes": 1}
    if not t.distributed:
        return Launch([Process("worker", [str(python), *worker_args])], base)
    try:
        build = LAUNCHERS[launcher]
    except KeyError:   # (a backend without one is refused earlier: runner.check_topology)
        raise OcrbenchError(f"the backend's spec names an unknown launcher {launcher!r} "
                            f"(known: {', '.join(LAUNCHERS)})", hint="use --gpus 1 or --gpus 0") from None
    return build(t, str(python), worker_args, run_dir, base)


def _torchrun(t: Topology, python: str, args: list[str], run_dir: Path, base: dict) -> Launch:
    argv = [python, "-m", "torch.distributed.run", f"--nnodes={t.nnodes}", f"--nproc-per-node={t.per_node}",
            f"--node-rank={t.node_rank}", f"--master-addr={t.master_addr}", f"--master-port={t.port()}", *args]
    comm = "nccl" if t.gpus else "gloo"
    return Launch([Process("torchrun", argv)],
                  {**base, "launcher": "torchrun", "engine": f"DistributedDataParallel ({comm}) + "
                   "DistributedSampler", "comm": comm, "rank_env": "RANK", "local_rank_env": "LOCAL_RANK",
                   "processes": t.world_size})


def _paddle_launch(t: Topology, python: str, args: list[str], run_dir: Path, base: dict) -> Launch:
    argv = [python, "-m", "paddle.distributed.launch", "--log_dir", str(run_dir / "paddle-launch")]
    if t.gpus:
        argv += ["--devices", ",".join(str(i) for i in range(t.gpus))]
    else:
        argv += ["--nproc_per_node", str(t.nproc)]
    if t.nnodes > 1:   # (on one machine paddle picks its own ports; --nnodes 1 there breaks CPU launches)
        argv += ["--nnodes", str(t.nnodes), "--master", f"{t.master_addr}:{t.port()}", "--rank", str(t.node_rank)]
    comm = "nccl" if t.gpus else "gloo"
    # the launcher takes any CUDA_VISIBLE_DEVICES (even empty) to mean GPUs: a CPU launch has none
    unset = () if t.gpus else ("CUDA_VISIBLE_DEVICES",)
    return Launch([Process("paddle.distributed.launch", argv + args, unset=unset)],
                  {**base, "launcher": "paddle.distributed.launch", "comm": comm,
                   "engine": f"paddle.DataParallel ({comm}) + DistributedBatchSampler",
                   "rank_env": "PADDLE_TRAINER_ID", "local_rank_env": "PADDLE_LOCAL_RANK",
                   "processes": t.world_size})


def _msrun(t: Topology, python: str, args: list[str], run_dir: Path, base: dict) -> Launch:
    argv = [python, "-m", "mindspore.parallel.cluster.run", f"--worker_num={t.world_size}",
            f"--local_worker_num={t.per_node}", f"--master_addr={t.master_addr}", f"--master_port={t.port()}",
            f"--node_rank={t.node_rank}", f"--log_dir={run_dir / 'msrun-log'}", "--join=True",
            "--cluster_time_out=600", *args]
    comm = "nccl" if t.gpus else "mccl"
    # msrun starts each rank (and its scheduler) as `python SCRIPT ...`: the env's python must come first
    return Launch([Process("msrun", argv, path_prefix=str(Path(python).parent))],
                  {**base, "launcher": "msrun", "comm": comm,
                   "engine": f"DATA_PARALLEL + DistributedGradReducer ({comm})",
                   "rank_env": "RANK_ID", "local_rank_env": "DEVICE_ID", "processes": t.world_size})


def _tf_strategy(t: Topology, python: str, args: list[str], run_dir: Path, base: dict) -> Launch:
    job = {**base, "local_replicas": t.per_node, "processes": t.nnodes}
    if t.nnodes > 1 and t.device == "cpu" and t.nproc > 1:
        raise OcrbenchError(f"--nproc {t.nproc} with --nnodes {t.nnodes}: TensorFlow's MultiWorkerMirroredStrategy "
                            "uses one CPU device per machine", hint="use --nproc 1 (one replica per machine)")
    if t.nnodes == 1:
        return Launch([Process("worker", [python, *args])],
                      {**job, "launcher": "python", "strategy": "MirroredStrategy",
                       "engine": "tf.distribute.MirroredStrategy"})
    workers = list(t.hosts) or _loopback_hosts(t, "TensorFlow's MultiWorkerMirroredStrategy")
    port = t.port()
    workers = [h if ":" in h else f"{h}:{port + i if t.master_addr in LOOPBACK else port}"
               for i, h in enumerate(workers)]
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": t.node_rank}}
    env = {"TF_CONFIG": json.dumps(tf_config, separators=(",", ":")), "OCRBENCH_RANK": str(t.node_rank)}
    return Launch([Process("worker", [python, *args], env)],
                  {**job, "launcher": "TF_CONFIG", "strategy": "MultiWorkerMirroredStrategy",
                   "engine": "tf.distribute.MultiWorkerMirroredStrategy", "rank_env": "OCRBENCH_RANK"})


def _loopback_hosts(t: Topology, what: str) -> list[str]:
    if t.master_addr not in LOOPBACK:
        raise OcrbenchError(f"{what} needs every node's address: give --hosts host0,host1,... "
                            f"({t.nnodes} of them, node 0 first)")
    return [t.master_addr] * t.nnodes


def _mxnet_kvstore(t: Topology, python: str, args: list[str], run_dir: Path, base: dict) -> Launch:
    if t.nnodes == 1:
        kvstore = "device" if t.gpus else "local"
        return Launch([Process("worker", [python, *args])],
                      {**base, "local_replicas": t.per_node, "kvstore": kvstore,
                       "engine": f"gluon.Trainer over {t.per_node} {t.device} contexts, kvstore {kvstore}"})
    ps = {"DMLC_PS_ROOT_URI": t.master_addr, "DMLC_PS_ROOT_PORT": str(t.port()),
          "DMLC_NUM_SERVER": str(t.nnodes), "DMLC_NUM_WORKER": str(t.nnodes)}
    serve_ps = [python, "-c", "import mxnet"]   # mxnet runs its ps-lite role on import, then exits
    # ps-lite numbers workers in the order they register; the one on node 0 writes (OCRBENCH_RANK)
    processes = [Process("server", serve_ps, {**ps, "DMLC_ROLE": "server"}),
                 Process("worker", [python, *args], {**ps, "DMLC_ROLE": "worker",
                                                     "OCRBENCH_RANK": str(t.node_rank)})]
    if t.node_rank == 0:
        processes.insert(0, Process("scheduler", serve_ps, {**ps, "DMLC_ROLE": "scheduler"}))
    kvstore = "dist_device_sync" if t.gpus else "dist_sync"
    return Launch(processes, {**base, "launcher": "ps-lite (DMLC_ROLE)", "local_replicas": t.per_node,
                              "processes": t.nnodes, "kvstore": kvstore, "rank_env": "OCRBENCH_RANK",
                              "engine": f"gluon.Trainer over {t.per_node} {t.device} contexts per node, "
                                        f"kvstore {kvstore}"})


LAUNCHERS = {"torchrun": _torchrun, "paddle": _paddle_launch, "msrun": _msrun, "tf_strategy": _tf_strategy,
             "mxnet_kvstore": _mxnet_kvstore}
