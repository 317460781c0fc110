"""Checks every backend's end-to-end smoke run must pass (shared by the per-backend e2e tests)."""

import json
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


def check_exports(run_dir: Path, metrics: dict, formats: set[str]) -> dict:
    """Every requested format is recorded: its files exist with the recorded size, or a reason is given."""
    recorded = {x["format"]: x for x in metrics["exports"]}
    assert set(recorded) == formats
    for export in recorded.values():
        if export["ok"]:
            assert sum((run_dir / f).stat().st_size for f in export["files"]) == export["bytes"] > 0
            meta = json.loads((run_dir / "exports" / export["format"] / "ocrbench-export.json").read_text())
            assert meta["blank"] == 0 and meta["charset"] == metrics["dataset"]["charset"]
        else:
            assert export["error"] and export["path"] is None
    return recorded
