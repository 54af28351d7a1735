"""Fixtures for the inference tests: the `tiny` model (random weights, fixed seed) and tiny clips.

- `tiny_model`: `(model, processor)` from `videogemma.load("tiny")`, shared by the whole session.
- `make_clips(folder, count) -> list[Path]`: short 64×48 mp4 clips of moving stripes, each different.
- `corrupt_clip(path) -> Path`: a file named .mp4 that holds no video.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest


def write_clip(path: Path, seed: int, num_frames: int = 10, height: int = 48, width: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(1, height, width, 3), dtype=np.uint8)
    shift = np.arange(num_frames)[:, None, None, None] * (seed + 1) * 3
    frames = ((base.astype(np.int64) + shift) % 256).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width = height, width
        stream.pix_fmt = "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="session")
def tiny_model() -> tuple:
    from videogemma import load

    return load("tiny")


@pytest.fixture
def make_clips() -> Callable[[Path, int], list[Path]]:
    def make(folder: Path, count: int) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        return [write_clip(folder / f"clip_{k:02d}.mp4", seed=k) for k in range(count)]

    return make


@pytest.fixture
def corrupt_clip() -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 20)
        return path

    return make
