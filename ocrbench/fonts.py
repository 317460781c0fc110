"""Fonts for synthetic text: built-in names served by installed packages (nothing is downloaded), or the
user's font files; and a check that a font has a glyph for every character it will draw.

Built-in fonts (all under open licences, installed with the core by ``make install``):

=================  ==================================  =====================================
name               file                                package (licence)
=================  ==================================  =====================================
noto-sans-sc       NotoSansSC-Regular.otf (CJK)        pylopdf-fonts-zh-cn (SIL OFL 1.1)
noto-serif-sc      NotoSerifSC-Regular.otf (CJK)       pylopdf-fonts-zh-cn (SIL OFL 1.1)
dejavu-sans        DejaVuSans.ttf (Latin)              matplotlib (DejaVu / Bitstream Vera)
dejavu-serif       DejaVuSerif.ttf (Latin)             matplotlib (DejaVu / Bitstream Vera)
dejavu-sans-mono   DejaVuSansMono.ttf (Latin)          matplotlib (DejaVu / Bitstream Vera)
droid-sans-mono    DroidSansMono.ttf (Latin)           captcha (Apache 2.0)
=================  ==================================  =====================================
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from ocrbench.errors import OcrbenchError

BUILTIN = {
    "noto-sans-sc": ("pylopdf_fonts_zh_cn", "NotoSansSC-Regular.otf"),
    "noto-serif-sc": ("pylopdf_fonts_zh_cn", "NotoSerifSC-Regular.otf"),
    "dejavu-sans": ("matplotlib", "mpl-data/fonts/ttf/DejaVuSans.ttf"),
    "dejavu-serif": ("matplotlib", "mpl-data/fonts/ttf/DejaVuSerif.ttf"),
    "dejavu-sans-mono": ("matplotlib", "mpl-data/fonts/ttf/DejaVuSansMono.ttf"),
    "droid-sans-mono": ("captcha", "data/DroidSansMono.ttf"),
}
PACKAGES = {"pylopdf_fonts_zh_cn": "pylopdf-fonts-zh-cn", "matplotlib": "matplotlib", "captcha": "captcha"}


def builtin_path(name: str) -> Path:
    """The file of a built-in font, found without importing its package."""
    package, relative = BUILTIN[name]
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise OcrbenchError(f"font {name!r}: the package {PACKAGES[package]} is not installed",
                            hint="run `make install` (it installs the core's font packages)")
    path = Path(list(found.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise OcrbenchError(f"font {name!r}: {path} is missing from {PACKAGES[package]}",
                            hint="reinstall it: `make install`")
    return path


def resolve(value: str, base_dir: Path, key: str) -> Path:
    """A font given as a built-in name or a path (relative to the recipe's directory)."""
    if value in BUILTIN:
        return builtin_path(value)
    path = (base_dir / Path(value).expanduser()).resolve()
    if not path.is_file():
        raise OcrbenchError(f"{key}: {value!r} is neither a built-in font ({', '.join(BUILTIN)}) nor an "
                            f"existing file ({path})", hint="paths are relative to the recipe file")
    return path


@lru_cache(maxsize=16)
def _cmap(path: str) -> frozenset[int]:
    """Code points the font maps to a glyph (its best Unicode cmap)."""
    from fontTools.ttLib import TTFont

    with TTFont(path, lazy=True, fontNumber=0) as font:
        return frozenset(font.getBestCmap() or {})


def missing_glyphs(path: Path, chars: str) -> str:
    """The characters of ``chars`` (other than the space) that the font cannot draw, in charset order."""
    try:
        covered = _cmap(str(path))
    except Exception as exc:  # fontTools raises many kinds for a file that is not a font
        raise OcrbenchError(f"{path}: cannot be read as a font ({type(exc).__name__}: {exc})",
                            hint="give a TrueType/OpenType file (.ttf, .otf)") from None
    return "".join(c for c in chars if c != " " and ord(c) not in covered)
