"""Checks every backend's end-to-end smoke run must pass (shared by the per-backend e2e tests)."""

import json
import subprocess
from pathlib import Path

from ocrbench.results import validate_metrics


def check_complete_run(run_dir: Path, backend: str, epochs: int, eval_n: int) -> dict:
    """A finished run: valid metrics.json, every run file, predictions in eval-split order."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    validate_metrics(metrics)
    assert metrics["status"] == "ok" and metrics["error"] is None
    assert metrics["backend"]["name"] == backend
    assert metrics["eval"]["n"] == eval_n and 0 <= metrics["eval"]["seq_acc"] <= 1
    assert metrics["train"]["epochs"] == epochs and len(metrics["train"]["curve"]) == epochs
    assert metrics["train"]["samples_per_s"] > 0 and metrics["train"]["peak_rss_mb"] > 0
    assert metrics["world_size"] == 1
    for name in ("recipe.yaml", "job.json", "environment.json", "events.jsonl", "native.log"):
        assert (run_dir / name).is_file(), name
    job = json.loads((run_dir / "job.json").read_text())
    eval_ids = [line.split("\t")[0] for line in
                Path(job["dataset"]["dir"], "eval.txt").read_text(encoding="utf-8").splitlines()]
    predicted = [line.split("\t")[0] for line in
                 (run_dir / "predictions" / "eval.tsv").read_text(encoding="utf-8").splitlines()]
    assert predicted == eval_ids
    return metrics


def check_exports(run_dir: Path, metrics: dict, formats: set[str], blank: int = 0) -> dict:
    """Every requested format is recorded: its files exist with the recorded size, or a reason is given;
    the export metadata states the blank index of the exported logits."""
    recorded = {x["format"]: x for x in metrics["exports"]}
    assert set(recorded) == formats
    for export in recorded.values():
        if export["ok"]:
            assert sum((run_dir / f).stat().st_size for f in export["files"]) == export["bytes"] > 0
            meta = json.loads((run_dir / "exports" / export["format"] / "ocrbench-export.json").read_text())
            assert meta["blank"] == blank and meta["charset"] == metrics["dataset"]["charset"]
        else:
            assert export["error"] and export["path"] is None
    return recorded


def latest_checkpoint(run_dir: Path) -> Path:
    """The run's newest committed checkpoint directory (its files verified)."""
    from ocrbench.worker.checkpoints import CheckpointStore

    return CheckpointStore(run_dir / "checkpoints").latest().directory


def backend_python(name: str) -> Path:
    """The backend's environment interpreter (a clear error if the env is not installed)."""
    from ocrbench import envs
    from ocrbench.backend import get_backend

    python, _ = envs.resolve_python(get_backend(name))
    return python


def smoke(recipe: Path, out: Path, *overrides: str) -> Path:
    """``ocrbench run RECIPE --out OUT --set ...`` must succeed; returns its (only) run directory."""
    from conftest import run_cli

    result = run_cli("run", recipe, "--out", out, *[a for o in overrides for a in ("--set", o)])
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = out.iterdir()
    return run_dir


