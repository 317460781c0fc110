"""Pure parts of `ocrbench compare` (no framework): statistics, parameters, input sizes, file finding.
The end-to-end behaviour on real runs is in test_compare.py."""

import json

import pytest

from conftest import run_cli
from ocrbench.compare import aggregate, devices, find_metrics_files, flatten, input_size
from ocrbench.errors import OcrbenchError


def test_aggregate_mean_sample_std_and_n():
    stat = aggregate([0.9, 1.0, None, 0.95])
    assert stat.n == 3 and stat.mean == pytest.approx(0.95) and stat.std == pytest.approx(0.05)
    assert aggregate([2.0]).std is None and aggregate([None]).mean is None


def test_flatten_leaves_out_what_is_not_the_experiment():
    flat = flatten({"backend": "mxnet", "runtime": {"gpus": 1},
                    "train": {"seed": 3, "optimizer": {"lr": 0.01}},
                    "export": {"formats": ["onnx"], "onnx_opset": 13}, "data": {"fonts": []}})
    assert flat == {"train.optimizer.lr": "0.01", "export.onnx_opset": "13", "data.fonts": "[]"}


def test_input_size_reads_the_layout():
    assert input_size({"model": {"input": {"shape": [None, 1, 32, 100], "layout": "NCHW"}}}) == "32x100x1"
    assert input_size({"model": {"input": {"shape": [None, 32, 100, 1], "layout": "NHWC"}}}) == "32x100x1"
    assert input_size({"model": {"input": {"shape": [None, 3, 32, None], "layout": "NCHW"}}}) == "32x?x3"
    assert input_size({"model": {"input": None}}) is None


def test_devices_label_where_a_run_trained():
    assert devices({"world_size": 1}) == "1"                       # files from before `distributed`
    one = {"world_size": 2, "distributed": {"world_size": 2, "device": "cpu", "nnodes": 1}}
    assert devices(one) == "2 cpu"
    assert devices({"distributed": {"world_size": 8, "device": "gpu", "nnodes": 2}}) == "8 gpu (2 nodes)"


def test_finding_metrics_files(tmp_path):
    run = tmp_path / "runs" / "a-pytorch-1"
    run.mkdir(parents=True)
    (tmp_path / "runs" / "in-progress").mkdir()          # no metrics.json yet: skipped in a folder
    (run / "metrics.json").write_text("{}")
    assert find_metrics_files([tmp_path / "runs"]) == [(run / "metrics.json").resolve()]
    assert find_metrics_files([run, run / "metrics.json"]) == [(run / "metrics.json").resolve()]
    with pytest.raises(OcrbenchError, match="no metrics.json"):
        find_metrics_files([tmp_path / "runs" / "in-progress"])
    with pytest.raises(OcrbenchError, match="no such file"):
        find_metrics_files([tmp_path / "nope"])


def test_compare_names_a_broken_file(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    result = run_cli("compare", bad)
    assert result.returncode == 2 and str(bad) in result.stderr and "Traceback" not in result.stderr
    bad.write_text(json.dumps({"schema": "ocrbench.metrics/1"}))
    result = run_cli("compare", bad)
    assert result.returncode == 2 and "does not match ocrbench.metrics/1" in result.stderr


def test_run_on_several_backends_checks_names_first():
    result = run_cli("run", "recipes/captcha_pytorch.yml", "--backend", "pytorch,pytorh")
    assert (result.returncode == 2 and "unknown backend 'pytorh'" in result.stderr
            and "Traceback" not in result.stderr)
    result = run_cli("compare", "recipes", "--format", "yaml")
    assert result.returncode == 2 and "--format 'yaml'" in result.stderr
