"""Frames pushed by a client (`coach.pushed.PushedFrames`, what the serving stream feeds the coach) run the same
coaching loop as a file: the same windows and answers for the same frames; a client that stops sending has
stalled; a source closed mid-session ends it."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from videogemma.coach.policy import ChangePolicy
from videogemma.coach.pushed import FrameError, PushedFrame, PushedFrames
from videogemma.coach.session import CoachSession, CoachSettings
from videogemma.coach.source import VideoSource
from videogemma.inference.generate import GenerationSettings

FEW_TOKENS = GenerationSettings(max_new_tokens=6)
SECONDS = 8.0  # of the workout pushed


def session(model, processor, seen):
    return CoachSession(
        model,
        processor,
        CoachSettings(generation=FEW_TOKENS),
        ChangePolicy(10.0),
        on_window=lambda result, _: seen.append((result.window.end, result.text)),
    )


def test_pushed_frames_give_the_windows_and_answers_of_the_file(tiny_model, workout):
    model, processor = tiny_model
    from_file = []
    with VideoSource(workout.video) as source:
        session(model, processor, from_file).run(source)
    with VideoSource(workout.video) as source:
        frames = [(item.time, source.to_rgb(item)) for item in source.frames() if item.time <= SECONDS]

    pushed, seen = PushedFrames("client", live=False), []
    runner = threading.Thread(target=lambda: session(model, processor, seen).run(pushed))
    runner.start()
    for time, rgb in frames:
        height, width, _ = rgb.shape
        pushed.push(
            PushedFrame.rgb24(time + 50.0, rgb.tobytes(), width, height)
        )  # any clock: from its first frame
    pushed.end()
    runner.join()
    assert pushed.offset == 50.0
    assert [end for end, _ in seen] == [float(k) for k in range(3, int(SECONDS) + 1)]
    assert seen == from_file[: len(seen)]


def test_a_client_that_stops_sending_has_stalled_and_closing_ends_the_session(tiny_model):
    model, processor = tiny_model
    quiet = PushedFrames("quiet client", read_timeout=0.2)
    quiet.push(PushedFrame.rgb24(0.0, bytes(16 * 16 * 3), 16, 16))
    stats = session(model, processor, []).run(quiet)
    assert stats.error is not None and "quiet client" in stats.error and "stopped sending" in stats.error

    closed = PushedFrames("closed client")
    threading.Timer(0.2, closed.close).start()
    stats = session(model, processor, []).run(closed)
    assert stats.error is None and stats.frames_read == 0


def test_frames_are_checked_from_their_header():
    with pytest.raises(FrameError, match="not a JPEG"):
        PushedFrame.jpeg(0.0, b"\xff\xd8 truncated")
    with pytest.raises(FrameError, match="max_source_pixels"):
        PushedFrame.rgb24(0.0, b"", 100_000, 100_000)
    with pytest.raises(FrameError, match="bytes"):
        PushedFrame.rgb24(0.0, bytes(11), 2, 2)
    frame = PushedFrame.rgb24(1.5, np.arange(12, dtype=np.uint8).tobytes(), 2, 2)
    assert PushedFrames("client").to_rgb(frame).shape == (2, 2, 3)
