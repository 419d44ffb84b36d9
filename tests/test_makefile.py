"""The Makefile's install (which torch build pip is told to take), `make help`, CONFIG, and `make clean` asking
before it deletes a study's results. Dry runs (`make -n`) only, but for one pip resolve and `make clean` itself."""

from __future__ import annotations

import os
import platform
import pty
import re
import subprocess
import sys

import pytest

from conftest import REPO

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
ON_LINUX = platform.system() == "Linux"


def make(*args, cwd=REPO, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-f", str(REPO / "Makefile"), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kwargs)


def pip_commands(tmp_path, *variables) -> list[str]:
    """The pip install commands `make install` would run into a fresh venv (none exists at tmp_path/venv)."""
    proc = make("-n", "install", f"VENV={tmp_path / 'venv'}", *variables)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if " -m pip install " in line]


def torch_command(commands: list[str]) -> str | None:
    """The command that installs torch on its own, if there is one."""
    return next((c for c in commands if c.endswith(" torch")), None)


@pytest.mark.skipif(not ON_LINUX, reason="off Linux PyPI's torch wheel is the CPU build: no index is named")
def test_linux_install_takes_torch_alone_from_the_cpu_index_then_the_rest_under_the_pin(tmp_path):
    commands = pip_commands(tmp_path)
    torch = torch_command(commands)
    assert torch and f"--index-url {CPU_INDEX}" in torch and "--no-deps" in torch
    assert "--constraint envs/constraints.txt" in torch      # the pinned release, not the index's newest
    rest = commands[commands.index(torch) + 1:]
    assert any("--editable '.[test]'" in c and "--constraint envs/constraints.txt" in c for c in rest)
    assert not any("download.pytorch.org" in c for c in rest)  # only torch comes from PyTorch's index


def test_gpu_takes_pypis_default_torch_and_names_no_index(tmp_path):
    commands = pip_commands(tmp_path, "GPU=1")
    assert torch_command(commands) is None
    assert not any("--index-url" in c or "--extra-index-url" in c for c in commands), commands
    assert any("--editable '.[test]'" in c for c in commands)


def test_torch_index_overrides_the_default(tmp_path):
    url = "https://download.pytorch.org/whl/cu128"
    assert f"--index-url {url}" in torch_command(pip_commands(tmp_path, f"TORCH_INDEX={url}"))
    assert torch_command(pip_commands(tmp_path, "TORCH_INDEX=")) is None


@pytest.mark.skipif(not ON_LINUX, reason="the CPU index is named on Linux only")
def test_the_cpu_index_command_resolves_the_pinned_cpu_build(tmp_path):
    """The resolver's choice for the torch step, run as `make install` would run it (--dry-run: nothing is
    installed). Where PyTorch's index cannot be reached, pip falls back to the pinned wheel on the machine."""
    torch = torch_command(pip_commands(tmp_path))
    args = torch.split(" -m pip install ", 1)[1].split()
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    pin = re.search(r"^torch==(\S+)$", (REPO / "envs/constraints.txt").read_text(), re.M).group(1)
    assert f"Would install torch-{pin}+cpu" in proc.stdout


def test_help_lists_every_target_with_one_line():
    proc = make("help")
    assert proc.returncode == 0, proc.stderr
    listed = dict(re.findall(r"^  make (\S+) +(\S.*)$", proc.stdout, re.M))
    phony = re.search(r"^\.PHONY: (.*)$", (REPO / "Makefile").read_text(), re.M).group(1).split()
    assert set(listed) == set(phony)
    assert make().stdout == proc.stdout   # plain `make` is `make help`: it starts nothing


def test_config_is_the_study_that_run_timed_run_and_estimate_use():
    for target in ("run", "timed-run", "estimate"):
        default = make("-n", target).stdout
        chosen = make("-n", target, "CONFIG=config/smoke.yaml").stdout
        assert "--configfile config/config.yaml" in default and "config/smoke.yaml" not in default, target
        assert "--configfile config/smoke.yaml" in chosen and "--configfile config/config.yaml" not in chosen, target


def study_folder(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "runs.csv").write_text("a study's results\n")
    return tmp_path


def test_clean_refuses_without_a_terminal_or_in_ci_unless_forced(tmp_path):
    folder = study_folder(tmp_path)
    for env in ({"CI": "true"}, {"CI": ""}):   # stdin is no terminal here either way
        proc = make("clean", cwd=folder, env=env, stdin=subprocess.DEVNULL)
        assert proc.returncode != 0 and "FORCE=1" in proc.stderr
        assert (folder / "results" / "runs.csv").exists()
    assert make("clean", "FORCE=1", cwd=folder, env={"CI": "true"}).returncode == 0
    assert not (folder / "results").exists()


@pytest.mark.parametrize("answer, kept", [("n", True), ("", True), ("y", False)])
def test_clean_asks_at_a_terminal(tmp_path, answer, kept):
    folder = study_folder(tmp_path)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(["make", "-f", str(REPO / "Makefile"), "clean"], cwd=folder, stdin=follower,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "CI": ""})
        os.write(leader, f"{answer}\n".encode())
        out, _ = proc.communicate(timeout=30)
    finally:
        os.close(leader)
        os.close(follower)
    assert "Delete results" in out
    assert (folder / "results" / "runs.csv").exists() == kept
    assert (proc.returncode != 0) == kept
