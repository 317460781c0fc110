"""The shared crnn's weights between PyTorch and the neutral layout (``ocrbench.weights``).

PyTorch's layout *is* the neutral one (OIHW convs, LSTM gates i, f, g, o with ``bias_ih`` and ``bias_hh``,
linear ``(out, in)``, blank class 0): conversion is renaming only.
"""

from __future__ import annotations

import numpy as np
import torch

from backends.pytorch.model import CRNN
from ocrbench.weights import BN_TENSORS, sequential_name_map

BN_NAMES = {name: name for name in BN_TENSORS}


def name_map(model: CRNN) -> dict[str, str]:
    """Neutral name -> the model's state_dict key."""
    convs = [i for i, m in enumerate(model.cnn) if isinstance(m, torch.nn.Conv2d)]
    norms = [i for i, m in enumerate(model.cnn) if isinstance(m, torch.nn.BatchNorm2d)]
    return sequential_name_map(convs, norms, BN_NAMES, rnn="rnn.{index}")


def to_neutral(model: CRNN) -> dict[str, np.ndarray]:
    state = model.state_dict()
    return {neutral: state[native].detach().cpu().numpy().astype(np.float32)
            for neutral, native in name_map(model).items()}


def from_neutral(model: CRNN, tensors: dict[str, np.ndarray]) -> None:
    state = model.state_dict()
    with torch.no_grad():
        for neutral, native in name_map(model).items():
            state[native].copy_(torch.from_numpy(np.ascontiguousarray(tensors[neutral])))
