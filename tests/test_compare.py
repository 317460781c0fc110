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


def eight_runs_with_differing_data_paths(runs, out):
    """Eight run directories from the fixture's real metrics.json files (round robin), each with its own
    run id and a different data path, as eight runs on a user's eight datasets would differ."""
    sources = sorted(runs.glob("*/metrics.json"))
    for index in range(8):
        metrics = json.loads(sources[index % len(sources)].read_text())
        metrics["run_id"] = f"{metrics['run_id']}-{index}"
        resolved = metrics["recipe"]["resolved"]
        resolved["data"]["fonts"] = [f"/home/user/projects/ocr/datasets/site-{index}/fonts/DejaVuSans.ttf"]
        resolved["data"]["seed"] = index
        metrics["dataset"]["fingerprint"] = f"{index:x}" * 64   # eight datasets: not like-for-like
        (out / metrics["run_id"]).mkdir(parents=True)
        (out / metrics["run_id"] / "metrics.json").write_text(json.dumps(metrics))
    return out


def chromium() -> str:
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "headless Chromium is missing: `make browser` installs it (make test does)"
    return found


LAYOUT_PROBE = """<script>
window.addEventListener('load', () => {
  const cells = [...document.querySelectorAll('thead th')].map(th => {
    const r = th.getBoundingClientRect();
    return {text: th.textContent, left: r.left, right: r.right};
  });
  const out = document.createElement('pre');
  out.id = 'layout';
  out.textContent = JSON.stringify({cells, viewport: window.innerWidth,
                                    page: document.documentElement.scrollWidth});
  document.body.appendChild(out);
});
</script>"""


def test_html_report_layout_in_a_real_browser(runs, tmp_path):
    """At 1400 px the run, backend, seq acc and samples/s columns are in view without scrolling; the
    differing recipe keys are columns of short values; the warning is one line with its details folded;
    the common parameters are a folded key/value list; the terminal table has the same column order."""
    import re
    import subprocess

    many = eight_runs_with_differing_data_paths(runs, tmp_path / "eight")
    report = tmp_path / "report.html"
    result = run_cli("compare", many, "--force", "--output", report)
    assert result.returncode == 0, result.stderr
    page = report.read_text()
    assert re.search(r"<details class='warn' id='mismatches'><summary>NOT LIKE-FOR-LIKE[^<]*</summary>", page)
    assert "<details id='common'>" in page and "<dt>train.epochs</dt>" in page
    assert "…/site-3/…" in page and "/home/user/projects" not in page.split("<details id='common'>")[0]

    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", LAYOUT_PROBE + "</body>"))
    browser = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--window-size=1400,1000", "--virtual-time-budget=3000"]
    dom = subprocess.run([*browser, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r"<pre id=\"layout\">(.*?)</pre>", dom.stdout, re.S)
    assert found, dom.stdout[-2000:]
    import html as html_lib

    layout = json.loads(html_lib.unescape(found.group(1)))
    assert layout["viewport"] == 1400 and layout["page"] <= 1400   # the page itself never scrolls sideways
    cells = {cell["text"]: cell for cell in layout["cells"]}
    for header in ("run", "backend", "seq acc ↑", "train samples/s ↑"):
        assert 0 <= cells[header]["left"] and cells[header]["right"] <= 1400, (header, cells[header])
    order = [cell["text"] for cell in layout["cells"]]
    assert order[:4] == ["run", "backend", "seq acc ↑", "train samples/s ↑"]
    assert "data.fonts" in order and "data.seed" in order and "recipe differs" not in order

    shot = tmp_path / "report.png"
    subprocess.run([*browser, f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120,
                   check=True)
    width, _ = struct.unpack(">II", shot.read_bytes()[16:24])
    assert width == 1400

    table = run_cli("compare", many, "--force", env={"COLUMNS": "400"}).stdout
    header = next(line for line in table.splitlines() if line.strip().startswith("run"))
    assert header.split()[:5] == ["run", "backend", "seq", "acc", "↑"]
    assert header.index("train samples/s") < header.index("framework") < header.index("data.fonts")
