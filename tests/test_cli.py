"""The `videogemma` entry point: every command fails in one line on stderr, exit 2 for bad input and 1 for a
failure while running; `--debug` shows the traceback."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

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


# ---- usability: help with defaults, the subcommand's own usage, checks before anything loads -------------------

SRC = Path(__file__).resolve().parents[1] / "src"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "videogemma.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.parametrize(
    "command, shown",
    [
        (["infer"], ["(default: 128)", "(default: 50)", "(default: auto)"]),
        (["infer-batch"], ["--batch-size BATCH_SIZE", "(default: 4)"]),
        (["coach"], ["(default: 48)"]),
        (["serve"], ["(default:"]),
    ],
)
def test_help_shows_the_defaults(command, shown):
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for words in shown:
        assert words in text, (command, words)
    assert "(default: None)" not in text and "(default: False)" not in text


def test_a_mistyped_option_shows_that_commands_usage(tmp_path):
    result = run_cli("infer", str(tmp_path / "clip.mp4"), "--promt", "Form?")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: videogemma infer ")
    assert (
        "unrecognized arguments: --promt Form?" in result.stderr and "did you mean --prompt?" in result.stderr
    )
    nested = run_cli("data", "stats", "--root", str(tmp_path), "--splitz", "train")
    assert nested.returncode == 2 and nested.stderr.startswith("usage: videogemma data stats ")
    assert "did you mean --splits?" in nested.stderr


def test_infer_checks_the_video_before_importing_the_model(tmp_path):
    # A missing video is refused before torch (and so the model) is even imported.
    missing = tmp_path / "no-such-clip.mp4"
    code = (
        "import sys; from videogemma.cli import main; "
        f"status = main(['infer', {str(missing)!r}]); "
        "print(status, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.stdout.split() == ["2", "False", "False"], result.stderr
    assert (
        result.stderr.count("\n") == 1 and str(missing) in result.stderr and "no such file" in result.stderr
    )


def test_infer_checks_the_model_path_before_loading(tmp_path, write_clip, level_frames, capsys):
    clip = write_clip(tmp_path / "clip.mp4", level_frames(8))
    assert main(["infer", str(clip), "--model", str(tmp_path / "no-such-run")]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "no-such-run" in err and err.count("\n") == 1


def test_infer_json_is_one_machine_readable_record(tmp_path, write_clip, level_frames, capsys):
    import json

    clip = write_clip(tmp_path / "clip.mp4", level_frames(8))
    status = main(
        ["infer", str(clip), "--json", "--max-new-tokens", "3", "--device", "cpu", "--prompt", "Form?"]
    )
    out = capsys.readouterr().out
    assert status == 0
    record = json.loads(out)  # the whole of stdout is the one object
    assert record["video"] == str(clip) and record["model"] == "tiny" and record["prompt"] == "Form?"
    assert record["generated_tokens"] == 3 and isinstance(record["answer"], str) and record["error"] is None
    assert record["tokens_per_second"] > 0 and record["generation_time_s"] > 0


def test_infer_json_and_stream_exclude_each_other(tmp_path):
    result = run_cli("infer", str(tmp_path / "clip.mp4"), "--json", "--stream")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
    assert result.stderr.startswith("usage: videogemma infer ")


def test_saving_and_loading_a_model_prints_no_progress_bars_or_deepspeed_notes(tmp_path):
    code = (
        "import videogemma; "
        "model, processor = videogemma.load('tiny', quiet=True); "
        f"model.save_pretrained({str(tmp_path)!r}); processor.save_pretrained({str(tmp_path)!r}); "
        f"videogemma.load({str(tmp_path)!r}, quiet=True)"
    )
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    for noise in ("Loading weights", "Writing model shards", "Setting accelerator to CPU"):
        assert noise not in result.stderr, noise
    assert (tmp_path / "model.safetensors").is_file()
