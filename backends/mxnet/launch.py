"""MXNet's native distributed launch: a kvstore over a context list on one machine, ps-lite's roles
(``DMLC_ROLE``) across machines (no mxnet import here: this module runs in the core environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ocrbench.distributed import Launch, Launcher, Process, Topology


@dataclass(frozen=True)
class MxnetKvstore(Launcher):
    """One machine: one process over its GPU or ``--nproc`` CPU contexts, kvstore ``device`` / ``local``.
    Several machines: ps-lite — a scheduler on node 0, a server and the worker on every node, kvstore
    ``dist_sync`` (``dist_device_sync`` on GPUs); the worker writes results by node (``OCRBENCH_RANK``)."""

    cpu_data_parallel: bool = True   # mx.cpu(i) contexts

    def plan(self, t: Topology, python: str, worker_args: list[str], run_dir: Path, base: dict) -> Launch:
        if t.nnodes == 1:
            kvstore = "device" if t.gpus else "local"
            return Launch([Process("worker", [python, *worker_args])],
                          {**base, "local_replicas": t.per_node, "kvstore": kvstore,
                           "engine": f"gluon.Trainer over {t.per_node} {t.device} contexts, "
                                     f"kvstore {kvstore}"})
        ps = {"DMLC_PS_ROOT_URI": t.master_addr, "DMLC_PS_ROOT_PORT": str(t.port()),
              "DMLC_NUM_SERVER": str(t.nnodes), "DMLC_NUM_WORKER": str(t.nnodes)}
        serve_ps = [python, "-c", "import mxnet"]   # mxnet runs its ps-lite role on import, then exits
        # ps-lite numbers workers in the order they register; the one on node 0 writes (OCRBENCH_RANK)
        processes = [Process("server", serve_ps, {**ps, "DMLC_ROLE": "server"}),
                     Process("worker", [python, *worker_args], {**ps, "DMLC_ROLE": "worker",
                                                                "OCRBENCH_RANK": str(t.node_rank)})]
        if t.node_rank == 0:
            processes.insert(0, Process("scheduler", serve_ps, {**ps, "DMLC_ROLE": "scheduler"}))
        kvstore = "dist_device_sync" if t.gpus else "dist_sync"
        return Launch(processes, {**base, "launcher": "ps-lite (DMLC_ROLE)", "local_replicas": t.per_node,
                                  "processes": t.nnodes, "kvstore": kvstore, "rank_env": "OCRBENCH_RANK",
                                  "engine": f"gluon.Trainer over {t.per_node} {t.device} contexts per node, "
                                            f"kvstore {kvstore}"})
