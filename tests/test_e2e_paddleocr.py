"""End to end with the real PaddlePaddle backend on the tiny smoke set
(needs `ocrbench env install paddleocr`)."""

import pickle

import pytest
import yaml

from backends.paddleocr.spec import CrnnMobileNetV3Params
from conftest import ROOT
from e2e_checks import latest_checkpoint
from e2e_checks import (PLUMBING, backend_python, check_chinese_lines, check_complete_run, check_exports,
                        check_onnx_parity, check_partial_batch_policy, check_predict, check_reloaded_parity,
                        check_small_crnn, extend_by_resume, in_env, smoke)
from ocrbench.recipe import CrnnParams
from pins import pinned_version

pytestmark = pytest.mark.e2e
SMOKE = ROOT / "backends" / "paddleocr" / "smoke.yml"


@pytest.fixture(scope="module")
def paddle_python():
    return backend_python("paddleocr")


@pytest.fixture(scope="module")
def mobilenet_run(tmp_path_factory, paddle_python):
    # PaddleOCR's reference arch on the smoke data, trained 2 epochs on 256 images: the pipeline, not
    # learning (the smoke recipe's shared crnn must learn: `ocrbench smoke`)
    return smoke(SMOKE, tmp_path_factory.mktemp("runs"), "model.arch=crnn_mobilenetv3",
                 "model.params={scale: 0.5, small_stride: [1, 2, 2, 2], hidden: 48, input_width: 128}",
                 "train.optimizer={name: adam, lr: 0.001, weight_decay: 0.00001}",
                 "train.lr_schedule={name: cosine}",
                 "train.target_acc=null", PLUMBING)


def test_crnn_mobilenetv3_smoke_run(mobilenet_run):
    metrics = check_complete_run(mobilenet_run, "paddleocr", epochs=2, eval_n=64)
    assert metrics["backend"]["version"] == pinned_version("paddleocr", "paddlepaddle")
    assert metrics["backend"]["arch"] == "crnn_mobilenetv3"
    assert (metrics["model"]["params"]
            == CrnnMobileNetV3Params(**metrics["model"]["arch_params"]).param_count(11))
    exports = check_exports(mobilenet_run, metrics, {"paddle", "onnx"})
    assert all(x["ok"] for x in exports.values()), exports
    check_reloaded_parity(mobilenet_run, exports["paddle"])
    # OpenCV keep-ratio resize rebuilt by the core (x / 127.5 - 1 vs (x / 255 - 0.5) / 0.5: float rounding)
    assert check_onnx_parity(mobilenet_run, exports["onnx"])["preprocess_max_diff"] < 1e-6
    files = {p.name for p in (mobilenet_run / "exports" / "paddle").iterdir()}
    assert {"inference.json", "inference.pdiparams", "inference.yml"} <= files


def test_paddleocr_checkpoints_and_config(mobilenet_run):
    # latest.* in each checkpoint; best_accuracy.* beside them, outliving them (PaddleOCR's convention)
    for names, prefix in (({p.name for p in latest_checkpoint(mobilenet_run).iterdir()}, "latest"),
                          ({p.name for p in (mobilenet_run / "checkpoints").iterdir()}, "best_accuracy")):
        assert {f"{prefix}.pdparams", f"{prefix}.pdopt", f"{prefix}.states"} <= names
    config = yaml.safe_load((mobilenet_run / "config.yml").read_text())
    assert list(config) == ["Global", "Optimizer", "Architecture", "Loss", "PostProcess", "Metric", "Train",
                            "Eval"]
    assert config["Architecture"]["Backbone"] == {"name": "MobileNetV3", "scale": 0.5, "model_name": "small",
                                                  "small_stride": [1, 2, 2, 2]}
    assert config["Train"]["dataset"]["name"] == "SimpleDataSet"
    dict_file = config["Global"]["character_dict_path"]
    assert open(dict_file, encoding="utf-8").read() == "".join(f"{d}\n" for d in range(10))


def test_checkpoints_load_without_executing_code(mobilenet_run, paddle_python, tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "latest.states"
    evil.write_bytes(pickle.dumps({"epoch": Exploit()}))
    code = ("import sys, pickle\n"
            "from pathlib import Path\n"
            "from backends.paddleocr.ppocr_formats import safe_load\n"
            "state = safe_load(Path(sys.argv[1]) / 'latest.pdparams')\n"
            "print(len(state) > 0, type(next(iter(state.values()))).__name__)\n"
            "try:\n    safe_load(Path(sys.argv[2]))\n"
            "except pickle.UnpicklingError as e:\n    print('refused')\n")
    out = in_env(paddle_python, code, latest_checkpoint(mobilenet_run), evil).split()
    assert out == ["True", "ndarray", "refused"]


def test_shared_crnn_and_resume(tmp_path, paddle_python):
    run_dir = check_small_crnn(SMOKE, tmp_path, "paddleocr", ["paddle", "onnx"])
    assert not (run_dir / "config.yml").exists()  # the shared crnn has no PaddleOCR backbone equivalent
    extend_by_resume(run_dir, "paddleocr", eval_n=64)


def test_reference_sizes_match_the_formulas(paddle_python):
    code = ("import numpy as np\n"
            "from backends.paddleocr.model import build\n"
            "for arch, classes, p in (('crnn', 11, dict(input_width=100,"
            " channels=[64, 128, 256, 256, 512, 512, 512],"
            " hidden=256)), ('crnn_mobilenetv3', 6625, dict(scale=0.5, small_stride=[1, 2, 2, 2], hidden=48,"
            " input_width=320))):\n"
            "    m = build(arch, classes, p)\n"
            "    print(sum(int(np.prod(x.shape)) for x in m.parameters() if not x.stop_gradient))")
    crnn, mobilenet = map(int, in_env(paddle_python, code).split())
    assert crnn == CrnnParams().param_count(11) == 8_317_963
    # rec_chinese_lite_train_v2.0: 6623 dictionary characters + space + blank
    assert mobilenet == CrnnMobileNetV3Params().param_count(6625) == 1_081_377


def test_partial_last_batch_policy_and_loss_reduction(tmp_path, paddle_python):
    check_partial_batch_policy(SMOKE, tmp_path, "paddleocr", reduction="mean")


def test_chinese_text_lines_keeping_the_aspect_ratio(tmp_path, paddle_python):
    check_chinese_lines(tmp_path, "paddleocr", ["paddle", "onnx"], blank=0)


def test_native_predict_reads_what_the_run_read(mobilenet_run):
    check_predict(mobilenet_run)     # Paddle's logits before the exports' softmax, decoded by the core
