"""The synthetic exercise dataset: layout, labels, determinism, and labels visible only in the motion."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import videogemma
from videogemma.datasets.qved.io import write_mp4
from videogemma.datasets.synthetic import exercises as synthetic
from videogemma.datasets.synthetic.exercises import EXERCISES, Body
from videogemma.datasets.synthetic.generate import clip_rng, clip_specs, generate_dataset
from videogemma.datasets.synthetic.rendering import render_clip
from videogemma.processing.video import probe_video, read_video_frames

SMALL = dict(per_variant=1, size=32, num_frames=10, fps=10.0, progress=False)


def test_at_least_six_exercises_with_three_variants_each_including_good_form():
    assert len(EXERCISES) >= 6
    names = [e.class_name for e in EXERCISES]
    assert len(set(names)) == len(names)
    assert "mountain-climbers" in names  # hyphenated class names are part of QVED
    for exercise in EXERCISES:
        assert len(exercise.variants) >= 3
        assert exercise.variants[0].name == "good form"
        assert len({v.name for v in exercise.variants}) == len(exercise.variants)
        assert all(len(v.feedbacks) >= 2 for v in exercise.variants)


def test_dataset_layout_labels_and_manifest(tmp_path):
    summary = generate_dataset(tmp_path, exercises=EXERCISES[:3], **SMALL)
    specs = clip_specs(1, EXERCISES[:3])
    assert summary["clips"] == len(specs) == 9
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    labels = json.loads((tmp_path / "fine_grained_labels.json").read_text())
    feedbacks = json.loads((tmp_path / "feedbacks_short_clips.json").read_text())
    assert len(manifest) == len(labels) == len(feedbacks) == 9
    for path, class_name in manifest.items():
        assert re.fullmatch(rf"{re.escape(class_name)}/\d{{8}}\.mp4", path)
        assert (tmp_path / path).stat().st_size > 0
    basenames = [p.split("/")[1] for p in manifest]
    assert len(set(basenames)) == len(basenames)  # unique across classes, the label files join on them
    label_pattern = re.compile(r"^(?P<exercise>[a-z][a-z -]*[a-z]) - (?P<detail>[^;]+); (?P<correction>.+)$")
    for record in labels:
        assert record["video_path"].startswith("./")
        (descriptive,) = record["labels_descriptive"]
        match = label_pattern.match(descriptive)
        assert match, descriptive
        assert record["labels"] == [f"{match['exercise']} - {match['detail']}"]
    assert "squats - knees caving in; push the knees out over the toes" in {
        r["labels_descriptive"][0] for r in labels
    }
    assert all(len(r["feedbacks"]) >= 2 for r in feedbacks)

    info = probe_video(tmp_path / next(iter(manifest)), count_frames=True)
    assert (info.width, info.height, info.num_frames) == (32, 32, 10)
    assert info.codec == "h264"
    assert info.fps == pytest.approx(10.0)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    generate_dataset(tmp_path / "a", seed=3, exercises=EXERCISES[:1], **SMALL)
    generate_dataset(tmp_path / "b", seed=3, exercises=EXERCISES[:1], **SMALL)
    generate_dataset(tmp_path / "c", seed=4, exercises=EXERCISES[:1], **SMALL)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 6  # 3 clips + manifest + 2 label files
    for file in files:
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    clips = [f for f in files if f.suffix == ".mp4"]
    assert all((tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes() for f in clips)


# Run in a fresh interpreter that first decodes a video (which once made x264's output vary between
# processes); the package is registered by path so its transformers-importing __init__ is skipped.
_GENERATE_IN_A_FRESH_PROCESS = """
import sys, types
package = types.ModuleType("videogemma")
package.__path__ = [sys.argv[2]]
sys.modules["videogemma"] = package
from videogemma.processing.video import read_video_frames
from videogemma.datasets.synthetic.exercises import EXERCISES
from videogemma.datasets.synthetic.generate import generate_dataset
read_video_frames(sys.argv[3], 4)
generate_dataset(sys.argv[1], seed=11, exercises=EXERCISES[3:4], per_variant=1, size=64, num_frames=12, progress=False)
"""


def test_same_bytes_in_separate_processes(tmp_path, real_clip):
    package_dir = str(Path(videogemma.__file__).parent)
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _GENERATE_IN_A_FRESH_PROCESS,
                str(tmp_path / n),
                package_dir,
                str(real_clip),
            ]
        )
        for n in ("a", "b")
    ]
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    clips = sorted((tmp_path / "a").rglob("*.mp4"))
    assert len(clips) == 3
    for clip in clips:
        assert clip.read_bytes() == (tmp_path / "b" / clip.relative_to(tmp_path / "a")).read_bytes()


def test_parallel_generation_writes_the_same_bytes(tmp_path):
    generate_dataset(tmp_path / "serial", seed=1, exercises=EXERCISES[:2], **SMALL)
    generate_dataset(tmp_path / "parallel", seed=1, exercises=EXERCISES[:2], workers=2, **SMALL)
    for clip in (tmp_path / "serial").rglob("*.mp4"):
        assert (
            clip.read_bytes() == (tmp_path / "parallel" / clip.relative_to(tmp_path / "serial")).read_bytes()
        )


def _joint_distance(a: dict, b: dict) -> float:
    return max(float(np.hypot(*(a[k] - b[k]))) for k in a.keys() & b.keys())


def test_standing_exercises_share_their_start_pose_and_plank_exercises_theirs():
    body = Body()
    start = {e.class_name: e.pose(0.0, 0, e.variants[0].params, body) for e in EXERCISES}
    for a, b in [("squats", "jumping_jacks"), ("squats", "high_knees"), ("pushups", "mountain-climbers")]:
        assert _joint_distance(start[a], start[b]) < 0.06, (a, b)
    # ... and their motions differ: at the far end of the movement the poses are far apart.
    end = {e.class_name: e.pose(1.0, 0, e.variants[0].params, body) for e in EXERCISES}
    for a, b in [("squats", "jumping_jacks"), ("squats", "high_knees"), ("pushups", "mountain-climbers")]:
        assert _joint_distance(end[a], end[b]) > 0.15, (a, b)


def test_variants_share_the_start_pose_and_differ_in_motion():
    body = Body()
    for exercise in EXERCISES:
        starts = [exercise.pose(0.0, 0, v.params, body) for v in exercise.variants]
        ends = [exercise.pose(1.0, 0, v.params, body) for v in exercise.variants]
        for i in range(1, len(exercise.variants)):
            assert _joint_distance(starts[0], starts[i]) < 1e-6, exercise.class_name
            assert _joint_distance(ends[0], ends[i]) > 0.08, (exercise.class_name, exercise.variants[i].name)


def test_one_scene_renders_every_variant_alike_in_frame_zero_but_not_later():
    for exercise in (EXERCISES[0], EXERCISES[3]):  # a standing and a plank exercise
        spec = clip_specs(1, (exercise,))[0]
        clips = [
            render_clip(exercise, variant, clip_rng(7, spec), size=64, num_frames=24, fps=12.0).astype(
                np.float32
            )
            for variant in exercise.variants
        ]
        for other in clips[1:]:
            first_frame_gap = np.abs(clips[0][0] - other[0]).mean()
            later_gap = max(np.abs(clips[0][t] - other[t]).mean() for t in range(len(other)))
            assert first_frame_gap < 1.5  # noise and a sliver of motion at most
            assert later_gap > 4 * first_frame_gap + 1.0


def test_first_frame_statistics_of_variants_overlap():
    """Across random scenes, frame 0's brightness and figure size do not separate the variants."""
    exercise = EXERCISES[0]
    stats = {v.name: [] for v in exercise.variants}
    for spec in clip_specs(12, (exercise,)):
        frame = render_clip(exercise, spec.variant, clip_rng(0, spec), size=32, num_frames=1)[0].astype(float)
        stats[spec.variant.name].append(frame.mean())
    ranges = [(min(v), max(v)) for v in stats.values()]
    assert max(low for low, _ in ranges) < min(high for _, high in ranges)


