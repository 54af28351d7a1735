"""`videogemma serve` on the command line: options refused before any model loads, `--model NAME=PATH`, and the
serving package's imports (never training)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from videogemma import loading
from videogemma.cli import main
from videogemma.serve.commands import ServeArgumentError, parse_models


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(loading, "load", refuse)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--model", "no-such-model"], "--model no-such-model: no-such-model is no such folder"),
        (["--model", "a=tiny", "--model", "a=tiny"], "the name 'a' is given twice"),
        (
            ["--model", "tiny", "--media-root", "no-such-folder"],
            "--media-root no-such-folder: no such folder",
        ),
        (["--model", "tiny", "--max-queue", "0"], "--max-queue must be a positive number"),
        (["--model", "tiny", "--default-max-tokens", "600"], "cannot exceed --max-tokens (512)"),
        (["--model", "tiny", "--port", "70000"], "--port must be 0-65535"),
        (["--model", "tiny", "--api-key", " "], "--api-key is empty"),
    ],
)
def test_bad_options_are_one_line_and_exit_2_before_loading(no_loading, capsys, options, message):
    assert main(["serve", *options]) == 2
    error = capsys.readouterr().err
    assert error.startswith("videogemma serve: error: ") and message in error and error.count("\n") == 1


def test_models_are_named_by_name_equals_path(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert parse_models(["tiny", f"coach={run}"]) == {"tiny": "tiny", "coach": str(run)}
    odd = tmp_path / "a=b"  # a folder whose name holds '=' is a path, not NAME=PATH
    odd.mkdir()
    assert parse_models([str(odd)]) == {str(odd): str(odd)}
    with pytest.raises(ServeArgumentError, match="no such folder"):
        parse_models([f"coach={tmp_path / 'missing'}"])


def test_serve_is_listed_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "serve" in capsys.readouterr().out


_SERVING_WITHOUT_TRAINING = """
import sys
import videogemma.serve.app, videogemma.serve.commands, videogemma.serve.batching, videogemma.serve.media
# The coaching stream runs the live coach (videogemma.coach), which never imports training either.
print(sorted(name for name in sys.modules if name.startswith("videogemma.train")))
"""


def test_serving_never_imports_training():
    result = subprocess.run(
        [sys.executable, "-c", _SERVING_WITHOUT_TRAINING], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
