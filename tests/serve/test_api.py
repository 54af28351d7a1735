"""The chat-completions API against a live uvicorn server on a loopback port, with a real HTTP client (httpx).

Every answer is checked against the model's own answer for the same video, question and settings
(`inference.generate.answer`), so a mixed-up or altered answer fails.
"""

from __future__ import annotations

import contextlib
import html
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from videogemma.constants import DEFAULT_PROMPT
from videogemma.inference.generate import GenerationSettings, answer
from videogemma.serve.app import create_app
from videogemma.serve.batching import ServedModel
from videogemma.serve.limits import ServeLimits

TOKENS = 6  # the servers' default answer length here: short answers keep the tests quick
ERROR_FIELDS = {"message", "type", "param", "code"}


@pytest.fixture
def serve(tiny_served, media_root, live_server):
    """`serve(models=None, api_key=None, media=True, **limits) -> base URL` of a live server."""
    with contextlib.ExitStack() as stack:

        def start(
            models: dict | None = None, api_key: str | None = None, media: bool = True, **limits: Any
        ) -> str:
            models = models or {"tiny": ServedModel("tiny", *tiny_served)}
            app = create_app(
                models,
                ServeLimits(**{"default_max_tokens": TOKENS, **limits}),
                media_root=media_root if media else None,
                api_key=api_key,
            )
            return stack.enter_context(live_server(app))

        yield start


def expected(model_and_processor, video, question=None, tokens=TOKENS, **sampling):
    model, processor = model_and_processor
    settings = GenerationSettings(max_new_tokens=tokens, **sampling)
    return answer(model, processor, video, question, settings=settings)


def post(base: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120, **kwargs)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_FIELDS and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def sse_events(response: httpx.Response) -> list[Any]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


# ---- answers -----------------------------------------------------------------------------------------------


def test_a_completion_is_the_models_answer_with_its_usage(
    serve, tiny_served, real_clip, data_url, video_request
):
    base = serve()
    question = "How is my squat form?"
    want = expected(tiny_served, real_clip, question)
    body = post(base, video_request(data_url(real_clip), question, model="tiny")).json()
    assert (
        body["object"] == "chat.completion" and body["model"] == "tiny" and body["id"].startswith("chatcmpl-")
    )
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": want.text}
    assert choice["finish_reason"] in ("stop", "length")
    prompt_tokens = len(tiny_served[1](videos=[real_clip], text=[question])["input_ids"][0])
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": want.generated_tokens,
        "total_tokens": prompt_tokens + want.generated_tokens,
    }
    # The same clip named by its path under --media-root; a message without text asks the QVED question.
    by_path = post(base, video_request("file://clip.mp4")).json()
    assert (
        by_path["choices"][0]["message"]["content"] == expected(tiny_served, real_clip, DEFAULT_PROMPT).text
    )


