"""The shared crnn's weights between Paddle and the neutral layout (``ocrbench.weights``).

Paddle's layout (``model.CRNN``, paddle 3.3, checked against a numpy LSTM):

* ``nn.Conv2D`` weights are OIHW ``(out, in, k, k)`` with a bias: as the neutral layout;
* ``nn.BatchNorm2D``: ``weight`` (scale), ``bias`` (shift), ``_mean`` and ``_variance`` (the running
  statistics, parameters with ``stop_gradient``);
* ``nn.LSTM(direction="bidirect")``: ``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0`` and
  the same with ``_reverse`` for the backward direction (the cells' ``0.cell_fw.*`` / ``0.cell_bw.*``
  entries of the state dict share their memory), gate blocks in the order i, f, g, o (the neutral order:
  measured, no reordering);
* ``nn.Linear`` weights are **(in, out)**: transposed;
* class 0 is the CTC blank (PaddleOCR's convention = the neutral one).
"""

from __future__ import annotations

import numpy as np
from paddle import nn

from ocrbench.weights import sequential_name_map

BN_NAMES = {"weight": "weight", "bias": "bias", "running_mean": "_mean", "running_var": "_variance"}


def name_map(model: nn.Layer) -> dict[str, str]:
    """Neutral name -> the model's parameter name (``named_parameters``)."""
    layers = list(model.cnn)
    convs = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Conv2D)]
    norms = [i for i, layer in enumerate(layers) if isinstance(layer, nn.BatchNorm2D)]
    return sequential_name_map(convs, norms, BN_NAMES)


def _transposed(neutral: str) -> bool:
    return neutral.endswith(".linear.weight")


def to_neutral(model: nn.Layer) -> dict[str, np.ndarray]:
    params = dict(model.named_parameters())
    tensors = {}
    for neutral, native in name_map(model).items():
        value = params[native].numpy().astype(np.float32)
        tensors[neutral] = np.ascontiguousarray(value.T) if _transposed(neutral) else value
    return tensors


def from_neutral(model: nn.Layer, tensors: dict[str, np.ndarray]) -> None:
    params = dict(model.named_parameters())
    for neutral, native in name_map(model).items():
        value = np.asarray(tensors[neutral], dtype=np.float32)
        if _transposed(neutral):
            value = value.T
        target = params[native]
        if tuple(target.shape) != value.shape:
            raise ValueError(f"{neutral} {value.shape} does not fit {native} {tuple(target.shape)}")
        target.set_value(np.ascontiguousarray(value))
