"""End to end with the real TensorFlow backend on the tiny smoke set
(needs `ocrbench env install tensorflow`)."""

import json
from pathlib import Path

import pytest

from backends.tensorflow.spec import ShadowNetParams
from conftest import ROOT
from e2e_checks import latest_checkpoint
from e2e_checks import (backend_python, check_chinese_lines, check_complete_run, check_exports, check_learned,
                        check_onnx_parity, check_partial_batch_policy, check_predict, check_reloaded_parity,
                        check_small_crnn, extend_by_resume, in_env, recipe_epochs, smoke)
from ocrbench.recipe import CrnnParams
from pins import pinned_version

pytestmark = pytest.mark.e2e
SMOKE = ROOT / "backends" / "tensorflow" / "smoke.yml"
BLANK_LAST = 10  # 10 digits: the blank is class 10 inside the TensorFlow backend and its exports


@pytest.fixture(scope="module")
def tf_python():
    return backend_python("tensorflow")


@pytest.fixture(scope="module")
def shadownet_run(tmp_path_factory, tf_python):
    return smoke(SMOKE, tmp_path_factory.mktemp("runs"))


def test_shadownet_smoke_run(shadownet_run):
    metrics = check_complete_run(shadownet_run, "tensorflow", epochs=recipe_epochs(SMOKE), eval_n=64)
    check_learned(metrics)
    assert metrics["backend"]["version"] == pinned_version("tensorflow", "tensorflow-cpu")
    assert metrics["backend"]["arch"] == "shadownet"
    assert metrics["model"]["params"] == ShadowNetParams(**metrics["model"]["arch_params"]).param_count(11)
    exports = check_exports(shadownet_run, metrics, {"savedmodel", "tflite", "onnx"}, blank=BLANK_LAST)
    assert all(x["ok"] for x in exports.values()), exports
    # reloaded by TensorFlow / its TFLite interpreter, on the eval split
    for fmt in ("savedmodel", "tflite"):
        check_reloaded_parity(shadownet_run, exports[fmt])
    assert check_onnx_parity(shadownet_run, exports["onnx"])["preprocess_max_diff"] == 0.0
    names = {p.name for p in latest_checkpoint(shadownet_run).iterdir()}
    assert {"shadownet.ckpt.index", "shadownet.ckpt.data-00000-of-00001", "state.json"} <= names


def test_native_data_is_upstream_tfrecords(shadownet_run, tf_python):
    job = json.loads((shadownet_run / "job.json").read_text())
    native = f"{job['dataset']['native_dir']}/64x32"
    code = ("import sys, json, tensorflow as tf\n"
            "files = sorted(tf.io.gfile.glob(sys.argv[1] + '/tfrecords/val_*.tfrecords'))\n"
            "record = next(iter(tf.data.TFRecordDataset(files[:1])))\n"
            "ex = tf.train.Example.FromString(record.numpy()).features.feature\n"
            "print(json.dumps({'files': [f.rsplit('/', 1)[1] for f in files],"
            " 'labels': list(ex['labels'].int64_list.value),"
            " 'path': ex['imagepaths'].bytes_list.value[0].decode(),"
            " 'bytes': len(ex['images'].bytes_list.value[0])}))")
    got = json.loads(in_env(tf_python, code, native))
    first_id, first_text = (ROOT / job["dataset"]["dir"] / "eval.txt").read_text().splitlines()[0].split("\t")
    assert got["files"] == [f"val_{i}.tfrecords" for i in (1, 2, 3, 4)]
    assert got["labels"] == [int(c) for c in first_text]      # charset "0123456789": digit d -> index d
    assert got["path"] == first_id and got["bytes"] == 32 * 64 * 3
    char_dict = json.loads((ROOT / native / "char_dict" / "char_dict.json").read_text())
    ord_map = json.loads((ROOT / native / "char_dict" / "ord_map.json").read_text())
    assert char_dict == {f"{48 + d}_ord": str(d) for d in range(10)}
    assert ord_map["0_index"] == "48" and ord_map["57_ord"] == "9" and len(ord_map) == 20


