"""The `videogemma` entry point: every command fails in one line on stderr, exit 2 for bad input and 1 for a
failure while running; `--debug` shows the traceback."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from videogemma.cli import describe_error, main
from videogemma.errors import RecordError


def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "no-such-dataset"
    assert main(["data", "stats", "--root", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("videogemma data stats: error:") and str(missing) in err
    assert "Traceback" not in err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err


def test_a_folder_where_a_file_belongs_is_bad_input(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path) in err


@pytest.mark.parametrize(
    "error, status, words",
    [
        (RecordError("split.json", 3, "missing 'video'"), 2, "split.json, record 3: missing 'video'"),
        (FileNotFoundError(errno.ENOENT, "No such file", "clip.mp4"), 2, "clip.mp4: no such file"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "runs/"), 2, "runs/: is a folder"),
        (OSError(errno.ENOSPC, "No space left on device", "preds.jsonl"), 1, "preds.jsonl: the disk is full"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/x"), 1, "/mnt/x: the file system is read-only"),
        (PermissionError(errno.EACCES, "Permission denied", "out/"), 1, "out/: permission denied"),
        (OSError(errno.EFBIG, "File too large", "big.bin"), 1, "big.bin: the file is too large"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), 2, "not valid utf-8 text"),
        (RuntimeError("boom"), 1, "unexpected RuntimeError: boom (rerun with --debug"),
    ],
)
def test_errors_are_described_in_one_line(error, status, words):
    got_status, message = describe_error(error)
    assert got_status == status and words in message and "\n" not in message


def test_debug_shows_the_traceback(tmp_path):
    command = [
        sys.executable,
        "-m",
        "videogemma.cli",
        "--debug",
        "data",
        "stats",
        "--root",
        str(tmp_path / "x"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" in result.stderr and "VideoGemmaDataError" in result.stderr
    plain = subprocess.run(
        [c for c in command if c != "--debug"], capture_output=True, text=True, timeout=120
    )
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
