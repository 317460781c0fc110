"""Paddle's native launch as --print-command shows it: ``python -m paddle.distributed.launch`` (no
framework runs)."""

from __future__ import annotations

from launch_checks import assert_module_launch, commands, flat, print_command, two_gpus, two_nodes


def test_two_gpus_run_paddle_launch_on_both_devices():
    _header, argv = two_gpus("paddleocr")
    assert_module_launch(argv, ["-m", "paddle.distributed.launch", "--devices", "0,1"])


def test_two_nodes_give_paddle_launch_the_master():
    _out, nodes = two_nodes("paddleocr")
    for rank, argvs in nodes.items():
        assert (f"--nnodes 2 --master 10.1.2.3:23456 --rank {rank}" in flat(argvs)
                and "--devices 0,1" in flat(argvs))


def test_cpu_paddle_launch_drops_cuda_visible_devices():
    [argv] = commands(print_command("paddleocr", "--nproc", "2"))
    assert argv[:3] == ["env", "-u", "CUDA_VISIBLE_DEVICES"] and "--nproc_per_node" in argv
    assert not any(w.startswith("CUDA_VISIBLE_DEVICES=") for w in argv)
