"""End to end with the real MindSpore backend on the tiny smoke set
(needs `ocrbench env install mindspore`)."""

import json

import pytest

from backends.mindspore.spec import WarpCtcParams
from conftest import ROOT
from e2e_checks import latest_checkpoint
from e2e_checks import (backend_python, check_chinese_lines, check_complete_run, check_exports, check_learned,
                        check_onnx_parity, check_partial_batch_policy, check_predict, check_reloaded_parity,
                        check_small_crnn, extend_by_resume, in_env, recipe_epochs, smoke)
from ocrbench.recipe import CrnnParams
from pins import pinned_version

pytestmark = pytest.mark.e2e
SMOKE = ROOT / "backends" / "mindspore" / "smoke.yml"
BLANK_LAST = 10  # 10 digits: the blank is class 10 inside the MindSpore backend and its exports


@pytest.fixture(scope="module")
def ms_python():
    return backend_python("mindspore")


@pytest.fixture(scope="module")
def warpctc_run(tmp_path_factory, ms_python):
    return smoke(SMOKE, tmp_path_factory.mktemp("runs"))


def test_warpctc_smoke_run(warpctc_run):
    metrics = check_complete_run(warpctc_run, "mindspore", epochs=recipe_epochs(SMOKE), eval_n=64)
    check_learned(metrics)
    assert metrics["backend"]["version"] == pinned_version("mindspore", "mindspore")
    assert metrics["backend"]["arch"] == "warpctc"
    assert metrics["model"]["params"] == WarpCtcParams(**metrics["model"]["arch_params"]).param_count(11)
    exports = check_exports(warpctc_run, metrics, {"mindir", "onnx"}, blank=BLANK_LAST)
    assert exports["mindir"]["ok"] and exports["onnx"]["ok"], exports
    check_reloaded_parity(warpctc_run, exports["mindir"])
    # MindSpore's ONNX: fixed batch
    assert check_onnx_parity(warpctc_run, exports["onnx"])["input_batch"] == 1
    names = {p.name for p in latest_checkpoint(warpctc_run).iterdir()}
    recipe = metrics["recipe"]["resolved"]
    steps, epochs = recipe["data"]["train_size"] // recipe["train"]["batch_size"], recipe["train"]["epochs"]
    # the WarpCTC name for the last epoch's checkpoint alone, e.g. 9600 / 32 = 300 steps per epoch
    assert f"warpctc-{epochs}-{epochs * steps}.ckpt" in names and "state.json" in names


def test_native_data_is_mindrecord_read_by_mindspore(warpctc_run, ms_python):
    job = json.loads((warpctc_run / "job.json").read_text())
    code = ("import sys, json\n"
            "from mindspore import dataset as ds\n"
            "data = ds.MindDataset(sys.argv[1] + '/eval.mindrecord', shuffle=False)\n"
            "row = next(data.create_dict_iterator(output_numpy=True, num_epochs=1))\n"
            "print(json.dumps({'n': data.get_dataset_size(), 'label': row['label'].tolist(),"
            " 'length': int(row['length']), 'id': str(row['id'])}))")
    got = json.loads(in_env(ms_python, code, job["dataset"]["native_dir"]))
    first_id, first_text = (open(f"{job['dataset']['dir']}/eval.txt", encoding="utf-8").readline()
                            .rstrip("\n").split("\t"))
    assert got["n"] == 64 and got["id"] == first_id and got["length"] == len(first_text)
    # charset "0123456789": digit d -> index d, padded to max_len with the blank (10), as WarpCTC pads
    max_len = job["dataset"]["max_label_len"]
    assert got["label"] == [int(c) for c in first_text] + [BLANK_LAST] * (max_len - len(first_text))


def test_shared_crnn_and_resume(tmp_path, ms_python):
    run_dir = check_small_crnn(SMOKE, tmp_path, "mindspore", ["mindir", "onnx"], blank=BLANK_LAST)
    extend_by_resume(run_dir, "mindspore", eval_n=64)


def test_reference_sizes_match_the_formulas(ms_python):
    code = ("from backends.mindspore.model import build\n"
            "for arch, p in (('crnn', dict(input_width=100, channels=[64, 128, 256, 256, 512, 512, 512],"
            " hidden=256)),"
            " ('warpctc', dict(input_height=64, input_width=160, hidden=512, layers=2))):\n"
            "    print(sum(x.size for x in build(arch, 11, p).trainable_params()))")
    crnn, warpctc = map(int, in_env(ms_python, code).split())
    assert crnn == CrnnParams().param_count(11) == 8_317_963
    assert warpctc == WarpCtcParams().param_count(11) == 3_552_779


def test_partial_last_batch_policy_and_loss_reduction(tmp_path, ms_python):
    check_partial_batch_policy(SMOKE, tmp_path, "mindspore", reduction="sum")


def test_chinese_lines_keep_ratio(tmp_path, ms_python):
    """40 Chinese classes in the competition's CSV layout, the crnn keeping the aspect ratio, data.cache
    none: mindir reloaded and ONNX run by the core, which rebuilds the zero-padded inputs exactly."""
    # 40 hanzi: the blank is class 40 inside the backend and its exports
    metrics = check_chinese_lines(tmp_path, "mindspore", ["mindir", "onnx"], blank=40)
    native = next(x for x in metrics["exports"] if x["format"] == "mindir")["parity"]
    assert native["n"] == 16 and native["identical"] == 1.0, native


def test_native_predict_reads_what_the_run_read(warpctc_run):
    check_predict(warpctc_run)       # MindSpore's logits, blank last, decoded by the core
