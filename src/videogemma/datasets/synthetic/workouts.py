"""Synthetic long workouts in QEVD-FIT-COACH's layout: several exercise segments, the form changing inside a
segment, short transitions between segments, and timestamped ground-truth feedback.

    generate_workouts("data/workouts", count=4, seed=0)   # → feedbacks_long_range.json + long_range_videos/

A workout lasts 30-120 s (drawn per workout). It starts with a transition ("First up are squats!"), then
alternates exercise segments and transitions ("Moving on to pushups!") and ends with a last transition
that closes the session, as QEVD-FIT-COACH's workouts do. During a transition the figure holds the start
pose of the coming exercise. A segment is one of the synthetic exercises (`exercises.py`, drawn without
repetition) split into 1-3 form phases with a different variant each (good form, then a mistake, ...);
a phase changes at the end of a repetition, where every variant of an exercise passes through the same
start pose, so the motion never jumps. One person (body, clothes, room, noise) does the whole workout;
where they stand and their tempo change per exercise.

The coach speaks (the ground truth): each transition's line shortly after it starts; in each phase the
phase's label (`squats - knees caving in; push the knees out over the toes`, the descriptive label the
synthetic clips are trained on) 1-2 s after the phase starts, the reaction time of a coach, and again every
8-12 s while the phase lasts. An utterance covers the frames it is spoken over (1.2-2 s) in the per-frame
`feedbacks`, separated from the next by at least one silent frame; its `feedback_timestamps` entry is the
time of its first frame. Frame timestamps are seconds (float64 frame index / fps). The last frame is
always silent. The plan of every workout (segments, phases) is kept in the record under `synthetic`.

Deterministic: each workout draws from its own generator seeded by (seed, workout index) and the encoder
is deterministic (`qved.io.write_mp4`), so the same arguments write the same bytes.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videogemma.datasets.qved.io import write_json, write_mp4
from videogemma.datasets.synthetic.exercises import EXERCISES, Exercise, pose_sequence
from videogemma.datasets.synthetic.rendering import Scene, random_scene, render_frame
from videogemma.datasets.workouts import (
    FEEDBACKS_LONG_RANGE_NAME,
    LONG_RANGE_VIDEOS_DIR,
    TIMESTAMPS_SUFFIX,
    TRANSITION_PREFIXES,
)

# Separates the workouts' random streams from the clips' (generate.clip_rng) under the same seed.
_WORKOUT_STREAM = 0x574B
END_OF_SESSION = "That's the end of the workout, great job!"


@dataclass(frozen=True)
class WorkoutSettings:
    """How the workouts are drawn (seconds unless said otherwise)."""

    min_duration: float = 30.0
    max_duration: float = 120.0
    size: int = 64  # frame width and height, pixels
    fps: float = 12.0
    segment_s: tuple[float, float] = (15.0, 25.0)  # typical exercise length, sets how many segments
    transition_s: tuple[float, float] = (1.5, 2.5)
    min_phase_s: float = 5.0
    max_phases: int = 3
    reaction_s: tuple[float, float] = (1.0, 2.0)  # from a phase's start to the coach's first word
    repeat_s: tuple[float, float] = (8.0, 12.0)  # between repetitions of a phase's feedback
    speak_s: tuple[float, float] = (1.2, 2.0)  # frames an utterance covers

    def check(self) -> None:
        if not 10 <= self.min_duration <= self.max_duration:
            raise ValueError(
                f"need 10 ≤ min_duration ≤ max_duration, got {self.min_duration}, {self.max_duration}"
            )
        if self.size < 16 or self.fps <= 0:
            raise ValueError(f"need size ≥ 16 pixels and fps > 0, got {self.size}, {self.fps}")


@dataclass(frozen=True)
class Phase:
    variant_index: int
    start: float  # seconds from the workout's start
    end: float


@dataclass(frozen=True)
class Segment:
    exercise_index: int
    transition_start: float  # the transition before the segment starts here ...
    start: float  # ... and the exercise here
    end: float
    phases: tuple[Phase, ...]
    scene: Scene

    @property
    def exercise(self) -> Exercise:
        return EXERCISES[self.exercise_index]


@dataclass(frozen=True)
class Utterance:
    time: float
    text: str
    is_transition: bool


@dataclass(frozen=True)
class WorkoutPlan:
    index: int
    num_frames: int
    fps: float
    segments: tuple[Segment, ...]
    end_transition: float  # the closing transition starts here and lasts to the end
    utterances: tuple[Utterance, ...]

    @property
    def stem(self) -> str:
        return f"{self.index:04d}"


# What each of a workout's random streams draws: the plan, the speaking times, the pixel noise.
PLAN, SPEECH, NOISE = 0, 1, 2


def workout_rng(seed: int, index: int, purpose: int = PLAN) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _WORKOUT_STREAM, index, purpose]))


def plan_workout(seed: int, index: int, settings: WorkoutSettings = WorkoutSettings()) -> WorkoutPlan:
    """Everything about one workout except its pixels: timeline, scenes and what the coach says."""
    settings.check()
    rng = workout_rng(seed, index)
    fps = settings.fps
    num_frames = round(rng.uniform(settings.min_duration, settings.max_duration) * fps)
    duration = num_frames / fps
    count = int(np.clip(round(duration / rng.uniform(*settings.segment_s)), 2, len(EXERCISES)))
    exercise_indices = rng.choice(len(EXERCISES), size=count, replace=False)
    transitions = rng.uniform(*settings.transition_s, size=count + 1)
    weights = rng.uniform(0.8, 1.2, size=count)
    lengths = (duration - transitions.sum()) * weights / weights.sum()
    # One person for the whole workout: the first scene's body, room, clothes and noise in every segment.
    person = random_scene(EXERCISES[exercise_indices[0]], rng, settings.size, 1)
    segments, time = [], 0.0
    for number, (exercise_index, transition, length) in enumerate(
        zip(exercise_indices, transitions, lengths)
    ):
        exercise = EXERCISES[int(exercise_index)]
        closing = transitions[-1] if number == count - 1 else 0.0  # the last segment shows the end too
        frames = math.ceil((transition + length + closing) * fps) + 2
        scene = dataclasses.replace(
            random_scene(exercise, rng, settings.size, frames),
            body=person.body,
            background=person.background,
            colors=person.colors,
            noise_std=person.noise_std,
        )
        start, end = time + transition, time + transition + length
        phases = _plan_phases(exercise, scene, start, end, rng, settings)
        segments.append(Segment(int(exercise_index), time, start, end, phases, scene))
        time = end
    utterances = _plan_utterances(segments, time, rng, settings)
    return WorkoutPlan(index, num_frames, fps, tuple(segments), time, utterances)


def _plan_phases(
    exercise: Exercise,
    scene: Scene,
    start: float,
    end: float,
    rng: np.random.Generator,
    settings: WorkoutSettings,
) -> tuple[Phase, ...]:
    """1-3 phases of `min_phase_s` or more, each of another variant than the one before, changing at the
    end of a repetition (so a boundary moves by up to half a repetition from where it was drawn)."""
    length = end - start
    count = int(rng.integers(1, 1 + max(1, min(settings.max_phases, int(length // settings.min_phase_s)))))
    slack = max(length - count * settings.min_phase_s, 0.0)
    lengths = settings.min_phase_s + rng.dirichlet(np.ones(count)) * slack
    cuts = np.cumsum(lengths)[:-1] * (length / lengths.sum())
    # A repetition starts where cycles = time / period + phase0 is a whole number.
    period, phase0 = scene.period_s, scene.phase0
    boundaries = [start + (round(cut / period + phase0) - phase0) * period for cut in cuts]
    boundaries = [b for b in boundaries if start + 1.0 < b < end - 1.0]
    edges = [start, *sorted(set(boundaries)), end]
    phases, variant = [], None
    for phase_start, phase_end in itertools.pairwise(edges):
        choices = [k for k in range(len(exercise.variants)) if k != variant]
        variant = int(rng.choice(choices))
        phases.append(Phase(variant, phase_start, phase_end))
    return tuple(phases)


def _plan_utterances(
    segments: list[Segment], end_transition: float, rng: np.random.Generator, settings: WorkoutSettings
) -> tuple[Utterance, ...]:
    said = []
    for number, segment in enumerate(segments):
        prefix = TRANSITION_PREFIXES[0] if number == 0 else TRANSITION_PREFIXES[1]
        said.append(
            Utterance(
                segment.transition_start + rng.uniform(0.2, 0.6),
                f"{prefix}{segment.exercise.label_name}!",
                True,
            )
        )
        for phase in segment.phases:
            text = segment.exercise.descriptive_label(segment.exercise.variants[phase.variant_index])
            time = phase.start + rng.uniform(*settings.reaction_s)
            while time <= phase.end - 1.0:
                said.append(Utterance(time, text, False))
                time += rng.uniform(*settings.repeat_s)
    said.append(Utterance(end_transition + rng.uniform(0.2, 0.6), END_OF_SESSION, True))
    return tuple(said)


def frame_feedbacks(
    plan: WorkoutPlan, rng: np.random.Generator, settings: WorkoutSettings
) -> tuple[list[str], list[float], list[bool]]:
    """The record's per-frame `feedbacks`, `feedback_timestamps` and `is_transition`: each utterance over
    the frames it is spoken on, one silent frame at least between two, the last frame silent."""
    texts = [""] * plan.num_frames
    times, flags = [], []
    previous_last = -2
    starts = [math.ceil(u.time * plan.fps - 1e-9) for u in plan.utterances]
    for number, (utterance, first) in enumerate(zip(plan.utterances, starts)):
        first = max(first, previous_last + 2)
        following = starts[number + 1] if number + 1 < len(starts) else plan.num_frames
        last = min(
            first + round(rng.uniform(*settings.speak_s) * plan.fps) - 1, following - 2, plan.num_frames - 2
        )
        if first > plan.num_frames - 2:
            break
        last = max(last, first)
        texts[first : last + 1] = [utterance.text] * (last - first + 1)
        times.append(round(first / plan.fps, 6))
        flags.append(utterance.is_transition)
        previous_last = last
    return texts, times, flags


def render_workout(plan: WorkoutPlan, rng: np.random.Generator) -> np.ndarray:
    """The workout's frames, uint8 (num_frames, size, size, 3)."""
    frames = []
    for number, segment in enumerate(plan.segments):
        last_segment = number == len(plan.segments) - 1
        stop = plan.num_frames if last_segment else math.ceil(segment.end * plan.fps - 1e-9)
        first = math.ceil(segment.transition_start * plan.fps - 1e-9)
        for index in range(first, stop):
            frames.append(_render_at(segment, index / plan.fps, index - first))
    video = np.stack(frames).astype(np.float32)
    noise = rng.standard_normal(video.shape, dtype=np.float32)
    video += noise * np.float32(plan.segments[0].scene.noise_std)
    return np.clip(video, 0, 255, out=video).astype(np.uint8)


