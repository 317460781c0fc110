"""Gluon models of the MXNet backend. Both take NCHW float32 (batch, 1, H, W) and return logits
(T, batch, classes), time-major, class 0 the CTC blank. Parameter names are stable (fixed prefixes), so
exported ``.params`` files load back into a freshly built network (resume)."""

from __future__ import annotations

from mxnet.gluon import HybridBlock, nn, rnn

from ocrbench.crnn_layout import BATCH_NORM_AFTER, KERNELS, PADDINGS, POOL_2X2_AFTER, POOL_TALL_AFTER


class LstmCtc(HybridBlock):
    """example/ctc's LSTM-OCR: each image column (``height`` gray pixels) is one time step of a
    ``layers``-deep unidirectional LSTM; a dense layer maps every step to the classes.
    Input pixels are in [0, 1] (x / 255), as in the example. With ``standardize`` the network first scales
    each image to zero mean and unit variance over its own pixels (part of the graph, so exports do it too):
    the captcha background then no longer dominates every column, which shortens the CTC plateau from
    millions of samples to about one epoch (docs/architectures.md)."""

    EPSILON = 1e-3  # added to the per-image standard deviation (a blank image stays finite)

    def __init__(self, classes: int, input_height: int, input_width: int, hidden: int, layers: int,
                 standardize: bool = False, **kwargs):
        super().__init__(prefix="lstmctc_", **kwargs)
        self.standardize = standardize
        self.input_size = input_height * input_width
        with self.name_scope():
            self.lstm = rnn.LSTM(hidden, num_layers=layers, layout="TNC", input_size=input_height)
            self.fc = nn.Dense(classes, flatten=False, in_units=hidden)

    def hybrid_forward(self, F, images):
        if self.standardize:  # sums / pixel count rather than mean: mx.onnx mis-exports mean at opset 13
            pixels = float(self.input_size)
            centred = F.broadcast_sub(images, F.sum(images, axis=(1, 2, 3), keepdims=True) / pixels)
            spread = F.sqrt(F.sum(F.square(centred), axis=(1, 2, 3), keepdims=True) / pixels) + self.EPSILON
            images = F.broadcast_div(centred, spread)
        columns = F.transpose(F.squeeze(images, axis=1), axes=(2, 0, 1))  # (B, H, W) -> (W=T, B, H)
        return self.fc(self.lstm(columns))


class BidirectionalLSTM(HybridBlock):
    """One bidirectional LSTM layer (two bias vectors per direction) and a linear projection."""

    def __init__(self, inputs: int, hidden: int, outputs: int, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.rnn = rnn.LSTM(hidden, bidirectional=True, layout="TNC", input_size=inputs)
            self.embedding = nn.Dense(outputs, flatten=False, in_units=2 * hidden)

    def hybrid_forward(self, F, sequence):
        return self.embedding(self.rnn(sequence))


class CRNN(HybridBlock):
    """The shared ``crnn`` (docs/architectures.md). Input pixels are in [-1, 1] (x / 127.5 - 1)."""

    def __init__(self, classes: int, channels: list[int], hidden: int, input_width: int, **kwargs):
        super().__init__(prefix="crnn_", **kwargs)
        with self.name_scope():
            self.cnn = nn.HybridSequential()
            previous = 1
            for index, (out, kernel, padding) in enumerate(zip(channels, KERNELS, PADDINGS)):
                self.cnn.add(nn.Conv2D(out, kernel, strides=1, padding=padding, in_channels=previous))
                if index in BATCH_NORM_AFTER:
                    self.cnn.add(nn.BatchNorm(in_channels=out))
                self.cnn.add(nn.Activation("relu"))
                if index in POOL_2X2_AFTER:
                    self.cnn.add(nn.MaxPool2D(2, 2))
                elif index in POOL_TALL_AFTER:
                    self.cnn.add(nn.MaxPool2D((2, 2), (2, 1), (0, 1)))
                previous = out
            self.rnn1 = BidirectionalLSTM(channels[-1], hidden, hidden)
            self.rnn2 = BidirectionalLSTM(hidden, hidden, classes)

    def batch_norms(self, height: int, width: int) -> list[tuple[nn.BatchNorm, int]]:
        """Each BatchNorm of the conv stack with the H x W of its input for an input of ``height`` x
        ``width`` (the values per channel and sample its batch statistics average over)."""
        norms = []
        for layer in self.cnn:
            if isinstance(layer, (nn.Conv2D, nn.MaxPool2D)):
                (kh, kw), (sh, sw), (ph, pw) = (layer._kwargs[k] for k in ("kernel", "stride", "pad"))
                height, width = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
            elif isinstance(layer, nn.BatchNorm):
                norms.append((layer, height * width))
        return norms

    def hybrid_forward(self, F, images):
        features = F.squeeze(self.cnn(images), axis=2)        # (B, C, T)
        return self.rnn2(self.rnn1(F.transpose(features, axes=(2, 0, 1))))  # (T, B, classes)


def build(arch: str, classes: int, params: dict) -> HybridBlock:
    if arch == "lstm_ctc":
        return LstmCtc(classes, **params)
    if arch == "crnn":
        return CRNN(classes, **params)
    raise ValueError(f"unknown architecture {arch!r}")


PIXEL_SCALE = {  # uint8 x -> float: (x * scale + shift)
    "lstm_ctc": (1 / 255.0, 0.0, "x / 255 (range [0, 1]), as example/ctc"),
    "crnn": (1 / 127.5, -1.0, "x / 127.5 - 1 (range [-1, 1])"),
}
