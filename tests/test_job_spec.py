"""The typed job spec (``ocrbench.job``): what the core writes for every backend and launch, read back
strictly; a spec of another schema or with a wrong key is refused with a message naming it."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from ocrbench import distributed
from ocrbench.datasets import PreparedDataset
from ocrbench.job import JOB_SCHEMA, Distributed, Job, JobSpecError
from ocrbench.recipe import load_recipe
from ocrbench.plan import plan
from ocrbench.runner import Runner, job_spec, load_run
from ocrbench.worker import serve

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["pytorch", "mxnet", "tensorflow", "mindspore", "paddleocr"]
TOPOLOGIES = {
    "one device": distributed.Topology(),
    "2 gpus": distributed.Topology(gpus=2),
    "2 cpu replicas": distributed.Topology(nproc=2),
    "2 nodes": distributed.Topology(gpus=1, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29500,
                                    hosts=("10.0.0.1", "10.0.0.2")),
}
DATASET = PreparedDataset(Path("/data/captcha-1"), {"fingerprint": "f" * 64, "charset": "0123456789",
                                                    "splits": {"train": {"n": 20, "max_len": 4},
                                                               "eval": {"n": 8, "max_len": 3}}})


def core_job(backend: str, topology: distributed.Topology, run_dir: Path = Path("/runs/r")) -> Job:
    recipe, path = load_recipe(ROOT / "recipes" / "captcha.yml", ["train.lr_scaling=linear"], backend)
    p = plan(recipe, path)
    launch = Runner(p, run_dir.parent, topology, None, [], None).launch(Path(sys.executable), run_dir)
    return job_spec(p, run_dir, DATASET, launch, resume=False)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("where", list(TOPOLOGIES))
def test_every_launch_becomes_a_typed_job_and_round_trips(backend, where):
    job = core_job(backend, TOPOLOGIES[where])
    text = json.dumps(job.to_json())
    data = json.loads(text)
    assert data["schema"] == JOB_SCHEMA and list(data)[0] == "schema"
    assert Job.from_json(data) == job
    assert (job.dataset.max_label_len == 4
            and job.dataset.native_dir == Path(f"/data/captcha-1/native/{backend}"))
    assert job.train["batch_size"] == job.distributed.per_device_batch == 32
    assert job.train["optimizer"]["lr"] == job.distributed.lr == 0.001 * job.world_size
    assert job.train["drop_last"] is True and job.train["optimizer"]["eps"] == 1e-8
    assert job.gpus == (TOPOLOGIES[where].gpus if job.distributed.device == "gpu" else 0)
    assert job.stage == "train" and job.paths["events"] == "events.jsonl"


def test_one_device_defaults_are_the_dataclass_defaults():
    job = core_job("pytorch", distributed.Topology())
    defaults = Distributed()
    scaling = {"per_device_batch", "global_batch", "base_lr", "lr", "lr_scaling"}
    assert {k: v for k, v in job.distributed.to_json().items() if k not in scaling} == \
           {k: v for k, v in defaults.to_json().items() if k not in scaling}
    assert job.rank == 0 and job.local_rank == 0 and job.process_batch == 32


def test_rank_comes_from_the_launchers_variable(monkeypatch):
    job = core_job("pytorch", TOPOLOGIES["2 gpus"])
    assert (job.distributed.rank_env, job.distributed.local_rank_env,
            job.processes) == ("RANK", "LOCAL_RANK", 2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert job.rank == 1 and job.local_rank == 1


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(schema="ocrbench.job/1"),
     "unsupported job spec 'ocrbench.job/1'; this ocrbench reads"),
    (lambda d: d.pop("schema"), "unsupported job spec None"),
    (lambda d: d.update(extra=1), "unknown key(s) extra"),
    (lambda d: d["distributed"].update(rank=0), "distributed: unknown key(s) rank"),
    (lambda d: d.pop("run_dir"), "run_dir: required key is missing"),
    (lambda d: d["dataset"].pop("charset"), "dataset.charset: required key is missing"),
    (lambda d: d.update(gpus="2"), "gpus: expected int, got '2'"),
    (lambda d: d.update(resume=1), "resume: expected bool"),
    (lambda d: d["distributed"].update(world_size=True), "distributed.world_size: expected int"),
    (lambda d: d["distributed"].update(world_size=0), "distributed.world_size: 0 is not a positive count"),
    (lambda d: d.update(stage="serve"), "stage: 'serve' is not one of train, export, equivalence, predict"),
    (lambda d: d.update(model=None), "model: must not be null"),
])
def test_reading_is_strict_and_names_the_key(change, message):
    data = core_job("pytorch", distributed.Topology()).to_json()
    change(data)
    with pytest.raises(JobSpecError) as caught:
        Job.from_json(data, "run/job.json")
    assert caught.value.message.startswith("run/job.json: ") and message in caught.value.message


def test_the_worker_stops_on_a_job_it_cannot_read(tmp_path):
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"schema": "ocrbench.job/1", "run_dir": str(tmp_path)}))
    with pytest.raises(SystemExit,
                       match=r"ocrbench worker: .*job.json: unsupported job spec 'ocrbench.job/1'"):
        serve(lambda job: None, [str(job_file)])
    job_file.write_text("{not json")
    with pytest.raises(SystemExit, match="cannot read the job spec"):
        serve(lambda job: None, [str(job_file)])


def test_resume_reads_the_typed_job_and_refuses_an_older_one(tmp_path):
    job = core_job("pytorch", TOPOLOGIES["2 cpu replicas"], tmp_path / "run")
    job.run_dir.mkdir()
    (job.run_dir / "recipe.yaml").write_text((ROOT / "recipes" / "captcha.yml").read_text())
    (job.run_dir / "job.json").write_text(json.dumps(job.to_json()))
    _, loaded = load_run(job.run_dir)
    assert loaded == job and loaded.distributed.nproc_per_node == 2
    old = {**job.to_json(), "schema": "ocrbench.job/1"}
    (job.run_dir / "job.json").write_text(json.dumps(old))
    with pytest.raises(JobSpecError, match="unsupported job spec 'ocrbench.job/1'") as caught:
        load_run(job.run_dir)
    assert "start a new run" in caught.value.hint


def test_the_export_stage_is_the_same_job(tmp_path):
    job = core_job("pytorch", distributed.Topology())
    export = dataclasses.replace(job, stage="export", paths={**job.paths, "events": "events-export.jsonl"})
    assert Job.from_json(export.to_json()).path("events") == Path("/runs/r/events-export.jsonl")
