"""The page at `/` in a real browser: Debian's chromium, headless, driven by Selenium through chromedriver.

The server runs as a user runs it (`videogemma serve --model tiny` in a subprocess, on a free loopback port);
the browser loads the page, uploads the real clip through the file input, asks the default question and waits
for the streamed answer, which must be the model's own answer for that clip and question. The screenshot is
saved beside the test's files (`page.png`). The `browser` fixture is in tests/conftest.py.
"""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from videogemma.constants import DEFAULT_PROMPT
from videogemma.inference.generate import GenerationSettings, answer
from videogemma.serve.launch import serve_subprocess

pytestmark = pytest.mark.slow
TOKENS = 16
STARTUP_S = 120
ANSWER_S = 180


def test_the_page_streams_the_models_answer_for_an_uploaded_clip(tmp_path, real_clip, browser):
    from videogemma import load

    model, processor = load("tiny")
    want = answer(
        model, processor, real_clip, DEFAULT_PROMPT, settings=GenerationSettings(max_new_tokens=TOKENS)
    )
    assert want.error is None
    options = ("--model", "tiny", "--default-max-tokens", str(TOKENS), "--threads", "1")
    with serve_subprocess(tmp_path / "serve.log", *options, startup_s=STARTUP_S) as base:
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
