"""Neutral weights of the shared crnn (ocrbench.weights), model.init and the loss reduction rule — the
core's part, no framework. The backends' converters are tested for real in test_equivalence.py."""

import json
import types

import numpy as np
import pytest

from conftest import TINY_CAPTCHA, run_cli, write
from ocrbench import weights
from ocrbench.compare import Run, build, init_mode, parity_problems
from ocrbench.errors import OcrbenchError
from ocrbench.recipe import CrnnParams, validate_data
from ocrbench.worker.trainer import Trainer

SMALL = {"input_width": 64, "channels": [8, 16, 32, 32, 64, 64, 64], "hidden": 32}


def small_shape(classes: int = 11) -> weights.CrnnShape:
    return weights.CrnnShape.from_params(SMALL, classes)


@pytest.mark.parametrize("params,classes", [(SMALL, 11), ({}, 11), ({}, 37), (SMALL, 6626)])
def test_layout_holds_exactly_the_parameters_of_the_formula(params, classes):
    crnn = CrnnParams(**params)
    shape = weights.CrnnShape.from_params(crnn.model_dump(), classes)
    assert shape.trainable() == crnn.param_count(classes)
    layout = shape.layout()
    assert layout["conv0.weight"] == (crnn.channels[0], 1, 3, 3) and layout["conv6.weight"][2:] == (2, 2)
    assert layout["rnn2.linear.weight"] == (classes, 2 * crnn.hidden)
    assert [n for n in layout if n.startswith("bn")] == [f"bn{i}.{t}" for i in (2, 4, 6)
                                                         for t in weights.BN_TENSORS]


def test_shared_init_is_a_pure_function_of_the_seed_with_the_stated_bounds():
    shape = small_shape()
    first, again, other = (weights.shared_init(shape, seed) for seed in (3, 3, 4))
    assert all(np.array_equal(first[n], again[n]) for n in first)
    assert not np.array_equal(first["conv0.weight"], other["conv0.weight"])
    assert all(first[n].dtype == np.float32 and first[n].shape == s for n, s in shape.layout().items())
    assert np.abs(first["conv1.weight"]).max() <= 1 / np.sqrt(8 * 9)            # fan-in 8 x 3 x 3
    assert np.abs(first["rnn1.forward.weight_hh"]).max() <= 1 / np.sqrt(32)     # 1 / sqrt(H)
    assert np.abs(first["rnn2.linear.bias"]).max() <= 1 / np.sqrt(64)           # fan-in 2H
    assert (first["bn2.weight"] == 1).all() and (first["bn4.running_var"] == 1).all()
    assert (first["bn6.bias"] == 0).all() and (first["bn6.running_mean"] == 0).all()


def test_file_round_trip_keeps_tensors_and_metadata(tmp_path):
    tensors = weights.shared_init(small_shape(), 1)
    meta = weights.metadata(SMALL, "0123456789", source="test")
    path = weights.write(tmp_path / "w" / weights.FILE_NAME, tensors, meta)
    assert [p.name for p in path.parent.iterdir()] == [weights.FILE_NAME]     # no temporary file left
    back = weights.read(path)
    assert back.meta == meta and back.classes == 11 and back.charset == "0123456789"
    assert json.loads(back.meta["params"]) == SMALL
    assert set(back.tensors) == set(tensors) and all(np.array_equal(back.tensors[n], tensors[n])
                                                     for n in tensors)
    weights.check(back, SMALL, "0123456789", str(path))      # fits its own network


def test_unreadable_files_are_named_errors(tmp_path):
    with pytest.raises(weights.WeightsError, match="no such weights file"):
        weights.read(tmp_path / "missing.safetensors")
    garbage = write(tmp_path / "garbage.safetensors", "not a safetensors file")
    with pytest.raises(weights.WeightsError, match="garbage.safetensors: not a safetensors file"):
        weights.read(garbage)
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(weights.WeightsError, match="metadata format 'pt'; ocrbench reads ocrbench.weights/1"):
        weights.read(foreign)


def test_weights_that_do_not_fit_the_network_are_refused(tmp_path):
    tensors = weights.shared_init(small_shape(), 1)
    source = weights.NeutralWeights(tensors, weights.metadata(SMALL, "0123456789", source="test"))
    with pytest.raises(weights.WeightsError, match="trained on the charset '0123456789'"):
        weights.check(source, SMALL, "abc", "w.safetensors")
    with pytest.raises(weights.WeightsError, match="rnn1.forward.weight_ih: shape"):
        weights.check(source, {**SMALL, "hidden": 16}, "0123456789", "w.safetensors")
    partial = weights.NeutralWeights({k: v for k, v in tensors.items() if k != "bn2.running_var"},
                                     source.meta)
    with pytest.raises(weights.WeightsError, match="missing bn2.running_var"):
        weights.check(partial, SMALL, "0123456789", "w.safetensors")
    doubled = weights.NeutralWeights({**tensors, "conv0.weight": tensors["conv0.weight"].astype(np.float64)},
                                     source.meta)
    with pytest.raises(weights.WeightsError, match="dtype float64"):
        weights.check(doubled, SMALL, "0123456789", "w.safetensors")


