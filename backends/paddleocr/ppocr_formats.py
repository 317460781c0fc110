"""PaddleOCR's formats at the edges of the paddleocr backend: SimpleDataSet label lists + dict file,
the training config YAML that PaddleOCR's tools/train.py reads, ``.pdparams`` / ``.pdopt`` / ``.states``
checkpoints, and the inference model with ``inference.yml``.

Checkpoints are written as PaddleOCR writes them (pickled by ``paddle.save`` / ``pickle``) and read back
with a restricted unpickler that only rebuilds numpy arrays and plain containers, so loading a
checkpoint never executes code.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import paddle
import yaml

from ocrbench import atomic
from ocrbench.worker import Job, compare_logits

LABEL_LISTS = {"train": "train_list.txt", "eval": "eval_list.txt"}
DICT_FILE = "dict.txt"
HEIGHT = 32


# ------------------------------------------------------------------------------------------ native data
def native_ready(native: Path) -> bool:
    return all((native / name).is_file() for name in (*LABEL_LISTS.values(), DICT_FILE))


def write_native(dataset_dir: Path, charset: str, native: Path) -> None:
    """``train_list.txt`` / ``eval_list.txt`` (``path<TAB>text``, paths relative to the canonical dataset
    directory, which is SimpleDataSet's ``data_dir``) and ``dict.txt`` (one character per line: line k is
    class k + 1, class 0 the blank), written in a temporary directory and renamed into place."""
    tmp = native.with_name(native.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for split, name in LABEL_LISTS.items():
        shutil.copyfile(dataset_dir / f"{split}.txt", tmp / name)
    (tmp / DICT_FILE).write_text("".join(c + "\n" for c in charset), encoding="utf-8")
    shutil.rmtree(native, ignore_errors=True)
    os.replace(tmp, native)


# --------------------------------------------------------------------------------------- train config
LR_SCHEDULES = {"constant": "Const", "cosine": "Cosine", "multistep": "Piecewise", "poly": "Linear"}
OPTIMIZERS = {"adam": "Adam", "sgd": "Momentum", "rmsprop": "RMSProp", "adadelta": "Adadelta"}


def train_config(job: Job, native: Path) -> dict:
    """The run as a PaddleOCR training config (Global / Optimizer / Architecture / Loss / PostProcess /
    Metric / Train / Eval), for ``python tools/train.py -c config.yml`` in a PaddleOCR checkout."""
    train, params = job.train, job.model["params"]
    spec, schedule = train["optimizer"], train["lr_schedule"]
    lr = {"name": LR_SCHEDULES[schedule["name"]], "learning_rate": spec["lr"],
          "warmup_epoch": schedule["warmup_epochs"]}
    if schedule["name"] == "multistep":
        lr.update(decay_epochs=list(schedule["milestones"]),
                  values=[spec["lr"] * schedule["gamma"] ** i
                          for i in range(len(schedule["milestones"]) + 1)])
    elif schedule["name"] == "poly":
        lr.update(end_lr=schedule["end_lr"], power=schedule["power"])
    optimizer = {"name": OPTIMIZERS[spec["name"]], "lr": lr}
    if spec["name"] == "adam":
        optimizer.update(beta1=spec["betas"][0], beta2=spec["betas"][1], epsilon=spec["eps"])
    elif spec["name"] in ("sgd", "rmsprop"):
        optimizer["momentum"] = spec["momentum"]
    if spec["weight_decay"]:
        optimizer["regularizer"] = {"name": "L2", "factor": spec["weight_decay"]}
    if train["grad_clip"]:
        optimizer["clip_norm_global"] = train["grad_clip"]
    width = params["input_width"]

    def dataset(split: str, shuffle: bool, batch: int) -> dict:
        return {"dataset": {"name": "SimpleDataSet", "data_dir": str(job.dataset_dir),
                            "label_file_list": [str(native / LABEL_LISTS[split])],
                            "transforms": [{"DecodeImage": {"img_mode": "BGR", "channel_first": False}},
                                           {"CTCLabelEncode": None},
                                           {"RecResizeImg": {"image_shape": [3, HEIGHT, width]}},
                                           {"KeepKeys": {"keep_keys": ["image", "label", "length"]}}]},
                "loader": {"shuffle": shuffle, "batch_size_per_card": batch,
                           "drop_last": shuffle and bool(train["drop_last"]),
                           "num_workers": train["loader_workers"]}}

    return {
        "Global": {"use_gpu": job.gpus > 0, "epoch_num": train["epochs"], "log_smooth_window": 20,
                   "print_batch_step": train["log_every"], "save_model_dir": str(job.run_dir / "checkpoints"),
                   "save_epoch_step": 1, "eval_batch_step": [0, 10 ** 9], "cal_metric_during_train": False,
                   "pretrained_model": None, "checkpoints": None, "use_visualdl": False,
                   "character_dict_path": str(native / DICT_FILE), "character_type": "ch",
                   "max_text_length": job.dataset.max_label_len, "use_space_char": False,
                   "seed": train["seed"]},
        "Optimizer": optimizer,
        "Architecture": {"model_type": "rec", "algorithm": "CRNN", "Transform": None,
                         "Backbone": {"name": "MobileNetV3", "scale": params["scale"], "model_name": "small",
                                      "small_stride": list(params["small_stride"])},
                         "Neck": {"name": "SequenceEncoder", "encoder_type": "rnn",
                                  "hidden_size": params["hidden"]},
                         "Head": {"name": "CTCHead", "fc_decay": spec["weight_decay"]}},
        "Loss": {"name": "CTCLoss"},
        "PostProcess": {"name": "CTCLabelDecode"},
        "Metric": {"name": "RecMetric", "main_indicator": "acc"},
        "Train": dataset("train", True, train["batch_size"]),
        "Eval": dataset("eval", False, job.eval["batch_size"]),
    }


def write_train_config(job: Job, native: Path, path: Path) -> Path | None:
    """Write ``config.yml`` for ``crnn_mobilenetv3`` runs; the shared ``crnn`` has no PaddleOCR
    backbone equivalent, so no config is written for it (returns None)."""
    if job.model["arch"] != "crnn_mobilenetv3":
        return None
    return atomic.write_text(path, yaml.safe_dump(train_config(job, native), sort_keys=False,
                                                  allow_unicode=True))


# ---------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(directory: Path, prefix: str, model_state: dict, optimizer_state: dict,
                    states: dict) -> list[Path]:
    """``<prefix>.pdparams`` / ``.pdopt`` (paddle.save) and ``.states`` (pickle of plain values), each
    written to a temporary name and renamed."""
    paths = []
    for suffix, value in ((".pdparams", model_state), (".pdopt", optimizer_state)):
        path = directory / f"{prefix}{suffix}"
        paddle.save(value, str(path) + ".tmp")
        os.replace(str(path) + ".tmp", path)
        paths.append(path)
    path = directory / f"{prefix}.states"
    with open(str(path) + ".tmp", "wb") as handle:
        pickle.dump(states, handle, protocol=2)
    os.replace(str(path) + ".tmp", path)
    return paths + [path]


class _SafeUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays, numpy scalars and plain containers; refuses every other global."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
               ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a checkpoint")


def safe_load(path: Path):
    with open(path, "rb") as handle:
        return _SafeUnpickler(io.BytesIO(handle.read()), encoding="latin1").load()


def load_checkpoint(directory: Path, prefix: str) -> tuple[dict, dict, dict]:
    """The model state, optimizer state and ``.states`` dict of a checkpoint, without executing code."""
    files = [directory / f"{prefix}{s}" for s in (".pdparams", ".pdopt", ".states")]
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise RuntimeError(f"checkpoint {prefix} in {directory} lacks {missing}")
    return tuple(safe_load(p) for p in files)  # type: ignore[return-value]


# -------------------------------------------------------------------------------------------- export
def jit_save(model: paddle.nn.Layer, prefix: Path, channels: int) -> Path:
    """paddle.jit.save with an InputSpec of dynamic batch and width; returns the model file
    (``.json`` for Paddle 3's PIR programs, ``.pdmodel`` for the legacy format)."""
    spec = paddle.static.InputSpec([None, channels, HEIGHT, -1], "float32", name="x")
    paddle.jit.save(model, str(prefix), input_spec=[spec])
    for suffix in (".json", ".pdmodel"):
        if Path(str(prefix) + suffix).is_file():
            return Path(str(prefix) + suffix)
    raise RuntimeError(f"paddle.jit.save wrote no model file next to {prefix}")


# paddleocr 3.x (paddlex) loads a recognition model only under a registered model name, and all its CTC
# recognition models share one predictor (pre-processing, run, CTCLabelDecode from inference.yml).
PADDLEX_LOADER_NAME = "PP-OCRv4_mobile_rec"


def inference_yml(job: Job, arch: str, params: dict) -> dict:
    """Pre/post-processing and the dict of the exported model, in PaddleOCR's ``inference.yml`` layout.

    ``crnn_mobilenetv3``: exactly PaddleOCR's ops (DecodeImage BGR, RecResizeImg — which also normalises
    to [-1, 1] — and KeepKeys), under ``PADDLEX_LOADER_NAME`` so paddleocr's TextRecognition loads it.
    ``crnn``: PaddleOCR has no op for its gray, fixed-size resize; the ops are described for reference
    (with ``keep_ratio`` the normalised image is also zero-padded on the right to ``input_width``).
    """
    width = params["input_width"]
    if arch == "crnn_mobilenetv3":
        ops = [{"DecodeImage": {"img_mode": "BGR", "channel_first": False}},
               {"RecResizeImg": {"image_shape": [3, HEIGHT, width]}},
               {"KeepKeys": {"keep_keys": ["image"]}}]
        model_name = PADDLEX_LOADER_NAME
    else:
        keep_ratio = bool(params.get("keep_ratio", False))
        ops = [{"DecodeImage": {"img_mode": "GRAY", "channel_first": False}},
               {"ResizeImage": {"size": [width, HEIGHT], "keep_ratio": keep_ratio}},
               {"NormalizeImage": {"scale": 1 / 255.0, "mean": [0.5], "std": [0.5], "order": "hwc"}},
               {"KeepKeys": {"keep_keys": ["image"]}}]
        model_name = "ocrbench_crnn"
    return {"Global": {"model_name": model_name, "ocrbench_arch": arch},
            "PreProcess": {"transform_ops": ops},
            "PostProcess": {"name": "CTCLabelDecode", "character_dict": list(job.charset.chars)}}


def export_inference(model: paddle.nn.Layer, job: Job, arch: str, params: dict, directory: Path,
                     channels: int, probe: np.ndarray, expected: np.ndarray) -> list[Path]:
    """``inference.{json|pdmodel}`` + ``inference.pdiparams`` + ``inference.yml``, reloaded with
    paddle.jit.load and compared with the exported layer's output on ``probe``."""
    jit_save(model, directory / "inference", channels)
    (directory / "inference.yml").write_text(
        yaml.safe_dump(inference_yml(job, arch, params), sort_keys=False, allow_unicode=True),
        encoding="utf-8")
    reloaded = paddle.jit.load(str(directory / "inference"))
    reloaded.eval()
    compare_logits("Paddle inference model", expected, reloaded(paddle.to_tensor(probe)).numpy())
    return sorted(p for p in directory.iterdir() if p.name.startswith("inference"))
