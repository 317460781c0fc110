"""What the launch tests share: ``ocrbench run --print-command`` through the CLI (no framework runs)
and the words of the command lines it prints. The generic checks of every backend's launch are in
test_distributed.py; each backend's own expectations in test_launch_<backend>.py."""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from ocrbench.cli import app

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "captcha.yml"
TWO_GPUS = ("--gpus", "2", "--set", "train.batch_size=32", "--set", "train.lr_scaling=linear")
TWO_NODES = ("--gpus", "2", "--nnodes", "2", "--master-addr", "10.1.2.3", "--master-port", "23456",
             "--hosts", "10.1.2.3,10.1.2.4")
runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@functools.cache
def print_command(backend: str, *args: str) -> str:
    """``ocrbench run recipes/captcha.yml --backend BACKEND --print-command ARGS``'s output (must succeed;
    cached: the generic and the backend's own tests read the same output)."""
    code, out = cli("run", str(RECIPE), "--backend", backend, "--print-command", *args)
    assert code == 0, out
    return out


def commands(output: str) -> list[list[str]]:
    """The command lines of --print-command output, split into words (comments dropped)."""
    return [shlex.split(line.removesuffix("  &")) for line in output.splitlines()
            if line and not line.startswith("#")]


def node_sections(out: str) -> dict[int, list[list[str]]]:
    """The command lines of each node's section (``# node K of 2: ...``) of a 2-node --print-command."""
    sections: dict[int, list[str]] = {}
    node = None
    for line in out.splitlines():
        found = re.match(r"# node (\d+) of 2:", line)
        if found:
            node = int(found.group(1))
            sections[node] = []
        elif node is not None and not line.startswith("#"):
            sections[node].append(line)
    return {n: commands("\n".join(lines)) for n, lines in sections.items()}


def two_gpus(backend: str) -> tuple[str, list[str]]:
    """The 2-GPU launch on one machine (batch 32 per device, lr_scaling linear): the header line and the
    one command line."""
    out = print_command(backend, *TWO_GPUS)
    [argv] = commands(out)
    return out.splitlines()[0], argv


def two_nodes(backend: str) -> tuple[str, dict[int, list[list[str]]]]:
    """The launch of 2 nodes x 2 GPUs (master 10.1.2.3:23456, --hosts given): the whole output and each
    node's command lines."""
    out = print_command(backend, *TWO_NODES)
    return out, node_sections(out)


def flat(argvs: list[list[str]]) -> str:
    """A node's command lines as one string of words (to find options in their order)."""
    return " ".join(" ".join(argv) for argv in argvs)


def assert_module_launch(argv: list[str], words: list[str]) -> None:
    """``argv`` runs the env's ``python -m MODULE`` (``words``: "-m", MODULE, then options it must hold)
    and ends with the worker's job spec."""
    module = argv.index("-m")
    assert argv[module - 1].endswith("/python") and argv[module + 1] == words[1]
    assert all(word in argv for word in words), argv
    assert argv[-1].endswith("/job.json")
