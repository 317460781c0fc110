"""Core-side description of the TensorFlow backend (no tensorflow import here)."""

from pathlib import Path

from pydantic import Field

from backends.tensorflow.launch import TfStrategy
from backends.tensorflow.layout import CONV_BIAS, KERNELS
from ocrbench.backend import BackendSpec
from ocrbench.recipe import REFERENCE_CHANNELS, ArchParams, ConvChannels, InputWidth


class ShadowNetParams(ArchParams):
    """MaybeShewill-CV/CRNN_Tensorflow's ShadowNet: BGR ``32 x input_width`` input, a 7-conv VGG stack
    with BatchNorm after every conv, a 2-layer stacked BiLSTM, dropout, a bias-free projection.
    Defaults are the upstream network (T = input_width / 4 = 25 steps)."""

    input_width: InputWidth = 100
    channels: ConvChannels = Field(default_factory=lambda: list(REFERENCE_CHANNELS))
    hidden: int = Field(256, ge=1, le=4096, description="LSTM units per direction, both layers")
    dropout: float = Field(0.5, ge=0.0, lt=1.0,
                           description="dropout rate after the BiLSTM (upstream keep 0.5)")
    bn_momentum: float = Field(0.999, gt=0.0, lt=1.0,
                               description="BatchNorm moving-average momentum (upstream 0.999, made for "
                                           "80k-step runs; a run of a few thousand steps needs ~0.99)")

    def time_steps(self) -> int:
        """``input_width / 4``: two width-halving pools."""
        return self.input_width // 4

    def param_count(self, classes: int) -> int:
        """Trainable parameters: convs (bias on conv1/conv2 only), BatchNorm gamma+beta after each conv,
        two BiLSTM layers (one bias vector per direction, as TF's LSTMCell), projection without bias."""
        total, previous = 0, 3
        for out, kernel, bias in zip(self.channels, KERNELS, CONV_BIAS):
            total += kernel * kernel * previous * out + (out if bias else 0) + 2 * out
            previous = out
        h = self.hidden
        for inputs in (previous, 2 * h):
            total += 2 * (4 * h * (inputs + h) + 4 * h)
        return total + 2 * h * classes


BACKEND = BackendSpec(
    name="tensorflow",
    framework="TensorFlow",
    distribution="tensorflow-cpu",
    worker="backends.tensorflow.worker",
    requirements=Path(__file__).with_name("requirements.txt"),
    native_archs={"shadownet": ShadowNetParams},
    shared_archs=("crnn",),
    export_formats=("savedmodel", "tflite", "onnx", "weights"),
    other_distributions=("tensorflow",),
    launcher=TfStrategy(),
)