def in_env(python: Path, code: str, *args) -> str:
    """Run ``code`` with a backend's interpreter from the project root; returns its stdout."""
    from conftest import ROOT

    out = subprocess.run([str(python), "-c", code, *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def extend_by_resume(run_dir: Path, backend: str, eval_n: int) -> dict:
    """Turn a finished 1-epoch run into a 2-epoch one with ``--resume``: it must continue after epoch 1."""
    from conftest import run_cli

    (run_dir / "metrics.json").unlink()
    recipe = run_dir / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("epochs: 1", "epochs: 2"))
    result = run_cli("run", "--resume", run_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = check_complete_run(run_dir, backend, epochs=2, eval_n=eval_n)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in events if e["event"] == "resumed"] == [1]
    return metrics


PLUMBING = "data.train_size=256"   # a --set for runs that test the pipeline, not learning: seconds per epoch


def recipe_epochs(recipe: Path) -> int:
    """``train.epochs`` of a recipe file."""
    import yaml

    return yaml.safe_load(recipe.read_text(encoding="utf-8"))["train"]["epochs"]


def check_learned(metrics: dict) -> float:
    """The run learned: its recipe states a learning threshold (train.target_acc) and the final sequence
    accuracy reached it (what `ocrbench smoke` requires of a smoke recipe)."""
    target = metrics["recipe"]["resolved"]["train"]["target_acc"]
    assert target is not None and metrics["eval"]["seq_acc"] >= target, (metrics["eval"], target)
    assert metrics["train"]["time_to_target_s"] is not None
    return metrics["eval"]["seq_acc"]


SMALL_CRNN = "{input_width: 64, channels: [8, 16, 32, 32, 64, 64, 64], hidden: 32}"  # 132,107 params


def check_small_crnn(recipe: Path, out: Path, backend: str, formats: list[str], blank: int = 0) -> Path:
    """One epoch of the shared crnn (a small instance) on a backend's smoke set: a complete run with
    PyTorch's parameter count, every requested export made, checked and recorded with the backend's
    blank index."""
    run_dir = smoke(recipe, out, "model.arch=crnn", f"model.params={SMALL_CRNN}", "train.epochs=1", PLUMBING,
                    f"export.formats=[{', '.join(formats)}]")
    metrics = check_complete_run(run_dir, backend, epochs=1, eval_n=64)
    from ocrbench.recipe import CrnnParams

    assert (metrics["model"]["params"] == CrnnParams(**metrics["model"]["arch_params"]).param_count(11)
            == 132_107)
    exports = check_exports(run_dir, metrics, set(formats), blank=blank)
    for fmt, export in exports.items():
        assert export["ok"], exports
    if "onnx" in exports:
        check_onnx_parity(run_dir, exports["onnx"])
    if formats[0] != "onnx":
        check_reloaded_parity(run_dir, exports[formats[0]])   # the native format, reloaded by its framework
    return run_dir


def check_reloaded_parity(run_dir: Path, export: dict) -> dict:
    """A native export reloaded by its framework predicts the eval split exactly as the trained model."""
    parity = export["parity"]
    assert "error" not in parity and parity["n"] == 64, parity
    assert (run_dir / parity["predictions"]).is_file() and parity["identical"] == 1.0, parity
    return parity


PREPROCESS_EXACT = 1e-4   # ocrbench.preprocess vs the backend's own pipeline, max |diff| on normalised inputs


def check_onnx_parity(run_dir: Path, export: dict) -> dict:
    """The core ran the ONNX export in onnxruntime on the eval split (ocrbench.export_parity): it rebuilt
    the framework's input pixels from the export's description, got the framework's outputs on the
    reference batch, and the same predictions on ≥ 99.9 % of the eval split."""
    parity = export["parity"]
    assert "error" not in parity, parity
    assert parity["n"] == 64 and (run_dir / parity["predictions"]).is_file()
    assert parity["max_abs_diff"] < 1e-3 and parity["preprocess_max_diff"] <= PREPROCESS_EXACT, parity
    assert parity["identical"] >= 0.999, parity
    assert parity["latency_ms_p50"] > 0 and parity["latency_ms_p95"] >= parity["latency_ms_p50"]
    assert parity["throughput_ips"] > 0
    return parity


def check_partial_batch_policy(recipe: Path, out: Path, backend: str, reduction: str) -> None:
    """``train.drop_last`` is the core's policy, the same in every backend: 250 training images in batches
    of 32 train 7 steps (224 images) an epoch by default, 8 steps (all 250) with ``drop_last: false``; and
    metrics.json records how the backend reduces its loss."""
    for drop, steps, samples in ((True, 7, 224), (False, 8, 250)):
        run_dir = smoke(recipe, out / f"drop_last-{drop}", "data.train_size=250", "train.epochs=1",
                        "train.batch_size=32", "export.formats=[]", f"train.drop_last={str(drop).lower()}")
        metrics = check_complete_run(run_dir, backend, epochs=1, eval_n=64)
        assert (metrics["train"]["steps"], metrics["train"]["samples"]) == (steps, samples), metrics["train"]
        assert metrics["train"]["loss"]["reduction"] == reduction, metrics["train"]["loss"]
        events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
        begin = next(e for e in events if e["event"] == "train_begin")
        assert begin["steps_per_epoch"] == steps and begin["drop_last"] is drop


CHINESE_CRNN = "{input_width: 128, channels: [8, 16, 32, 32, 64, 64, 64], hidden: 32, keep_ratio: true}"


def chinese_lines_recipe(tmp_path: Path, backend: str, formats: list[str]) -> Path:
    """A tiny Chinese smoke recipe: 48 + 16 synthetic text lines (40 GB2312 classes, 2-4 characters)
    written in the PaddleOCR competition's layout (GB2312 ``name,value`` CSV + image folder) and read
    back through ``data.source: csv``; the small shared crnn keeping the aspect ratio (T = 33), one epoch,
    ``data.cache: none``. Proves plumbing (text lines, keep-ratio, exports), not learning."""
    from competition import tiny_lines, write_competition_layout

    write_competition_layout(tiny_lines(), tmp_path / "competition")
    recipe = tmp_path / "zh_tiny.yml"
    recipe.write_text(f"""
name: zh-tiny
backend: {backend}
model: {{arch: crnn, params: {CHINESE_CRNN}}}
data: {{source: csv, root: competition/images, train: competition/train.csv, eval: competition/eval.csv,
        cache: none}}
train: {{epochs: 1, batch_size: 16, optimizer: {{name: sgd, lr: 0.02}}, seed: 1}}
export: {{formats: [{', '.join(formats)}]}}
""", encoding="utf-8")
    return recipe


def check_chinese_lines(tmp_path: Path, backend: str, formats: list[str], blank: int = 0) -> dict:
    """The tiny Chinese keep-ratio run on ``backend``: complete, its 41-class charset from the GB2312 CSV,
    every export made; the ONNX export's recorded preprocess keeps the ratio and the core reproduces the
    framework's pixels and predictions (export parity)."""
    recipe = chinese_lines_recipe(tmp_path, backend, formats)
    run_dir = smoke(recipe, tmp_path / "runs")
    metrics = check_complete_run(run_dir, backend, epochs=1, eval_n=16)
    assert len(metrics["dataset"]["charset"]) == 40 and metrics["dataset"]["ctc"]["time_steps"] == 33
    job = json.loads((run_dir / "job.json").read_text())
    assert job["dataset"]["cache"] == "none"
    exports = check_exports(run_dir, metrics, set(formats), blank=blank)
    assert all(x["ok"] for x in exports.values()), exports
    onnx = exports["onnx"]
    meta = json.loads((run_dir / "exports" / "onnx" / "ocrbench-export.json").read_text())
    assert meta["input"]["preprocess"]["resize"]["keep_ratio"] is True, meta["input"]
    parity = onnx["parity"]
    assert "error" not in parity and parity["n"] == 16, parity
    assert parity["max_abs_diff"] < 1e-3 and parity["preprocess_max_diff"] <= PREPROCESS_EXACT, parity
    assert parity["identical"] >= 0.999, parity
    return metrics


def check_predict(run_dir: Path, engine: str = "native", fallback: bool = False) -> list[dict]:
    """``ocrbench predict RUN EVAL_LABEL_FILE --engine ENGINE --format jsonl`` reads every eval image as
    the trained run did: the same texts as its predictions file, confidences in (0, 1], the run's seq acc.
    ``fallback``: the run has no usable ONNX export, so the onnx engine must hand over to the native one."""
    from conftest import run_cli

    job = json.loads((run_dir / "job.json").read_text())
    result = run_cli("predict", run_dir, Path(job["dataset"]["dir"]) / "eval.txt", "--engine", engine,
                     "--format", "jsonl")
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert ("using the native engine" in said) == fallback, said
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    lines = (run_dir / "predictions" / "eval.tsv").read_text(encoding="utf-8").splitlines()
    assert [(r["image"], r["text"]) for r in rows] == [tuple(line.split("\t", 1)) for line in lines]
    assert all(0 < r["confidence_min"] <= r["confidence_mean"] <= 1 for r in rows)
    seq_acc = json.loads((run_dir / "metrics.json").read_text())["eval"]["seq_acc"]
    assert sum(r["correct"] for r in rows) / len(rows) == seq_acc
    assert not list(run_dir.glob("predict-*.tmp"))
    return rows
