"""TensorFlow's native launch as --print-command shows it: one process with MirroredStrategy, one per
machine with MultiWorkerMirroredStrategy from TF_CONFIG (no framework runs)."""

from __future__ import annotations

from launch_checks import RECIPE, cli, two_gpus, two_nodes


def test_two_gpus_are_one_process_with_mirrored_strategy():
    header, argv = two_gpus("tensorflow")
    assert "tf.distribute.MirroredStrategy" in header and "-m" not in argv


def test_two_nodes_get_tf_config():
    _out, nodes = two_nodes("tensorflow")
    for rank, argvs in nodes.items():
        [argv] = argvs
        config = next(w for w in argv if w.startswith("TF_CONFIG="))
        assert config == ('TF_CONFIG={"cluster":{"worker":["10.1.2.3:23456","10.1.2.4:23456"]},'
                          f'"task":{{"type":"worker","index":{rank}}}}}')
        assert f"OCRBENCH_RANK={rank}" in argv


def test_multi_worker_refusals_before_anything_starts():
    code, out = cli("run", str(RECIPE), "--backend", "tensorflow", "--nproc", "2", "--nnodes", "2",
                    "--master-addr", "127.0.0.1", "--print-command")
    assert code == 2 and "MultiWorkerMirroredStrategy uses one CPU device per machine" in out
    code, out = cli("run", str(RECIPE), "--backend", "tensorflow", "--gpus", "1", "--nnodes", "2",
                    "--master-addr", "10.0.0.1", "--print-command")
    assert code == 2 and "give --hosts" in out and "Traceback" not in out
