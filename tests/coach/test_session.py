"""The coaching loop on the `tiny` model and a 30 s synthetic workout: reused CLIP features and reused
answers change nothing but the cost; windows follow the schedule; real-time runs skip, never queue."""

from __future__ import annotations

import itertools
import json
import time

import pytest
import torch

from videogemma.coach.decoding import AnswerDecoder
from videogemma.coach.encoder import WindowEncoder
from videogemma.coach.policy import ChangePolicy, IntervalPolicy
from videogemma.coach.session import CoachSession, CoachSettings, FeedbackLog
from videogemma.coach.source import VideoSource
from videogemma.inference.generate import GenerationSettings

FEW_TOKENS = GenerationSettings(max_new_tokens=6)


def coach(model, processor, video, policy=None, log=None, **settings):
    """Run a session; returns (stats, [(window end, text, emitted)])."""
    seen = []
    session = CoachSession(
        model,
        processor,
        CoachSettings(generation=FEW_TOKENS, **settings),
        policy or ChangePolicy(10.0),
        log,
        on_window=lambda r, s: seen.append((r.window.end, r.text, r.emitted)),
    )
    with VideoSource(video) as source:
        stats = session.run(source)
    return stats, seen, session


def test_each_frame_is_encoded_once_and_the_features_equal_encoding_every_window(tiny_model, workout):
    model, processor = tiny_model
    stats, seen, session = coach(model, processor, workout.video)
    assert stats.error is None and not stats.interrupted
    # 30 s, 3 s windows every 1 s: windows ending at 3, 4, ..., 29 s (the last frame is at 29.75 s).
    assert [end for end, _, _ in seen] == [float(k) for k in range(3, 30)]
    # A grid frame every 3 / 8 s: the first window encodes 8, each later one only the frames it brings in.
    step = 3.0 / model.config.num_frames
    assert stats.frames_encoded == len(range(1, int(29 / step) + 1))
    assert stats.frames_encoded + stats.frames_reused == 8 * len(seen)
    assert stats.frames_reused > stats.frames_encoded  # each frame is read by 2-3 windows here

    cached, plain = WindowEncoder(model, cache=True), WindowEncoder(model, cache=False)
    recorded = []
    session.encoder = _Recorder(session.encoder, recorded)
    with VideoSource(workout.video) as source:
        session.run(source)
    for window in recorded[:6]:
        a, b = cached.features(window), plain.features(window)
        assert torch.allclose(a.clip_features, b.clip_features, atol=1e-5)
        assert torch.equal(a.keyframe_indices, b.keyframe_indices)
        assert torch.allclose(a.videomamba_features, b.videomamba_features, atol=1e-5)


class _Recorder:
    """Stands in for the session's encoder, keeping the windows it is asked for."""

    def __init__(self, encoder, windows):
        self.encoder, self.windows = encoder, windows
        self.frames_encoded = self.frames_reused = 0

    def features(self, window):
        self.windows.append(window)
        return self.encoder.features(window)


def test_reused_features_and_answers_give_the_same_answers(tiny_model, workout):
    model, processor = tiny_model
    _, reference, _ = coach(model, processor, workout.video, cache_features=False, reuse_answers=False)
    stats, fast, session = coach(model, processor, workout.video)
    assert [text for _, text, _ in fast] == [text for _, text, _ in reference]
    assert session.decoder.drafts_checked == len(fast) - 1
    assert stats.answers_reused == session.decoder.drafts_kept


def test_an_unchanged_answer_costs_one_pass(tiny_model, workout):
    model, processor = tiny_model
    _, _, session = coach(model, processor, workout.video)
    recorded = []
    session.encoder = _Recorder(session.encoder, recorded)
    with VideoSource(workout.video) as source:
        session.run(source)
    features = WindowEncoder(model).features(recorded[0])
    decoder = AnswerDecoder(model, processor, session.decoder.input_ids, FEW_TOKENS)
    calls = []
    hook = model.language_model.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        text = decoder.answer(features)
        decoded, calls[:] = len(calls), []
        assert decoder.answer(features) == text  # the same window again: the answer is confirmed, not decoded
        assert len(calls) == 1 < decoded and decoder.drafts_kept == 1
    finally:
        hook.remove()


def test_what_is_said_is_logged_at_once_with_its_window_and_latency(tiny_model, workout, tmp_path):
    model, processor = tiny_model
    log = FeedbackLog(tmp_path / "said.jsonl")
    stats, seen, _ = coach(model, processor, workout.video, policy=IntervalPolicy(5.0), log=log)
    log.close()
    records = [json.loads(line) for line in (tmp_path / "said.jsonl").read_text().splitlines()]
    emitted = [(end, text) for end, text, said in seen if said]
    assert len(records) == stats.emitted == len(emitted) >= 5
    for record, (end, text) in zip(records, emitted):
        assert set(record) == {"time", "text", "exercise", "window", "latency_s", "source"}
        assert record["window"] == [end - 3.0, end] and record["text"] == text
        assert (
            record["time"] == pytest.approx(end + record["latency_s"], abs=1e-3) and record["latency_s"] > 0
        )
        assert record["source"] == str(workout.video)
    times = [r["time"] for r in records]
    assert all(b - a >= 5.0 - 1e-6 for a, b in itertools.pairwise(times))


def test_a_slow_model_in_real_time_skips_windows_instead_of_queueing(tiny_model, workout, monkeypatch):
    model, processor = tiny_model
    real = WindowEncoder.features

    def slow(self, window):
        time.sleep(1.0)  # 1 s per window against a window every 0.25 s of real time
        return real(self, window)

    monkeypatch.setattr(WindowEncoder, "features", slow)
    short = workout.root / "short.mp4"
    _cut(workout.video, short, seconds=7.0)
    stats, seen, _ = coach(model, processor, short, realtime=True, stride=0.25)
    due = len([k for k in range(100) if 3.0 + 0.25 * k <= 6.75])
    assert stats.windows_run + stats.windows_skipped == due
    assert stats.windows_skipped >= 2 * stats.windows_run >= 4
    # The window run next is the newest due when the previous ends, so a result comes at most two window
    # times (plus a stride) after its window: the lag stays bounded instead of growing with a queue.
    assert stats.max_behind_s < 2 * 1.0 + 0.25 + 0.5
    ends = [end for end, _, _ in seen]
    assert ends == sorted(ends) and ends[-1] == 6.75  # the newest windows run, the stale ones are dropped


def _cut(source, target, seconds: float) -> None:
    from videogemma.datasets.qved.io import write_mp4
    from videogemma.processing.video import probe_video, read_video_frames

    info = probe_video(source, count_frames=True)
    frames = read_video_frames(source, info.num_frames)[: round(seconds * info.fps)]
    write_mp4(target, frames, info.fps)
