"""The shared crnn's weights between MXNet Gluon and the neutral layout (``ocrbench.weights``).

MXNet's layout is the neutral one, so conversion is renaming only:

* ``nn.Conv2D`` ``weight`` is ``(out, in, kh, kw)`` (OIHW, NCHW data) with a ``bias``;
* ``nn.BatchNorm`` holds ``gamma`` / ``beta`` (trainable) and ``running_mean`` / ``running_var`` (aux
  states, ``grad_req='null'``);
* ``rnn.LSTM(bidirectional=True)`` names its tensors ``l0_*`` (forward direction) and ``r0_*`` (backward:
  it reads the sequence reversed, output concatenated after the forward one), each ``i2h_weight``
  ``(4H, in)``, ``h2h_weight`` ``(4H, H)``, ``i2h_bias`` and ``h2h_bias`` ``(4H,)``, summed into the gate
  pre-activation like ``bias_ih`` + ``bias_hh``. The gate blocks are in the order **i, f, g, o** —
  measured, not assumed: of the 24 orders only i, f, g, o makes a numpy LSTM reproduce ``rnn.LSTM``'s output
  (max |Δ| 3e-8, mxnet 1.9.1; the fused RNN operator's cuDNN order);
* ``nn.Dense`` ``weight`` is ``(out, in)``; the crnn's CTC blank is class 0 (``ctc_loss(blank_label=
  'first')``), so the last dense layer's rows are already in the canonical class order.
"""

from __future__ import annotations

import numpy as np
from mxnet import nd
from mxnet.gluon import nn

from backends.mxnet.model import CRNN
from ocrbench.crnn_layout import BATCH_NORM_AFTER

BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean", "running_var": "running_var"}
LSTM_NAMES = {"weight_ih": "i2h_weight", "weight_hh": "h2h_weight", "bias_ih": "i2h_bias",
              "bias_hh": "h2h_bias"}
DIRECTIONS = {"forward": "l0", "backward": "r0"}


def _own(block) -> dict:
    """A block's parameters by their names without the block's prefix (``l0_i2h_weight``, ...)."""
    return {name.removeprefix(block.prefix): param for name, param in block.collect_params().items()}


def param_map(model: CRNN) -> dict:
    """Neutral name -> the model's gluon Parameter."""
    params = {}
    convs = [layer for layer in model.cnn if isinstance(layer, nn.Conv2D)]
    norms = [layer for layer in model.cnn if isinstance(layer, nn.BatchNorm)]
    for index, conv in enumerate(convs):
        params[f"conv{index}.weight"], params[f"conv{index}.bias"] = conv.weight, conv.bias
    for index, norm in zip(BATCH_NORM_AFTER, norms, strict=True):
        for neutral, native in BN_NAMES.items():
            params[f"bn{index}.{neutral}"] = getattr(norm, native)
    for layer, block in ((1, model.rnn1), (2, model.rnn2)):
        lstm = _own(block.rnn)
        for direction, side in DIRECTIONS.items():
            for neutral, native in LSTM_NAMES.items():
                params[f"rnn{layer}.{direction}.{neutral}"] = lstm[f"{side}_{native}"]
        params[f"rnn{layer}.linear.weight"] = block.embedding.weight
        params[f"rnn{layer}.linear.bias"] = block.embedding.bias
    return params


def to_neutral(model: CRNN, ctx) -> dict[str, np.ndarray]:
    """The model's weights on context ``ctx`` in the neutral layout."""
    return {name: param.data(ctx).asnumpy().astype(np.float32) for name, param in param_map(model).items()}


def from_neutral(model: CRNN, tensors: dict[str, np.ndarray]) -> None:
    """Set every tensor (on every context the model lives on) from the neutral layout."""
    for name, param in param_map(model).items():
        value = np.ascontiguousarray(tensors[name], dtype=np.float32)
        if value.shape != param.shape:
            raise ValueError(f"{name}: neutral shape {value.shape}, the MXNet parameter {param.name} has "
                             f"{param.shape}")
        param.set_data(nd.array(value, dtype="float32"))
