"""The shared crnn's weights between MindSpore and the neutral layout (``ocrbench.weights``).

MindSpore's layout (``model.CRNN``, MindSpore 2.10, checked against a numpy LSTM):

* ``nn.Conv2d`` weights are OIHW ``(out, in, k, k)`` with a bias: as the neutral layout;
* ``nn.BatchNorm2d``: ``gamma`` (scale), ``beta`` (shift), ``moving_mean``, ``moving_variance``; MindSpore
  updates the moving variance with the unbiased batch variance, as PyTorch does;
* ``nn.LSTM(bidirectional=True)``: ``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0`` and
  the same with ``_reverse`` for the backward direction, gate blocks in the order i, f, g, o (the
  neutral order: measured, no reordering);
* ``nn.Dense`` weights are ``(out, in)``: as the neutral layout;
* the crnn's **CTC blank is the last class** (WarpCTC's convention, kept inside this backend): the rows of
  the last Dense weight and its bias are rotated (``weights.blank_last`` / ``weights.blank_first``).
"""

from __future__ import annotations

import numpy as np
from mindspore import Tensor, nn

from ocrbench import weights

BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
            "running_var": "moving_variance"}
HEAD = ("rnn2.linear.weight", "rnn2.linear.bias")   # blank last here, first in the neutral layout


def name_map(net: nn.Cell) -> dict[str, str]:
    """Neutral name -> the network's parameter name (``parameters_and_names``)."""
    cells = list(net.cnn.cells())
    convs = [i for i, c in enumerate(cells) if isinstance(c, nn.Conv2d)]
    norms = [i for i, c in enumerate(cells) if isinstance(c, nn.BatchNorm2d)]
    return weights.sequential_name_map(convs, norms, BN_NAMES)


def to_neutral(net: nn.Cell) -> dict[str, np.ndarray]:
    params = dict(net.parameters_and_names())
    tensors = {neutral: params[native].asnumpy().astype(np.float32)
               for neutral, native in name_map(net).items()}
    for name in HEAD:
        tensors[name] = weights.blank_first(tensors[name])
    return tensors


def from_neutral(net: nn.Cell, tensors: dict[str, np.ndarray]) -> None:
    params = dict(net.parameters_and_names())
    for neutral, native in name_map(net).items():
        value = np.asarray(tensors[neutral], dtype=np.float32)
        if neutral in HEAD:
            value = weights.blank_last(value)
        target = params[native]
        if tuple(target.shape) != value.shape:
            raise ValueError(f"{neutral} {value.shape} does not fit {native} {tuple(target.shape)}")
        target.set_data(Tensor(np.ascontiguousarray(value)))
