"""ocrbench.preprocess replays an export's input description (no framework needed)."""

import numpy as np
import pytest
from PIL import Image

from ocrbench import preprocess
from ocrbench.codec import Charset
from ocrbench.errors import OcrbenchError
from ocrbench.export_parity import class_indices


@pytest.fixture
def image(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "x.png"
    Image.fromarray(rng.integers(0, 256, (60, 160, 3), dtype=np.uint8), "RGB").save(path)
    return path


def spec(**kw):
    base = dict(decode="gray", decoder="pil", height=32, width=100, interpolation="pil_bilinear", mean=[0.5],
                std=[0.5])
    return preprocess.describe(**{**base, **kw})


def test_gray_stretch_is_pil_then_minus_one_to_one(image):
    got = preprocess.load(image, spec())
    with Image.open(image) as img:
        expected = np.asarray(img.convert("L").resize((100, 32), Image.Resampling.BILINEAR), np.float32)
    assert got.shape == (1, 32, 100) and np.array_equal(got[0], expected / 127.5 - 1.0)


def test_keep_ratio_pads_with_zeros_on_the_right(image):
    got = preprocess.load(image, spec(decode="bgr", decoder="cv2", width=96, keep_ratio=True,
                                      interpolation="cv2_linear"))
    # 160 x 60 -> height 32 keeps the ratio: width ceil(32 * 160 / 60) = 86, then zeros up to 96
    assert got.shape == (3, 32, 96) and np.all(got[:, :, 86:] == 0) and np.any(got[:, :, 85] != 0)


def test_keep_ratio_gray_is_pil_bilinear_to_the_ratio_width_then_zeros(image):
    # the shared crnn with keep_ratio (pytorch, paddleocr): PIL gray, bilinear to 32 x ceil(32 * 160 / 60)
    # = 86, x / 127.5 - 1, zeros after normalising up to the padded width; capped at the padded width
    got = preprocess.load(image, spec(width=96, keep_ratio=True))
    with Image.open(image) as img:
        gray = img.convert("L")
    expected = np.asarray(gray.resize((86, 32), Image.Resampling.BILINEAR), np.float32) / 127.5 - 1.0
    assert got.shape == (1, 32, 96) and np.array_equal(got[0, :, :86], expected)
    assert np.all(got[0, :, 86:] == 0) and preprocess.keep_ratio_width(60, 160, 32, 96) == 86
    capped = preprocess.load(image, spec(width=64, keep_ratio=True))
    assert np.array_equal(capped, preprocess.load(image, spec(width=64)))   # 86 > 64: stretched to 64


def test_nhwc_gray_after_resize_and_normalise_first(image):
    nhwc = preprocess.load(image, spec(decode="rgb", layout="NHWC", to_gray=preprocess.TF_GRAY))
    assert nhwc.shape == (32, 100, 1) and nhwc.min() >= -1 and nhwc.max() <= 1
    first = preprocess.load(image, spec(decode="bgr", decoder="cv2", interpolation="cv2_linear",
                                        mean=[0.9, 0.9, 0.9], std=[0.15, 0.13, 0.14], normalize_first=True))
    assert first.shape == (3, 32, 100)
    with pytest.raises(OcrbenchError, match="normalize_first needs"):
        preprocess.load(image, spec(normalize_first=True))


def test_class_indices_map_blank_last_to_blank_zero():
    charset = Charset("0123456789")
    assert class_indices({"classes": 11, "blank": 0}, charset).tolist() == list(range(11))
    assert class_indices({"classes": 11, "blank": 10}, charset).tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0]
    with pytest.raises(OcrbenchError, match="neither 0 nor the last"):
        class_indices({"classes": 11, "blank": 3}, charset)
