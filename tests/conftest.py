"""Shared test fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# The real exercise clip lives beside the project, never inside it.
SHARED_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
REAL_CLIP = SHARED_FIXTURES / "real_clip_00000340.mp4"
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
