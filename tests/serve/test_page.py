"""The page at `/` in a real browser: Debian's chromium, headless, driven by Selenium through chromedriver.

The server runs as a user runs it (`videogemma serve --model tiny` in a subprocess, on a free loopback port);
the browser loads the page, uploads the real clip through the file input, asks the default question and waits
for the streamed answer, which must be the model's own answer for that clip and question. The screenshot is
saved beside the test's files (`page.png`).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from videogemma.constants import DEFAULT_PROMPT
from videogemma.inference.generate import GenerationSettings, answer

pytestmark = pytest.mark.slow
TOKENS = 16
STARTUP_S = 120
ANSWER_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_subprocess(log: Path, *options: str) -> Iterator[str]:
    """`videogemma serve` in a subprocess; yields its base URL once /health answers."""
    port = free_port()
    command = [sys.executable, "-m", "videogemma.cli", "serve", "--port", str(port), *options]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"videogemma serve exited ({process.returncode}): {log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"videogemma serve did not answer /health in {STARTUP_S} s: {log.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("the page test needs Debian's chromium and chromium-driver (.ci/run installs them)")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1100,900",
    ):
        options.add_argument(argument)
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield session
    finally:
        session.quit()


def test_the_page_streams_the_models_answer_for_an_uploaded_clip(tmp_path, real_clip, browser):
    from videogemma import load

    model, processor = load("tiny")
    want = answer(
        model, processor, real_clip, DEFAULT_PROMPT, settings=GenerationSettings(max_new_tokens=TOKENS)
    )
    assert want.error is None
    options = ("--model", "tiny", "--default-max-tokens", str(TOKENS), "--threads", "1")
    with serve_subprocess(tmp_path / "serve.log", *options) as base:
        browser.get(f"{base}/")
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
