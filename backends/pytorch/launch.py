"""PyTorch's native distributed launch: torchrun (``python -m torch.distributed.run``), static rendezvous
on node 0 (no torch import here: this module runs in the core environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ocrbench.distributed import Launch, Launcher, Process, Topology


@dataclass(frozen=True)
class Torchrun(Launcher):
    """One torchrun per node, which starts one rank per GPU (NCCL) or per ``--nproc`` CPU worker (gloo);
    each rank reads ``RANK`` / ``LOCAL_RANK`` and joins DistributedDataParallel."""

    cpu_data_parallel: bool = True   # gloo

    def plan(self, t: Topology, python: str, worker_args: list[str], run_dir: Path, base: dict) -> Launch:
        argv = [python, "-m", "torch.distributed.run", f"--nnodes={t.nnodes}",
                f"--nproc-per-node={t.per_node}", f"--node-rank={t.node_rank}",
                f"--master-addr={t.master_addr}", f"--master-port={t.port()}", *worker_args]
        comm = "nccl" if t.gpus else "gloo"
        return Launch([Process("torchrun", argv)],
                      {**base, "launcher": "torchrun", "engine": f"DistributedDataParallel ({comm}) + "
                       "DistributedSampler", "comm": comm, "rank_env": "RANK", "local_rank_env": "LOCAL_RANK",
                       "processes": t.world_size})
