"""The one exception type the CLI turns into a clear message (no traceback)."""

from __future__ import annotations


class OcrbenchError(Exception):
    """A user-facing error: what is wrong (naming the file, key or value) and what to do about it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"
