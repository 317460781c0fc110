"""Paddle models of the PaddleOCR backend. Both take NCHW float32 images and return logits
(T, batch, classes), **time-major**, class 0 the CTC blank (PaddleOCR's convention = ocrbench's).

* ``crnn_mobilenetv3``: BGR (B, 3, 32, W), (x / 255 - 0.5) / 0.5, right-padded with zeros; T = W / 4.
* ``crnn`` (docs/architectures.md): gray (B, 1, 32, W) in [-1, 1]; T = W / 4 + 1.
"""

from __future__ import annotations

import math

import paddle
from paddle import nn

from backends.paddleocr import layout
from ocrbench.crnn_layout import BATCH_NORM_AFTER, KERNELS, PADDINGS, POOL_2X2_AFTER, POOL_TALL_AFTER

ACTIVATIONS = {"relu": nn.ReLU, "hardswish": nn.Hardswish}


class ConvBN(nn.Sequential):
    """Conv2D without bias, BatchNorm, optional activation."""

    def __init__(self, cin: int, cout: int, kernel: int, stride=1, groups: int = 1, act: str | None = None):
        layers = [nn.Conv2D(cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2, groups=groups,
                            bias_attr=False), nn.BatchNorm2D(cout)]
        if act:
            layers.append(ACTIVATIONS[act]())
        super().__init__(*layers)


class SqueezeExcite(nn.Layer):
    """Channel attention: global average, 1x1 conv to C/4 + ReLU, 1x1 conv back + hard sigmoid."""

    def __init__(self, channels: int):
        super().__init__()
        squeezed = channels // layout.SE_REDUCTION
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.reduce = nn.Conv2D(channels, squeezed, 1)
        self.expand = nn.Conv2D(squeezed, channels, 1)

    def forward(self, x):
        weights = self.expand(nn.functional.relu(self.reduce(self.pool(x))))
        return x * nn.functional.hardsigmoid(weights, slope=0.2, offset=0.5)


class InvertedResidual(nn.Layer):
    """MobileNetV3 block: 1x1 expand, depthwise k x k (strided), optional SE, 1x1 linear projection;
    identity shortcut for unstrided blocks (stride 1) with equal channels. As in PP-OCR, a block given a
    stride tuple — even (1, 1), from small_stride — has no shortcut."""

    def __init__(self, cin: int, mid: int, cout: int, kernel: int, stride, se: bool, act: str):
        super().__init__()
        self.expand = ConvBN(cin, mid, 1, act=act)
        self.depthwise = ConvBN(mid, mid, kernel, stride=stride, groups=mid, act=act)
        self.se = SqueezeExcite(mid) if se else None
        self.project = ConvBN(mid, cout, 1)
        self.shortcut = stride == 1 and cin == cout

    def forward(self, x):
        y = self.depthwise(self.expand(x))
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.shortcut else y


class MobileNetV3Small(nn.Sequential):
    """PP-OCR's recognition backbone: (B, 3, 32, W) -> (B, C, 1, W / 4)."""

    def __init__(self, scale: float, small_stride: list[int]):
        channels = layout.make_divisible(layout.STEM_CHANNELS * scale)
        layers: list[nn.Layer] = [ConvBN(3, channels, 3, stride=2, act="hardswish")]
        for kernel, expand, out, se, act, stride_index in layout.SMALL_BLOCKS:
            stride = 1 if stride_index is None else (small_stride[stride_index], 1)
            cout = layout.make_divisible(out * scale)
            layers.append(InvertedResidual(channels, layout.make_divisible(expand * scale), cout, kernel,
                                           stride, se, act))
            channels = cout
        self.out_channels = layout.make_divisible(layout.LAST_CHANNELS * scale)
        layers += [ConvBN(channels, self.out_channels, 1, act="hardswish"), nn.MaxPool2D(2, 2)]
        super().__init__(*layers)


class CrnnMobileNetV3(nn.Layer):
    """Backbone -> Im2Seq -> 2-layer BiLSTM(hidden) -> Linear CTC head (init U(+-1/sqrt(2 hidden)))."""

    def __init__(self, classes: int, scale: float, small_stride: list[int], hidden: int, input_width: int):
        super().__init__()
        self.backbone = MobileNetV3Small(scale, small_stride)
        self.neck = nn.LSTM(self.backbone.out_channels, hidden, num_layers=2, direction="bidirect",
                            time_major=True)
        bound = 1.0 / math.sqrt(2 * hidden)
        init = paddle.ParamAttr(initializer=nn.initializer.Uniform(-bound, bound))
        self.head = nn.Linear(2 * hidden, classes, weight_attr=init, bias_attr=init)

    def forward(self, images):
        features = self.backbone(images).squeeze(2)              # (B, C, T)
        sequence = features.transpose([2, 0, 1])                 # Im2Seq, time-major (T, B, C)
        recurrent, _ = self.neck(sequence)
        return self.head(recurrent)                              # (T, B, classes)


class BidirectionalLSTM(nn.Layer):
    """One bidirectional LSTM layer (two bias vectors per direction) and a linear projection."""

    def __init__(self, inputs: int, hidden: int, outputs: int):
        super().__init__()
        self.rnn = nn.LSTM(inputs, hidden, direction="bidirect", time_major=True)
        self.embedding = nn.Linear(2 * hidden, outputs)

    def forward(self, sequence):
        recurrent, _ = self.rnn(sequence)
        return self.embedding(recurrent)


class CRNN(nn.Layer):
    """The shared CRNN (docs/architectures.md). The tall pools pad the width with MaxPool2D's own padding,
    not a Pad2D layer: paddle2onnx 2.1.0 writes Pad2D's pad value from uninitialised memory, so its ONNX
    export was wrong whenever that value happened to be large and positive."""

    def __init__(self, classes: int, channels: list[int], hidden: int, input_width: int):
        super().__init__()
        layers, previous = [], 1
        for index, (out, kernel, padding) in enumerate(zip(channels, KERNELS, PADDINGS)):
            layers.append(nn.Conv2D(previous, out, kernel, padding=padding))
            if index in BATCH_NORM_AFTER:
                layers.append(nn.BatchNorm2D(out))
            layers.append(nn.ReLU())
            if index in POOL_2X2_AFTER:
                layers.append(nn.MaxPool2D(2, 2))
            elif index in POOL_TALL_AFTER:
                layers.append(nn.MaxPool2D(2, (2, 1), padding=(0, 1)))
            previous = out
        self.cnn = nn.Sequential(*layers)
        self.rnn1 = BidirectionalLSTM(channels[-1], hidden, hidden)
        self.rnn2 = BidirectionalLSTM(hidden, hidden, classes)

    def forward(self, images):
        features = self.cnn(images).squeeze(2).transpose([2, 0, 1])   # (T, B, C)
        return self.rnn2(self.rnn1(features))


class InferenceOutput(nn.Layer):
    """What PaddleOCR's exported recognition models return, so its predictor can run ours: softmax
    probabilities (B, T, classes), batch-major (PaddleOCR's CTCHead applies softmax in eval mode)."""

    def __init__(self, model: nn.Layer):
        super().__init__()
        self.model = model

    def forward(self, images):
        return nn.functional.softmax(self.model(images), axis=2).transpose([1, 0, 2])


def build(arch: str, classes: int, params: dict) -> nn.Layer:
    if arch == "crnn_mobilenetv3":
        return CrnnMobileNetV3(classes, **params)
    if arch == "crnn":
        return CRNN(classes, **params)
    raise ValueError(f"unknown architecture {arch!r}")
