"""The coach's frame grid, window schedule and emission policies."""

from __future__ import annotations

import pytest

from videogemma.coach.policy import ChangePolicy, IntervalPolicy, make_policy
from videogemma.coach.source import SourceFrame
from videogemma.coach.windows import FrameGrid, WindowSchedule
from videogemma.constants import NO_FEEDBACK_ANSWER


def frames_at(times: list[float]) -> list[SourceFrame]:
    return [SourceFrame(t, f"frame@{t}", None) for t in times]  # the grid only reads the times


def test_the_grid_takes_the_frame_on_screen_at_each_grid_time():
    grid = FrameGrid(step=0.5)
    settled = [
        (index, item.frame)
        for item in frames_at([0.0, 0.3, 0.5, 1.4, 1.45, 2.1])
        for index, item in grid.push(item)
    ]
    # 0.0 → frame 0.0; 0.5 → frame 0.5 (exactly then); 1.0 → frame 0.5 (still on screen); 1.5 → 1.45; 2.0 → 1.45.
    assert settled == [
        (0, "frame@0.0"),
        (1, "frame@0.5"),
        (2, "frame@0.5"),
        (3, "frame@1.45"),
        (4, "frame@1.45"),
    ]
    assert grid.next_index == 5  # 2.5 is settled once a frame at or after it arrives


def test_windows_read_the_last_num_frames_grid_frames_and_share_them():
    schedule = WindowSchedule(window=3.0, stride=1.0, num_frames=8)  # a grid frame every 0.375 s
    assert [schedule.end(j) for j in range(3)] == [3.0, 4.0, 5.0]
    assert list(schedule.indices(0)) == list(range(1, 9))  # (0, 3] s
    assert list(schedule.indices(1)) == list(range(3, 11))  # grid 10 = 3.75 s, the last at or before 4 s
    assert len(set(schedule.indices(0)) & set(schedule.indices(1))) == 6
    assert schedule.latest_due(2.9) is None and schedule.latest_due(3.0) == 0
    assert schedule.latest_due(4.2) == 1 and schedule.latest_due(4.99) == 1 and schedule.latest_due(5.0) == 2
    with pytest.raises(ValueError):
        WindowSchedule(window=0.0, stride=1.0, num_frames=8)


def test_the_change_policy_says_what_changed_and_repeats_only_after_a_while():
    policy = ChangePolicy(repeat_after=10.0)
    said = [
        t
        for t, text in [
            (3, "squats - knees in"),
            (4, "squats - knees in"),
            (5, "Squats - knees in."),
            (6, "squats - good form"),
            (7, "squats - knees in"),
            (16, "squats - knees in"),
            (17, "squats - knees in"),
            (18, NO_FEEDBACK_ANSWER),
            (19, ""),
            (27, "squats - knees in"),
        ]
        if policy.decide(t, text)
    ]
    # A change is said at once (6, 7), the same answer again only 10 s after it was last said (17, 27).
    assert said == [3, 6, 7, 17, 27]
    # confirm=2: an answer is said once two windows in a row give it; a one-window waver is never said.
    steady = ChangePolicy(repeat_after=10.0, confirm=2)
    answers = ["a - x", "a - x", "a - y", "a - x", "a - y", "a - y", "a - y"]
    assert [t for t, text in enumerate(answers) if steady.decide(float(t), text)] == [1, 5]
    never = ChangePolicy(repeat_after=float("inf"))
    assert [never.decide(t, "a - b") for t in (0, 100, 1000)] == [True, False, False]
    with pytest.raises(ValueError):
        ChangePolicy(repeat_after=0)


def test_the_interval_policy_says_the_answer_every_interval():
    policy = IntervalPolicy(interval=5.0)
    said = [t for t in range(3, 20) if policy.decide(float(t), "pushups - hips sagging")]
    assert said == [3, 8, 13, 18]
    assert not IntervalPolicy(5.0).decide(0.0, NO_FEEDBACK_ANSWER)
    assert isinstance(make_policy("interval", interval=2.0), IntervalPolicy)
    with pytest.raises(ValueError, match="unknown emission policy"):
        make_policy("loud")