def test_savedmodel_decodes_like_the_run(shadownet_run, tf_python):
    """serving_default's in-graph greedy decode gives the run's own predictions on the eval images."""
    job = json.loads((shadownet_run / "job.json").read_text())
    code = ("import sys, numpy as np, tensorflow as tf\n"
            "from backends.tensorflow import tfrecords\n"
            "from pathlib import Path\n"
            "data = tfrecords.batches(tfrecords.parsed_records(Path(sys.argv[1]), 'eval', 64), 64)\n"
            "images, _, _, ids = next(iter(data))\n"
            "serve = tf.saved_model.load(sys.argv[2]).signatures['serving_default']\n"
            "labels = serve(image=tf.cast(images, tf.float32) / 127.5 - 1)['labels'].numpy()\n"
            "for i, l in zip(ids.numpy(), labels): print(i.decode() + '\\t' + l.decode())")
    out = in_env(tf_python, code, f"{job['dataset']['native_dir']}/64x32",
                 shadownet_run / "exports" / "savedmodel" / "saved_model")
    expected = (shadownet_run / "predictions" / "eval.tsv").read_text(encoding="utf-8")
    assert out == expected


def test_shared_crnn_and_resume(tmp_path, tf_python):
    run_dir = check_small_crnn(SMOKE, tmp_path, "tensorflow", ["onnx"], blank=BLANK_LAST)
    extend_by_resume(run_dir, "tensorflow", eval_n=64)


def test_reference_sizes_match_the_formulas(tf_python):
    code = ("from backends.tensorflow.model import build\n"
            "import numpy as np\n"
            "for arch, classes, p in (('crnn', 11, dict(input_width=100,"
            " channels=[64, 128, 256, 256, 512, 512, 512],"
            " hidden=256)), ('shadownet', 37, dict(input_width=100,"
            " channels=[64, 128, 256, 256, 512, 512, 512],"
            " hidden=256, dropout=0.5))):\n"
            "    m = build(arch, classes, p)\n"
            "    print(sum(int(np.prod(v.shape)) for v in m.trainable_variables), m.output_shape[1])")
    lines = in_env(tf_python, code).splitlines()
    (crnn, crnn_steps), (shadow, shadow_steps) = [map(int, line.split()) for line in lines]
    assert crnn == CrnnParams().param_count(11) == 8_317_963 and crnn_steps == 26
    assert shadow == ShadowNetParams().param_count(37) and shadow_steps == 25  # upstream: 37 classes, T = 25


def test_partial_last_batch_policy_and_loss_reduction(tmp_path, tf_python):
    check_partial_batch_policy(SMOKE, tmp_path, "tensorflow", reduction="mean")


def test_chinese_lines_keep_ratio(tmp_path, tf_python):
    """40 Chinese classes in the competition's CSV layout, the crnn keeping the aspect ratio, data.cache
    none: savedmodel reloaded and ONNX run by the core, which rebuilds the zero-padded inputs exactly."""
    # 40 hanzi: the blank is class 40 inside the backend and its exports
    metrics = check_chinese_lines(tmp_path, "tensorflow", ["savedmodel", "onnx"], blank=40)
    native = next(x for x in metrics["exports"] if x["format"] == "savedmodel")["parity"]
    assert native["n"] == 16 and native["identical"] == 1.0, native
    # the keep-ratio TFRecords have their own native directory, apart from a stretched copy of that width
    (run_dir,) = (tmp_path / "runs").iterdir()
    native = Path(json.loads((run_dir / "job.json").read_text())["dataset"]["native_dir"])
    assert (native / "128x32-keepratio" / "char_dict" / "ord_map.json").is_file()


def test_native_predict_reads_what_the_run_read(shadownet_run):
    check_predict(shadownet_run)     # TensorFlow's logits, blank last, decoded by the core
