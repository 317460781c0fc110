"""One isolated virtual environment per backend, created with uv from the backend's pinned requirements.

Environments live in ``$OCRBENCH_HOME/envs/<backend>``. A marker file records the sha256 of the
requirements they were built from, so ``install`` is a no-op (milliseconds) when nothing changed. A
recipe (``runtime.python``) or the CLI (``--python``) can point a backend at an existing interpreter
instead, e.g. a user's own CUDA build; ocrbench then uses it as it is.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ocrbench import atomic
from ocrbench.backend import BackendSpec
from ocrbench.errors import OcrbenchError
from ocrbench.home import envs_dir

MARKER = "ocrbench-env.json"


@dataclass
class EnvStatus:
    backend: str
    installed: bool
    python: Path | None
    framework_version: str | None
    managed: bool          # True: ocrbench's own env; False: an interpreter the user pointed to
    detail: str = ""


def env_path(spec: BackendSpec) -> Path:
    return envs_dir() / spec.name


def env_python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def requirements_hash(spec: BackendSpec) -> str:
    return hashlib.sha256(spec.requirements.read_bytes()).hexdigest()


def framework_version(python: Path, distributions: tuple[str, ...]) -> str | None:
    """Version of the first of ``distributions`` installed for ``python`` (read from metadata; no
    framework import)."""
    code = ("import importlib.metadata as m, sys\n"
            "for name in sys.argv[1:]:\n"
            "    try:\n        print(m.version(name)); break\n"
            "    except m.PackageNotFoundError:\n        pass\n")
    try:
        out = subprocess.run([str(python), "-c", code, *distributions], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def status(spec: BackendSpec, override: str | None = None) -> EnvStatus:
    """Whether the backend can run, and with which interpreter and framework version."""
    if override:
        python = Path(override).expanduser()
        if not python.exists():
            return EnvStatus(spec.name, False, python, None, False, f"interpreter {python} does not exist")
        version = framework_version(python, spec.distributions)
        detail = "" if version else f"{' or '.join(spec.distributions)} is not installed for {python}"
        return EnvStatus(spec.name, version is not None, python, version, False, detail)
    env = env_path(spec)
    marker = env / MARKER
    if not marker.is_file() or not env_python(env).exists():
        return EnvStatus(spec.name, False, None, None, True, "not installed")
    info = json.loads(marker.read_text())
    stale = info.get("requirements_sha256") != requirements_hash(spec)
    detail = "requirements changed since install: run ocrbench env install " + spec.name if stale else ""
    return EnvStatus(spec.name, not stale, env_python(env), info.get("framework_version"), True, detail)


def resolve_python(spec: BackendSpec, override: str | None = None) -> tuple[Path, str]:
    """The interpreter to run the worker with and the framework version, or a clear error."""
    state = status(spec, override)
    if state.installed and state.python is not None:
        return state.python, state.framework_version or "unknown"
    if override:
        raise OcrbenchError(f"backend {spec.name!r}: {state.detail}",
                            hint=f"install {spec.distribution} for that interpreter, or drop the override")
    raise OcrbenchError(f"backend {spec.name!r}: its environment is {state.detail or 'not installed'}",
                        hint=f"run: ocrbench env install {spec.name}")


def install(spec: BackendSpec, force: bool = False, log=print) -> EnvStatus:
    """Create or update the backend's environment. Idempotent: returns at once if it is current."""
    current = status(spec)
    if current.installed and not force:
        log(f"{spec.name}: already installed ({spec.distribution} {current.framework_version})")
        return current
    env = env_path(spec)
    env.parent.mkdir(parents=True, exist_ok=True)
    (env / MARKER).unlink(missing_ok=True)
    uv = _uv_binary()
    started = time.monotonic()
    log(f"{spec.name}: creating {env} (python {spec.python}) ...")
    _run([uv, "venv", "--quiet", "--allow-existing", "--python", _base_python(spec.python), str(env)], spec)
    log(f"{spec.name}: installing {spec.requirements.name} (this can take minutes the first time) ...")
    command = [uv, "pip", "install", "--python", str(env_python(env)), "-r", str(spec.requirements)]
    for link in pip_find_links():
        command += ["--find-links", link]
    _run(command, spec)
    version = framework_version(env_python(env), spec.distributions)
    atomic.write_json(env / MARKER, {
        "backend": spec.name,
        "requirements_sha256": requirements_hash(spec),
        "framework_version": version,
        "python": str(env_python(env)),
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.monotonic() - started, 1),
    })
    log(f"{spec.name}: installed {spec.distribution} {version} in {time.monotonic() - started:.0f} s")
    return status(spec)


def _uv_binary() -> str:
    try:
        from uv import find_uv_bin
    except ImportError:
        raise OcrbenchError("the 'uv' package is missing from the core environment",
                            hint="pip install uv (it is a dependency of ocrbench)") from None
    return find_uv_bin()


def _base_python(version: str) -> str:
    """This interpreter if it is the wanted version (no download needed), else the version string."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    return version


def _run(command: list[str], spec: BackendSpec) -> None:
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
    result = subprocess.run(command, env=env)
    if result.returncode != 0:
        raise OcrbenchError(f"{spec.name}: environment install failed (exit {result.returncode}): "
                            f"{' '.join(command[:3])} ...",
                            hint="see the installer's output above; fix the cause and run the command again")


def pip_find_links() -> list[str]:
    """Extra wheel locations pip is configured with (pip.conf / PIP_FIND_LINKS), so uv sees them too.

    Some machines keep a local wheel (e.g. a CPU build of torch) in a directory that pip knows through
    ``find-links``; uv does not read pip's configuration, so it is passed on explicitly.
    """
    links: list[str] = []
    for value in (os.environ.get("PIP_FIND_LINKS"), os.environ.get("UV_FIND_LINKS")):
        if value:
            links += value.split()
    files = [Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf"), Path.home() / ".pip/pip.conf",
             Path.home() / ".config/pip/pip.conf"]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    for path in files:
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue
        for section in ("global", "install"):
            if parser.has_option(section, "find-links"):
                links += parser.get(section, "find-links").split()
    unique = []
    for link in links:
        if link not in unique and (("://" in link) or Path(link).exists()):
            unique.append(link)
    return unique
