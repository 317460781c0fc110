"""MindSpore's native distributed launch: msrun (``python -m mindspore.parallel.cluster.run``; no
mindspore import here: this module runs in the core environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ocrbench.distributed import Launch, Launcher, Process, Topology


@dataclass(frozen=True)
class Msrun(Launcher):
    """One msrun per node, which starts one rank per GPU (NCCL) or per ``--nproc`` CPU worker (mccl),
    plus its scheduler on node 0; each rank reads ``RANK_ID`` / ``DEVICE_ID``. Its per-rank logs go to
    ``<run dir>/msrun-log``; ``--join`` also copies them to its own output (``native.log``)."""

    cpu_data_parallel: bool = True   # mccl

    def plan(self, t: Topology, python: str, worker_args: list[str], run_dir: Path, base: dict) -> Launch:
        argv = [python, "-m", "mindspore.parallel.cluster.run", f"--worker_num={t.world_size}",
                f"--local_worker_num={t.per_node}", f"--master_addr={t.master_addr}",
                f"--master_port={t.port()}", f"--node_rank={t.node_rank}",
                f"--log_dir={run_dir / 'msrun-log'}", "--join=True", "--cluster_time_out=600", *worker_args]
        comm = "nccl" if t.gpus else "mccl"
        # msrun starts each rank (and its scheduler) as `python SCRIPT ...`: the env's python must come first
        return Launch([Process("msrun", argv, path_prefix=str(Path(python).parent))],
                      {**base, "launcher": "msrun", "comm": comm,
                       "engine": f"DATA_PARALLEL + DistributedGradReducer ({comm})",
                       "rank_env": "RANK_ID", "local_rank_env": "DEVICE_ID", "processes": t.world_size})
