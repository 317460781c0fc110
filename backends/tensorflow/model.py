"""Keras models of the TensorFlow backend.

Both take NHWC float32 images (batch, 32, W, channels) and return logits (batch, T, classes),
**batch-major**; the **CTC blank is the last class** (upstream CRNN_Tensorflow's convention, kept inside
this backend; the worker converts best paths to ocrbench's blank-0 convention at the boundary).

* ``shadownet``: BGR input (3 channels) scaled to [-1, 1]; T = W / 4.
* ``crnn`` (docs/architectures.md): gray input (1 channel) scaled to [-1, 1]; T = W / 4 + 1.

Recurrent layers are unrolled (T is fixed by the input width), which keeps the graph free of while loops
for the TFLite and ONNX exports.
"""

from __future__ import annotations

import keras
from keras import layers

from backends.tensorflow import layout as shadow
from ocrbench.crnn_layout import BATCH_NORM_AFTER, KERNELS, PADDINGS, POOL_2X2_AFTER, POOL_TALL_AFTER

HEIGHT = 32


def shadownet(classes: int, input_width: int, channels: list[int], hidden: int, dropout: float,
              bn_momentum: float = 0.999) -> keras.Model:
    """ShadowNet (CRNN_Tensorflow ``crnn_net.py``): convs 3x3 SAME (conv7: 2x2, stride (2, 1)), each
    followed by BatchNorm (momentum 0.999 upstream, eps 1e-3) and ReLU; pools 2x2 after conv1/conv2 and (2, 1)
    after conv4/conv6; 2 stacked BiLSTM layers (forget bias 1); dropout; bias-free projection."""
    images = keras.Input((HEIGHT, input_width, 3), name="image")
    x = images
    for index, (out, kernel, bias) in enumerate(zip(channels, shadow.KERNELS, shadow.CONV_BIAS)):
        strides = (2, 1) if index == 6 else (1, 1)
        x = layers.Conv2D(out, kernel, strides=strides, padding="same", use_bias=bias,
                          name=f"conv{index + 1}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-3, name=f"bn{index + 1}")(x)
        x = layers.ReLU()(x)
        if index in shadow.POOL_2X2_AFTER:
            x = layers.MaxPooling2D(2, 2, name=f"pool{index + 1}")(x)
        elif index in shadow.POOL_TALL_AFTER:
            x = layers.MaxPooling2D((2, 1), (2, 1), name=f"pool{index + 1}")(x)
    x = layers.Reshape((input_width // 4, channels[-1]), name="to_sequence")(x)   # (B, 1, T, C) -> (B, T, C)
    for index in range(2):
        lstm = layers.LSTM(hidden, return_sequences=True, unit_forget_bias=True, unroll=True)
        x = layers.Bidirectional(lstm, name=f"bilstm{index + 1}")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    init = keras.initializers.TruncatedNormal(stddev=0.02)
    logits = layers.Dense(classes, use_bias=False, kernel_initializer=init, name="logits")(x)
    return keras.Model(images, logits, name="shadownet")


@keras.saving.register_keras_serializable(package="ocrbench")
class TwoBiasLSTMCell(layers.Layer):
    """An LSTM cell with separate input and recurrent bias vectors (as cuDNN / PyTorch), so the shared
    ``crnn`` has the same parameter count in every framework. Gate order i, f, g, o."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = [units, units]
        self.output_size = units

    def build(self, input_shape):
        four = 4 * self.units
        self.kernel = self.add_weight(shape=(input_shape[-1], four), initializer="glorot_uniform",
                                      name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, four), initializer="orthogonal",
                                                name="recurrent_kernel")
        self.input_bias = self.add_weight(shape=(four,), initializer="zeros", name="input_bias")
        self.recurrent_bias = self.add_weight(shape=(four,), initializer="zeros", name="recurrent_bias")

    def call(self, inputs, states):
        h, c = states
        z = (keras.ops.matmul(inputs, self.kernel) + self.input_bias
             + keras.ops.matmul(h, self.recurrent_kernel) + self.recurrent_bias)
        i, f, g, o = keras.ops.split(z, 4, axis=-1)
        c = keras.ops.sigmoid(f) * c + keras.ops.sigmoid(i) * keras.ops.tanh(g)
        h = keras.ops.sigmoid(o) * keras.ops.tanh(c)
        return h, [h, c]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="ocrbench")
class UnbiasedBatchNorm(layers.BatchNormalization):
    """Keras BatchNormalization whose moving variance folds in the *unbiased* batch variance
    (var * n / (n - 1) over the n = batch x H x W values of a channel), as PyTorch's BatchNorm2d does; Keras
    folds the biased one. Normalisation itself uses the biased batch variance, as both do. The variables,
    their names and inference are Keras's own (``call(training=False)`` is the parent's)."""

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None or self.renorm:
            return super().call(inputs, training=training, mask=mask)
        x = keras.ops.cast(inputs, "float32")
        mean, variance = keras.ops.moments(x, axes=self._reduction_axes)
        shape = keras.ops.shape(x)
        count = keras.ops.cast(keras.ops.prod([shape[axis] for axis in self._reduction_axes]), "float32")
        unbiased = variance * count / keras.ops.maximum(count - 1.0, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + unbiased * (1.0 - momentum))
        outputs = keras.ops.batch_normalization(x, mean, variance, axis=self.axis, offset=self.beta,
                                                scale=self.gamma, epsilon=self.epsilon)
        return keras.ops.cast(outputs, self.compute_dtype)


def crnn(classes: int, input_width: int, channels: list[int], hidden: int) -> keras.Model:
    """The shared CRNN (docs/architectures.md) in Keras; same layers and parameter count as PyTorch.
    PyTorch's max-pool padding (0, 1) becomes zero padding: after ReLU every value is >= 0, so a zero
    pad gives the same maximum as PyTorch's -inf pad. BatchNorm has PyTorch's momentum (0.9 here = 0.1
    there), epsilon and unbiased running variance (:class:`UnbiasedBatchNorm`)."""
    images = keras.Input((HEIGHT, input_width, 1), name="image")
    x = images
    for index, (out, kernel, padding) in enumerate(zip(channels, KERNELS, PADDINGS)):
        if padding:
            x = layers.ZeroPadding2D(padding)(x)
        x = layers.Conv2D(out, kernel, name=f"conv{index}")(x)
        if index in BATCH_NORM_AFTER:
            x = UnbiasedBatchNorm(momentum=0.9, epsilon=1e-5, name=f"bn{index}")(x)
        x = layers.ReLU()(x)
        if index in POOL_2X2_AFTER:
            x = layers.MaxPooling2D(2, 2)(x)
        elif index in POOL_TALL_AFTER:
            x = layers.ZeroPadding2D(((0, 0), (1, 1)))(x)
            x = layers.MaxPooling2D((2, 2), (2, 1))(x)
    steps = input_width // 4 + 1
    x = layers.Reshape((steps, channels[-1]), name="to_sequence")(x)
    for index, outputs in enumerate((hidden, classes)):
        rnn = layers.RNN(TwoBiasLSTMCell(hidden), return_sequences=True, unroll=True)
        x = layers.Bidirectional(rnn, name=f"bilstm{index + 1}")(x)
        x = layers.Dense(outputs, name="embedding" if index == 0 else "logits")(x)
    return keras.Model(images, x, name="crnn")


def build(arch: str, classes: int, params: dict) -> keras.Model:
    if arch == "shadownet":
        return shadownet(classes, **params)
    if arch == "crnn":
        return crnn(classes, **params)
    raise ValueError(f"unknown architecture {arch!r}")


def input_channels(arch: str) -> int:
    """3 (BGR) for shadownet, 1 (gray) for crnn."""
    return 3 if arch == "shadownet" else 1
