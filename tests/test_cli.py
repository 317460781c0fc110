"""The CLI as a user meets it: help, backends, environments, and errors without tracebacks."""

from conftest import ROOT, run_cli


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("run", "validate", "prepare", "backends", "env"):
        assert command in result.stdout


def test_backends_lists_pytorch():
    result = run_cli("backends")
    assert result.returncode == 0 and "pytorch" in result.stdout and "torchscript" in result.stdout


def test_missing_environment_names_the_install_command(tmp_path):
    result = run_cli("run", ROOT / "backends" / "pytorch" / "smoke.yml", "--out", tmp_path / "runs",
                     env={"OCRBENCH_HOME": str(tmp_path / "empty-home")})
    assert result.returncode == 2
    assert "its environment is not installed" in result.stderr
    assert "ocrbench env install pytorch" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_env_list_without_installs(tmp_path):
    result = run_cli("env", "list", env={"OCRBENCH_HOME": str(tmp_path / "empty-home")})
    assert result.returncode == 0 and "pytorch" in result.stdout and "not installed" in result.stdout


def test_python_override_that_does_not_exist(tmp_path):
    result = run_cli("run", ROOT / "backends" / "pytorch" / "smoke.yml",
                     "--python", tmp_path / "nope" / "python", "--out", tmp_path / "runs")
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_resume_of_something_that_is_not_a_run(tmp_path):
    result = run_cli("run", "--resume", tmp_path)
    assert result.returncode == 2 and "not a run directory" in result.stderr


def test_error_text_with_brackets_is_shown_verbatim():
    result = run_cli("validate", ROOT / "backends" / "pytorch" / "smoke.yml", "--set", "name=a[b]")
    assert result.returncode == 2 and "(got 'a[b]')" in result.stderr
