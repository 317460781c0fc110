"""The shared crnn's weights between PyTorch and the neutral layout (``ocrbench.weights``).

PyTorch's layout *is* the neutral one (OIHW convs, LSTM gates i, f, g, o with ``bias_ih`` and ``bias_hh``,
linear ``(out, in)``, blank class 0): conversion is renaming only.
"""

from __future__ import annotations

import numpy as np
import torch

from backends.pytorch.model import CRNN
from ocrbench.crnn_layout import BATCH_NORM_AFTER

LSTM_NAMES = {"weight_ih": "weight_ih_l0", "weight_hh": "weight_hh_l0", "bias_ih": "bias_ih_l0",
              "bias_hh": "bias_hh_l0"}
BN_NAMES = {"weight": "weight", "bias": "bias", "running_mean": "running_mean", "running_var": "running_var"}


def name_map(model: CRNN) -> dict[str, str]:
    """Neutral name -> the model's state_dict key."""
    names: dict[str, str] = {}
    convs = [i for i, m in enumerate(model.cnn) if isinstance(m, torch.nn.Conv2d)]
    norms = [i for i, m in enumerate(model.cnn) if isinstance(m, torch.nn.BatchNorm2d)]
    for index, position in enumerate(convs):
        names[f"conv{index}.weight"] = f"cnn.{position}.weight"
        names[f"conv{index}.bias"] = f"cnn.{position}.bias"
    for index, position in zip(BATCH_NORM_AFTER, norms):
        for neutral, native in BN_NAMES.items():
            names[f"bn{index}.{neutral}"] = f"cnn.{position}.{native}"
    for layer in (1, 2):
        for direction, suffix in (("forward", ""), ("backward", "_reverse")):
            for neutral, native in LSTM_NAMES.items():
                names[f"rnn{layer}.{direction}.{neutral}"] = f"rnn.{layer - 1}.rnn.{native}{suffix}"
        names[f"rnn{layer}.linear.weight"] = f"rnn.{layer - 1}.embedding.weight"
        names[f"rnn{layer}.linear.bias"] = f"rnn.{layer - 1}.embedding.bias"
    return names


def to_neutral(model: CRNN) -> dict[str, np.ndarray]:
    state = model.state_dict()
    return {neutral: state[native].detach().cpu().numpy().astype(np.float32)
            for neutral, native in name_map(model).items()}


def from_neutral(model: CRNN, tensors: dict[str, np.ndarray]) -> None:
    state = model.state_dict()
    with torch.no_grad():
        for neutral, native in name_map(model).items():
            state[native].copy_(torch.from_numpy(np.ascontiguousarray(tensors[neutral])))
