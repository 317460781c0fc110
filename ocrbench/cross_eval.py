"""``ocrbench eval RUN_DIR --data RECIPE_OR_LABELFILE``: score a trained run on another dataset.

``--data`` is a recipe (its ``data`` section is used, paths relative to that recipe) or a label file
(``path<TAB>text`` lines, paths relative to its folder; imported as ``source: labelfile`` with the file
as both splits). The dataset is prepared and fingerprinted like any other (``ocrbench.datasets``), its
eval split is read by one of the engines of ``ocrbench.engines`` and scored here, once, with the run's
protocol and charset. The result goes into the run as ``evals/<fingerprint[:16]>.json`` (schema
``ocrbench.eval/1``, ``ocrbench/schemas/eval-1.schema.json``) beside ``evals/<fingerprint[:16]>.tsv``
(the predictions); metrics.json, the training record, is not touched.

A dataset whose labels hold characters the model cannot output is refused, unless ``charset_filter``:
then the protocol's charset filter drops them from labels and predictions (and the record says so).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import yaml

from ocrbench import atomic, datasets
from ocrbench.codec import Charset
from ocrbench.engines import open_engine
from ocrbench.errors import OcrbenchError
from ocrbench.metrics import score_files
from ocrbench.plan import plan
from ocrbench.predictions import format_line
from ocrbench.protocol import Protocol
from ocrbench.recipe import validate_data
from ocrbench.stage import finished_run

EVAL_SCHEMA_ID = "ocrbench.eval/1"
EVALS_DIR = "evals"


def eval_schema() -> dict:
    return json.loads((Path(__file__).parent / "schemas" / "eval-1.schema.json").read_text(encoding="utf-8"))


def validate_eval(record: dict, where: str) -> None:
    """Check an eval record against its schema; an error names the file and the key."""
    try:
        jsonschema.validate(record, eval_schema())
    except jsonschema.ValidationError as exc:
        key = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise OcrbenchError(f"{where}: not a valid eval record at {key}: {exc.message}") from None


def data_section(source: Path) -> tuple[dict, Path]:
    """The ``data`` section ``--data`` names and the folder its relative paths are relative to."""
    if not source.is_file():
        raise OcrbenchError(f"--data {source}: no such file", hint="give a recipe (.yml) or a label file")
    if source.suffix.lower() in (".yml", ".yaml"):
        try:
            loaded = yaml.safe_load(source.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise OcrbenchError(f"--data {source}: not readable YAML ({exc})") from None
        if not isinstance(loaded, dict) or not isinstance(loaded.get("data"), dict):
            raise OcrbenchError(f"--data {source}: the recipe has no 'data' section")
        return loaded["data"], source.parent.resolve()
    root = source.parent.resolve()
    return {"source": "labelfile", "root": str(root), "train": str(source.resolve()),
            "eval": str(source.resolve())}, root


def prepare_other(run_dir: Path, source: Path, console) -> datasets.PreparedDataset:
    """The run's recipe with its data section replaced by ``--data``'s, validated, and its dataset
    prepared (or reused)."""
    data, base = data_section(source)
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
    p = plan(validate_data({**recipe, "data": data}, f"--data {source}"), source.resolve())
    return datasets.prepare(p.resolved["data"], base, log=console.print)


def unknown_chars(dataset: datasets.PreparedDataset, model_chars: str) -> str:
    """Characters of the eval labels that the model cannot output, in first-seen order."""
    seen = dict.fromkeys(c for s in dataset.samples("eval") for c in s.text if c not in model_chars)
    return "".join(seen)


def evaluate_on(run_dir: Path, source: Path, engine: str, charset_filter: bool, console,
                command: list[str]) -> tuple[dict, Path]:
    """Score the run on ``source``'s eval split; returns the record and where it was written."""
    metrics = finished_run(run_dir, "eval --data")
    charset = Charset(metrics["dataset"]["charset"])
    dataset = prepare_other(run_dir, source, console)
    protocol = Protocol(**{k: v for k, v in metrics["eval"]["protocol"].items() if k != "decoder"})
    missing = unknown_chars(dataset, charset.chars)
    if missing and not charset_filter:
        raise OcrbenchError(f"--data {source}: its eval labels hold characters the model cannot output: "
                            f"{missing!r} (the model's charset: {charset.chars!r})",
                            hint="add --charset-filter to drop them from labels and predictions before "
                                 "scoring, or evaluate on data within the model's charset")
    if charset_filter:
        protocol = Protocol(protocol.case, protocol.spaces, charset_filter=True)
    samples = dataset.samples("eval")
    chosen = open_engine(engine, run_dir, metrics, charset, console, command)
    outcome = chosen.run([dataset.root / s.path for s in samples])
    if outcome.failures:
        first = next(iter(outcome.failures.values()))
        raise OcrbenchError(f"{first.path}: {first.reason} ({len(outcome.failures)} of the prepared eval "
                            "images could not be read)")
    key = dataset.fingerprint[:16]
    predictions = run_dir / EVALS_DIR / f"{key}.tsv"
    atomic.write_text(predictions, "".join(format_line(s.path, outcome.results[i].text)
                                           for i, s in enumerate(samples)))
    scores = score_files(predictions, {s.path: s.text for s in samples}, protocol, charset.chars)
    record = {
        "schema": EVAL_SCHEMA_ID,
        "run_id": metrics["run_id"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "backend": metrics["backend"],
        "engine": {"name": chosen.name, "runtime": outcome.runtime, "images_per_s": outcome.images_per_s},
        "data": str(source),
        "dataset": {"fingerprint": dataset.fingerprint, "charset": dataset.charset,
                    "source": dataset.manifest["source"], "dir": str(dataset.root),
                    "splits": {s: v["n"] for s, v in dataset.manifest["splits"].items()}},
        "trained_on": metrics["dataset"]["fingerprint"],
        "unknown_chars": missing,
        "eval": {"protocol": {"case": protocol.case, "spaces": protocol.spaces,
                              "charset_filter": protocol.charset_filter},
                 **scores, "images_per_s": outcome.images_per_s,
                 "predictions": str(predictions.relative_to(run_dir))},
    }
    path = run_dir / EVALS_DIR / f"{key}.json"
    validate_eval(record, str(path))
    atomic.write_json(path, record)
    return record, path


def find_eval(run_dir: Path, fingerprint: str) -> dict | None:
    """The run's eval record for a dataset fingerprint (or a prefix of at least 6 characters), or None."""
    if len(fingerprint) < 6:
        raise OcrbenchError(f"--eval {fingerprint!r}: give at least 6 characters of the dataset fingerprint")
    matches = sorted((run_dir / EVALS_DIR).glob("*.json"))
    for path in matches:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise OcrbenchError(f"{path}: not a readable eval record ({exc})") from None
        validate_eval(record, str(path))
        if record["dataset"]["fingerprint"].startswith(fingerprint):
            return record
    return None
