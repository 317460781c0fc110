"""MindSpore's native launch as --print-command shows it: msrun (no framework runs)."""

from __future__ import annotations

from launch_checks import assert_module_launch, flat, two_gpus, two_nodes


def test_two_gpus_run_msrun_with_the_env_python_first_on_path():
    _header, argv = two_gpus("mindspore")
    assert_module_launch(argv, ["-m", "mindspore.parallel.cluster.run", "--worker_num=2",
                                "--local_worker_num=2", "--master_addr=127.0.0.1", "--node_rank=0",
                                "--join=True"])
    # msrun starts `python` from PATH: the env's comes first
    assert any(w.startswith("PATH=") and w.endswith("/bin:$PATH") for w in argv)


def test_two_nodes_give_msrun_the_cluster():
    _out, nodes = two_nodes("mindspore")
    for rank, argvs in nodes.items():
        assert f"--worker_num=4 --local_worker_num=2 --master_addr=10.1.2.3 --master_port=23456 " \
               f"--node_rank={rank}" in flat(argvs)
