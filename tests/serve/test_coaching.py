"""The coaching stream (`WS /v1/coach/stream`) against a live uvicorn server, with a real WebSocket client
(`websockets`).

The real clip's frames go up as JPEGs with their times (shifted by 100 s: times are the client's clock);
each window's answer must be the answer the coach gives in-process on the same JPEG frames (the one
coaching loop, `coach.session.CoachSession`, reading `coach.pushed.PushedFrames`), and the feedback must
follow the emission policy. Hostile streams are closed with their code and the server goes on.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
import httpx
import numpy as np
import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from videogemma.coach.policy import ChangePolicy
from videogemma.coach.pushed import PushedFrame, PushedFrames
from videogemma.coach.session import CoachSession, CoachSettings
from videogemma.inference.generate import GenerationSettings, answer
from videogemma.serve.app import create_app
from videogemma.serve.batching import ServedModel
from videogemma.serve.coaching import COACH_PATH
from videogemma.serve.limits import ServeLimits

TOKENS = 6
CLIENT_CLOCK = 100.0  # the client's time of the clip's first frame
STRIDE = 0.5
REPEAT_AFTER = 10.0


@pytest.fixture
def coach_server(tiny_served, live_server):
    """`coach_server(api_key=None, **limits) -> base URL` of a live server."""
    with contextlib.ExitStack() as stack:

        def start(api_key: str | None = None, **limits: Any) -> str:
            app = create_app(
                {"tiny": ServedModel("tiny", *tiny_served)},
                ServeLimits(**{"default_max_tokens": TOKENS, **limits}),
                api_key=api_key,
            )
            return stack.enter_context(live_server(app))

        yield start


@pytest.fixture
def clip_jpegs(real_clip) -> list[tuple[float, bytes]]:
    """(time, JPEG) of each frame of the real clip."""
    frames = []
    with av.open(str(real_clip)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            buffer = io.BytesIO()
            Image.fromarray(frame.to_ndarray(format="rgb24")).save(buffer, "JPEG", quality=90)
            frames.append((float(frame.pts * stream.time_base), buffer.getvalue()))
    return frames


def small_jpeg(level: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), level, dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def frame_message(time: float, image: bytes) -> bytes:
    return struct.pack("<d", time) + image


def open_stream(base: str, **kwargs: Any) -> ClientConnection:
    return connect(base.replace("http://", "ws://") + COACH_PATH, open_timeout=30, **kwargs)


def start_message(**fields: Any) -> str:
    return json.dumps({"type": "start", **fields})


def read_all(ws: ClientConnection, timeout: float = 120) -> list[dict[str, Any]]:
    """Every message until the server closes."""
    messages = []
    with contextlib.suppress(ConnectionClosed):
        while True:
            messages.append(json.loads(ws.recv(timeout=timeout)))
    return messages


def coach_in_process(model, processor, frames) -> dict[float, str]:
    """{window end on the client's clock: answer} of the coach on the same frames, in this process."""
    settings = CoachSettings(stride=STRIDE, generation=GenerationSettings(max_new_tokens=TOKENS))
    answers: dict[float, str] = {}
    source = PushedFrames("reference", live=False)
    session = CoachSession(
        model,
        processor,
        settings,
        ChangePolicy(REPEAT_AFTER),
        on_window=lambda result, _: answers.setdefault(
            round(result.window.end + CLIENT_CLOCK, 3), result.text
        ),
    )
    runner = threading.Thread(target=session.run, args=(source,))
    runner.start()
    for t, data in frames:
        source.push(PushedFrame.jpeg(t + CLIENT_CLOCK, data))
    source.end()
    runner.join()
    return answers


@pytest.mark.parametrize("realtime", [False, True], ids=["every-window", "realtime"])
def test_the_stream_answers_each_window_as_the_coach_does_on_the_same_frames(
    coach_server, tiny_served, clip_jpegs, realtime
):
    base = coach_server()
    with open_stream(base) as ws:
        ws.send(start_message(stride=STRIDE, repeat_after=REPEAT_AFTER, realtime=realtime))
        ready = json.loads(ws.recv(timeout=60))
        for t, data in clip_jpegs:
            ws.send(frame_message(t + CLIENT_CLOCK, data))
        ws.send(json.dumps({"type": "end"}))
        messages = read_all(ws)
        assert ws.close_code == 1000, (ws.close_code, ws.close_reason, messages[-1:])
    assert ready["type"] == "ready" and ready["model"] == "tiny" and ready["stride"] == STRIDE
    assert ready["frame_step"] == pytest.approx(ready["window"] / ready["frames_per_window"])
    windows = [m for m in messages if m["type"] == "window"]
    feedback = [m for m in messages if m["type"] == "feedback"]
    assert messages[-1]["type"] == "summary" and [m["type"] for m in messages].count("summary") == 1

    want = coach_in_process(*tiny_served, clip_jpegs)
    # The clip's last frame is at 4.8 s: windows end at 3, 3.5, 4 and 4.5 s (on the client's clock: + 100).
    assert list(want) == [CLIENT_CLOCK + end for end in (3.0, 3.5, 4.0, 4.5)]
    ends = [m["end"] for m in windows]
    if realtime:  # the newest due window runs, those that fell due meanwhile are skipped; the last one runs
        assert ends == sorted(set(ends)) and set(ends) <= set(want) and ends[-1] == max(want)
    else:
        assert ends == list(want)
    assert {m["end"]: m["text"] for m in windows} == {end: want[end] for end in ends}

    summary = messages[-1]
    assert summary["windows_run"] == len(windows)
    assert summary["windows_run"] + summary["windows_skipped"] == len(want)
    assert summary["frames"] == len(clip_jpegs) and summary["feedbacks"] == len(feedback) >= 1
    said = {m["end"]: m["text"] for m in windows if m["said"]}
    times = [m["t"] for m in feedback]
    assert times == sorted(times)
    for message in feedback:  # said after its window ended, as its window's answer
        start, end = message["window"]
        assert end - start == pytest.approx(ready["window"])
        assert message["t"] >= end and said[end] == message["text"]
        assert message["t"] == pytest.approx(end + message["latency_s"], abs=2e-3)
    for earlier, later in itertools.pairwise(feedback):  # the change policy: a repeat waits repeat_after
        if later["text"] == earlier["text"]:
            assert later["t"] - earlier["t"] >= REPEAT_AFTER - 1e-6


def expect_refusal(ws: ClientConnection, close_code: int, code: str) -> str:
    messages = read_all(ws, timeout=60)
    errors = [m for m in messages if m["type"] == "error"]
    assert ws.close_code == close_code and len(errors) == 1, (ws.close_code, ws.close_reason, messages)
    assert errors[0]["code"] == code and errors[0]["message"], errors
    assert ws.close_reason.startswith(code)
    return errors[0]["message"]


KEY = "s3cret"
JPEG = small_jpeg()
HOSTILE = {
    # name: (start message or raw first message, frames, close code, error code)
    "no key": (start_message(), [], 1008, "invalid_api_key"),
    "wrong key": (start_message(api_key="guess"), [], 1008, "invalid_api_key"),
    "not json": ("hello", [], 1008, "invalid_message"),
    "unknown setting": (start_message(api_key=KEY, windw=3), [], 1008, "invalid_message"),
    "a frame first": (frame_message(0.0, JPEG), [], 1008, "invalid_message"),
    "model not served": (start_message(api_key=KEY, model="gpt-4o"), [], 1008, "model_not_found"),
    "long answers": (start_message(api_key=KEY, max_tokens=100_000), [], 1008, "max_tokens"),
    "long prompt": (start_message(api_key=KEY, prompt="squat " * 200), [], 1008, "max_prompt_tokens"),
    "rgb24 without a size": (start_message(api_key=KEY, format="rgb24"), [], 1008, "invalid_message"),
    "oversize frame": (
        start_message(api_key=KEY),
        [frame_message(0.0, b"\xff" * 5000)],
        1009,
        "max_frame_bytes",
    ),
    "garbage bytes": (
        start_message(api_key=KEY),
        [frame_message(0.0, b"not a jpeg at all")],
        1003,
        "invalid_frame",
    ),
    "no time": (start_message(api_key=KEY), [b"\x00\x01"], 1003, "invalid_frame"),
    "not a time": (start_message(api_key=KEY), [frame_message(math.nan, JPEG)], 1003, "invalid_frame"),
    "times going back": (
        start_message(api_key=KEY),
        [frame_message(1.0, JPEG), frame_message(0.5, JPEG)],
        1003,
        "invalid_frame",
    ),
    "rgb24 of the wrong size": (
        start_message(api_key=KEY, format="rgb24", width=8, height=8),
        [frame_message(0.0, bytes(8 * 8 * 3 - 1))],
        1003,
        "invalid_frame",
    ),
    "too fast": (start_message(api_key=KEY), [frame_message(0.0, JPEG)] * 11, 1008, "max_coach_fps"),
    "too many frames": (
        start_message(api_key=KEY),
        [frame_message(0.2 * k, JPEG) for k in range(21)],
        1008,
        "max_coach_frames",
    ),
    "too long": (
        start_message(api_key=KEY),
        [frame_message(0.0, JPEG), frame_message(5.0, JPEG)],
        1008,
        "max_coach_seconds",
    ),
    "a question mid-stream": (
        start_message(api_key=KEY),
        [json.dumps({"type": "ask"})],
        1008,
        "invalid_message",
    ),
}


def test_hostile_streams_are_closed_with_their_code_and_the_server_goes_on(coach_server):
    base = coach_server(
        api_key=KEY,
        max_frame_bytes=4096,
        max_coach_fps=10,
        max_coach_frames=20,
        max_coach_seconds=4,
        max_prompt_tokens=150,
    )
    for name, (first, frames, close_code, code) in HOSTILE.items():
        with open_stream(base) as ws:
            ws.send(first)
            for frame in frames:
                with contextlib.suppress(ConnectionClosed):  # the server may close before the last is sent
                    ws.send(frame)
            try:
                expect_refusal(ws, close_code, code)
            except AssertionError as error:
                raise AssertionError(f"{name}: {error}") from None
    with open_stream(base, additional_headers={"Authorization": "Bearer wrong"}) as ws:
        ws.send(start_message())
        expect_refusal(ws, 1008, "invalid_api_key")

    # The server still coaches (the key as a header, as other clients send it) and answers /health.
    with open_stream(base, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        ws.send(start_message(window=1.0, stride=1.0))
        assert json.loads(ws.recv(timeout=60))["type"] == "ready"
        for k in range(8):
            ws.send(frame_message(0.5 * k, small_jpeg(40 + 20 * k)))
        ws.send(json.dumps({"type": "end"}))
        messages = read_all(ws)
    assert ws.close_code == 1000 and messages[-1]["type"] == "summary", messages
    assert messages[-1]["frames"] == 8 and messages[-1]["windows_run"] >= 1
    health = httpx.get(f"{base}/health").json()
    assert health["status"] == "ok" and health["limits"]["max_frame_bytes"]["close_code"] == 1009


def wait_for_free_streams(base: str) -> None:
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/health").json()["coaching_streams"]:
        assert time.monotonic() < deadline, "a finished stream's coach did not end"
        time.sleep(0.05)


def test_streams_beyond_the_limit_are_refused_until_one_ends(coach_server):
    base = coach_server(max_coach_sessions=1)
    with open_stream(base) as first:
        first.send(start_message())
        assert json.loads(first.recv(timeout=60))["type"] == "ready"
        with open_stream(base) as second:
            second.send(start_message())
            message = expect_refusal(second, 1013, "max_coach_sessions")
        assert "max_coach_sessions" in message
        first.send(json.dumps({"type": "end"}))
        assert read_all(first)[-1]["type"] == "summary"
    wait_for_free_streams(base)
    with open_stream(base) as third:  # the slot is free again; leaving without `end` frees it too
        third.send(start_message())
        assert json.loads(third.recv(timeout=60))["type"] == "ready"
        third.send(frame_message(0.0, JPEG))
    wait_for_free_streams(base)


def test_a_chat_request_during_streams_gets_its_own_answer(
    coach_server, tiny_served, clip_jpegs, real_clip, data_url, video_request
):
    """The coaches' threads and the batching thread share the model: none changes the others' answers."""
    model, processor = tiny_served
    want = answer(
        model, processor, real_clip, "Which exercise?", settings=GenerationSettings(max_new_tokens=TOKENS)
    )
    base = coach_server()
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(1) as pool:
        streams = [stack.enter_context(open_stream(base)) for _ in range(2)]
        for ws in streams:
            ws.send(start_message(stride=STRIDE, realtime=False))
            assert json.loads(ws.recv(timeout=60))["type"] == "ready"
        body = video_request(data_url(real_clip), "Which exercise?")
        chat = pool.submit(httpx.post, f"{base}/v1/chat/completions", json=body, timeout=120)
        for t, data in clip_jpegs:
            for ws in streams:
                ws.send(frame_message(t, data))
        for ws in streams:
            ws.send(json.dumps({"type": "end"}))
        results = [read_all(ws) for ws in streams]
        response = chat.result()
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == want.text
    texts = [[m["text"] for m in messages if m["type"] == "window"] for messages in results]
    assert len(texts[0]) == 4 and texts[0] == texts[1]  # the same frames: the same answers


def test_a_client_that_stops_sending_is_told_it_stalled(coach_server, monkeypatch):
    monkeypatch.setattr("videogemma.serve.coaching.STALL_TIMEOUT_S", 0.5)
    base = coach_server()
    with open_stream(base) as ws:
        ws.send(start_message())
        assert json.loads(ws.recv(timeout=60))["type"] == "ready"
        ws.send(frame_message(0.0, JPEG))
        message = expect_refusal(ws, 1008, "stream_error")
    assert "no frame for 0.5 s" in message
    wait_for_free_streams(base)
