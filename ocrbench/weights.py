"""Framework-neutral weights of the shared ``crnn`` (docs/architectures.md, "Neutral weights").

One safetensors file (no pickle: a header of names, dtypes and shapes, then raw little-endian bytes) holds
every tensor of the network under a **canonical name and layout**, the same whichever framework wrote it:

* ``conv{i}.weight`` ``(out, in, k, k)`` (OIHW) and ``conv{i}.bias`` ``(out,)``, i = 0..6;
* ``bn{i}.weight`` (scale γ), ``bn{i}.bias`` (shift β), ``bn{i}.running_mean``, ``bn{i}.running_var``
  ``(c_i,)`` for the convs followed by batch norm (i = 2, 4, 6);
* ``rnn{j}.{forward,backward}.weight_ih`` ``(4H, in)``, ``.weight_hh`` ``(4H, H)``, ``.bias_ih`` and
  ``.bias_hh`` ``(4H,)`` for the two bidirectional LSTM layers (j = 1, 2), the four gate blocks of H rows
  in the order **input, forget, cell (g), output**; the pre-activation of the gates is
  ``weight_ih · x + bias_ih + weight_hh · h + bias_hh``;
* ``rnn{j}.linear.weight`` ``(out, in)`` and ``rnn{j}.linear.bias`` ``(out,)``; the last one's rows are the
  classes with **row 0 the CTC blank** and row k + 1 charset character k.

Everything is float32. The header's metadata (strings) says what the file is: ``format``
(:data:`FORMAT`), ``arch``, ``params`` (JSON: channels, hidden, input_width), ``classes``, ``charset``
and ``source`` (who wrote it). A backend converts its own layout (gate order, NHWC kernels, in×out
matrices, a blank-last head) to and from this one in ``backends/<name>/neutral.py``.

:func:`shared_init` draws a network's initial weights from a seed with one stated scheme, in numpy, so
that every framework can start from the same point (``model.init: shared``).

Standard library, numpy and safetensors (imported by workers too).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ocrbench.crnn_layout import BATCH_NORM_AFTER, KERNELS
from ocrbench.errors import OcrbenchError

FORMAT = "ocrbench.weights/1"
FILE_NAME = "model.safetensors"   # exports/weights/model.safetensors in a run directory
BN_TENSORS = ("weight", "bias", "running_mean", "running_var")
DIRECTIONS = ("forward", "backward")


class WeightsError(OcrbenchError):
    """A neutral weights file that cannot be used: the message names the file and what is wrong."""


@dataclass(frozen=True)
class CrnnShape:
    """What fixes the tensor shapes of a shared crnn: the conv channels, LSTM hidden units, classes."""

    channels: tuple[int, ...]
    hidden: int
    classes: int

    @classmethod
    def from_params(cls, params: dict, classes: int) -> "CrnnShape":
        return cls(tuple(params["channels"]), int(params["hidden"]), int(classes))

    def layout(self) -> dict[str, tuple[int, ...]]:
        """Canonical name -> shape, in the file's (and :func:`shared_init`'s drawing) order."""
        shapes: dict[str, tuple[int, ...]] = {}
        previous = 1
        for index, (out, kernel) in enumerate(zip(self.channels, KERNELS)):
            shapes[f"conv{index}.weight"] = (out, previous, kernel, kernel)
            shapes[f"conv{index}.bias"] = (out,)
            if index in BATCH_NORM_AFTER:
                for name in BN_TENSORS:
                    shapes[f"bn{index}.{name}"] = (out,)
            previous = out
        h = self.hidden
        for layer, (inputs, outputs) in enumerate(((previous, h), (h, self.classes)), start=1):
            for direction in DIRECTIONS:
                prefix = f"rnn{layer}.{direction}"
                shapes[f"{prefix}.weight_ih"] = (4 * h, inputs)
                shapes[f"{prefix}.weight_hh"] = (4 * h, h)
                shapes[f"{prefix}.bias_ih"] = (4 * h,)
                shapes[f"{prefix}.bias_hh"] = (4 * h,)
            shapes[f"rnn{layer}.linear.weight"] = (outputs, 2 * h)
            shapes[f"rnn{layer}.linear.bias"] = (outputs,)
        return shapes

    def trainable(self) -> int:
        """Trainable parameters (every tensor but the BN running statistics): equals
        ``CrnnParams.param_count``."""
        return sum(math.prod(s) for name, s in self.layout().items() if "running_" not in name)


@dataclass(frozen=True)
class NeutralWeights:
    """The tensors of a neutral weights file and its metadata (strings)."""

    tensors: dict[str, np.ndarray]
    meta: dict[str, str]

    @property
    def classes(self) -> int:
        return int(self.meta["classes"])

    @property
    def charset(self) -> str:
        return self.meta["charset"]


# ------------------------------------------------------------------------------------ the file
def metadata(params: dict, charset: str, source: str, arch: str = "crnn") -> dict[str, str]:
    """The header metadata of a file for a crnn of ``params`` (its ``model.params``) over ``charset``."""
    shape = {key: params[key] for key in ("channels", "hidden", "input_width") if key in params}
    return {"format": FORMAT, "arch": arch, "params": json.dumps(shape, sort_keys=True),
            "classes": str(len(charset) + 1), "charset": charset, "source": source}


def write(path: Path, tensors: dict[str, np.ndarray], meta: dict[str, str]) -> Path:
    """Write a neutral weights file atomically (a temporary file in the same directory, then rename)."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(arrays, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read(path: Path) -> NeutralWeights:
    """Read a neutral weights file; anything that is not one is a :class:`WeightsError` naming it."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file",
                           hint="give a model.safetensors written by `ocrbench export RUN --format weights` "
                                "or a run directory that has one")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = dict(handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a safetensors file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: metadata format {meta.get('format')!r}; ocrbench reads {FORMAT}",
                           hint="write neutral weights with `ocrbench export RUN --format weights`")
    missing = [key for key in ("arch", "params", "classes", "charset") if key not in meta]
    if missing:
        raise WeightsError(f"{path}: metadata lacks {', '.join(missing)}")
    return NeutralWeights(tensors, meta)


def check(weights: NeutralWeights, params: dict, charset: str, origin: str, arch: str = "crnn") -> None:
    """Refuse weights that do not fit a ``arch`` network of ``params`` over ``charset``: another
    architecture, another charset (the output classes would mean other characters), missing or extra
    tensors, another shape or dtype. ``origin`` names the file in the message."""
    if weights.meta["arch"] != arch:
        raise WeightsError(f"{origin}: the weights are of architecture {weights.meta['arch']!r}, the "
                           f"recipe's model.arch is {arch!r}")
    if weights.charset != charset:
        raise WeightsError(f"{origin}: the weights were trained on the charset {_preview(weights.charset)}, "
                           f"this dataset's is {_preview(charset)}",
                           hint="train on data with the same charset (dictionary); a new charset needs a "
                                "new output layer, which model.init does not make")
    expected = CrnnShape.from_params(params, len(charset) + 1).layout()
    have = weights.tensors
    problems = [f"missing {name}" for name in expected if name not in have]
    problems += [f"unexpected {name}" for name in have if name not in expected]
    problems += [f"{name}: shape {tuple(have[name].shape)}, the recipe's network needs {shape}"
                 for name, shape in expected.items() if name in have and tuple(have[name].shape) != shape]
    problems += [f"{name}: dtype {have[name].dtype}, not float32" for name in expected
                 if name in have and have[name].dtype != np.float32]
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise WeightsError(f"{origin}: the weights do not fit model.params {_shape_text(params)}: {shown}",
                           hint=f"the file was written for {weights.meta['params']}; use the same "
                                "model.params as the run that wrote it")


def _preview(charset: str, limit: int = 24) -> str:
    text = charset if len(charset) <= limit else charset[:limit] + "…"
    return f"{text!r} ({len(charset)} characters)"


def _shape_text(params: dict) -> str:
    return json.dumps({key: params[key] for key in ("channels", "hidden") if key in params})


# ------------------------------------------------------------------------------ shared initialisation
INIT_SCHEME = ("every conv, LSTM and linear weight and bias ~ U(-1/sqrt(fan_in), +1/sqrt(fan_in)) with "
               "fan_in = in_channels * k * k (conv), in_features (linear), H (LSTM: PyTorch's default "
               "scheme); BN scale 1, shift 0, running mean 0, running variance 1; drawn in file order "
               "from numpy's PCG64 seeded with train.seed")


def shared_init(shape: CrnnShape, seed: int) -> dict[str, np.ndarray]:
    """Initial weights for the crnn of ``shape`` from ``seed`` (:data:`INIT_SCHEME`), float32."""
    rng = np.random.Generator(np.random.PCG64(seed))
    tensors = {}
    for name, dims in shape.layout().items():
        if name.startswith("bn"):
            fill = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}
            tensors[name] = np.full(dims, fill[name.rsplit(".", 1)[1]], dtype=np.float32)
            continue
        bound = 1.0 / math.sqrt(_fan_in(name, shape))
        tensors[name] = rng.uniform(-bound, bound, size=dims).astype(np.float32)
    return tensors


def _fan_in(name: str, shape: CrnnShape) -> int:
    """The fan-in of the layer a conv, LSTM or linear tensor belongs to (its bias too)."""
    layer = name.split(".")[0]
    if layer.startswith("conv"):
        index = int(layer.removeprefix("conv"))
        inputs = 1 if index == 0 else shape.channels[index - 1]
        return inputs * KERNELS[index] ** 2
    if ".linear." in name:
        return 2 * shape.hidden
    return shape.hidden   # LSTM: PyTorch draws every LSTM tensor from U(+-1/sqrt(H))


# --------------------------------------------------------------------------- converter helpers
def blank_last(array: np.ndarray, axis: int = 0) -> np.ndarray:
    """Canonical class order (blank first) -> a framework's blank-last order, along ``axis``."""
    return np.roll(array, -1, axis=axis)


