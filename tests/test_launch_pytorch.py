"""PyTorch's native launch as --print-command shows it: torchrun (no framework runs)."""

from __future__ import annotations

from launch_checks import assert_module_launch, commands, flat, print_command, two_gpus, two_nodes


def test_two_gpus_run_torchrun():
    _header, argv = two_gpus("pytorch")
    assert_module_launch(argv, ["-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
                                "--node-rank=0", "--master-addr=127.0.0.1"])


def test_two_nodes_give_torchrun_the_rendezvous():
    _out, nodes = two_nodes("pytorch")
    for rank, argvs in nodes.items():
        assert f"--node-rank={rank} --master-addr=10.1.2.3 --master-port=23456" in flat(argvs)
        assert "--nnodes=2 --nproc-per-node=2" in flat(argvs)


def test_print_command_one_node_of_several():
    out = print_command("pytorch", "--nproc", "2", "--nnodes", "2", "--node-rank", "1",
                        "--master-addr", "10.0.0.9")
    assert "# node 1 of 2" in out and "# node 0" not in out
    [argv] = commands(out)
    assert "CUDA_VISIBLE_DEVICES=" in argv and "--nproc-per-node=2" in argv and "--node-rank=1" in argv
    assert any(w.startswith("OMP_NUM_THREADS=") for w in argv)   # the cores shared by the node's 2 workers
