"""`make setup`: torch is reinstalled when TORCH asks for another build than the last set-up recorded (a GPU user
running `make setup TORCH=torch` after a CPU set-up), and nothing is redone when it asks for the same one. The
Python is a stand-in that logs each call, so nothing is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/bin/sh
# `-m venv DIR` makes DIR/bin/python, which logs its arguments and does nothing else.
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin"
  printf '#!/bin/sh\\necho "$*" >> "%s/calls.log"\\n' "$3" > "$3/bin/python"
  chmod +x "$3/bin/python"
fi
"""


@pytest.fixture
def make_setup(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    python = tmp_path / "python3"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    venv = tmp_path / "venv"

    def run(*variables: str) -> list[str]:
        """The pip calls this `make setup` made."""
        log = venv / "calls.log"
        before = log.read_text().splitlines() if log.exists() else []
        result = subprocess.run(
            ["make", "-s", "-C", str(PROJECT), "setup", f"VENV={venv}", f"PYTHON={python}", *variables],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return log.read_text().splitlines()[len(before) :]

    return run, venv


def test_setup_reinstalls_torch_only_when_asked_for_another(make_setup):
    run, venv = make_setup
    first = run()
    assert "-m pip install -q --force-reinstall --no-deps torch==2.13.0" in first
    assert "-m pip install -q -e ." in first
    assert run() == []  # the same TORCH: nothing to do
    gpu = run("TORCH=torch")
    assert gpu[:2] == ["-m pip install -q --force-reinstall --no-deps torch", "-m pip install -q torch"]
    assert (venv / ".torch-spec").read_text().strip() == "torch"
    assert run("TORCH=torch") == []


def test_a_setup_from_before_the_spec_keeps_its_torch(make_setup):
    run, venv = make_setup
    run()
    (venv / ".torch-spec").unlink()  # as a set-up made before the spec was recorded
    assert not any("torch" in call for call in run())
    assert (venv / ".torch-spec").read_text().strip() == "torch==2.13.0"
