"""The deterministic synthetic text-line renderer (``data.source: textlines``).

Each sample is a pure function of ``(seed, split, index)`` and the data section: a ``random.Random``
seeded from those three draws the text, the font, its size and every augmentation value, and a numpy
generator seeded from that Random draws the pixel noise. So the bytes of every image — and the
dataset's fingerprint — do not depend on the number of processes or the order they run in.

An image is 8-bit gray (PNG mode ``L``), ``height`` pixels high and as wide as its text plus margins:
dark ink on a lighter background, pixel values 0..255.

Text: for a character source, a length uniform in ``[min_len, max_len]`` then characters drawn uniformly
from the charset (Chinese lines); for a word source, a word drawn uniformly from the word list after
leaving out words with characters outside the charset or lengths outside the range (English words).

Used by the core's dataset preparation; needs pillow and numpy only.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ocrbench.errors import OcrbenchError


@dataclass(frozen=True)
class Style:
    """One sample's drawn values (pixels, degrees, gray levels 0..255)."""

    font: str
    size: int
    background: int
    ink: int
    spacing: int
    margin_left: int
    margin_right: int
    shift: int          # vertical offset of the text from the centre
    angle: float
    blur_radius: float  # 0: no blur
    noise_std: float


@lru_cache(maxsize=64)
def _font(path: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


@lru_cache(maxsize=4)
def word_pool(wordlist: str | None, words_file: str | None, charset: str, min_len: int,
              max_len: int) -> tuple[str, ...]:
    """The words a sample is drawn from, sorted (so the pool is the same in every process)."""
    if wordlist == "english":
        from english_words import get_english_words_set

        words = get_english_words_set(["web2"], alpha=True, lower=True)
    elif words_file:
        words = set(Path(words_file).read_text(encoding="utf-8").split())
    else:
        return ()
    allowed = set(charset)
    pool = tuple(sorted(w for w in words if min_len <= len(w) <= max_len and set(w) <= allowed))
    if not pool:
        raise OcrbenchError(f"data: no word of {words_file or wordlist} has a length in [{min_len}, "
                            f"{max_len}] and only characters of the charset",
                            hint="check data.charset, data.min_len and data.max_len")
    return pool


def sample_text(rng: random.Random, config: dict) -> str:
    """The label of one sample (module docstring)."""
    pool = word_pool(config.get("wordlist"), config.get("words_file"), config["charset_chars"],
                     config["min_len"], config["max_len"])
    if pool:
        return rng.choice(pool)
    chars = config["charset_chars"]
    length = rng.randint(config["min_len"], config["max_len"])
    return "".join(rng.choice(chars) for _ in range(length))


def draw_style(rng: random.Random, config: dict) -> Style:
    """The font, size and augmentation values of one sample (``augment: null``: none)."""
    font, size = rng.choice(config["fonts"]), rng.choice(config["font_sizes"])
    aug = config.get("augment")
    if not aug:
        return Style(font, size, 235, 20, 0, 4, 4, 0, 0.0, 0.0, 0.0)
    background = rng.randint(*aug["background"])
    ink = rng.randint(*aug["ink"])
    if background - ink < 60:   # keep the text legible: ink at least 60 gray levels darker
        ink = max(0, background - 60)
    blur = rng.uniform(0.3, max(0.3, aug["blur_radius"])) if rng.random() < aug["blur"] else 0.0
    slack = max(0, (config["height"] - size) // 2)
    return Style(font=font, size=size, background=background, ink=ink,
                 spacing=rng.randint(0, aug["spacing"]),
                 margin_left=rng.randint(*aug["margin"]), margin_right=rng.randint(*aug["margin"]),
                 shift=rng.randint(-slack // 2, slack // 2) if slack else 0,
                 angle=rng.uniform(-aug["rotate"], aug["rotate"]), blur_radius=blur,
                 noise_std=rng.uniform(0.0, aug["noise"]))


def draw(text: str, style: Style, height: int, noise_seed: int):
    """``text`` in ``style`` on a ``height``-pixel gray canvas (PIL image, mode ``L``)."""
    from PIL import Image, ImageDraw, ImageFilter

    font = _font(style.font, style.size)
    advances = [font.getlength(c) for c in text]
    text_width = sum(advances) + style.spacing * (len(text) - 1)
    width = math.ceil(text_width) + style.margin_left + style.margin_right
    top, bottom = font.getbbox(text)[1::2]
    y = (height - (bottom - top)) // 2 - top + style.shift
    image = Image.new("L", (max(width, 1), height), style.background)
    pen = ImageDraw.Draw(image)
    if style.spacing == 0:
        pen.text((style.margin_left, y), text, font=font, fill=style.ink)
    else:
        x = float(style.margin_left)
        for char, advance in zip(text, advances):
            pen.text((round(x), y), char, font=font, fill=style.ink)
            x += advance + style.spacing
    if style.angle:
        image = image.rotate(style.angle, resample=Image.Resampling.BILINEAR, fillcolor=style.background)
    if style.blur_radius:
        image = image.filter(ImageFilter.GaussianBlur(style.blur_radius))
    if style.noise_std:
        pixels = np.asarray(image, dtype=np.float32)
        pixels += np.random.default_rng(noise_seed).normal(0.0, style.noise_std, pixels.shape)
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")
    return image


def render_line(config: dict, split: str, index: int) -> tuple[bytes, str]:
    """PNG bytes and text of sample ``index`` of ``split``; a pure function of its arguments.

    ``config`` is the resolved textlines data section: ``charset_chars`` (the charset), ``fonts`` (file
    paths), ``font_sizes`` (pixels per em), ``height`` (pixels), ``min_len`` / ``max_len``, ``seed``,
    ``augment`` (or None), ``wordlist`` / ``words_file``.
    """
    rng = random.Random(f"ocrbench-textlines:{config['seed']}:{split}:{index}")
    text = sample_text(rng, config)
    style = draw_style(rng, config)
    image = draw(text, style, config["height"], rng.getrandbits(64))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=1)
    return buffer.getvalue(), text
