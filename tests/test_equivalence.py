"""One network in five frameworks, with the real frameworks (needs every backend's env).

* ``ocrbench equivalence``: shared-init neutral weights and one fixed batch through every backend's shared
  crnn — inference logits, CTC loss, one SGD and one Adam step, BN statistics — compared pairwise against
  the tolerances of ocrbench.equivalence (docs/equivalence.md). This proves the *function*, not learning.
* A PyTorch model that learned (the PyTorch smoke recipe's learning threshold) is loaded into every other
  backend through its weights export (``--init-from``, ``train.epochs=0``): the same eval predictions on
  ≥ 99.9 % of 1,000 images, and the weights written back out by that backend equal the ones it loaded.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_cli
from ocrbench import weights
from ocrbench.equivalence import MEASURES, TOLERANCES
from ocrbench.results import validate_metrics

pytestmark = pytest.mark.e2e
BACKENDS = ("pytorch", "mxnet", "tensorflow", "mindspore", "paddleocr")
SMOKE = ROOT / "backends" / "pytorch" / "smoke.yml"
EVAL_N = 1000


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    out = tmp_path_factory.mktemp("equivalence")
    result = run_cli("equivalence", "--backend", ",".join(BACKENDS), "--out", out, timeout=1800)
    report = out / "equivalence.json"
    assert report.is_file(), result.stdout + result.stderr
    return result, json.loads(report.read_text())


def test_every_pair_of_backends_is_compared_on_every_measure(probes):
    _, report = probes
    pairs = {(p["a"], p["b"]) for p in report["pairs"]}
    assert len(pairs) == len(BACKENDS) * (len(BACKENDS) - 1) // 2
    assert all(set(MEASURES) <= set(p) for p in report["pairs"])
    assert report["tolerances"] == TOLERANCES


@pytest.mark.parametrize("measure", sorted(TOLERANCES))
def test_every_pair_agrees_within_the_tolerance(probes, measure):
    _, report = probes
    limit = TOLERANCES[measure]
    worst = {f"{p['a']}/{p['b']}": p[measure] for p in report["pairs"] if not p[measure] <= limit}
    assert not worst, f"{measure} beyond {TOLERANCES[measure]:g}: {worst}"


def test_the_command_passes_and_prints_the_table(probes):
    result, _ = probes
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "over 10 pairs" in result.stdout and "beyond tolerance" not in result.stdout
    assert all(measure in result.stdout for measure in MEASURES)


# ------------------------------------------------------------------- a PyTorch model in every backend
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The PyTorch smoke recipe (it learns: train.target_acc) with its neutral weights exported."""
    out = tmp_path_factory.mktemp("trained")
    result = run_cli("run", SMOKE, "--set", f"data.eval_size={EVAL_N}", "--set", "export.formats=[weights]",
                     "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = out.iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["eval"]["seq_acc"] >= metrics["recipe"]["resolved"]["train"]["target_acc"], metrics["eval"]
    return run_dir, metrics


def predictions(run_dir: Path) -> dict[str, str]:
    lines = (run_dir / "predictions" / "eval.tsv").read_text(encoding="utf-8").splitlines()
    return dict(line.split("\t", 1) if "\t" in line else (line, "") for line in lines if line)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "pytorch"])
def test_a_pytorch_model_gives_the_same_predictions_in_every_backend(trained, backend, tmp_path):
    source, source_metrics = trained
    result = run_cli("run", SMOKE, "--backend", backend, "--init-from", source, "--set", "train.epochs=0",
                     "--set", f"data.eval_size={EVAL_N}", "--set", "export.formats=[weights]",
                     "--out", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = tmp_path.iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    validate_metrics(metrics)
    assert metrics["status"] == "ok" and metrics["backend"]["name"] == backend, metrics.get("error")
    assert metrics["train"]["steps"] == 0 and metrics["eval"]["n"] == EVAL_N
    assert metrics["model"]["init"]["mode"] == "file"
    assert metrics["model"]["init"]["path"] == str(source / "exports" / "weights" / weights.FILE_NAME)
    mine, theirs = predictions(run_dir), predictions(source)
    assert set(mine) == set(theirs) and len(mine) == EVAL_N
    identical = sum(mine[k] == theirs[k] for k in mine) / EVAL_N
    assert identical >= 0.999, (backend, identical)
    assert abs(metrics["eval"]["seq_acc"] - source_metrics["eval"]["seq_acc"]) <= 0.001
    loaded = weights.read(source / "exports" / "weights" / weights.FILE_NAME).tensors
    written = weights.read(run_dir / "exports" / "weights" / weights.FILE_NAME)
    assert written.meta["source"].split(",")[0].split()[0] != "torch"     # written by the other framework
    assert all(np.array_equal(loaded[n], written.tensors[n]) for n in loaded), backend


def test_export_command_writes_the_weights_of_the_last_checkpoint(trained):
    run_dir, _ = trained
    path = run_dir / "exports" / "weights" / weights.FILE_NAME
    before = weights.read(path).tensors
    result = run_cli("export", run_dir, "--format", "weights")
    assert result.returncode == 0, result.stdout + result.stderr
    after = weights.read(path)
    assert after.meta["source"].startswith("torch ") and set(after.tensors) == set(before)
    assert all(np.array_equal(before[n], after.tensors[n]) for n in before)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (record,) = [x for x in metrics["exports"] if x["format"] == "weights"]
    assert record["ok"] and record["path"] == f"exports/weights/{weights.FILE_NAME}"
