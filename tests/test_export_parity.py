"""``ocrbench eval`` (ocrbench.export_parity.evaluate_run) refuses what it cannot check, naming the run."""

import json

import pytest

from conftest import run_cli
from ocrbench.errors import OcrbenchError
from ocrbench.export_parity import evaluate_run


def test_only_onnx_is_evaluated_in_the_core(tmp_path):
    with pytest.raises(OcrbenchError, match="--exported 'torchscript': only onnx"):
        evaluate_run(tmp_path, "torchscript")


def test_a_directory_without_metrics_is_not_a_run(tmp_path):
    with pytest.raises(OcrbenchError, match="no metrics.json"):
        evaluate_run(tmp_path)


@pytest.mark.parametrize("status, exports", [
    ("ok", [{"format": "torchscript", "ok": True}]),
    ("ok", [{"format": "onnx", "ok": False}]),
    ("failed", [{"format": "onnx", "ok": True}]),
])
def test_a_run_without_a_successful_onnx_export_is_refused(tmp_path, status, exports):
    (tmp_path / "metrics.json").write_text(json.dumps({"status": status, "exports": exports}))
    with pytest.raises(OcrbenchError, match="no successful ONNX export") as info:
        evaluate_run(tmp_path)
    assert str(tmp_path) in str(info.value) and "export.formats" in info.value.hint


def test_the_cli_prints_the_error_without_traceback(tmp_path):
    result = run_cli("eval", tmp_path)
    assert result.returncode == 2 and "no metrics.json" in result.stderr and "Traceback" not in result.stderr
