"""Paddle's native distributed launch: ``python -m paddle.distributed.launch`` (no paddle import here:
this module runs in the core environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ocrbench.distributed import Launch, Launcher, Process, Topology


@dataclass(frozen=True)
class PaddleLaunch(Launcher):
    """One ``paddle.distributed.launch`` per node, which starts one rank per GPU (NCCL) or per ``--nproc``
    CPU worker (gloo); each rank reads ``PADDLE_TRAINER_ID`` / ``PADDLE_LOCAL_RANK`` and joins
    ``paddle.DataParallel``. Its own logs (``workerlog.K``) go to ``<run dir>/paddle-launch``."""

    cpu_data_parallel: bool = True   # gloo

    def plan(self, t: Topology, python: str, worker_args: list[str], run_dir: Path, base: dict) -> Launch:
        argv = [python, "-m", "paddle.distributed.launch", "--log_dir", str(run_dir / "paddle-launch")]
        if t.gpus:
            argv += ["--devices", ",".join(str(i) for i in range(t.gpus))]
        else:
            argv += ["--nproc_per_node", str(t.nproc)]
        if t.nnodes > 1:   # (on one machine paddle picks its own ports; --nnodes 1 there breaks CPU launches)
            argv += ["--nnodes", str(t.nnodes), "--master", f"{t.master_addr}:{t.port()}", "--rank",
                     str(t.node_rank)]
        comm = "nccl" if t.gpus else "gloo"
        # the launcher takes any CUDA_VISIBLE_DEVICES (even empty) to mean GPUs: a CPU launch has none
        unset = () if t.gpus else ("CUDA_VISIBLE_DEVICES",)
        return Launch([Process("paddle.distributed.launch", argv + worker_args, unset=unset)],
                      {**base, "launcher": "paddle.distributed.launch", "comm": comm,
                       "engine": f"paddle.DataParallel ({comm}) + DistributedBatchSampler",
                       "rank_env": "PADDLE_TRAINER_ID", "local_rank_env": "PADDLE_LOCAL_RANK",
                       "processes": t.world_size})
