"""Where ocrbench keeps its caches: backend environments and prepared datasets.

``OCRBENCH_HOME`` overrides the location; the default is ``$XDG_CACHE_HOME/ocrbench`` or
``~/.cache/ocrbench``. ``OCRBENCH_DATASETS`` puts the prepared datasets (and the backends' native copies
inside them) elsewhere, e.g. on a larger disk, while the environments stay under the home.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The cache root (created on first use)."""
    explicit = os.environ.get("OCRBENCH_HOME")
    if explicit:
        root = Path(explicit).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(cache) / "ocrbench"
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def envs_dir() -> Path:
    """Directory holding one virtual environment per backend."""
    return home() / "envs"


def datasets_dir() -> Path:
    """Directory holding prepared canonical datasets, one folder per data fingerprint
    (``$OCRBENCH_DATASETS`` when set, else ``<home>/datasets``)."""
    explicit = os.environ.get("OCRBENCH_DATASETS")
    if explicit:
        root = Path(explicit).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        return root.resolve()
    return home() / "datasets"
