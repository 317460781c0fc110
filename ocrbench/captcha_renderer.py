"""The deterministic captcha renderer, shared by dataset preparation (the core) and the MXNet worker's
on-the-fly captchas (``data.online: true``, in the worker's environment).

It needs only the standard library, pillow and the ``captcha`` package (imported when first used), so a
worker env can import it without the core's dependencies.

Determinism: the ``captcha`` package draws its randomness from ``secrets``. Each sample gets its own
``random.Random`` seeded from ``(seed, split, index)`` and the package's ``secrets`` calls are served from
it while that sample is drawn, so the bytes of every image depend only on the recipe — not on the number
of worker processes or the order they run in.
"""

from __future__ import annotations

import contextlib
import io
import random
from typing import Iterator


class _SeededSecrets:
    """Stands in for the ``secrets`` module inside ``captcha.image``, drawing from a seeded Random."""

    def __init__(self, rng: random.Random):
        self._rng = rng

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)

    def choice(self, seq):
        return self._rng.choice(seq)


@contextlib.contextmanager
def seeded_captcha(rng: random.Random) -> Iterator[None]:
    """Serve the captcha package's random draws from ``rng`` for the duration of the block."""
    import captcha.image as captcha_image

    original = captcha_image.secrets
    captcha_image.secrets = _SeededSecrets(rng)
    try:
        yield
    finally:
        captcha_image.secrets = original


_GENERATORS: dict[tuple, object] = {}


def _generator(width: int, height: int, fonts: tuple[str, ...], sizes: tuple[int, ...]):
    """One ``ImageCaptcha`` per (size in pixels, fonts, font sizes in points), reused across samples."""
    from captcha.image import ImageCaptcha

    key = (width, height, fonts, sizes)
    if key not in _GENERATORS:
        _GENERATORS[key] = ImageCaptcha(width=width, height=height, fonts=list(fonts) or None,
                                        font_sizes=sizes)
    return _GENERATORS[key]


def sample_text(rng: random.Random, charset: str, min_len: int, max_len: int) -> str:
    """The label of one captcha: a length in [min_len, max_len], then that many characters."""
    length = rng.randint(min_len, max_len)
    return "".join(rng.choice(charset) for _ in range(length))


def render_captcha(config: dict, split: str, index: int) -> tuple[bytes, str]:
    """PNG bytes and text of sample ``index`` of ``split``; a pure function of its arguments.

    ``config`` is a captcha data section (``seed``, ``charset``, ``min_len``, ``max_len``, ``width`` and
    ``height`` in pixels, ``fonts`` as file paths, ``font_sizes`` in points, ``noise``: false for clean
    text, :func:`clean_captcha`).
    """
    rng = random.Random(f"ocrbench-captcha:{config['seed']}:{split}:{index}")
    text = sample_text(rng, config["charset"], config["min_len"], config["max_len"])
    generator = _generator(config["width"], config["height"], tuple(config["fonts"]),
                           tuple(config["font_sizes"]))
    with seeded_captcha(rng):
        image = (generator.generate_image(text) if config.get("noise", True)
                 else clean_captcha(generator.truefonts, config["width"], config["height"], text, rng))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue(), text


def clean_captcha(fonts: list, width: int, height: int, text: str, rng: random.Random):
    """``text`` drawn upright on a ``width`` x ``height`` pixel canvas in one of ``fonts`` (the captcha
    generator's loaded fonts, every file at every size) — dark ink (gray 0-80) on a light
    background (gray 215-255), placed at a random offset that keeps it inside the image — with none of the
    captcha package's rotation, warping, inserted spaces, overlap, noise or smoothing: a task a small
    model learns in seconds (the smoke recipes). A pure function of ``rng``'s state."""
    from PIL import Image, ImageDraw

    font = rng.choice(fonts)
    image = Image.new("RGB", (width, height), (rng.randint(215, 255),) * 3)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = rng.randint(0, max(0, width - (right - left))) - left
    y = rng.randint(0, max(0, height - (bottom - top))) - top
    draw.text((x, y), text, font=font, fill=(rng.randint(0, 80),) * 3)
    return image


def font_problem(path: str, sizes: list[int]) -> str | None:
    """Why pillow cannot load ``path`` as a font at each of ``sizes`` (points), as the renderer will;
    None when it can."""
    from PIL import ImageFont

    for size in sizes:
        try:
            ImageFont.truetype(path, size)
        except (OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
    return None
