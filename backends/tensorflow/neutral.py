"""The shared crnn's weights between the Keras model (``model.crnn``) and the neutral layout
(``ocrbench.weights``).

The Keras layout, by layer name:

* ``conv{i}`` (``layers.Conv2D``, NHWC data): ``kernel`` ``(kh, kw, in, out)`` (HWIO) -> neutral OIHW by
  ``transpose(3, 2, 0, 1)``; ``bias`` ``(out,)`` as is;
* ``bn{i}`` (``layers.BatchNormalization``): ``gamma``, ``beta``, ``moving_mean``, ``moving_variance`` ->
  ``weight``, ``bias``, ``running_mean``, ``running_var``;
* ``bilstm{j}`` (``layers.Bidirectional`` of an ``RNN(TwoBiasLSTMCell)``): ``forward_layer`` reads the
  sequence in order, ``backward_layer`` reversed (``go_backwards``, its outputs flipped back and concatenated
  after the forward ones, as PyTorch's). The cell's ``kernel`` is ``(in, 4H)`` and ``recurrent_kernel``
  ``(H, 4H)``, gate blocks along the last axis in the order i, f, g, o (the cell's own ``call`` splits them
  so) -> neutral ``weight_ih`` / ``weight_hh`` are their transposes; ``input_bias`` / ``recurrent_bias`` ->
  ``bias_ih`` / ``bias_hh``;
* ``embedding`` (rnn1's linear) and ``logits`` (rnn2's): ``layers.Dense`` ``kernel`` ``(in, out)`` -> the
  neutral ``(out, in)`` by a transpose. The TF backend's CTC blank is the **last** class (upstream's
  convention), the neutral one class 0: the ``logits`` layer's output columns (kernel axis 1, bias) are
  rotated with ``weights.blank_first`` / ``weights.blank_last``.
"""

from __future__ import annotations

import keras
import numpy as np

from ocrbench.crnn_layout import BATCH_NORM_AFTER, KERNELS
from ocrbench.weights import blank_first, blank_last

BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
            "running_var": "moving_variance"}
LSTM_NAMES = {"weight_ih": "kernel", "weight_hh": "recurrent_kernel", "bias_ih": "input_bias",
              "bias_hh": "recurrent_bias"}
HWIO_TO_OIHW, OIHW_TO_HWIO = (3, 2, 0, 1), (2, 3, 1, 0)


def variables(model: keras.Model) -> dict[str, tuple]:
    """Neutral name -> (the Keras variable, to_neutral(array), from_neutral(array))."""
    same = (lambda a: a, lambda a: a)
    transpose = (lambda a: a.T, lambda a: a.T)
    found: dict[str, tuple] = {}
    for index in range(len(KERNELS)):
        conv = model.get_layer(f"conv{index}")
        found[f"conv{index}.weight"] = (conv.kernel, lambda a: a.transpose(HWIO_TO_OIHW),
                                        lambda a: a.transpose(OIHW_TO_HWIO))
        found[f"conv{index}.bias"] = (conv.bias, *same)
    for index in BATCH_NORM_AFTER:
        norm = model.get_layer(f"bn{index}")
        for neutral, native in BN_NAMES.items():
            found[f"bn{index}.{neutral}"] = (getattr(norm, native), *same)
    for layer, dense_name in ((1, "embedding"), (2, "logits")):
        bidirectional = model.get_layer(f"bilstm{layer}")
        for direction, rnn in (("forward", bidirectional.forward_layer),
                               ("backward", bidirectional.backward_layer)):
            for neutral, native in LSTM_NAMES.items():
                found[f"rnn{layer}.{direction}.{neutral}"] = (getattr(rnn.cell, native),
                                                              *(transpose if "weight" in neutral else same))
        dense = model.get_layer(dense_name)
        if dense_name == "logits":   # blank last here, first in the neutral layout
            found[f"rnn{layer}.linear.weight"] = (dense.kernel, lambda a: blank_first(a.T),
                                                  lambda a: blank_last(a).T)
            found[f"rnn{layer}.linear.bias"] = (dense.bias, blank_first, blank_last)
        else:
            found[f"rnn{layer}.linear.weight"] = (dense.kernel, *transpose)
            found[f"rnn{layer}.linear.bias"] = (dense.bias, *same)
    return found


def to_neutral(model: keras.Model) -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(convert(np.asarray(variable.numpy())), dtype=np.float32)
            for name, (variable, convert, _) in variables(model).items()}


def from_neutral(model: keras.Model, tensors: dict[str, np.ndarray]) -> None:
    for name, (variable, _, convert) in variables(model).items():
        value = np.ascontiguousarray(convert(np.asarray(tensors[name], dtype=np.float32)))
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{name}: converted shape {value.shape}, the Keras variable {variable.path} has "
                             f"{tuple(variable.shape)}")
        variable.assign(value)
