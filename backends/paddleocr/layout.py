"""PP-OCR's recognition MobileNetV3 ("small") layout as data, shared by the parameter formula (core side)
and the Paddle model (worker side). Standard library only.

Facts from PaddleOCR's rec_chinese_lite_train_v2.0.yml / rec_mobilenet_v3 (see docs/architectures.md):
every block is (kernel, expansion channels, output channels, squeeze-excite, activation, stride index);
a stride index i means stride (small_stride[i], 1) — height only; None means stride 1.
"""

SMALL_BLOCKS = (
    (3, 16, 16, True, "relu", 0),
    (3, 72, 24, False, "relu", 1),
    (3, 88, 24, False, "relu", None),
    (5, 96, 40, True, "hardswish", 2),
    (5, 240, 40, True, "hardswish", None),
    (5, 240, 40, True, "hardswish", None),
    (5, 120, 48, True, "hardswish", None),
    (5, 144, 48, True, "hardswish", None),
    (5, 288, 96, True, "hardswish", 3),
    (5, 576, 96, True, "hardswish", None),
    (5, 576, 96, True, "hardswish", None),
)
STEM_CHANNELS = 16      # conv1: 3x3, stride 2, hardswish
LAST_CHANNELS = 576     # conv2: 1x1, hardswish; then MaxPool 2x2
SE_REDUCTION = 4


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` without going below 90 % of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded
