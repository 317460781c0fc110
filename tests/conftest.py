import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
OCRBENCH = [sys.executable, "-m", "ocrbench"]


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """A private OCRBENCH_HOME so dataset tests start from an empty cache."""
    home = tmp_path / "home"
    monkeypatch.setenv("OCRBENCH_HOME", str(home))
    return home


def quiet(_message):
    """A log function that prints nothing (dataset preparation in tests)."""


def tree_digest(root, leave_out=()):
    """sha256 over every file of a prepared dataset but its manifest (paths and bytes), leaving out the
    top-level folders named in ``leave_out`` (e.g. ``native``)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"
                       and p.relative_to(root).parts[0] not in leave_out):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def run_cli(*args, env=None, cwd=None, timeout=900):
    """Run the real ``ocrbench`` CLI as a user would, in a subprocess."""
    merged = dict(os.environ, **(env or {}))
    merged.setdefault("COLUMNS", "160")
    return subprocess.run([*OCRBENCH, *map(str, args)], capture_output=True, text=True, env=merged,
                          cwd=cwd or ROOT, timeout=timeout)


@pytest.fixture(scope="session")
def pytorch_smoke_run(tmp_path_factory):
    """One real run of the PyTorch smoke recipe (it learns: ≥ its target_acc) for the whole session,
    shared by test_e2e_pytorch and test_predict: ``(run_dir, completed process)``. Tests that change the
    run directory work on a copy."""
    from ocrbench import envs
    from ocrbench.backend import get_backend

    envs.resolve_python(get_backend("pytorch"))   # a clear error if the env is missing
    out = tmp_path_factory.mktemp("pytorch-smoke")
    result = run_cli("run", ROOT / "backends" / "pytorch" / "smoke.yml", "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = out.iterdir()
    return run_dir, result


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


TINY_CAPTCHA = """
name: tiny
backend: pytorch
data:
  source: captcha
  width: 80
  height: 32
  font_sizes: [24]
  train_size: 24
  eval_size: 8
  seed: 3
"""
