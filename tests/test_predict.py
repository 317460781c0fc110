"""`ocrbench predict` and `ocrbench eval --data` on a real PyTorch smoke run (it learns: ≥ 90 % sequence
accuracy on its 64 eval images), with both engines: onnxruntime in the core and PyTorch in its worker.
The texts are checked against the run's own eval predictions, so these tests prove that both engines
read images exactly as the trained model does, not just that they run."""

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli, write
from ocrbench.cross_eval import validate_eval

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def run(pytorch_smoke_run, tmp_path_factory):
    """A copy of the session's PyTorch smoke run (predict and eval write into it)."""
    copy = tmp_path_factory.mktemp("predict") / pytorch_smoke_run[0].name
    shutil.copytree(pytorch_smoke_run[0], copy)
    return copy


def dataset_dir(run_dir: Path) -> Path:
    return Path(json.loads((run_dir / "job.json").read_text())["dataset"]["dir"])


def run_predictions(run_dir: Path) -> dict[str, str]:
    """The trained run's own eval predictions: image path (relative to its dataset) -> text."""
    lines = (run_dir / "predictions" / "eval.tsv").read_text(encoding="utf-8").splitlines()
    return dict(line.split("\t", 1) for line in lines)


def said(result) -> str:
    """What the CLI wrote to stderr, with the terminal's line wrapping undone."""
    return " ".join(result.stderr.split())


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_onnx_engine_on_a_label_file_reads_what_the_run_read(run):
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval"]["seq_acc"] >= 0.9        # a model that learned: the texts below are not trivial
    result = run_cli("predict", run, dataset_dir(run) / "eval.txt", "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    rows, expected = jsonl(result.stdout), run_predictions(run)
    assert [r["image"] for r in rows] == list(expected)
    assert [r["text"] for r in rows] == list(expected.values())
    assert all(0 < r["confidence_min"] <= r["confidence_mean"] <= 1 for r in rows)
    assert all(r["confidence"] == r["confidence_mean"] for r in rows)
    assert sum(r["correct"] for r in rows) / len(rows) == metrics["eval"]["seq_acc"]
    assert f"labelled: seq acc {metrics['eval']['seq_acc']:.4f}" in said(result)
    assert "64 of 64 images read" in said(result) and "engine onnx: onnxruntime" in said(result)


def test_native_engine_on_a_folder_agrees_with_onnx(run, tmp_path):
    folder = dataset_dir(run) / "images" / "eval"
    by_engine = {}
    for engine in ("onnx", "native"):
        out = tmp_path / f"{engine}.csv"
        result = run_cli("predict", run, folder, "--engine", engine, "--output", out, "--confidence", "min")
        assert result.returncode == 0, result.stderr
        by_engine[engine] = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    onnx, native = by_engine["onnx"], by_engine["native"]
    expected = {str(dataset_dir(run) / k): v for k, v in run_predictions(run).items()}
    assert len(native) == 64 and {r["image"]: r["text"] for r in native} == expected
    assert [r["text"] for r in native] == [r["text"] for r in onnx]
    assert all(abs(float(a["confidence"]) - float(b["confidence"])) < 1e-4 for a, b in zip(onnx, native))
    assert all(r["confidence"] == r["confidence_min"] for r in native)
    assert not list(run.glob("predict-*.tmp"))                    # the temporary dataset is gone
    assert (run / "job-predict.json").is_file() and (run / "events-predict.jsonl").is_file()


def test_files_with_one_undecodable_image_still_get_results(run, tmp_path):
    good = sorted((dataset_dir(run) / "images" / "eval").iterdir())[:2]
    broken = write(tmp_path / "broken.png", "this is not a PNG")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    result = run_cli("predict", run, good[0], broken, good[1], empty)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    expected = run_predictions(run)
    for path in good:
        text = expected[str(path.relative_to(dataset_dir(run)))]
        assert path.name in result.stdout and text in result.stdout
    assert f"{broken}: not an image that can be decoded" in said(result)
    assert f"{empty}: not an image that can be decoded" in said(result)
    assert "2 of 4 images read; 2 could not be read" in said(result)


def test_bad_inputs_are_named_errors(run, tmp_path):
    image = sorted((dataset_dir(run) / "images" / "eval").iterdir())[0]
    (tmp_path / "empty").mkdir()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    cases = [
        ((run, tmp_path / "empty"), "empty: no image files in this folder or below"),
        ((run, tmp_path / "nope.png"), "nope.png: no such file or folder"),
        ((run, write(tmp_path / "labels.txt", f"{image}\n")), "labels.txt:1: expected 'path"),
        ((tmp_path / "no-run", image), "no-run: no such run directory"),
        ((unfinished, image), "unfinished: not a finished run directory (no metrics.json)"),
        ((run, image, "--format", "xml"), "--format 'xml': choose one of table, jsonl, csv"),
        ((run, image, "--engine", "tflite"), "--engine 'tflite': choose one of onnx, native"),
    ]
    for args, message in cases:
        result = run_cli("predict", *args)
        assert result.returncode == 2 and message in said(result), (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_run_without_usable_export_or_checkpoint(run, tmp_path):
    image = sorted((dataset_dir(run) / "images" / "eval").iterdir())[0]
    bare = tmp_path / "bare"
    shutil.copytree(run, bare)
    shutil.rmtree(bare / "exports" / "onnx")
    result = run_cli("predict", bare, image, "--format", "jsonl")   # falls back to the framework
    assert result.returncode == 0, result.stderr
    assert "model.onnx is missing; using the native engine" in said(result)
    assert jsonl(result.stdout)[0]["text"] == run_predictions(run)[str(image.relative_to(dataset_dir(run)))]
    shutil.rmtree(bare / "checkpoints")
    result = run_cli("predict", bare, image)
    assert result.returncode == 2 and "no checkpoint (checkpoints/): nothing" in said(result)
    result = run_cli("predict", bare, image, "--engine", "native")
    assert result.returncode == 2 and "no checkpoint (checkpoints/) for the native" in said(result)


OTHER_FONT = """
data:
  source: captcha
  noise: false
  width: 100
  height: 40
  min_len: 2
  max_len: 3
  font_sizes: [28, 32]
  fonts: [dejavu-sans]
  train_size: 8
  eval_size: 32
  seed: 11
"""


def test_eval_on_another_font_and_compare_it(run, tmp_path):
    before = (run / "metrics.json").read_bytes()
    result = run_cli("eval", run, "--data", write(tmp_path / "other.yml", OTHER_FONT))
    assert result.returncode == 0, result.stderr
    (path,) = (run / "evals").glob("*.json")
    record = json.loads(path.read_text())
    validate_eval(record, str(path))
    assert (run / "metrics.json").read_bytes() == before            # the training record is untouched
    assert record["eval"]["n"] == 32 and record["engine"]["name"] == "onnx" and record["unknown_chars"] == ""
    assert record["dataset"]["fingerprint"] != record["trained_on"]
    assert path.name == f"{record['dataset']['fingerprint'][:16]}.json"
    assert len((run / record["eval"]["predictions"]).read_text().splitlines()) == 32
    assert f"seq acc {record['eval']['seq_acc']:.4f}" in result.stdout

    shown = run_cli("compare", run, "--eval", record["dataset"]["fingerprint"][:10], "--format", "json")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["eval_on"]["fingerprint"] == record["dataset"]["fingerprint"]
    assert document["rows"][0]["seq_acc"] == pytest.approx(record["eval"]["seq_acc"])
    table = run_cli("compare", run, "--eval", record["dataset"]["fingerprint"][:10])
    assert "scored on another dataset" in " ".join(table.stdout.split())
    missing = run_cli("compare", run, "--eval", "abcdef123")
    assert missing.returncode == 2 and "no evaluation on a dataset abcdef123" in said(missing)
    assert f"ocrbench eval {run} --data" in said(missing)


def test_eval_refuses_characters_the_model_cannot_output(run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    for image in sorted((dataset_dir(run) / "images" / "eval").iterdir())[:4]:
        shutil.copyfile(image, mine / image.name)
    labels = write(mine / "labels.txt", "".join(f"{p.name}\t{t}\n" for p, t in
                                                 zip(sorted(mine.glob("*.png")), ["12", "AB3", "4", "56"])))
    refused = run_cli("eval", run, "--data", labels)
    assert refused.returncode == 2 and "cannot output: 'AB'" in said(refused), refused.stderr
    assert "--charset-filter" in said(refused) and "Traceback" not in refused.stderr
    result = run_cli("eval", run, "--data", labels, "--charset-filter", "--engine", "native")
    assert result.returncode == 0, result.stderr
    (record,) = [r for r in map(json.loads, map(Path.read_text, (run / "evals").glob("*.json")))
                 if r["data"] == str(labels)]
    assert record["unknown_chars"] == "AB" and record["eval"]["protocol"]["charset_filter"] is True
    assert record["engine"]["name"] == "native" and record["eval"]["n"] == 4
    missing = run_cli("eval", run, "--data", tmp_path / "none.yml")
    assert missing.returncode == 2 and "none.yml: no such file" in said(missing)
