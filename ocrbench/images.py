"""User images, checked and made 8-bit once, in the core: a pixel limit read from the header before any
decoding (no decompression bomb is expanded), and one conversion of 16-bit, float, CMYK, palette and other
modes to 8-bit gray or RGB, so that every backend's decoder sees the same ordinary image.

Conversions (``eight_bit``): ``I;16*`` / ``I`` (16- or 32-bit integer gray) -> ``L`` as ``value / 257``
(65535 -> 255), clipped to 0..255; ``F`` (float gray) -> ``L`` clipped to 0..255; ``P`` (palette) and
``PA`` -> ``RGBA`` if the palette has transparency, else ``RGB``; ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` ->
``RGB``; ``LA`` -> ``RGBA``. ``1``, ``L``, ``RGB`` and ``RGBA`` are left as they are.
"""

from __future__ import annotations

import io

import numpy as np

MAX_PIXELS = 40_000_000   # width x height; a text line or a page scan is far below (A4 at 600 dpi: 35 M)
KEPT_MODES = ("1", "L", "RGB", "RGBA")


class ImageProblem(ValueError):
    """Why bytes are not an image ocrbench takes: ``reason`` is a short key (counted when skipping)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def open_checked(data: bytes):
    """A loaded PIL image from encoded ``data``; raises :class:`ImageProblem` (``unreadable_image``,
    ``too_large``) without decoding pixels beyond MAX_PIXELS."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageProblem("unreadable_image", f"image cannot be decoded ({type(exc).__name__})") from None
    except Image.DecompressionBombError as exc:
        raise ImageProblem("too_large", f"image is too large to decode ({exc})") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise ImageProblem("too_large", f"image is {width}x{height} pixels, more than the {MAX_PIXELS:,} "
                                        "ocrbench decodes (a decompression bomb, or not a text image)")
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        image.close()
        raise ImageProblem("unreadable_image",
                           f"image cannot be decoded ({type(exc).__name__}: {exc})") from None
    return image


def eight_bit(image):
    """``image`` as an 8-bit mode (see the module docstring); the same object when already one."""
    mode = image.mode
    if mode in KEPT_MODES:
        return image
    if mode.startswith("I"):
        array = np.asarray(image, dtype=np.float64) / 257.0
        return _gray(array)
    if mode == "F":
        return _gray(np.asarray(image, dtype=np.float64))
    if mode in ("P", "PA"):
        return image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
    if mode == "LA":
        return image.convert("RGBA")
    return image.convert("RGB")


def _gray(array: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")


def canonical(data: bytes) -> tuple[bytes, str, str | None]:
    """``(bytes, extension, converted_from)`` of an imported image: its original bytes and format's
    extension when it is 8-bit already, else an 8-bit PNG of it and the mode it was converted from.
    Raises :class:`ImageProblem`."""
    with open_checked(data) as image:
        kind = (image.format or "png").lower()
        converted = eight_bit(image)
        if converted is image:
            return data, {"jpeg": ".jpg"}.get(kind, f".{kind}"), None
        buffer = io.BytesIO()
        converted.save(buffer, format="PNG")
        return buffer.getvalue(), ".png", image.mode
