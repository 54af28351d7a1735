"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# The real exercise clip lives beside the project, never inside it.
SHARED_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
REAL_CLIP = SHARED_FIXTURES / "real_clip_00000340.mp4"

# Test tensors are small: one thread avoids synchronisation cost, which dominates on 2 shared cores.
torch.set_num_threads(1)


@pytest.fixture
def real_clip() -> Path:
    if not REAL_CLIP.exists():
        pytest.fail(f"the shared fixture {REAL_CLIP} is missing (expected ../shared beside the project)")
    return REAL_CLIP
