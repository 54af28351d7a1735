"""Long workouts: the synthetic generator, the one loader (synthetic and QEVD-FIT-COACH records), episodes
as QEVD cuts them, bad records, and the coach's training windows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from videogemma.cli import main
from videogemma.constants import NO_FEEDBACK_ANSWER
from videogemma.datasets.records import load_conversation_records
from videogemma.datasets.synthetic.exercises import EXERCISES
from videogemma.datasets.synthetic.workouts import (
    END_OF_SESSION,
    WorkoutSettings,
    generate_workouts,
    plan_workout,
)
from videogemma.datasets.workout_windows import cut_workout_windows, window_ends
from videogemma.datasets.workouts import (
    QEVD_CLOCK_OFFSET_S,
    episodes,
    feedback_spans,
    load_workouts,
)
from videogemma.errors import PathOutsideRootError, RecordError
from videogemma.processing.video import read_video_frames

# Small and fast: 30 s at 32×32 px, 4 frames per second.
SMALL = WorkoutSettings(min_duration=30.0, max_duration=30.0, size=32, fps=4.0)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("workouts") / "synthetic"
    generate_workouts(root, count=2, seed=3, settings=SMALL, progress=False)
    return root


def digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_synthetic_workouts_are_deterministic_and_in_qevd_layout(synthetic, tmp_path):
    again = tmp_path / "again"
    generate_workouts(again, count=2, seed=3, settings=SMALL, progress=False)
    assert digest(again) == digest(synthetic)
    assert sorted(digest(synthetic)) == [
        "feedbacks_long_range.json",
        "long_range_videos/0000.mp4",
        "long_range_videos/0000_timestamps.npy",
        "long_range_videos/0001.mp4",
        "long_range_videos/0001_timestamps.npy",
    ]
    other = tmp_path / "other"
    generate_workouts(other, count=1, seed=4, settings=SMALL, progress=False)
    assert digest(other)["long_range_videos/0000.mp4"] != digest(synthetic)["long_range_videos/0000.mp4"]
    # Durations are drawn in the range asked for (30-120 s by default).
    plans = [plan_workout(0, k) for k in range(6)]
    durations = [plan.num_frames / plan.fps for plan in plans]
    assert all(30 <= d <= 120 for d in durations) and len({round(d) for d in durations}) > 1
    # The form changes inside segments, at repetition ends (where cycles = t / period + phase0 is whole).
    changes = [(s, b) for plan in plans for s in plan.segments for b in s.phases[1:]]
    assert changes
    for segment, phase in changes:
        cycles = (phase.start - segment.start) / segment.scene.period_s + segment.scene.phase0
        assert cycles == pytest.approx(round(cycles), abs=1e-6)


def test_a_synthetic_workout_has_segments_transitions_and_form_changes(synthetic):
    record = json.loads((synthetic / "feedbacks_long_range.json").read_text())[0]
    frames = np.load(synthetic / record["video_timestamps"], allow_pickle=False)
    assert len(record["feedbacks"]) == len(frames) == 120 and frames[1] == pytest.approx(0.25)
    assert record["feedbacks"][-1] == ""  # QEVD's own span reader needs a silent last frame
    segments = record["synthetic"]["segments"]
    names = [s["exercise"] for s in segments]
    assert len(segments) >= 2 and len(set(names)) == len(names)
    workout = load_workouts(synthetic)[0]
    transitions = [f.text for f in workout.feedbacks if f.is_transition]
    labels = [next(e.label_name for e in EXERCISES if e.class_name == name) for name in names]
    assert transitions == [
        f"First up are {labels[0]}!",
        *(f"Moving on to {x}!" for x in labels[1:]),
        END_OF_SESSION,
    ]
    assert workout.exercises == labels
    # Every feedback inside a segment is its phase's descriptive label, said once the phase has started.
    for feedback in workout.feedbacks:
        if not feedback.is_transition:
            segment = next(s for s in segments if s["start"] <= feedback.time < s["end"] + 1e-6)
            phase = next(p for p in segment["phases"] if p["start"] <= feedback.time <= p["end"])
            assert feedback.text.split(" - ")[1].startswith(phase["variant"])
    assert all(b["variant"] != a["variant"] for s in segments for a, b in zip(s["phases"], s["phases"][1:]))


def test_transitions_hold_still_and_exercises_move(synthetic):
    record = json.loads((synthetic / "feedbacks_long_range.json").read_text())[0]
    video = read_video_frames(synthetic / record["long_range_video_file"], 120).astype(np.float32)
    motion = np.abs(np.diff(video, axis=0)).mean(axis=(1, 2, 3))  # between frame k and k + 1
    first = record["synthetic"]["segments"][0]
    hold = [
        k
        for k in range(119)
        if first["transition_start"] + 0.3 < k / 4 and (k + 1) / 4 < first["start"] - 0.1
    ]
    moving = [k for k in range(119) if first["start"] + 0.5 < k / 4 < first["end"] - 0.5]
    assert hold and moving
    assert np.mean(motion[moving]) > 1.5 * np.mean(motion[hold])


def test_episodes_run_from_a_transition_to_halfway_through_the_next(synthetic):
    workout = load_workouts(synthetic)[0]
    found = episodes(workout)
    transitions = [k for k, f in enumerate(workout.feedbacks) if f.is_transition]
    assert [e.exercise for e in found] == workout.exercises
    for episode, here, following in zip(found, transitions, transitions[1:]):
        nxt = workout.feedbacks[following]
        assert episode.start == pytest.approx(workout.feedbacks[here].first_frame / 4)
        assert episode.end == pytest.approx((nxt.first_frame + (nxt.last_frame - nxt.first_frame) // 2) / 4)
        assert episode.feedbacks == workout.feedbacks[here + 1 : following]
        assert not any(f.is_transition for f in episode.feedbacks)
    (whole,) = episodes(workout, "full_workout")
    assert whole.feedbacks == workout.feedbacks and whole.full


# ---- QEVD-FIT-COACH records --------------------------------------------------------------------------------


def qevd_folder(
    root: Path,
    feedbacks: list[str],
    times: list[float],
    transitions: list[bool],
    clock: np.ndarray | None = None,
) -> Path:
    (root / "long_range_videos").mkdir(parents=True, exist_ok=True)
    # QEVD's recordings: int64 nanoseconds, 30 fps; its feedback timestamps are seconds + 28800.
    start_ns = 1_700_000_000 * 10**9
    clock = (
        clock if clock is not None else start_ns + (np.arange(len(feedbacks)) * 10**9 // 30).astype(np.int64)
    )
    np.save(root / "long_range_videos/0007_timestamps.npy", clock)
    (root / "long_range_videos/0007.mp4").write_bytes(b"")
    record = {
        "long_range_video_file": "./long_range_videos/0007.mp4",
        "video_timestamps": "./long_range_videos/0007_timestamps.npy",
        "feedbacks": feedbacks,
        "feedback_timestamps": times,
        "is_transition": transitions,
    }
    (root / "feedbacks_long_range.json").write_text(json.dumps([record]))
    return root


def qevd_seconds(frame: int) -> float:
    return 1_700_000_000 + frame / 30 + QEVD_CLOCK_OFFSET_S


def test_spans_are_runs_of_the_same_feedback():
    frames = ["", "a", "a", "", "b", "c", "c", "", "a"]
    assert feedback_spans(frames) == [("a", 1, 2), ("b", 4, 4), ("c", 5, 6), ("a", 8, 8)]


def test_a_qevd_record_reads_in_seconds_from_the_first_frame(tmp_path):
    frames = [""] * 90
    spans = [
        ("First up are squats!", 0, 5, True),
        ("Keep your chest up", 30, 40, False),
        ("Moving on to armcrosschest!", 50, 55, True),
        ("Nice stretch", 60, 64, False),
        ("Great workout!", 80, 85, True),
    ]
    for text, first, last, _ in spans:
        frames[first : last + 1] = [text] * (last - first + 1)
    root = qevd_folder(
        tmp_path, frames, [qevd_seconds(first) for _, first, _, _ in spans], [s[3] for s in spans]
    )
    (workout,) = load_workouts(root)
    assert workout.frame_times[0] == 0.0 and workout.frame_times[30] == pytest.approx(1.0, abs=1e-6)
    assert [round(f.time, 4) for f in workout.feedbacks] == [0.0, 1.0, 1.6667, 2.0, 2.6667]
    assert workout.exercises == ["squats", "deltoid stretch"]  # QEVD reads armcrosschest so
    squats, stretch = episodes(workout)
    assert (squats.start, squats.end) == (0.0, pytest.approx(52 / 30, abs=1e-6))  # 50 + (55 - 50) // 2
    assert [f.text for f in squats.feedbacks] == ["Keep your chest up"]
    assert stretch.start == pytest.approx(50 / 30, abs=1e-6) and stretch.exercise == "deltoid stretch"


def test_bad_records_are_errors_naming_the_record(tmp_path):
    frames = [""] * 30
    frames[5:8] = ["Keep going"] * 3
    clock = (np.arange(30) * 10**9 // 30).astype(np.int64) + 1_700_000_000 * 10**9
    ok = dict(feedbacks=frames, times=[qevd_seconds(5)], transitions=[False], clock=clock)

    def load(**changes):
        settings = {**ok, **changes}
        root = qevd_folder(
            tmp_path / str(len(list(tmp_path.iterdir()))),
            settings["feedbacks"],
            settings["times"],
            settings["transitions"],
            settings.get("clock"),
        )
        return load_workouts(root)

    assert len(load()) == 1
    with pytest.raises(
        RecordError, match=r"record 0 \(./long_range_videos/0007.mp4\): 29 per-frame feedbacks for 30"
    ):
        load(feedbacks=frames[:-1])
    with pytest.raises(RecordError, match="1 spans but there are 2 feedback_timestamps"):
        load(times=[qevd_seconds(5), qevd_seconds(6)], transitions=[False, False])
    frames2 = list(frames)
    frames2[20:22] = ["Lower"] * 2
    with pytest.raises(RecordError, match="feedback_timestamps go backwards"):
        load(feedbacks=frames2, times=[qevd_seconds(20), qevd_seconds(5)], transitions=[False, False])
    backwards = clock.copy()
    backwards[10] = clock[3]
    with pytest.raises(RecordError, match="frame timestamps go backwards at frame 10"):
        load(clock=backwards)
    with pytest.raises(RecordError, match="different units"):
        load(times=[5 / 30])  # seconds from the start against a nanosecond clock
    with pytest.raises(RecordError, match="is_transition\\[0\\] = 'yes' is not a true/false flag"):
        load(transitions=["yes"])
    root = tmp_path / "pickled"
    qevd_folder(root, frames, ok["times"], ok["transitions"])
    np.save(
        root / "long_range_videos/0007_timestamps.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True
    )
    with pytest.raises(RecordError, match=r"not a readable \.npy"):
        load_workouts(root)
    escaping = json.loads((root / "feedbacks_long_range.json").read_text())
    escaping[0]["video_timestamps"] = "../../elsewhere.npy"
    (root / "feedbacks_long_range.json").write_text(json.dumps(escaping))
    with pytest.raises(PathOutsideRootError, match="record 0"):
        load_workouts(root)


# ---- training windows --------------------------------------------------------------------------------------


def test_workout_windows_answer_the_feedback_due_since_the_previous_window(synthetic, tmp_path):
    out = tmp_path / "windows"
    summary = cut_workout_windows(synthetic, out, window=3.0, stride=1.0, ratios=(0.5, 0.5, 0.0), seed=0)
    workouts = {w.video_name: w for w in load_workouts(synthetic)}
    records = [
        r
        for split in ("train", "val", "test")
        for r in json.loads((out / f"workout_windows_{split}.json").read_text())
    ]
    assert len(records) == sum(summary.windows.values()) == 2 * len(window_ends(30.0 - 0.25, 3.0, 1.0))
    assert {r["split"] for r in records} == {"train", "val"}  # one workout each, never split in two
    assert len({(r["workout"], r["split"]) for r in records}) == 2
    said = 0
    for record in records:
        workout = workouts[record["workout"]]
        start, end = record["window"]
        due = [f for f in workout.feedbacks if (start == 0 or end - 1.0 < f.time) and f.time <= end]
        answer = record["conversations"][1]["value"]
        assert answer == (due[0].text if due else NO_FEEDBACK_ANSWER)
        said += bool(due)
        clip = out / record["video"]
        assert read_video_frames(clip, 12).shape == (12, 32, 32, 3)
    # Every feedback of the workouts is some window's answer, exactly once.
    assert said == sum(len(w.feedbacks) for w in workouts.values()) - summary.crowded
    # What `videogemma train` reads.
    assert len(load_conversation_records(out / "workout_windows_train.json")) == summary.windows["train"]


def test_workout_commands_end_to_end_and_bad_input(tmp_path, capsys):
    root = tmp_path / "w"
    argv = [
        "data",
        "synth-workouts",
        "--out",
        str(root),
        "--count",
        "1",
        "--min-duration",
        "30",
        "--max-duration",
        "30",
        "--size",
        "32",
        "--fps",
        "4",
    ]
    assert main(argv) == 0
    assert "wrote 1 workouts" in capsys.readouterr().out
    argv = [
        "data",
        "workout-windows",
        "--root",
        str(root),
        "--out",
        str(tmp_path / "win"),
        "--empty-fraction",
        "0",
    ]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "windows without feedback left out" in table
    kept = json.loads((tmp_path / "win" / "workout_windows_train.json").read_text())
    assert kept and all(r["due"] for r in kept)
    assert (
        main(["data", "workout-windows", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
        == 2
    )
    assert "feedbacks_long_range.json" in capsys.readouterr().err


@pytest.mark.slow
def test_videogemma_train_learns_from_workout_windows(synthetic, tmp_path):
    import yaml

    windows = tmp_path / "windows"
    cut_workout_windows(synthetic, windows, ratios=(0.5, 0.5, 0.0), seed=0, empty_fraction=0.2)
    config = {
        "stage": "full",
        "output_dir": str(tmp_path / "run"),
        "model": {"preset": "tiny"},
        "data": {
            "train_file": str(windows / "workout_windows_train.json"),
            "val_file": str(windows / "workout_windows_val.json"),
        },
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "effective_batch_size": 2,
        "eval_steps": 2,
        "gradient_checkpointing": False,
        "plots": False,
        "learning_rate": 1e-3,
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "config.yaml")]) == 0
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert any("eval_loss" in entry for entry in state["log_history"])