def test_decoded_clip_keeps_the_motion(tmp_path):
    """After H.264 at 64 px, the model's 8 sampled frames still tell a deep squat from a shallow one."""
    exercise = synthetic.find_exercise("squats")
    spec = clip_specs(1, (exercise,))[0]
    decoded = []
    for variant in (exercise.variants[0], exercise.variants[2]):
        frames = render_clip(exercise, variant, clip_rng(5, spec), size=64, num_frames=30, fps=12.0)
        path = tmp_path / f"{variant.name}.mp4"
        write_mp4(path, frames, 12.0)
        decoded.append(read_video_frames(path, 8).astype(np.float32))
    gaps = np.abs(decoded[0] - decoded[1]).mean(axis=(1, 2, 3))
    assert gaps[0] < 3.0  # the first sample is ~2 frames in: the motion has barely begun
    assert gaps.max() > 3 * gaps[0] + 2.0, gaps


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="per_variant"):
        generate_dataset(tmp_path, per_variant=0)
    with pytest.raises(ValueError, match="unknown exercise"):
        synthetic.find_exercise("yoga")


def test_larger_frames(tmp_path):
    frames = render_clip(
        EXERCISES[2], EXERCISES[2].variants[0], np.random.default_rng(0), size=224, num_frames=3
    )
    assert frames.shape == (3, 224, 224, 3) and frames.dtype == np.uint8
    assert frames.std() > 20  # a figure with strong contrast on the background
