"""Shell completion of ocrbench's own values: backend names, recipe files and run directories.

Typer calls these with the word being typed (``incomplete``) when the shell asks
(``ocrbench --install-completion`` installs the hook for bash, zsh, fish or PowerShell). They must be
fast and never fail: no framework import, no error raised — nothing found is an empty list.
"""

from __future__ import annotations

from pathlib import Path

RECIPE_SUFFIXES = (".yml", ".yaml")
RUN_MARKERS = ("job.json", "metrics.json")   # a directory holding one of these is a run directory
MAX_ITEMS = 200


def backend_names() -> list[str]:
    """The registered backends (entry points; no framework is imported)."""
    try:
        from ocrbench.backend import load_backends

        return sorted(load_backends())
    except Exception:   # a broken third-party entry point must not break the shell
        return []


def complete_backends(incomplete: str) -> list[str]:
    """Backend names, ``all``, and the next name of a comma-separated list (``pytorch,mx`` ->
    ``pytorch,mxnet``)."""
    done, _, last = incomplete.rpartition(",")
    prefix = f"{done}," if done else ""
    chosen = set(done.split(",")) if done else set()
    names = [n for n in backend_names() if n not in chosen]
    if not done:
        names.append("all")
    return [prefix + n for n in names if n.startswith(last)]


def _entries(incomplete: str) -> tuple[Path, str, list[Path]]:
    """The directory being listed, the name prefix typed in it, and its entries (sorted)."""
    typed = Path(incomplete) if incomplete else Path(".")
    folder, stem = (typed, "") if incomplete.endswith("/") or not incomplete else (typed.parent, typed.name)
    try:
        entries = sorted(p for p in folder.expanduser().iterdir() if p.name.startswith(stem)
                         and (stem.startswith(".") or not p.name.startswith(".")))
    except OSError:
        entries = []
    return folder, stem, entries[:MAX_ITEMS]


def _shown(folder: Path, entry: Path, incomplete: str) -> str:
    """``entry`` as the user typed its folder (``recipes/`` stays relative), directories ending in /."""
    text = entry.name if not incomplete or (folder == Path(".") and "/" not in incomplete) else \
        str(folder / entry.name)
    return text + ("/" if entry.is_dir() else "")


def complete_recipes(incomplete: str) -> list[str]:
    """Recipe files (``*.yml``/``*.yaml``) and the folders that may hold them."""
    folder, _, entries = _entries(incomplete)
    return [_shown(folder, e, incomplete) for e in entries
            if e.is_dir() or e.suffix.lower() in RECIPE_SUFFIXES]


def is_run_dir(path: Path) -> bool:
    return any((path / marker).is_file() for marker in RUN_MARKERS)


def complete_run_dirs(incomplete: str) -> list[str]:
    """Run directories (holding job.json or metrics.json), and folders to descend into (``runs/``)."""
    folder, _, entries = _entries(incomplete)
    shown = []
    for entry in entries:
        if entry.is_dir():
            text = _shown(folder, entry, incomplete)
            shown.append(text.rstrip("/") if is_run_dir(entry) else text)
    return shown
