"""`videogemma coach SOURCE` on the command line: the log, the console, bad sources, and Ctrl-C."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest

from videogemma.cli import main

FAST = ["--max-new-tokens", "4", "--threads", "1"]


def test_coach_a_file_writes_the_log_and_a_summary(workout, tmp_path, capsys):
    out = tmp_path / "said.jsonl"
    assert main(["coach", str(workout.video), "--out", str(out), "--policy", "interval", *FAST]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    # What the random-weight model says varies with the machine; the policy's rule does not: something said,
    # never twice within the 5 s interval, from this source.
    assert records and all(r["source"] == str(workout.video) for r in records)
    times = [r["time"] for r in records]
    assert all(later - earlier >= 5.0 - 1e-6 for earlier, later in pairwise(times))
    assert len(captured.out.splitlines()) == len(records)  # one console line per feedback said
    assert "coach finished: 27 windows over 29.8 s of video" in captured.err
    assert f"{len(records)} feedbacks said, written to {out}" in captured.err
    assert "0 skipped for falling behind real time" in captured.err

    # An existing log is never replaced by accident; --append adds to it.
    assert main(["coach", str(workout.video), "--out", str(out), *FAST]) == 2
    assert "exists; pass --append" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == len(records)
    assert (
        main(["coach", str(workout.video), "--out", str(out), "--append", "--policy", "interval", *FAST]) == 0
    )
    lines = out.read_text().splitlines()
    assert [json.loads(line) for line in lines[: len(records)]] == records  # the earlier log kept as it was
    assert len(lines) > len(records)


@pytest.mark.parametrize(
    "source, message",
    [
        ("missing.mp4", "missing.mp4: file not found"),
        ("corrupt.mp4", "corrupt.mp4: not a readable video file"),
        ("/dev/video97", "/dev/video97: no such camera device"),
        ("concat:a.mp4|b.mp4", "file not found"),
        ("file:///etc/hostname", "file:// is not a stream protocol"),
    ],
)
def test_a_bad_source_is_one_line_naming_it_and_exit_2(source, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corrupt.mp4").write_bytes(
        random.Random(0).randbytes(4096)
    )  # seeded: the same bytes each run
    assert main(["coach", source, "--out", "said.jsonl", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("videogemma coach: error: ") and message in err[0]
    assert not (tmp_path / "said.jsonl").exists()


@pytest.mark.slow
def test_ctrl_c_ends_a_session_cleanly_with_everything_written(long_workout, tmp_path):
    # 120 s played in real time: on a slow or busy machine the session is still running when Ctrl-C comes.
    out = tmp_path / "said.jsonl"
    command = [
        sys.executable,
        "-m",
        "videogemma.cli",
        "coach",
        str(long_workout.video),
        "--realtime",
        "--out",
        str(out),
        "--policy",
        "interval",
        "--interval",
        "1",
        *FAST,
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    # A test runner's worker may ignore SIGINT, and a child inherits that: give the coach the default, as a
    # terminal would.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (out.exists() and len(out.read_text().splitlines()) >= 2):
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()[1][-2000:]
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-2000:]
    assert "coach interrupted (Ctrl-C)" in stderr and "Traceback" not in stderr
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line whole
    assert len(records) >= 2 and out.read_text().endswith("\n")
    assert f"{len(records)} feedbacks said" in stderr and len(stdout.splitlines()) == len(records)
    assert max(r["window"][1] for r in records) < 25  # it stopped early, in a 30 s workout paced to real time


# A stream served over TCP (MPEG-TS) in real time by another process, which stops sending for a while.
_STREAM_SERVER = """
import sys, time, av
port, video, stall_after = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
frames = [f.to_ndarray(format="rgb24") for f in av.open(video).decode(video=0)]
print("ready", flush=True)
# flush_packets: each frame goes out at once (AVIO would otherwise hold 32 kB, minutes of these frames)
with av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts", options={"flush_packets": "1"}) as out:
    stream = out.add_stream("libx264", rate=4)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
    start = time.monotonic()
    for k, rgb in enumerate(frames):
        if k == stall_after:
            time.sleep(30)  # the stream stalls
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = k
        for packet in stream.encode(frame):
            out.mux(packet)
        time.sleep(max(0, start + (k + 1) / 4 - time.monotonic()))
"""


@pytest.mark.slow
def test_a_stream_that_stalls_ends_the_session_with_what_was_said_kept(workout, tmp_path, capsys):
    import socket

    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-c", _STREAM_SERVER, str(port), str(workout.video), "40"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # the server listens
        out = tmp_path / "said.jsonl"
        argv = [
            "coach",
            f"tcp://127.0.0.1:{port}",
            "--out",
            str(out),
            "--stall-timeout",
            "2",
            "--policy",
            "interval",
            "--interval",
            "2",
            *FAST,
        ]
        assert main(argv) == 2
    finally:
        server.kill()
        server.wait()
    err = capsys.readouterr().err
    assert f"videogemma coach: error: cannot decode video tcp://127.0.0.1:{port}: no frame for 2 s" in err
    assert "what was said before is kept" in err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and max(r["window"][1] for r in records) <= 10.0, err  # 40 frames at 4 frames/s came
