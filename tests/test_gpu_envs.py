"""CUDA environments (ocrbench.envs variants): every CUDA requirement set resolves on the package
registries (``uv pip compile`` for Linux x86_64 / Python 3.11, nothing installed — CI has no GPU and the
CUDA wheels are gigabytes), backends without a CUDA build on the registries say so, and the env marker
records the variant. The GPU runs themselves are checked on a GPU machine (docs/backends.md)."""

import json

import pytest

from conftest import run_cli
from ocrbench import envs
from ocrbench.backend import get_backend
from ocrbench.errors import OcrbenchError

# backend -> (variant, its framework pin, a package only the CUDA build brings)
CUDA = {
    "pytorch": ("cuda13", "torch==2.13.0", "nvidia-cuda-runtime=="),
    "tensorflow": ("cuda12", "tensorflow==2.21.0", "nvidia-cuda-runtime-cu12=="),
    "mxnet": ("cuda11", "mxnet-cu117==1.9.1", "mxnet-cu117=="),
}


def pinned(lines: list[str]) -> dict[str, str]:
    return dict(line.split("==", 1) for line in lines if "==" in line)


@pytest.mark.parametrize("backend", sorted(CUDA))
def test_cuda_requirements_resolve(backend):
    spec = get_backend(backend)
    variant, framework, cuda_only = CUDA[backend]
    assert envs.choose_variant(spec, cuda=True, cuda_major=None) == variant
    lines = envs.resolve(spec, variant)
    assert framework in lines
    assert any(line.startswith(cuda_only) for line in lines), lines
    assert not any(line.startswith(f"{spec.distribution}==") for line in lines
                   if spec.distribution != framework.split("==")[0])   # the CPU framework pin is gone
    # every other pin of requirements.txt is kept as it is
    cpu_pins = pinned([line.strip() for line in spec.requirements.read_text().splitlines()
                       if line.strip() and not line.startswith("#")])
    cuda_pins = pinned(lines)
    for name, version in cpu_pins.items():
        if name != spec.distribution:
            assert cuda_pins.get(name) == version, name


@pytest.mark.parametrize("backend", ["paddleocr", "mindspore"])
def test_backends_without_a_registry_cuda_build_say_so(backend):
    spec = get_backend(backend)
    assert envs.variants(spec) == ["cpu"]
    with pytest.raises(OcrbenchError) as caught:
        envs.choose_variant(spec, cuda=True, cuda_major=None)
    assert spec.cuda_unavailable in caught.value.message and "--python" in caught.value.hint
    result = run_cli("env", "install", backend, "--cuda")
    assert result.returncode == 2 and "no CUDA build" in result.stderr and "Traceback" not in result.stderr


def test_an_unknown_cuda_major_names_the_available_ones():
    with pytest.raises(OcrbenchError) as caught:
        envs.choose_variant(get_backend("pytorch"), cuda=True, cuda_major=11)
    assert "CUDA 13" in caught.value.message


def test_env_list_shows_variant_and_cuda_builds(tmp_path):
    result = run_cli("env", "list", env={"OCRBENCH_HOME": str(tmp_path), "COLUMNS": "400"})
    assert result.returncode == 0
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert "cuda13" in rows["pytorch"] and "cuda12" in rows["tensorflow"] and "cuda11" in rows["mxnet"]
    assert "none on the registries" in rows["paddleocr"] and "none on the registries" in rows["mindspore"]


def test_the_marker_records_the_variant(tmp_path, monkeypatch):
    """install() as --cuda builds it, up to the package installer: the env and its marker are real; the
    multi-gigabyte CUDA download is replaced by recording the installer's command."""
    monkeypatch.setenv("OCRBENCH_HOME", str(tmp_path))
    spec = get_backend("pytorch")
    commands = []
    real_run = envs._run
    monkeypatch.setattr(envs, "_run", lambda command, s: (real_run(command, s) if command[1] == "venv"
                                                          else commands.append(command)))
    monkeypatch.setattr(envs, "framework_version", lambda python, names: "2.13.0")
    state = envs.install(spec, variant="cuda13", log=lambda *_: None)
    marker = json.loads((envs.env_path(spec) / envs.MARKER).read_text())
    assert marker["variant"] == "cuda13" and state.variant == "cuda13" and state.installed
    assert marker["requirements_sha256"] == envs.requirements_hash(spec, "cuda13")
    (install_command,) = commands
    assert "--find-links" not in install_command   # the machine's CPU wheel of torch must not be taken
    # kept on a later plain `env install`, stale (with the --cuda hint) once its requirements change
    assert envs.install(spec, log=lambda *_: None).variant == "cuda13" and len(commands) == 1
    marker["requirements_sha256"] = "0" * 64
    (envs.env_path(spec) / envs.MARKER).write_text(json.dumps(marker))
    stale = envs.status(spec)
    assert not stale.installed and "env install pytorch --cuda" in stale.detail
