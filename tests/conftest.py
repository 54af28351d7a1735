"""Shared test fixtures."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch

# The real exercise clip lives beside the project, never inside it.
SHARED_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
REAL_CLIP = SHARED_FIXTURES / "real_clip_00000340.mp4"
# The default dtype on a CPU is bf16 only where it is native: pinned to fp32 here so that the suite behaves the
# same on every machine (subprocesses inherit it). `VIDEOGEMMA_CPU_BF16=1 pytest ...` runs it the other way.
os.environ.setdefault("VIDEOGEMMA_CPU_BF16", "0")
# Test tensors are so small that a second thread only adds synchronisation (on 2 shared cores, ~5-10x
# slower): single-threaded from import on, so module- and session-scoped fixtures build that way too.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Each test starts single-threaded and the setting is restored after: code under test (a training run's
    `torch_threads`) changes it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def real_clip() -> Path:
    if not REAL_CLIP.exists():
        pytest.fail(f"the shared fixture {REAL_CLIP} is missing (expected ../shared beside the project)")
    return REAL_CLIP


# ---- tiny video clips written with PyAV (the processing and datasets tests) ----------------------------------
# - `write_clip(path, frames, fps=10, pix_fmt="yuv420p", codec="libx264", pts=None, time_base=None,
#  rotation=None) -> Path` encodes uint8 frames (T, H, W, 3) RGB or (T, H, W) grey into a video file.
#  `pts` (with `time_base`) gives each frame's presentation time, for variable-frame-rate clips; `rotation`
#  stores a display matrix (counter-clockwise degrees, as `VideoFrame.rotation` reads it back).
# - `level_frames(num_frames, height=48, width=64) -> uint8 (T, H, W, 3)`: frame k is a flat grey of level
#  `20 + 10 k`, so `frame_level(decoded_frame)` recovers k after lossy compression.


def write_clip(
    path: Path | str,
    frames: np.ndarray,
    fps: int = 10,
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int | None = None,
) -> Path:
    frames = np.asarray(frames, dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for k, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="gray" if image.ndim == 2 else "rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[k], time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return Path(path)


def level_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    levels = 20 + 10 * np.arange(num_frames, dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()


def frame_level(frame: np.ndarray) -> int:
    """The k of a decoded `level_frames` frame."""
    return round((float(frame.mean()) - 20) / 10)


@pytest.fixture(name="write_clip")
def write_clip_fixture() -> Callable[..., Path]:
    return write_clip


@pytest.fixture(name="level_frames")
def level_frames_fixture() -> Callable[..., np.ndarray]:
    return level_frames


@pytest.fixture(name="frame_level")
def frame_level_fixture() -> Callable[[np.ndarray], int]:
    return frame_level


# ---- a real browser (the serve page and the HTML report tests) ---------------------------------------------------


def _chromium(monkeypatch: pytest.MonkeyPatch, arguments: tuple[str, ...]) -> Any:
    """Debian's headless chromium driven by Selenium through chromedriver (a `webdriver.Chrome`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver (.ci/run installs them)")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1100,900",
        *arguments,
    ):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


@pytest.fixture
def open_browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Opens chromium with extra command-line switches (e.g. a fake camera); every session quits at teardown."""
    sessions: list[Any] = []

    def open_with(*arguments: str) -> Any:
        sessions.append(_chromium(monkeypatch, arguments))
        return sessions[-1]

    try:
        yield open_with
    finally:
        for session in sessions:
            session.quit()


@pytest.fixture
def browser(open_browser: Callable[..., Any]) -> Any:
    """Headless chromium with its default switches."""
    return open_browser()
