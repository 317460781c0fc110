"""Core-side description of the PaddleOCR backend (no paddle import here)."""

from pathlib import Path
from typing import Annotated

from pydantic import Field

from backends.paddleocr import layout
from backends.paddleocr.launch import PaddleLaunch
from ocrbench.backend import BackendSpec
from ocrbench.recipe import ArchParams


class CrnnMobileNetV3Params(ArchParams):
    """PaddleOCR's CRNN-MobileNetV3 (rec_chinese_lite_train_v2.0.yml): MobileNetV3-small x scale with
    height-only strides, Im2Seq, a 2-layer BiLSTM, a CTC head. BGR 3 x 32 x input_width, resized keeping
    the aspect ratio and zero-padded on the right; T = input_width / 4."""

    scale: float = Field(0.5, gt=0.0, le=2.0, description="MobileNetV3 width multiplier")
    small_stride: list[Annotated[int, Field(ge=1, le=2)]] = Field(
        [1, 2, 2, 2], min_length=4, max_length=4, description="height strides of the 4 striding blocks")
    hidden: int = Field(48, ge=1, le=4096, description="LSTM hidden units per direction (2 layers)")
    input_width: int = Field(320, ge=16, le=4096, multiple_of=4, description="padded image width")

    def time_steps(self) -> int:
        """``input_width / 4``: the backbone halves the width twice."""
        return self.input_width // 4

    def param_count(self, classes: int) -> int:
        """Trainable parameters: convs without bias + BatchNorm gamma/beta, squeeze-excite 1x1 convs with
        bias, a 2-layer bidirectional LSTM (two bias vectors per direction), the head Linear with bias."""
        def conv_bn(cin: int, cout: int, k: int, groups: int = 1) -> int:
            return k * k * (cin // groups) * cout + 2 * cout

        total = conv_bn(3, layout.make_divisible(layout.STEM_CHANNELS * self.scale), 3)
        cin = layout.make_divisible(layout.STEM_CHANNELS * self.scale)
        for kernel, expand, out, se, _act, _stride in layout.SMALL_BLOCKS:
            mid, cout = layout.make_divisible(expand * self.scale), layout.make_divisible(out * self.scale)
            total += conv_bn(cin, mid, 1) + conv_bn(mid, mid, kernel, groups=mid)
            if se:
                squeezed = mid // layout.SE_REDUCTION
                total += mid * squeezed + squeezed + squeezed * mid + mid
            total += conv_bn(mid, cout, 1)
            cin = cout
        last = layout.make_divisible(layout.LAST_CHANNELS * self.scale)
        total += conv_bn(cin, last, 1)
        h, inputs = self.hidden, last
        for _ in range(2):
            total += 2 * (4 * h * (inputs + h) + 8 * h)
            inputs = 2 * h
        return total + 2 * h * classes + classes


BACKEND = BackendSpec(
    name="paddleocr",
    framework="PaddlePaddle",
    distribution="paddlepaddle",
    worker="backends.paddleocr.worker",
    requirements=Path(__file__).with_name("requirements.txt"),
    native_archs={"crnn_mobilenetv3": CrnnMobileNetV3Params},
    shared_archs=("crnn",),
    export_formats=("paddle", "onnx", "weights"),
    other_distributions=("paddlepaddle-gpu",),
    launcher=PaddleLaunch(),
    cuda_unavailable="paddlepaddle-gpu on PyPI stops at 2.6.2; the pinned 3.3.1's GPU wheels are on Paddle's "
                     "own index (paddlepaddle.org.cn), not on a package registry ocrbench installs from",
)
