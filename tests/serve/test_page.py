"""The page at `/` in a real browser: Debian's chromium, headless, driven by Selenium through chromedriver.

The server runs as a user runs it (`videogemma serve --model tiny` in a subprocess, on a free loopback port);
the browser loads the page, uploads the real clip through the file input, asks the default question and waits
for the streamed answer, which must be the model's own answer for that clip and question. In camera mode,
Chromium's fake camera plays the real clip (converted to Y4M, looping) and the page streams its frames to the
live coach: feedback lines with their times must appear, in order, each after its first window could end, and
as many as the stream's summary says were said. The screenshots are saved beside the test's files
(`page.png`, `camera.png`). The browser fixtures are in tests/conftest.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from videogemma.constants import DEFAULT_PROMPT
from videogemma.inference.generate import GenerationSettings, answer
from videogemma.serve.launch import serve_subprocess

pytestmark = pytest.mark.slow
TOKENS = 16
STARTUP_S = 120
ANSWER_S = 180


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of `videogemma serve --model tiny` in a subprocess, shared by the page's tests."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    options = ("--model", "tiny", "--default-max-tokens", str(TOKENS), "--threads", "1")
    with serve_subprocess(log, *options, startup_s=STARTUP_S) as base:
        yield base


def to_y4m(clip: Path, out: Path, size: tuple[int, int] = (320, 240), every: int = 2) -> Path:
    """The clip as raw YUV 4:2:0 (what Chromium's fake camera plays), every `every`-th frame at that size."""
    with av.open(str(clip)) as source, av.open(str(out), "w", format="yuv4mpegpipe") as target:
        rate = round(float(source.streams.video[0].average_rate) / every)
        stream = target.add_stream("rawvideo", rate=rate)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for index, frame in enumerate(source.decode(video=0)):
            if index % every == 0:
                scaled = frame.reformat(*size, format="yuv420p")
                scaled.pts = None
                target.mux(stream.encode(scaled))
        target.mux(stream.encode())
    return out


@pytest.fixture
def camera_browser(tmp_path, real_clip, open_browser) -> webdriver.Chrome:
    """Chromium whose camera plays the real clip, allowed without asking."""
    video = to_y4m(real_clip, tmp_path / "camera.y4m")
    return open_browser(
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    )


def test_the_page_streams_the_models_answer_for_an_uploaded_clip(tmp_path, real_clip, browser, server):
    from videogemma import load

    model, processor = load("tiny")
    want = answer(
        model, processor, real_clip, DEFAULT_PROMPT, settings=GenerationSettings(max_new_tokens=TOKENS)
    )
    assert want.error is None
    browser.get(f"{server}/")
    wait = WebDriverWait(browser, ANSWER_S)
    wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#model option"))
    assert browser.find_element(By.ID, "question").get_attribute("value") == DEFAULT_PROMPT
    browser.find_element(By.ID, "video-file").send_keys(str(real_clip))
    browser.find_element(By.ID, "ask").click()
    box = browser.find_element(By.ID, "answer")
    wait.until(lambda _: box.get_attribute("data-state") in ("done", "error"))
    shown = browser.execute_script("return document.getElementById('answer').textContent")
    browser.save_screenshot(str(tmp_path / "page.png"))
    assert box.get_attribute("data-state") == "done", shown
    assert shown == want.text
    assert int(box.get_attribute("data-chunks")) > 1, "the answer arrived in one piece: not streamed"
    assert (tmp_path / "page.png").stat().st_size > 0
    print(f"screenshot: {tmp_path / 'page.png'}")


WINDOWS = 4  # windows to see before stopping: the first ends 3 s into the stream, then one a second


def test_camera_mode_shows_the_live_coachs_feedback_with_its_times(tmp_path, camera_browser, server):
    camera_browser.get(f"{server}/")
    wait = WebDriverWait(camera_browser, ANSWER_S)
    wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#model option"))
    camera_browser.find_element(By.ID, "mode-camera").click()
    assert not camera_browser.find_element(By.ID, "video-file").is_displayed()
    camera_browser.find_element(By.ID, "camera-start").click()
    feedback = camera_browser.find_element(By.ID, "feedback")
    wait.until(
        lambda _: (
            feedback.get_attribute("data-state") == "error"
            or int(feedback.get_attribute("data-windows")) >= WINDOWS
        )
    )
    assert feedback.get_attribute("data-state") == "live", feedback.text
    camera_browser.save_screenshot(str(tmp_path / "camera.png"))
    camera_browser.find_element(By.ID, "camera-stop").click()
    wait.until(lambda _: feedback.get_attribute("data-state") in ("done", "error"))
    lines = camera_browser.execute_script(
        "return [...document.querySelectorAll('#feedback li')].map((li) => "
        "[li.dataset.t, li.querySelector('.time').textContent, li.querySelector('.text').textContent])"
    )
    summary = json.loads(feedback.get_attribute("data-summary") or "{}")
    assert feedback.get_attribute("data-state") == "done", lines
    assert summary["windows_run"] >= WINDOWS and summary["frames"] > 0
    assert summary["feedbacks"] == len(lines) >= 1
    times = [float(t) for t, _, _ in lines]
    assert times == sorted(times) and times[0] >= 3.0  # the first window ends 3 s after the first frame
    for t, shown, text in lines:
        assert shown == f"{float(t):.1f} s" and text.strip()
    assert (tmp_path / "camera.png").stat().st_size > 0
    print(f"screenshot: {tmp_path / 'camera.png'}")
