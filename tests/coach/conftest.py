"""Fixtures for the live coach: the `tiny` model (random weights) and one small synthetic workout.

- `tiny_model`: `(model, processor)` from `videogemma.load("tiny")`, shared by the session.
- `workout`: a 30 s synthetic workout at 32×32 px and 4 frames/s (`data synth-workouts` layout); `.video`
  is its mp4, `.root` the dataset folder.
- `long_workout`: the same at 120 s, for a real-time session that must still be running when it is stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class SmallWorkout:
    root: Path
    video: Path


@pytest.fixture(scope="session")
def tiny_model() -> tuple:
    from videogemma import load

    return load("tiny")


@pytest.fixture(scope="session")
def workout(tmp_path_factory) -> SmallWorkout:
    return _small_workout(tmp_path_factory, seconds=30.0)


@pytest.fixture(scope="session")
def long_workout(tmp_path_factory) -> SmallWorkout:
    return _small_workout(tmp_path_factory, seconds=120.0)


def _small_workout(tmp_path_factory, seconds: float) -> SmallWorkout:
    from videogemma.datasets.synthetic.workouts import WorkoutSettings, generate_workouts

    root = tmp_path_factory.mktemp("coach") / "workouts"
    settings = WorkoutSettings(min_duration=seconds, max_duration=seconds, size=32, fps=4.0)
    generate_workouts(root, count=1, seed=5, settings=settings, progress=False)
    return SmallWorkout(root, root / "long_range_videos" / "0000.mp4")
