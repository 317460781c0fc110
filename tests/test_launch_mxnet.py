"""MXNet's native launch as --print-command shows it: one process over a context list on one machine,
ps-lite's roles across machines (no framework runs)."""

from __future__ import annotations

from launch_checks import flat, two_gpus, two_nodes


def test_two_gpus_are_one_process_with_kvstore_device():
    header, argv = two_gpus("mxnet")
    assert "gluon.Trainer over 2 gpu contexts, kvstore device" in header and "-m" not in argv


def test_two_nodes_start_ps_lite_roles():
    """A scheduler on node 0 only, a server and a worker on every node."""
    out, nodes = two_nodes("mxnet")
    for rank, argvs in nodes.items():
        roles = [next(w for w in argv if w.startswith("DMLC_ROLE=")) for argv in argvs]
        assert roles == ((["DMLC_ROLE=scheduler"] if rank == 0 else [])
                         + ["DMLC_ROLE=server", "DMLC_ROLE=worker"])
        assert ("DMLC_PS_ROOT_URI=10.1.2.3 DMLC_PS_ROOT_PORT=23456 "
                "DMLC_NUM_SERVER=2 DMLC_NUM_WORKER=2") in flat(argvs)
        assert "kvstore dist_device_sync" in out
