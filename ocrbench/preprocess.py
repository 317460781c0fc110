"""Model input from an image file, as an export's metadata describes it (``input.preprocess`` in
``ocrbench-export.json``), so an exported model runs without its framework (``ocrbench eval --exported``).

The description is a small, explicit pipeline — each backend states what its own data pipeline does:

    {"decode": "rgb" | "gray" | "bgr",           # colour the file is decoded to, and by whom:
     "decoder": "pil" | "cv2",                   #   PIL (Image.convert) or OpenCV (cv2.imdecode)
     "resize": {"height": 32, "width": 100,      # target size (the padded width when keep_ratio)
                "keep_ratio": false,             # true: height fixed, width ceil(h_in * w / h) <= width,
                                                 #   right-padded with zeros after normalising (PaddleOCR)
                "interpolation": "pil_bilinear" | "cv2_linear"},
     "to_gray": null | [0.2989, 0.587, 0.114],   # float RGB weights applied after the resize (TF, MindSpore)
     "mean": [0.5], "std": [0.5],                # x = (pixel / 255 - mean) / std per channel
     "normalize_first": false,                   # true: normalise, then resize the float image (OpenCV
                                                 #   only; MindSpore's WarpCTC pipeline does this)
     "layout": "NCHW" | "NHWC"}

Pixels are uint8 0..255 until normalised; the result is float32. PIL's bilinear resize antialiases when
shrinking, OpenCV's INTER_LINEAR does not: they are different images, so the description names which.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ocrbench import images
from ocrbench.errors import OcrbenchError

# Pixel normalisations the backends use, as (mean, std) of x = (pixel / 255 - mean) / std.
MINUS_ONE_TO_ONE = ([0.5], [0.5])   # x / 127.5 - 1, range [-1, 1]
ZERO_TO_ONE = ([0.0], [1.0])        # x / 255, range [0, 1]
TF_GRAY = [0.2989, 0.5870, 0.1140]  # tf.image.rgb_to_grayscale's weights (float, no rounding)
ITU_601_GRAY = [0.299, 0.587, 0.114]


def describe(*, decode: str, decoder: str, height: int, width: int, interpolation: str,
             mean: list[float], std: list[float], layout: str = "NCHW", keep_ratio: bool = False,
             to_gray: list[float] | None = None, normalize_first: bool = False) -> dict:
    """The ``input.preprocess`` description a worker writes into its exports' metadata (module docstring)."""
    return {"decode": decode, "decoder": decoder,
            "resize": {"height": height, "width": width, "keep_ratio": keep_ratio,
                       "interpolation": interpolation},
            "to_gray": to_gray, "mean": list(mean), "std": list(std), "normalize_first": normalize_first,
            "layout": layout}


def keep_ratio_width(image_height: int, image_width: int, height: int, max_width: int) -> int:
    """Width in pixels of an ``image_height x image_width`` image resized to ``height`` keeping its aspect
    ratio, at most ``max_width``: ``min(max_width, ceil(height * image_width / image_height))`` (PaddleOCR's
    rec resize). The image is then padded on the right to ``max_width`` (with zeros after normalising)."""
    return min(max_width, math.ceil(height * image_width / image_height))


def pad_right(normalised: np.ndarray, width: int, axis: int) -> np.ndarray:
    """``normalised`` (float, any layout) padded with zeros along ``axis`` to ``width``."""
    pad = [(0, 0)] * normalised.ndim
    pad[axis] = (0, width - normalised.shape[axis])
    return np.pad(normalised, pad)


def crnn_gray(encoded: bytes, height: int, width: int, keep_ratio: bool) -> np.ndarray:
    """The shared crnn's image pipeline up to normalising, one implementation for every backend that
    uses it: decode with PIL, convert to gray (``"L"``, ITU-R 601 luma), PIL bilinear resize (antialiased
    when shrinking) to ``height x width`` or, with ``keep_ratio``, to ``height x keep_ratio_width(...)``.
    Returns uint8 ``(height, w)`` in 0..255."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(encoded)) as image:
        gray = image.convert("L")
        if keep_ratio:
            width = keep_ratio_width(gray.height, gray.width, height, width)
        gray = gray.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


DECODERS = {("pil", "rgb"), ("pil", "gray"), ("cv2", "bgr"), ("cv2", "gray"), ("cv2", "rgb"), ("pil", "bgr")}


def _decode(path: Path, decoder: str, color: str) -> np.ndarray:
    """uint8 HWC (C = 1 for gray) in the asked colour order."""
    if decoder == "pil":
        from PIL import Image

        with Image.open(path) as image:   # 16-bit, CMYK, palette: made 8-bit as imports are
            array = np.asarray(images.eight_bit(image).convert("L" if color == "gray" else "RGB"),
                               dtype=np.uint8)
        array = array[:, :, None] if color == "gray" else array
        return np.ascontiguousarray(array[:, :, ::-1]) if color == "bgr" else array
    import cv2

    flag = cv2.IMREAD_GRAYSCALE if color == "gray" else cv2.IMREAD_COLOR
    array = cv2.imdecode(np.frombuffer(Path(path).read_bytes(), dtype=np.uint8), flag)
    if array is None:
        raise OcrbenchError(f"{path}: not an image OpenCV can decode")
    array = array[:, :, None] if color == "gray" else array
    return np.ascontiguousarray(array[:, :, ::-1]) if color == "rgb" else array


def _resize(image: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    if interpolation == "pil_bilinear":
        from PIL import Image

        mode = "L" if image.shape[2] == 1 else "RGB"
        resized = Image.fromarray(image[:, :, 0] if mode == "L" else image, mode).resize(
            (width, height), Image.Resampling.BILINEAR)
        array = np.asarray(resized, dtype=np.uint8)
    elif interpolation == "cv2_linear":
        import cv2

        array = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    else:
        raise OcrbenchError(f"unknown interpolation {interpolation!r} (known: pil_bilinear, cv2_linear)")
    return array[:, :, None] if array.ndim == 2 else array


def load(path: Path, spec: dict) -> np.ndarray:
    """One image file -> float32 model input (C, H, W) or (H, W, C) as ``spec`` says, no batch axis."""
    decoder, color = spec.get("decoder", "pil"), spec["decode"]
    if (decoder, color) not in DECODERS:
        raise OcrbenchError(f"preprocess: cannot decode to {color!r} with {decoder!r}")
    image = _decode(path, decoder, color)
    size = spec["resize"]
    height, width = size["height"], size["width"]
    resized_w = (keep_ratio_width(image.shape[0], image.shape[1], height, width) if size.get("keep_ratio")
                 else width)
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    if spec.get("normalize_first"):
        if size["interpolation"] != "cv2_linear":
            raise OcrbenchError("preprocess: normalize_first needs interpolation cv2_linear "
                                "(PIL resizes uint8)")
        normalised = _resize((image.astype(np.float32) / 255.0 - mean) / std, resized_w, height, "cv2_linear")
    else:
        pixels = _resize(image, resized_w, height, size["interpolation"]).astype(np.float32)
        if spec.get("to_gray"):
            pixels = (pixels @ np.asarray(spec["to_gray"], dtype=np.float32))[:, :, None]
        normalised = (pixels / 255.0 - mean) / std
    out = pad_right(normalised.astype(np.float32), width, axis=1)
    return out.transpose(2, 0, 1).copy() if spec.get("layout", "NCHW") == "NCHW" else out


def batch(paths: list[Path], spec: dict) -> np.ndarray:
    """Several image files -> one float32 batch (N, ...)."""
    return np.stack([load(p, spec) for p in paths])