def test_stream_sends_the_answer_as_openai_chunks(serve, tiny_served, real_clip, video_request):
    base = serve()
    want = expected(tiny_served, real_clip, "Hi", tokens=12)
    request = video_request(
        "file://clip.mp4", "Hi", stream=True, max_tokens=12, stream_options={"include_usage": True}
    )
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=request, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks[1:] if c["choices"]]
    pieces = [piece for piece in pieces if piece]
    assert len(pieces) > 1, "the answer came in one piece: not streamed"
    assert "".join(pieces) == want.text
    finals = [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    assert finals in (["stop"], ["length"])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == want.generated_tokens


def test_sampling_with_a_seed_gives_the_same_answer_as_alone(serve, tiny_served, real_clip, video_request):
    base = serve()
    request = video_request("file://clip.mp4", "Hi", temperature=0.9, top_p=0.9, seed=7)
    texts = [post(base, request).json()["choices"][0]["message"]["content"] for _ in range(2)]
    want = expected(tiny_served, real_clip, "Hi", do_sample=True, temperature=0.9, top_p=0.9, top_k=0, seed=7)
    assert texts == [want.text, want.text]
    assert want.text != expected(tiny_served, real_clip, "Hi").text  # it did sample


# ---- access ------------------------------------------------------------------------------------------------


def test_the_api_key_guards_every_route_but_health_and_the_page(serve, video_request):
    base = serve(api_key="s3cret")
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = httpx.request(
                method, base + path, headers=headers, json=video_request("file://clip.mp4")
            )
            assert_error(response, 401, "invalid_api_key")
    key = {"Authorization": "Bearer s3cret"}
    assert httpx.get(f"{base}/v1/models", headers=key).json()["data"][0]["id"] == "tiny"
    answered = post(base, video_request("file://clip.mp4"), headers=key)
    assert answered.status_code == 200
    assert httpx.get(f"{base}/health").json()["auth_required"] is True
    page = httpx.get(f"{base}/")
    assert page.status_code == 200 and html.escape(DEFAULT_PROMPT) in page.text
    assert "window.VIDEOGEMMA_AUTH_REQUIRED = true" in page.text
    assert httpx.get(f"{base}/static/app.js").status_code == 200


def test_health_says_which_limit_is_which(serve):
    health = httpx.get(f"{serve(max_video_bytes=1234, max_queue=3)}/health").json()
    assert health["status"] == "ok" and health["auth_required"] is False
    limits = health["limits"]
    assert limits["max_video_bytes"] == {
        "value": 1234,
        "bounds": limits["max_video_bytes"]["bounds"],
        "status": 413,
    }
    assert limits["max_queue"]["value"] == 3 and limits["max_queue"]["status"] == 503
    for name in ("max_video_seconds", "max_video_frames", "max_prompt_tokens", "max_tokens"):
        assert limits[name]["status"] == 400 and limits[name]["bounds"]


# ---- limits ------------------------------------------------------------------------------------------------


def test_an_oversize_upload_is_413_before_it_is_decoded(serve, real_clip, data_url, video_request):
    size = real_clip.stat().st_size
    base = serve(max_video_bytes=size - 1)
    assert_error(post(base, video_request(data_url(real_clip))), 413, "max_video_bytes")
    assert_error(post(base, video_request("file://clip.mp4")), 413, "max_video_bytes")
    # A body past what any allowed request needs is refused as it arrives, declared or sent in chunks.
    too_big = b"x" * (ServeLimits(max_video_bytes=size - 1).max_body_bytes + 1)
    declared = httpx.post(
        f"{base}/v1/chat/completions", content=too_big, headers={"Content-Type": "application/json"}
    )
    assert_error(declared, 413, "max_video_bytes")
    chunked = httpx.post(f"{base}/v1/chat/completions", content=iter([too_big[:1000], too_big[1000:]]))
    assert_error(chunked, 413, "max_video_bytes")
    # Within the limit, the server answers.
    smaller = serve(max_video_bytes=size)
    assert post(smaller, video_request(data_url(real_clip))).status_code == 200


def test_a_too_long_prompt_is_400_naming_the_limit(serve, video_request):
    base = serve(max_prompt_tokens=20)
    error = assert_error(
        post(base, video_request("file://clip.mp4", "squat " * 40)), 400, "max_prompt_tokens"
    )
    assert "max_prompt_tokens" in error["message"]
    # Within the server's limit but beyond the model's context (512 tokens for `tiny`).
    roomy = serve(max_prompt_tokens=100_000)
    assert_error(
        post(roomy, video_request("file://clip.mp4", "squat " * 600)), 400, "context_length_exceeded"
    )


def test_max_tokens_above_the_limit_is_400(serve, video_request):
    error = assert_error(
        post(serve(max_tokens=16), video_request("file://clip.mp4", max_tokens=17)), 400, "max_tokens"
    )
    assert error["param"] == "max_tokens"


def test_video_limits_are_400_naming_the_server_limit(serve, video_request):
    error = assert_error(
        post(serve(max_video_seconds=2), video_request("file://clip.mp4")), 400, "max_video_seconds"
    )
    assert "max_video_seconds" in error["message"] and "clip.mp4" in error["message"]
    assert_error(post(serve(max_video_frames=100), video_request("file://clip.mp4")), 400, "max_video_frames")


def test_a_full_queue_answers_503_with_retry_after(serve, tiny_served, real_clip, video_request):
    base = serve(max_queue=1)
    long_request = video_request("file://clip.mp4", "Hi", stream=True, max_tokens=64)
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=long_request, timeout=120) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")  # admitted, generating
        busy = post(base, video_request("file://clip.mp4"))
        assert_error(busy, 503, "max_queue")
        assert busy.headers["retry-after"] == "1"
        list(lines)
    # Its place is free again once the answer is done.
    after = post(base, video_request("file://clip.mp4", "Hi"))
    assert after.json()["choices"][0]["message"]["content"] == expected(tiny_served, real_clip, "Hi").text


# ---- refused input -------------------------------------------------------------------------------------------


def test_paths_outside_the_media_root_are_refused(serve, media_root, video_request):
    base = serve()
    outside = media_root.parent / "outside.mp4"
    for url in ("file:///etc/passwd", f"file://{outside}", "file://../outside.mp4", "file://escape.mp4"):
        assert_error(post(base, video_request(url)), 403, "path_outside_media_root")
    (media_root / "notes.txt").write_text("not a video")
    assert_error(post(base, video_request("file://notes.txt")), 400, "invalid_video")
    assert_error(post(base, video_request("file://missing.mp4")), 400, "video_not_found")
    for url in ("https://example.com/clip.mp4", "clip.mp4", "ftp://host/clip.mp4"):
        assert_error(post(base, video_request(url)), 400, "unsupported_video_url")
    # Without --media-root no file is read at all.
    assert_error(post(serve(media=False), video_request("file://clip.mp4")), 403, "path_outside_media_root")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": "hi"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, None),
        ({"messages": [{"role": "user", "content": "no video here"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {}}]}]}, None),
        ({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "file://clip.mp4"}}]},
                       {"role": "assistant", "content": "an answer"}]}, "messages[1].role"),
        ({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "file://clip.mp4"}}] * 2}]},
         "messages[0].content[1]"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 5}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ],
)  # fmt: skip
def test_malformed_requests_are_400_in_the_openai_shape(serve, body, param):
    error = assert_error(post(serve(), body), 400)
    if param is not None:
        assert error["param"] == param, error


