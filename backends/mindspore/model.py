"""MindSpore cells of the MindSpore backend.

Both take NCHW float32 images and return logits (T, batch, classes), **time-major**; the **CTC blank is
the last class** (WarpCTC's convention, kept inside this backend; the worker converts best paths to
ocrbench's blank-0 convention at the boundary).

* ``warpctc``: BGR (B, 3, H, W) normalised with WarpCTC's mean/std; T = W.
* ``crnn`` (docs/architectures.md): gray (B, 1, 32, W) in [-1, 1]; T = W / 4 + 1.
"""

from __future__ import annotations

from mindspore import nn, ops

from ocrbench.crnn_layout import BATCH_NORM_AFTER, KERNELS, PADDINGS, POOL_2X2_AFTER, POOL_TALL_AFTER

# WarpCTC's per-channel normalisation of x / 255 (BGR order), src/dataset.py
WARPCTC_MEAN = (0.9010, 0.9049, 0.9025)
WARPCTC_STD = (0.1521, 0.1347, 0.1458)


class WarpCTC(nn.Cell):
    """model_zoo WarpCTC: (B, 3, H, W) -> transpose (3, 0, 2, 1) -> (W, B, H * 3): every image column
    (H rows x 3 channels, channel fastest) is one time step of a unidirectional ``layers``-deep
    ``nn.LSTM(3H, hidden)``; a Dense layer maps every step to the classes."""

    def __init__(self, classes: int, input_height: int, input_width: int, hidden: int, layers: int):
        super().__init__()
        self.features = 3 * input_height
        self.steps = input_width
        self.lstm = nn.LSTM(self.features, hidden, num_layers=layers)
        self.fc = nn.Dense(hidden, classes)
        self.classes = classes

    def construct(self, images):
        columns = ops.transpose(images, (3, 0, 2, 1))                     # (W, B, H, 3)
        sequence = ops.reshape(columns, (self.steps, -1, self.features))  # (T, B, 3H)
        outputs, _ = self.lstm(sequence)
        steps, batch, hidden = outputs.shape
        logits = self.fc(ops.reshape(outputs, (steps * batch, hidden)))
        return ops.reshape(logits, (steps, batch, self.classes))


class BidirectionalLSTM(nn.Cell):
    """One bidirectional nn.LSTM layer (two bias vectors per direction) and a Dense projection."""

    def __init__(self, inputs: int, hidden: int, outputs: int):
        super().__init__()
        self.rnn = nn.LSTM(inputs, hidden, bidirectional=True)
        self.embedding = nn.Dense(2 * hidden, outputs)
        self.outputs = outputs

    def construct(self, sequence):
        recurrent, _ = self.rnn(sequence)                                 # (T, B, 2 * hidden)
        steps, batch, width = recurrent.shape
        projected = self.embedding(ops.reshape(recurrent, (steps * batch, width)))
        return ops.reshape(projected, (steps, batch, self.outputs))


class ZeroPadWidth(nn.Cell):
    """One zero column on each side (NCHW), written as a concat: MindSpore's ONNX exporter supports
    neither ``nn.ZeroPad2d`` (PadV3) nor a padded MaxPool2d (MaxPool3DWithArgmax) — measured."""

    def construct(self, x):
        zeros = ops.zeros_like(x[:, :, :, :1])
        return ops.concat((zeros, x, zeros), 3)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and checkpoint names; stride 1) that can compute as im2col + MatMul.

    Why: MindSpore 2.10's CPU Conv2D runs oneDNN on plain NCHW memory, where oneDNN picks its slow
    ``jit_uni_ncsp`` implementation (ONEDNN_VERBOSE): measured 0.9 s for one 16 -> 32 3x3 convolution at
    batch 32 on 32 x 100 (forward), so the shared crnn trained at 11 samples/s. ``ops.unfold`` +
    ``ops.matmul`` computes the same convolution in 22 ms. ``im2col`` is switched on for CPU training and
    evaluation (``use_im2col``); exports switch it off, so MINDIR and ONNX hold a plain Conv2D (and the
    export check compares the two)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, padding: int):
        super().__init__(in_channels, out_channels, kernel, stride=1, pad_mode="pad", padding=padding,
                         has_bias=True)
        self.im2col = False
        self.pad = padding
        self.kernel = kernel

    def construct(self, x):
        if not self.im2col:
            return super().construct(x)
        batch, _, height, width = x.shape
        columns = ops.unfold(x, self.kernel, 1, self.pad, 1)                 # (B, C * k * k, H' * W')
        out = ops.matmul(self.weight.reshape(self.out_channels, -1), columns)
        out_h, out_w = height + 2 * self.pad - self.kernel + 1, width + 2 * self.pad - self.kernel + 1
        return self.bias_add(out.reshape(batch, self.out_channels, out_h, out_w), self.bias)


def use_im2col(net: nn.Cell, enabled: bool) -> None:
    """Switch every ``Conv2d`` of ``net`` to im2col + MatMul (CPU) or to MindSpore's Conv2D."""
    for cell in net.cells_and_names():
        if isinstance(cell[1], Conv2d):
            cell[1].im2col = enabled


def conv_stack(channels: list[int]) -> nn.SequentialCell:
    """The shared CRNN's 7 convolutions: (B, 1, 32, W) -> (B, channels[6], 1, W / 4 + 1). PyTorch's
    max-pool width padding becomes a zero pad before the pool: after ReLU every value is >= 0, so the
    maximum is the same as with PyTorch's -inf padding."""
    layers, previous = [], 1
    for index, (out, kernel, padding) in enumerate(zip(channels, KERNELS, PADDINGS)):
        layers.append(Conv2d(previous, out, kernel, padding))
        if index in BATCH_NORM_AFTER:
            layers.append(nn.BatchNorm2d(out, momentum=0.9, eps=1e-5))   # = PyTorch's momentum 0.1
        layers.append(nn.ReLU())
        if index in POOL_2X2_AFTER:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif index in POOL_TALL_AFTER:
            layers.append(ZeroPadWidth())
            layers.append(nn.MaxPool2d(kernel_size=2, stride=(2, 1)))
        previous = out
    return nn.SequentialCell(layers)


class CRNN(nn.Cell):
    def __init__(self, classes: int, channels: list[int], hidden: int, input_width: int):
        super().__init__()
        self.cnn = conv_stack(channels)
        self.rnn1 = BidirectionalLSTM(channels[-1], hidden, hidden)
        self.rnn2 = BidirectionalLSTM(hidden, hidden, classes)

    def construct(self, images):
        features = ops.squeeze(self.cnn(images), 2)                       # (B, C, T)
        return self.rnn2(self.rnn1(ops.transpose(features, (2, 0, 1))))   # (T, B, classes)


def build(arch: str, classes: int, params: dict) -> nn.Cell:
    if arch == "warpctc":
        return WarpCTC(classes, **params)
    if arch == "crnn":
        return CRNN(classes, **params)
    raise ValueError(f"unknown architecture {arch!r}")