def blank_first(array: np.ndarray, axis: int = 0) -> np.ndarray:
    """A framework's blank-last class order -> the canonical one (blank first), along ``axis``."""
    return np.roll(array, 1, axis=axis)


LSTM_PER_LAYER = {"weight_ih": "weight_ih_l0", "weight_hh": "weight_hh_l0", "bias_ih": "bias_ih_l0",
                  "bias_hh": "bias_hh_l0"}   # PyTorch's one-layer nn.LSTM names, Paddle and MindSpore alike


def sequential_name_map(convs: list[int], norms: list[int], bn_names: dict[str, str],
                        rnn: str = "rnn{layer}", reverse: str = "_reverse") -> dict[str, str]:
    """Neutral name -> native parameter name for a crnn built as the backends build it: a sequential
    ``cnn`` whose convolutions and batch norms sit at positions ``convs`` and ``norms``
    (``cnn.<position>.weight``), then two BiLSTM blocks named by ``rnn`` (``{layer}`` 1-based,
    ``{index}`` 0-based) each with ``.rnn`` (an LSTM named as PyTorch's: ``weight_ih_l0`` and
    ``weight_ih_l0<reverse>`` for the backward direction) and ``.embedding`` (the linear). ``bn_names``:
    the framework's names of BN_TENSORS."""
    names: dict[str, str] = {}
    for index, position in enumerate(convs):
        names[f"conv{index}.weight"] = f"cnn.{position}.weight"
        names[f"conv{index}.bias"] = f"cnn.{position}.bias"
    for index, position in zip(BATCH_NORM_AFTER, norms):
        for neutral, native in bn_names.items():
            names[f"bn{index}.{neutral}"] = f"cnn.{position}.{native}"
    for layer in (1, 2):
        block = rnn.format(layer=layer, index=layer - 1)
        for direction, suffix in (("forward", ""), ("backward", reverse)):
            for neutral, native in LSTM_PER_LAYER.items():
                names[f"rnn{layer}.{direction}.{neutral}"] = f"{block}.rnn.{native}{suffix}"
        names[f"rnn{layer}.linear.weight"] = f"{block}.embedding.weight"
        names[f"rnn{layer}.linear.bias"] = f"{block}.embedding.bias"
    return names


