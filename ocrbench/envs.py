"""One isolated virtual environment per backend, created with uv from the backend's pinned requirements.

Environments live in ``$OCRBENCH_HOME/envs/<backend>``. A marker file records the variant (``cpu`` or
``cuda<major>``) and the sha256 of the requirements it was built from, so ``install`` is a no-op
(milliseconds) when nothing changed. A recipe (``runtime.python``) or the CLI (``--python``) can point a
backend at an existing interpreter instead, e.g. a user's own CUDA build; ocrbench then uses it as it is.

**Variants.** ``cpu`` is ``requirements.txt``. A CUDA variant is ``requirements.txt`` with the framework's
pin (the spec's ``distribution``) replaced by the lines of ``requirements-cuda<major>.txt``, so every other
pin is shared; it is installed from the package registries only (not the machine's find-links, which may
hold a CPU wheel of the same version). ``resolve`` checks that a variant resolves without installing it
(``uv pip compile`` for Linux x86_64 and the env's Python).
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
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
    variant: str | None = None   # cpu or cuda<major> for ocrbench's own env (its marker); None otherwise


def env_path(spec: BackendSpec) -> Path:
    return envs_dir() / spec.name


def env_python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


CPU = "cpu"
PLATFORM = "x86_64-manylinux_2_28"   # the platform CUDA variants are resolved for (CUDA wheels are Linux)


def variants(spec: BackendSpec) -> list[str]:
    """The variants ``ocrbench env install`` can build for ``spec``: ``cpu`` and each ``cuda<major>``."""
    return [CPU, *(f"cuda{major}" for major in spec.cuda_requirements)]


def choose_variant(spec: BackendSpec, cuda: bool, cuda_major: int | None) -> str:
    """The variant asked for on the command line, or a named error saying what exists instead."""
    if not cuda and cuda_major is None:
        return CPU
    available = spec.cuda_requirements
    if not available:
        why = spec.cuda_unavailable or "no requirements-cuda<major>.txt is defined for it"
        raise OcrbenchError(f"{spec.name}: no CUDA build can be installed from the package registries: {why}",
                            hint=f"install a CUDA build of {spec.distribution} into an interpreter yourself "
                                 f"and point ocrbench at it: --python PATH or runtime.python.{spec.name} "
                                 "(docs/backends.md, 'GPU environments')")
    if cuda_major is None:
        return f"cuda{max(available)}"
    if cuda_major not in available:
        raise OcrbenchError(f"{spec.name}: no CUDA {cuda_major} build is defined; available: "
                            f"{', '.join(f'CUDA {m}' for m in available)}",
                            hint=f"ocrbench env install {spec.name} --cuda")
    return f"cuda{cuda_major}"


def requirements_text(spec: BackendSpec, variant: str = CPU) -> str:
    """The requirements of ``variant``: requirements.txt, or for ``cuda<major>`` requirements.txt with
    the framework's pin replaced by that variant's lines."""
    base = spec.requirements.read_text(encoding="utf-8")
    if variant == CPU:
        return base
    major = variant.removeprefix("cuda")
    path = spec.cuda_requirements.get(int(major)) if variant.startswith("cuda") and major.isdigit() else None
    if path is None:
        raise OcrbenchError(f"{spec.name}: unknown environment variant {variant!r}; known: "
                            f"{', '.join(variants(spec))}")
    framework = re.compile(rf"^\s*{re.escape(spec.distribution)}\s*(\[|==|>=|<|~=|$)", re.IGNORECASE)
    kept = [line for line in base.splitlines() if not framework.match(line)]
    return "\n".join([*kept, f"# {path.name}", path.read_text(encoding="utf-8")]) + "\n"


def requirements_hash(spec: BackendSpec, variant: str = CPU) -> str:
    """sha256 of the variant's requirements (for ``cpu``, of requirements.txt's bytes)."""
    if variant == CPU:
        return hashlib.sha256(spec.requirements.read_bytes()).hexdigest()
    return hashlib.sha256(requirements_text(spec, variant).encode("utf-8")).hexdigest()


def resolve(spec: BackendSpec, variant: str) -> list[str]:
    """Resolve ``variant`` without installing it (``uv pip compile`` from the package registries, for
    Linux x86_64 and the backend's Python): the pinned ``name==version`` lines it would install, or a
    named error with the resolver's reason."""
    with tempfile.TemporaryDirectory() as scratch:
        requirements = Path(scratch) / f"requirements-{variant}.txt"
        requirements.write_text(requirements_text(spec, variant), encoding="utf-8")
        command = [_uv_binary(), "pip", "compile", str(requirements), "--python-version", spec.python,
                   "--python-platform", PLATFORM, "--quiet", "--no-header", "--no-annotate"]
        if variant == CPU:
            command += [a for link in pip_find_links() for a in ("--find-links", link)]
        result = subprocess.run(command, capture_output=True, text=True,
                                env=dict(os.environ, UV_PYTHON_DOWNLOADS="never"))
    if result.returncode != 0:
        reason = " ".join(line.strip() for line in result.stderr.splitlines() if line.strip())[:800]
        raise OcrbenchError(f"{spec.name} ({variant}): the requirements do not resolve: {reason}")
    return [line.strip() for line in result.stdout.splitlines() if line.strip() and not line.startswith("#")]


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
    variant = info.get("variant", CPU)   # markers written before variants existed are CPU envs
    try:
        stale = info.get("requirements_sha256") != requirements_hash(spec, variant)
    except OcrbenchError:   # a variant this version no longer defines
        stale = True
    again = f"ocrbench env install {spec.name}" + ("" if variant == CPU else " --cuda")
    detail = f"requirements changed since install: run {again}" if stale else ""
    return EnvStatus(spec.name, not stale, env_python(env), info.get("framework_version"), True, detail,
                     variant)


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


def install(spec: BackendSpec, force: bool = False, log=print, variant: str | None = None) -> EnvStatus:
    """Create or update the backend's environment as ``variant`` (None: the installed one, else cpu).
    Idempotent: returns at once if that variant is installed and current. Another variant than the
    installed one is built in a fresh env (nothing of the other variant is left)."""
    current = status(spec)
    wanted = variant or current.variant or CPU
    if current.installed and current.variant == wanted and not force:
        log(f"{spec.name}: already installed ({spec.distribution} {current.framework_version}, {wanted})")
        return current
    requirements_text(spec, wanted)   # an unknown variant fails before the env is touched
    env = env_path(spec)
    env.parent.mkdir(parents=True, exist_ok=True)
    (env / MARKER).unlink(missing_ok=True)
    if current.variant is not None and current.variant != wanted:
        shutil.rmtree(env)   # not atomic.remove_tree: it would truncate through bin/python, a link
    uv = _uv_binary()
    started = time.monotonic()
    log(f"{spec.name}: creating {env} (python {spec.python}, {wanted}) ...")
    _run([uv, "venv", "--quiet", "--allow-existing", "--python", _base_python(spec.python), str(env)], spec)
    log(f"{spec.name}: installing the {wanted} requirements (this can take minutes the first time) ...")
    with tempfile.TemporaryDirectory() as scratch:
        requirements = spec.requirements
        if wanted != CPU:
            requirements = Path(scratch) / f"requirements-{wanted}.txt"
            requirements.write_text(requirements_text(spec, wanted), encoding="utf-8")
        command = [uv, "pip", "install", "--python", str(env_python(env)), "-r", str(requirements)]
        if wanted == CPU:
            command += [a for link in pip_find_links() for a in ("--find-links", link)]
        _run(command, spec)
    version = framework_version(env_python(env), spec.distributions)
    atomic.write_json(env / MARKER, {
        "backend": spec.name,
        "variant": wanted,
        "requirements_sha256": requirements_hash(spec, wanted),
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
