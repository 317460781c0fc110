"""`ocrbench run --backend all`, `ocrbench smoke` and `ocrbench compare` on real runs (every installed
backend's framework trains the shared crnn on the tiny smoke set)."""

import csv
import io
import json
import struct
import xml.etree.ElementTree as ET

import pytest

from conftest import ROOT, run_cli
from e2e_checks import PLUMBING
from ocrbench.backend import get_backend

pytestmark = pytest.mark.e2e

SMOKE_CRNN = ROOT / "backends" / "pytorch" / "smoke.yml"   # the shared crnn: every backend implements it


def installed_backends() -> list[str]:
    from ocrbench import envs
    from ocrbench.backend import load_backends

    return [name for name, spec in load_backends().items() if envs.status(spec).installed]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One recipe on every installed backend, plus a second seed on pytorch (aggregation)."""
    out = tmp_path_factory.mktemp("runs")
    result = run_cli("run", SMOKE_CRNN, "--set", PLUMBING, "--backend", "all", "--out", out,
                     "--set", "export.formats=[native, onnx]")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "comparison" in result.stdout
    seed = run_cli("run", SMOKE_CRNN, "--set", PLUMBING, "--out", out, "--set", "train.seed=8",
                   "--set", "export.formats=[native]")
    assert seed.returncode == 0, seed.stdout + seed.stderr
    return out


def compare_json(*args) -> dict:
    result = run_cli("compare", *args, "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_run_on_every_installed_backend(runs):
    metrics = [json.loads(p.read_text()) for p in runs.glob("*/metrics.json")]
    backends = sorted(m["backend"]["name"] for m in metrics)
    assert backends == sorted(installed_backends() + ["pytorch"])
    assert all(m["status"] == "ok" for m in metrics)
    assert len({m["dataset"]["fingerprint"] for m in metrics}) == 1   # one prepared dataset
    for m in metrics:   # "native" became each backend's own format
        assert m["exports"][0]["format"] == get_backend(m["backend"]["name"]).export_formats[0]
        assert m["exports"][0]["ok"], m["exports"]
        assert m["recipe"]["resolved"]["backend"] == m["backend"]["name"]
        assert m["train"]["loss_curve"] and m["train"]["loss_curve"][-1]["step"] <= m["train"]["steps"]


def test_seed_aggregation_and_best(runs):
    report = compare_json(runs)
    assert report["like_for_like"] and not report["mismatches"]
    rows = {row["backend"]: row for row in report["rows"]}
    assert set(rows) == set(installed_backends())
    pytorch = rows["pytorch"]
    assert pytorch["run"] == "pytorch (2 seeds)" and pytorch["seeds"] == "7, 8" and len(pytorch["runs"]) == 2
    assert pytorch["samples_per_s_n"] == 2 and pytorch["samples_per_s_std"] is not None
    values = [r["peak_rss_mb"] for r in report["rows"]]
    assert report["best"]["peak_rss_mb"] == [r["run"] for r in report["rows"]
                                             if r["peak_rss_mb"] == min(values)]
    assert {m["key"]: m["better"] for m in report["metrics"]}["seq_acc"] == "higher"
    assert report["common_parameters"]["data.train_size"] == "256"
    assert "train.seed" not in report["varying_parameters"]


def test_baseline_ratios(runs):
    one_run = next(p.parent.name for p in runs.glob("*mxnet*/metrics.json"))
    report = compare_json(runs, "--baseline", one_run)
    rows = {row["backend"]: row for row in report["rows"]}
    assert report["baseline"] == one_run and rows["mxnet"]["train_s_ratio"] == pytest.approx(1.0)
    assert rows["pytorch"]["train_s_ratio"] == pytest.approx(rows["pytorch"]["train_s"]
                                                             / rows["mxnet"]["train_s"])
    bad = run_cli("compare", runs, "--baseline", "no-such-run")
    assert bad.returncode == 2 and "--baseline no-such-run: no such run" in bad.stderr


def test_table_markdown_csv_html_and_plot(runs, tmp_path):
    table = run_cli("compare", runs)
    assert table.returncode == 0 and "pytorch (2 seeds)" in table.stdout and "±" in table.stdout
    assert "common recipe parameters" in table.stdout and "Traceback" not in table.stderr

    md = run_cli("compare", runs, "--format", "markdown").stdout
    header = next(line for line in md.splitlines() if line.startswith("| run"))
    assert "seq acc ↑" in header and "train s ↓" in header and "**" in md
    assert "ONNX p50 ms ↓" in header and "ONNX identical ↑" in header

    rows = list(csv.DictReader(io.StringIO(run_cli("compare", runs, "--format", "csv").stdout)))
    assert len(rows) == len(installed_backends()) and all(float(r["seq_acc"]) >= 0 for r in rows)

    report, plot = tmp_path / "report.html", tmp_path / "curves.png"
    result = run_cli("compare", runs, "--output", report, "--plot", plot)
    assert result.returncode == 0, result.stderr
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page and "data:image/png;base64," in page
    assert "pytorch (2 seeds)" in page and "<script" not in page
    png = plot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1200, 450)


def test_guard_refuses_other_dataset_unless_forced(runs, tmp_path):
    other = tmp_path / "other"
    result = run_cli("run", SMOKE_CRNN, "--set", PLUMBING, "--out", other, "--set", "data.seed=8",
                     "--set", "train.epochs=1", "--set", "export.formats=[]")
    assert result.returncode == 0, result.stdout + result.stderr
    refused = run_cli("compare", runs, other)
    assert refused.returncode == 2 and "dataset fingerprint differs" in refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    forced = compare_json(runs, other, "--force")
    assert not forced["like_for_like"] and "dataset fingerprint differs" in forced["mismatches"][0]
    assert "data.seed" in forced["varying_parameters"]


def test_a_failing_backend_does_not_stop_the_others(tmp_path):
    # torchscript is a PyTorch export: mxnet cannot start this recipe, pytorch still runs
    result = run_cli("run", SMOKE_CRNN, "--set", PLUMBING, "--backend", "mxnet,pytorch", "--out", tmp_path,
                     "--set", "export.formats=[torchscript]", "--set", "train.epochs=1")
    assert result.returncode == 1
    assert "mxnet: did not start" in result.stdout and "cannot export ['torchscript']" in result.stdout
    (metrics,) = tmp_path.glob("*pytorch*/metrics.json")
    assert json.loads(metrics.read_text())["status"] == "ok"
    assert "failed: " in result.stdout.split("comparison")[-1]


def test_smoke_command_with_junit(tmp_path):
    junit = tmp_path / "smoke.xml"
    result = run_cli("smoke", "--backend", "pytorch", "--out", tmp_path / "runs", "--junit", junit)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pass" in result.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "1" and suite.get("failures") == "0"
    assert suite.find("testcase").get("name") == "pytorch"

    failing = run_cli("smoke", "--backend", "pytorch", "--out", tmp_path / "runs2", "--junit", junit,
                      "--set", "export.formats=[savedmodel]")
    assert failing.returncode == 1 and "FAIL" in failing.stdout
    case = ET.parse(junit).getroot().find("testsuite/testcase")
    assert "cannot export ['savedmodel']" in case.find("failure").get("message")


def test_smoke_fails_a_backend_that_does_not_learn(tmp_path):
    junit = tmp_path / "smoke.xml"
    result = run_cli("smoke", "--backend", "pytorch", "--out", tmp_path / "runs", "--junit", junit,
                     "--set", PLUMBING, "--set", "train.epochs=1", "--set", "export.formats=[]")
    assert result.returncode == 1 and "FAIL" in result.stdout, result.stdout + result.stderr
    message = ET.parse(junit).getroot().find("testsuite/testcase/failure").get("message")
    assert message.startswith("did not learn: sequence accuracy") and "train.target_acc 0.9" in message