def _render_at(segment: Segment, time: float, local_index: int) -> np.ndarray:
    """One frame of a segment: the start pose held during its transition (and after it ends, for the last
    segment's closing transition), the phase's motion during the exercise."""
    exercise, scene = segment.exercise, segment.scene
    phase = next((p for p in segment.phases if p.start <= time < p.end), None)
    if phase is None:  # transition: hold the start pose
        joints = exercise.pose(0.0, 0, exercise.variants[0].params, scene.body)
    else:
        variant = exercise.variants[phase.variant_index]
        (joints,) = pose_sequence(
            exercise, variant, scene.body, np.array([time - segment.start]), scene.period_s, scene.phase0
        )
    return render_frame(joints, scene, local_index, exercise)


def workout_record(plan: WorkoutPlan, rng: np.random.Generator, settings: WorkoutSettings, seed: int) -> dict:
    """The workout's record of `feedbacks_long_range.json` (QEVD's fields, plus the plan under `synthetic`)."""
    texts, times, flags = frame_feedbacks(plan, rng, settings)
    segments = [
        {
            "exercise": s.exercise.class_name,
            "transition_start": round(s.transition_start, 6),
            "start": round(s.start, 6),
            "end": round(s.end, 6),
            "phases": [
                {
                    "variant": s.exercise.variants[p.variant_index].name,
                    "start": round(p.start, 6),
                    "end": round(p.end, 6),
                }
                for p in s.phases
            ],
        }
        for s in plan.segments
    ]
    return {
        "long_range_video_file": f"./{LONG_RANGE_VIDEOS_DIR}/{plan.stem}.mp4",
        "video_timestamps": f"./{LONG_RANGE_VIDEOS_DIR}/{plan.stem}{TIMESTAMPS_SUFFIX}",
        "feedbacks": texts,
        "feedback_timestamps": times,
        "is_transition": flags,
        "synthetic": {"seed": seed, "fps": plan.fps, "size": settings.size, "segments": segments},
    }