def test_malformed_json_is_400_in_the_openai_shape(serve):
    response = httpx.post(
        f"{serve()}/v1/chat/completions",
        content=b'{"messages": [',
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 400, "invalid_json")
    assert_error(httpx.get(f"{serve()}/v1/nothing"), 404, "not_found")


def test_a_corrupt_video_is_400_and_the_server_answers_the_next_request(
    serve, tiny_served, real_clip, media_root, data_url, video_request
):
    base = serve()
    corrupt = data_url(media_root / "corrupt.mp4")
    error = assert_error(post(base, video_request(corrupt)), 400, "invalid_video")
    assert "the uploaded video" in error["message"] and "videogemma-serve-" not in error["message"]
    assert_error(post(base, video_request("file://corrupt.mp4")), 400, "invalid_video")
    playlist = "data:video/mp4;base64," + __import__("base64").b64encode(b"#EXTM3U\n/etc/passwd\n").decode()
    assert_error(post(base, video_request(playlist)), 400, "invalid_video")
    assert_error(post(base, video_request("data:video/mp4;base64,!!!notbase64")), 400, "invalid_video")
    good = post(base, video_request(data_url(real_clip), "Hi"))
    assert good.json()["choices"][0]["message"]["content"] == expected(tiny_served, real_clip, "Hi").text


# ---- models and batching ---------------------------------------------------------------------------------------


def test_two_models_are_chosen_by_the_request_model_field(
    serve, tiny_served, lora_run, real_clip, video_request
):
    from videogemma import load

    coach = load(lora_run)  # a LoRA run directory, served as it is
    base = serve({"tiny": ServedModel("tiny", *tiny_served), "coach": ServedModel("coach", *coach)})
    assert [m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"]] == ["tiny", "coach"]
    answers = {
        name: post(base, video_request("file://clip.mp4", "Hi", model=name)).json()["choices"][0]["message"][
            "content"
        ]
        for name in ("coach", "tiny")
    }
    assert answers == {
        "tiny": expected(tiny_served, real_clip, "Hi").text,
        "coach": expected(coach, real_clip, "Hi").text,
    }
    assert answers["tiny"] != answers["coach"]
    default = post(base, video_request("file://clip.mp4", "Hi")).json()
    assert default["model"] == "tiny" and default["choices"][0]["message"]["content"] == answers["tiny"]
    assert_error(post(base, video_request("file://clip.mp4", model="gpt-4o")), 404, "model_not_found")


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_requests_get_their_own_answers(
    serve, tiny_served, media_root, write_clip, batching, video_request
):
    rng = np.random.default_rng(0)
    write_clip(media_root / "noise.mp4", rng.integers(0, 256, size=(12, 48, 64, 3), dtype=np.uint8))
    cases = [
        (video, question)
        for video in ("clip.mp4", "noise.mp4")
        for question in ("Hi", "What do you see?", "Rate my form, please.")
    ]
    want = [expected(tiny_served, media_root / video, question).text for video, question in cases]
    base = serve(max_batch_size=8 if batching else 1, batch_wait_ms=300)

    def ask(case: tuple[str, str]) -> str:
        return post(base, video_request(f"file://{case[0]}", case[1])).json()["choices"][0]["message"][
            "content"
        ]

    with ThreadPoolExecutor(len(cases)) as pool:
        got = list(pool.map(ask, cases))
    assert got == want
    stats = httpx.get(f"{base}/health").json()["batching"]
    assert stats["requests"] == len(cases) and stats["enabled"] is batching
    assert (stats["largest_batch"] > 1) if batching else (stats["largest_batch"] == 1)


def test_the_page_script_ships_with_the_package():
    from importlib import resources

    static = resources.files("videogemma.serve").joinpath("static")
    page = static.joinpath("index.html").read_text(encoding="utf-8")
    assert "__DEFAULT_PROMPT__" in page and 'src="/static/app.js"' in page
    # Works offline: nothing is loaded from another host.
    for text in (page, static.joinpath("app.js").read_text(encoding="utf-8")):
        assert "http://" not in text and "https://" not in text
    assert Path(str(static.joinpath("app.js"))).stat().st_size > 0
