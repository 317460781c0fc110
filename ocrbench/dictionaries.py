"""Dictionary (charset) files as the reference systems write them, read into one ocrbench charset.

Two layouts are understood, both one entry per line:

* PaddleOCR (``ppocr/utils/ppocr_keys_v1.txt``): UTF-8, one character per line, in class order.
  PaddleOCR's ``use_space_char: True`` adds the space as one more class after the file's characters.
* CRNN_Chinese_Characters_Rec (``char_std_5990.txt``): GBK-encoded, one character per line, and the first
  line is the literal word ``blank`` — the CTC blank's own entry (class 0 there, as here).

Either way the result is ocrbench's convention (``ocrbench.codec``): class 0 is the blank, the ``k``-th
character of the returned charset (0-based) is class ``k + 1``. So a ``char_std_5990.txt`` of 5,990
entries gives 5,989 characters and 5,990 classes — the same classes CRNN_Chinese trains.

Every error names the file and the line. Standard library only.
"""

from __future__ import annotations

from pathlib import Path

from ocrbench import atomic

BLANK_ENTRY = "blank"   # char_std_5990.txt's first line: the CTC blank's placeholder
AUTO_ENCODINGS = ("utf-8-sig", "gb18030")   # ``auto``: UTF-8 (BOM allowed), then GB18030 (covers GB2312, GBK)


class DictionaryError(ValueError):
    """A dictionary file that cannot be used; the message names the file and line."""


def decode(raw: bytes, encoding: str, path: Path) -> str:
    """The file's text; ``auto`` tries UTF-8 then GB18030. A byte that does not decode is reported with
    its line number."""
    candidates = AUTO_ENCODINGS if encoding == "auto" else (encoding,)
    failure: UnicodeDecodeError | None = None
    for codec in candidates:
        try:
            return raw.decode(codec)
        except LookupError:
            raise DictionaryError(f"unknown encoding {encoding!r} for {path} (use auto, utf-8, gbk, "
                                  "gb18030, ...)") from None
        except UnicodeDecodeError as exc:
            failure = exc
    assert failure is not None
    line = raw[: failure.start].count(b"\n") + 1
    raise DictionaryError(f"{path}:{line}: not {' or '.join(candidates)} text ({failure.reason} at byte "
                          f"{failure.start}); set data.charset_encoding to the file's encoding "
                          "(char_std_5990.txt is gbk)")


def parse(text: str, path: Path, use_space_char: bool = False) -> str:
    """The charset (class order) of a dictionary's text; see the module docstring for the layouts."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    start = 1 if lines and lines[0] == BLANK_ENTRY else 0
    seen: dict[str, int] = {}
    for number, entry in enumerate(lines[start:], start=start + 1):
        if len(entry) != 1:
            what = "is empty" if not entry else f"holds {entry!r} ({len(entry)} characters)"
            raise DictionaryError(f"{path}:{number}: line {what}; a dictionary has exactly one character "
                                  "per line (only line 1 may be 'blank', the CTC blank's entry)")
        if entry in seen:
            raise DictionaryError(f"{path}:{number}: {entry!r} repeats line {seen[entry]}")
        seen[entry] = number
    chars = "".join(seen)
    if use_space_char and " " not in seen:
        chars += " "
    if not chars:
        raise DictionaryError(f"{path}: the dictionary has no characters")
    return chars


def read(path: str | Path, encoding: str = "utf-8", use_space_char: bool = False) -> str:
    """Read a dictionary file into a charset string (class ``k + 1`` is its ``k``-th character)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DictionaryError(f"{path}: cannot read the dictionary ({exc.strerror or exc})") from None
    return parse(decode(raw, encoding, path), path, use_space_char)


def write(path: str | Path, chars: str, *, encoding: str = "utf-8", blank_entry: bool = False) -> None:
    """Write ``chars`` one per line (PaddleOCR layout; ``blank_entry``: first line ``blank`` as
    CRNN_Chinese's ``char_std_5990.txt``) in ``encoding``."""
    lines = ([BLANK_ENTRY] if blank_entry else []) + list(chars)
    atomic.write_bytes(path, "".join(line + "\n" for line in lines).encode(encoding))