def _write_workout(job: tuple[int, int, WorkoutSettings, Path]) -> dict[str, Any]:
    seed, index, settings, out_dir = job
    plan = plan_workout(seed, index, settings)
    # The pixels' randomness (noise) and the speaking times draw from their own streams: the plan alone
    # fixes the timeline whatever the frame size.
    record = workout_record(plan, workout_rng(seed, index, SPEECH), settings, seed)
    video = out_dir / record["long_range_video_file"]
    timestamps = out_dir / record["video_timestamps"]
    if not (video.is_file() and timestamps.is_file()):
        frames = render_workout(plan, workout_rng(seed, index, NOISE))
        write_mp4(video, frames, plan.fps)
        np.save(timestamps, np.arange(plan.num_frames, dtype=np.float64) / plan.fps, allow_pickle=False)
    return record


def generate_workouts(
    out_dir: str | Path,
    count: int = 4,
    seed: int = 0,
    settings: WorkoutSettings = WorkoutSettings(),
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Write `count` synthetic workouts into `out_dir` (QEVD-FIT-COACH layout); return a summary.

    Resumable: a workout whose video and timestamps exist is not rendered again (it would give the same
    bytes); `feedbacks_long_range.json` is written last, once every workout exists.
    """
    from tqdm import tqdm

    settings.check()
    if count < 1:
        raise ValueError(f"need at least one workout, got {count}")
    out_dir = Path(out_dir)
    (out_dir / LONG_RANGE_VIDEOS_DIR).mkdir(parents=True, exist_ok=True)
    jobs = [(seed, index, settings, out_dir) for index in range(count)]
    with tqdm(total=count, desc="synth-workouts", unit="workout", disable=not progress) as bar:
        if workers > 1 and count > 1:
            import multiprocessing

            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with context.Pool(workers) as pool:
                records = []
                for record in pool.imap(_write_workout, jobs):
                    records.append(record)
                    bar.update()
        else:
            records = []
            for job in jobs:
                records.append(_write_workout(job))
                bar.update()
    write_json(out_dir / FEEDBACKS_LONG_RANGE_NAME, records)
    durations = [len(r["feedbacks"]) / settings.fps for r in records]
    return {
        "workouts": count,
        "seconds": sum(durations),
        "feedbacks": sum(len(r["feedback_timestamps"]) for r in records),
        "segments": sum(len(r["synthetic"]["segments"]) for r in records),
        "durations": durations,
    }