def test_init_from_a_run_directory_needs_its_weights_export(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(weights.WeightsError, match="has no neutral weights") as caught:
        weights.resolve_source(str(run), tmp_path)
    assert "ocrbench export" in caught.value.hint and "--format weights" in caught.value.hint
    exported = weights.write(run / "exports" / "weights" / weights.FILE_NAME,
                             weights.shared_init(small_shape(), 1),
                             weights.metadata(SMALL, "0123456789", source="test"))
    assert weights.resolve_source("run", tmp_path) == exported
    assert weights.init_file({"from": "run"}, SMALL, "0123456789", 1, tmp_path, tmp_path) == exported
    assert weights.init_file("framework", SMALL, "0123456789", 1, tmp_path, tmp_path) is None
    shared = weights.init_file("shared", SMALL, "0123456789", 5, tmp_path, tmp_path / "new")
    assert shared == tmp_path / "new" / "init" / weights.FILE_NAME
    drawn = weights.read(shared)
    assert drawn.meta["source"] == "ocrbench shared init, seed 5"
    expected = weights.shared_init(small_shape(), 5)["conv3.weight"]
    assert np.array_equal(drawn.tensors["conv3.weight"], expected)


def test_converter_helpers_move_the_blank():
    head = np.arange(4)[:, None] * np.ones((1, 2))           # class rows 0 (blank), 1, 2, 3
    assert weights.blank_last(head)[:, 0].tolist() == [1, 2, 3, 0]
    assert np.array_equal(weights.blank_first(weights.blank_last(head)), head)


@pytest.mark.parametrize("reduction,objective,logged", [
    ("mean", [0.5, 0.5], [0.5, 0.5]),
    ("sum", [1.0, 1.0], [0.5, 0.5]),
    ("char_mean", [0.5 / 2, 0.5 / 4], [0.5 / 2, 0.5 / 4]),
])
def test_loss_weights_are_the_one_reduction_rule(reduction, objective, logged):
    trainer = types.SimpleNamespace(loss_reduction=reduction)
    got_objective, got_logged = Trainer.loss_weights(trainer, np.array([2, 4]))
    assert got_objective.tolist() == pytest.approx(objective) and got_logged.tolist() == pytest.approx(logged)
    assert got_objective.dtype == np.float32


def test_recipe_model_init_values():
    base = {"name": "x", "data": {"source": "captcha"}}
    assert validate_data(base, "r").model.init == "framework"
    assert validate_data({**base, "model": {"init": "shared"}}, "r").model.init == "shared"
    recipe = validate_data({**base, "model": {"init": {"from": "runs/a"}}}, "r")
    assert recipe.resolved()["model"]["init"] == {"from": "runs/a"}
    with pytest.raises(OcrbenchError, match="model.init"):
        validate_data({**base, "model": {"init": "pytorch"}}, "r")
    assert validate_data({**base, "train": {"epochs": 0}}, "r").train.epochs == 0


def test_init_needs_the_shared_crnn(tmp_path):
    recipe = write(tmp_path / "r.yml", TINY_CAPTCHA.replace("backend: pytorch", "backend: mxnet")
                   + "model: {arch: lstm_ctc, init: shared}\n")
    result = run_cli("validate", recipe)
    assert result.returncode == 2 and "model.init: only the shared crnn" in result.stderr, result.stderr
    recipe = write(tmp_path / "e.yml", TINY_CAPTCHA.replace("backend: pytorch", "backend: mxnet")
                   + "model: {arch: lstm_ctc}\nexport: {formats: [weights]}\n")
    result = run_cli("validate", recipe)
    assert result.returncode == 2
    assert "'weights' (neutral weights) exists for the shared crnn" in result.stderr


def test_run_refuses_weights_that_do_not_fit_before_starting(tmp_path):
    recipe = write(tmp_path / "r.yml", TINY_CAPTCHA + f"model: {{arch: crnn, params: {json.dumps(SMALL)}}}\n")
    other = weights.write(tmp_path / "w.safetensors", weights.shared_init(small_shape(classes=4), 1),
                          weights.metadata(SMALL, "abc", source="test"))
    result = run_cli("run", recipe, "--init-from", other, "--out", tmp_path / "runs")
    assert result.returncode == 2 and "trained on the charset 'abc'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


def _metrics(run_id: str, mode: str | None) -> Run:
    model = {"params": 1, "checkpoint_bytes": None, **({"init": {"mode": mode}} if mode else {})}
    metrics = {"run_id": run_id, "status": "ok", "model": model,
               "dataset": {"fingerprint": "f", "charset": "0"}, "eval": {"protocol": {}}}
    return Run(path=None, metrics=metrics)


def test_compare_treats_init_modes_as_not_like_for_like():
    shared, framework, old = _metrics("a", "shared"), _metrics("b", "framework"), _metrics("c", None)
    assert init_mode(old.metrics) == "framework"          # files from before model.init
    assert parity_problems([framework, old]) == []
    (problem,) = parity_problems([shared, framework])
    assert problem.startswith("init (model.init) differs: shared in a; framework in b")
    with pytest.raises(OcrbenchError, match="not like-for-like"):
        build([shared, framework])
