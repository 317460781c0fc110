"""Shell completion (ocrbench.completion through Typer's own completion protocol, as bash and zsh call it)
and the examples at the end of every command's --help. No framework is needed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from conftest import ROOT, run_cli
from ocrbench.cli import app

OCRBENCH = Path(sys.executable).parent / "ocrbench"   # the installed script: the shell hook calls it by name


def complete(words: str, cwd=ROOT, shell="bash") -> list[str]:
    """What the shell hook gets for the command line ``words`` (the last word is the one being typed)."""
    parts = words.split(" ")
    env = {"_OCRBENCH_COMPLETE": f"complete_{shell}", "COMP_WORDS": words,
           "COMP_CWORD": str(len(parts) - 1), "_TYPER_COMPLETE_ARGS": words}
    result = subprocess.run([str(OCRBENCH)], capture_output=True, text=True, env={**os.environ, **env},
                            cwd=cwd, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_a_partial_backend_name_completes():
    assert complete("ocrbench run --backend py") == ["pytorch"]
    assert complete("ocrbench env install mx") == ["mxnet"]
    assert set(complete("ocrbench smoke --backend pytorch,m")) == {"pytorch,mindspore", "pytorch,mxnet"}
    assert "all" in complete("ocrbench run --backend ")


def test_zsh_gets_the_same_backend_names():
    assert "pytorch" in " ".join(complete("ocrbench run --backend py", shell="zsh"))


def test_recipe_paths_complete():
    assert complete("ocrbench run recipes/captcha_py") == ["recipes/captcha_pytorch.yml"]
    assert "recipes/" in complete("ocrbench validate rec")


def test_run_directories_complete(tmp_path):
    run = tmp_path / "runs" / "captcha-pytorch-20261206-101500"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    (tmp_path / "runs" / "notes").mkdir()
    assert complete("ocrbench export runs/cap", cwd=tmp_path) == ["runs/captcha-pytorch-20261206-101500"]
    assert complete("ocrbench compare ru", cwd=tmp_path) == ["runs/"]
    assert complete("ocrbench run --resume runs/", cwd=tmp_path) == \
        ["runs/captcha-pytorch-20261206-101500", "runs/notes/"]


def test_completion_can_be_installed():
    result = run_cli("--help")
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout


def commands(group, prefix: tuple[str, ...] = ()):
    """Every command path of the CLI (``env install``, ``log mlflow``, ``run``, ...)."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):   # a command group (Typer's own Group class)
            yield from commands(command, (*prefix, name))
        else:
            yield (*prefix, name)


@pytest.mark.parametrize("path", list(commands(typer.main.get_command(app))), ids=" ".join)
def test_every_help_ends_with_examples(path):
    result = run_cli(*path, "--help")
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    examples = lines[lines.index("Examples:") + 1:]
    assert 1 <= len(examples) <= 2, lines[-6:]
    assert all(line.startswith(f"ocrbench {' '.join(path)}") for line in examples), examples
