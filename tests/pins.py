"""The versions a backend's environment pins, read from ``backends/<name>/requirements.txt`` so that tests
never repeat a version number the pins already state."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT


def _normalized(name: str) -> str:
    """A distribution name as pip compares them (PEP 503: case and runs of ``-_.`` do not matter)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_version(backend: str, distribution: str, root: Path = ROOT) -> str:
    """The ``==`` version of ``distribution`` in ``root/backends/<backend>/requirements.txt``."""
    path = root / "backends" / backend / "requirements.txt"
    for line in path.read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        name, found, version = requirement.partition("==")
        if found and _normalized(name.strip()) == _normalized(distribution):
            return version.split(";", 1)[0].strip()
    raise LookupError(f"{path}: no '{distribution}==VERSION' line")
