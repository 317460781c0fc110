"""TensorFlow's native distributed launch: ``tf.distribute`` strategies, started as plain processes
(no tensorflow import here: this module runs in the core environment)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ocrbench.distributed import LOOPBACK, Launch, Launcher, Process, Topology, node_hosts
from ocrbench.errors import OcrbenchError

MULTI_WORKER = "TensorFlow's MultiWorkerMirroredStrategy"


@dataclass(frozen=True)
class TfStrategy(Launcher):
    """One machine: one process, MirroredStrategy over its GPUs or ``--nproc`` logical CPU devices.
    Several machines: one process per machine, MultiWorkerMirroredStrategy from the ``TF_CONFIG`` set here
    (every node's ``host:port``; on loopback node K listens on the rendezvous port + K), and the node's
    rank in ``OCRBENCH_RANK``."""

    cpu_data_parallel: bool = True   # logical CPU devices (set_logical_device_configuration)

    def check(self, t: Topology) -> None:
        """MultiWorkerMirroredStrategy drives one CPU device per machine and needs every node's address."""
        if t.nnodes == 1:
            return
        if t.device == "cpu" and t.nproc > 1:
            raise OcrbenchError(f"--nproc {t.nproc} with --nnodes {t.nnodes}: {MULTI_WORKER} uses one CPU "
                                "device per machine", hint="use --nproc 1 (one replica per machine)")
        node_hosts(t, MULTI_WORKER)   # an error without --hosts, off loopback

    def plan(self, t: Topology, python: str, worker_args: list[str], run_dir: Path, base: dict) -> Launch:
        job = {**base, "local_replicas": t.per_node, "processes": t.nnodes}
        if t.nnodes == 1:
            return Launch([Process("worker", [python, *worker_args])],
                          {**job, "launcher": "python", "strategy": "MirroredStrategy",
                           "engine": "tf.distribute.MirroredStrategy"})
        port = t.port()
        workers = [h if ":" in h else f"{h}:{port + i if t.master_addr in LOOPBACK else port}"
                   for i, h in enumerate(node_hosts(t, MULTI_WORKER))]
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": t.node_rank}}
        env = {"TF_CONFIG": json.dumps(tf_config, separators=(",", ":")), "OCRBENCH_RANK": str(t.node_rank)}
        return Launch([Process("worker", [python, *worker_args], env)],
                      {**job, "launcher": "TF_CONFIG", "strategy": "MultiWorkerMirroredStrategy",
                       "engine": "tf.distribute.MultiWorkerMirroredStrategy", "rank_env": "OCRBENCH_RANK"})
