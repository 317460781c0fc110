"""Recipe validation: every error names the file, the key path and the problem; no traceback."""

import pytest

from conftest import TINY_CAPTCHA, run_cli, write
from ocrbench.errors import OcrbenchError
from ocrbench.recipe import CrnnParams, apply_override, load_recipe
from ocrbench.plan import plan


def recipe_file(tmp_path, text=TINY_CAPTCHA, name="r.yml"):
    return write(tmp_path / name, text)


def error_of(tmp_path, text, **kwargs) -> str:
    with pytest.raises(OcrbenchError) as info:
        recipe, path = load_recipe(recipe_file(tmp_path, text), **kwargs)
        plan(recipe, path)
    return str(info.value)


def test_valid_recipe_gets_defaults(tmp_path):
    recipe, path = load_recipe(recipe_file(tmp_path))
    p = plan(recipe, path)
    assert p.resolved["train"]["epochs"] == 10
    assert p.resolved["model"]["params"]["channels"] == [64, 128, 256, 256, 512, 512, 512]
    assert p.resolved["data"]["charset"] == "0123456789"
    # the comparison policies: one default for every backend (docs/recipes.md)
    assert p.resolved["train"]["drop_last"] is True and p.resolved["train"]["optimizer"]["eps"] == 1e-8


def test_comparison_policies_are_validated(tmp_path):
    message = error_of(tmp_path, TINY_CAPTCHA + "train:\n  optimizer: {eps: 0}\n  drop_last: maybe\n")
    assert "train.optimizer.eps: Input should be greater than 0" in message
    assert "train.drop_last: Input should be a valid boolean" in message


def test_unknown_key_suggests_the_right_one(tmp_path):
    message = error_of(tmp_path, TINY_CAPTCHA + "train:\n  epoch: 3\n")
    assert str(tmp_path / "r.yml") in message
    assert "train.epoch: unknown key; did you mean 'train.epochs'?" in message


def test_unknown_key_inside_the_data_union(tmp_path):
    message = error_of(tmp_path, TINY_CAPTCHA.replace("width: 80", "widht: 80"))
    assert "data.widht: unknown key; did you mean 'data.width'?" in message



@pytest.mark.parametrize("section, typo, meant", [
    ("source: filenames\n  train: a\n  eval: b", "seperator: _", "separator"),
    ("source: csv\n  root: r\n  train: a.csv\n  eval: b.csv", "encodng: gbk", "encoding"),
    ("source: lmdb\n  train: a\n  eval: b", "charset_fil: c.txt", "charset_file"),
    ("source: labelfile\n  root: r\n  train: a\n  eval: b", "delimeter: ','", "delimiter"),
])
def test_unknown_key_is_suggested_for_every_data_source(tmp_path, section, typo, meant):
    message = error_of(tmp_path, f"name: t\ndata:\n  {section}\n  {typo}\n")
    assert f"data.{typo.split(':')[0]}: unknown key; did you mean 'data.{meant}'?" in message

def test_wrong_type_and_out_of_range(tmp_path):
    message = error_of(tmp_path, TINY_CAPTCHA + "train:\n  batch_size: many\n  epochs: -1\n")
    assert "train.batch_size:" in message and "'many'" in message
    assert "train.epochs:" in message and "greater than or equal to 0" in message


def test_missing_data_section(tmp_path):
    message = error_of(tmp_path, "name: x\n")
    assert "data: required key is missing" in message


def test_yaml_syntax_error_names_the_line(tmp_path):
    message = error_of(tmp_path, "name: x\ndata: [unclosed\n")
    assert "r.yml:3" in message and "invalid YAML" in message


def test_min_len_larger_than_max_len(tmp_path):
    message = error_of(tmp_path, TINY_CAPTCHA.replace("seed: 3", "seed: 3\n  min_len: 5\n  max_len: 2"))
    assert "min_len (5) is larger than max_len (2)" in message


def test_arch_params_are_validated_against_the_backend(tmp_path):
    bad = TINY_CAPTCHA + "model:\n  arch: crnn\n  params: {hiden: 3}\n"
    assert "model.params.hiden: unknown key; did you mean 'model.params.hidden'?" in error_of(tmp_path, bad)
    bad = TINY_CAPTCHA + "model:\n  arch: transformer\n"
    assert "model.arch: backend 'pytorch' has no architecture 'transformer'" in error_of(tmp_path, bad)


def test_unknown_backend_and_export_format(tmp_path):
    assert "unknown backend 'pytorh'" in error_of(tmp_path, TINY_CAPTCHA, backend="pytorh")
    message = error_of(tmp_path, TINY_CAPTCHA + "export:\n  formats: [tflite]\n")
    assert "export.formats: pytorch cannot export ['tflite']" in message


def test_set_overrides_parse_yaml_values(tmp_path):
    recipe, _ = load_recipe(recipe_file(tmp_path), overrides=["train.epochs=3", "train.optimizer.lr=0.5",
                                                                "model.params.channels=[1,2,3,4,5,6,7]"])
    assert recipe.train.epochs == 3 and recipe.train.optimizer.lr == 0.5
    assert recipe.model.params["channels"] == [1, 2, 3, 4, 5, 6, 7]


def test_set_override_errors():
    with pytest.raises(OcrbenchError, match="expected key.path=value"):
        apply_override({}, "train.epochs")
    with pytest.raises(OcrbenchError, match="name is a value, not a section"):
        apply_override({"name": "x"}, "name.deep=1")


def test_cli_validate_reports_without_traceback(tmp_path):
    path = recipe_file(tmp_path, TINY_CAPTCHA + "train:\n  lr: 3\n")
    result = run_cli("validate", path)
    assert result.returncode == 2
    assert "train.lr: unknown key" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_validate_prints_the_resolved_recipe(tmp_path):
    result = run_cli("validate", recipe_file(tmp_path), "--set", "train.epochs=2")
    assert result.returncode == 0, result.stderr
    assert "epochs: 2" in result.stdout and "valid (pytorch, arch crnn)" in result.stderr


def test_every_shipped_recipe_is_valid():
    from conftest import RECIPES, ROOT

    recipes = (sorted(RECIPES.rglob("*.yml")) + sorted((ROOT / "backends").glob("*/smoke.yml"))
               + sorted((ROOT / "benchmarks").rglob("*.yml")))
    assert len(recipes) >= 13
    for path in recipes:
        recipe, resolved_path = load_recipe(path)
        plan(recipe, resolved_path)


def test_crnn_reference_parameter_count():
    # docs/architectures.md states this number for the reference CRNN with 11 classes (10 digits + blank).
    assert CrnnParams().param_count(11) == 8_317_963