# ----------------------------------------------------------------------- model.init, in the core
def resolve_source(value: str, base_dir: Path) -> Path:
    """A ``model.init: {from: ...}`` value -> the weights file: a file as given, or a run directory's
    ``exports/weights/model.safetensors``; relative to ``base_dir``."""
    path = (Path(base_dir) / Path(value).expanduser()).resolve()
    if path.is_dir():
        exported = path / "exports" / "weights" / FILE_NAME
        if not exported.is_file():
            raise WeightsError(f"model.init.from {value!r}: the run directory {path} has no neutral weights "
                               f"({exported.relative_to(path)})",
                               hint=f"write them with `ocrbench export {path} --format weights`")
        return exported
    return path


def init_file(init, params: dict, charset: str, seed: int, base_dir: Path, run_dir: Path,
              arch: str = "crnn") -> Path | None:
    """The neutral weights a run starts from (``model.init``), checked against the recipe's network and the
    dataset's charset; None for ``framework``. ``shared`` draws them (:func:`shared_init` from ``seed``)
    into ``run_dir/init/model.safetensors``; ``{from: PATH}`` points at an existing file or run."""
    if init == "framework":
        return None
    if init == "shared":
        shape = CrnnShape.from_params(params, len(charset) + 1)
        path = Path(run_dir) / "init" / FILE_NAME
        return write(path, shared_init(shape, seed),
                     metadata(params, charset, source=f"ocrbench shared init, seed {seed}", arch=arch))
    value = init["from"] if isinstance(init, dict) else init.from_
    path = resolve_source(value, base_dir)
    check(read(path), params, charset, f"model.init.from {path}", arch)
    return path
