"""MLflow tracking (ocrbench.tracking) with the real MLflow against a temporary store: a live smoke run
with ``ocrbench run --mlflow-uri`` and a finished run uploaded with ``ocrbench log mlflow``, both read back
with MLflow's own client. The unit tests need no framework."""

import json
import sys

import mlflow   # make test installs ocrbench[mlflow]: a missing extra fails here, it is not skipped
import pytest

from conftest import ROOT, run_cli
from e2e_checks import PLUMBING
from ocrbench import tracking
from ocrbench.errors import OcrbenchError


def store(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def only_run(uri: str, experiment: str):
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {uri}"
    (run,) = client.search_runs([found.experiment_id])
    return client, run


def check_logged(client, run, run_dir) -> None:
    """What a logged ocrbench run must hold in MLflow, compared with the run's own files."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["ocrbench.backend"] == "pytorch"
    assert run.data.tags["ocrbench.framework_version"] == metrics["backend"]["version"]
    assert run.data.tags["ocrbench.dataset_fingerprint"] == metrics["dataset"]["fingerprint"]
    assert run.data.tags["ocrbench.world_size"] == "1"
    assert run.data.tags["mlflow.runName"] == run_dir.name
    params = run.data.params
    assert params["train.epochs"] == str(metrics["recipe"]["resolved"]["train"]["epochs"])
    assert params["model.arch"] == metrics["recipe"]["resolved"]["model"]["arch"]
    assert params["train.optimizer.lr"] == str(metrics["recipe"]["resolved"]["train"]["optimizer"]["lr"])
    steps = [e["step"] for e in events if e["event"] == "step"]
    loss = client.get_metric_history(run_id, "train_loss")
    assert sorted(m.step for m in loss) == sorted(steps) and steps
    curve = metrics["train"]["curve"]
    accs = client.get_metric_history(run_id, "eval_seq_acc")
    assert [(m.step, m.value) for m in sorted(accs, key=lambda m: m.step)] == \
        [(p["step"], pytest.approx(p["eval_seq_acc"])) for p in curve]
    assert run.data.metrics["final_seq_acc"] == pytest.approx(metrics["eval"]["seq_acc"])
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"metrics.json", "recipe.yaml", "curves.png", "exports"} <= names
    exported = {a.path for a in client.list_artifacts(run_id, "exports")}
    assert {f"exports/{x['format']}" for x in metrics["exports"] if x["ok"]} <= exported


@pytest.mark.e2e
def test_run_logs_live_to_mlflow(tmp_path):
    uri = store(tmp_path)
    out = tmp_path / "runs"
    result = run_cli("run", ROOT / "backends" / "pytorch" / "smoke.yml", "--out", out, "--set", PLUMBING,
                     "--set", "train.epochs=2", "--set", "export.formats=[onnx]", "--mlflow-uri", uri,
                     "--mlflow-experiment", "live-test", cwd=tmp_path)   # MLflow puts artifacts in ./mlruns
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = out.iterdir()
    client, run = only_run(uri, "live-test")
    check_logged(client, run, run_dir)
    assert "mlflow: run " in result.stdout
    assert list((tmp_path / "mlruns").rglob("metrics.json"))   # the artifacts beside the store, not in ROOT


@pytest.mark.e2e
def test_log_mlflow_uploads_a_finished_run(pytorch_smoke_run, tmp_path):
    run_dir, _ = pytorch_smoke_run
    uri = store(tmp_path)
    result = run_cli("log", "mlflow", run_dir, "--uri", uri, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    recipe_name = json.loads((run_dir / "metrics.json").read_text())["recipe"]["name"]
    client, run = only_run(uri, recipe_name)   # the experiment is the recipe's name
    check_logged(client, run, run_dir)


def test_log_mlflow_names_a_directory_without_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("log", "mlflow", tmp_path / "empty", "--uri", store(tmp_path))
    assert result.returncode == 2
    assert "no metrics.json" in result.stderr and "Traceback" not in result.stderr


def test_unusable_store_is_a_named_error_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_cli("run", ROOT / "backends" / "pytorch" / "smoke.yml", "--out", tmp_path / "runs",
                     "--mlflow-uri", f"sqlite:///{blocker}/sub/mlflow.db")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "MLflow tracking URI" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()   # nothing was started


def test_without_mlflow_the_option_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)   # as if the extra were not installed
    with pytest.raises(OcrbenchError) as caught:
        tracking.require_mlflow()
    assert "ocrbench[mlflow]" in caught.value.hint


def test_flatten_gives_dotted_keys():
    assert tracking.flatten({"train": {"optimizer": {"lr": 0.001}, "epochs": 3}, "x": [1, 2], "y": None}) == \
        {"train.optimizer.lr": "0.001", "train.epochs": "3", "x": "[1, 2]", "y": "null"}


def test_replay_keeps_the_latest_value_of_a_step_logged_twice():
    events = [{"event": "step", "epoch": 1, "step": 5, "loss": 2.0, "lr": 0.1, "samples_per_s": 10.0},
              {"event": "start"},   # resumed: step 5 is done again
              {"event": "step", "epoch": 1, "step": 5, "loss": 1.5, "lr": 0.1, "samples_per_s": 12.0},
              {"event": "epoch_end", "epoch": 1, "step": 8, "loss": 1.2}]
    curve = [{"epoch": 1, "step": 8, "eval_seq_acc": 0.5, "eval_char_acc": 0.7, "eval_ned": 0.8}]
    logged = tracking.replayed_metrics(events, curve)
    assert ("train_loss", 1.5, 5) in logged and ("train_loss", 2.0, 5) not in logged
    assert ("eval_seq_acc", 0.5, 8) in logged and ("epoch", 1.0, 8) in logged
    assert [step for _, _, step in logged] == sorted(step for _, _, step in logged)
