"""`augment`: each operation does what it says; every new clip gets its labels and manifest entry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from videogemma.datasets.qved.augment import OPERATIONS, augment_dataset, mirror_text, plan_augmentations
from videogemma.datasets.qved.io import write_json
from videogemma.datasets.qved.prepare import prepare_splits
from videogemma.datasets.synthetic.exercises import EXERCISES
from videogemma.datasets.synthetic.generate import generate_dataset
from videogemma.processing.video import probe_video


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("augment_source")
    generate_dataset(
        root, per_variant=1, size=32, num_frames=10, fps=10.0, exercises=EXERCISES[:2], progress=False
    )
    # QVED-style manifest keys (relative to the root's parent) must keep their style
    manifest = json.loads((root / "manifest.json").read_text())
    write_json(root / "manifest.json", {f"dataset/{k}": v for k, v in manifest.items()})
    return root


def _frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(40, 200, size=(6, 24, 32, 3), dtype=np.uint8)


def test_operations_are_deterministic_and_keep_the_frame_size():
    frames = _frames()
    assert set(OPERATIONS) >= {"hflip", "vflip", "rotate", "gaussian_blur", "brightness_add", "brightness_scale",
                               "invert", "salt", "pepper", "translate", "resize", "shear", "temporal_downsample"}  # fmt: skip
    for name, operation in OPERATIONS.items():
        first = operation(frames, np.random.default_rng(1))
        again = operation(frames, np.random.default_rng(1))
        assert first.dtype == np.uint8 and first.shape[1:] == frames.shape[1:], name
        assert np.array_equal(first, again), name
        assert (
            not np.array_equal(first[: len(frames)], frames[: len(first)]) or name == "temporal_downsample"
        ), name


def test_operations_do_what_they_say():
    frames = _frames()
    rng = np.random.default_rng(0)
    assert np.array_equal(OPERATIONS["hflip"](frames, rng), frames[:, :, ::-1])
    assert np.array_equal(OPERATIONS["vflip"](frames, rng), frames[:, ::-1])
    assert np.array_equal(OPERATIONS["invert"](frames, rng), 255 - frames)
    assert np.array_equal(OPERATIONS["brightness_add"](frames, rng), frames + 30)  # no overflow below 225
    assert np.allclose(OPERATIONS["brightness_scale"](frames, rng), frames * 1.2, atol=0.5)
    assert np.array_equal(OPERATIONS["temporal_downsample"](frames, rng), frames[::2])
    salted = OPERATIONS["salt"](frames, rng)
    assert 0.005 < (salted == 255).all(axis=-1).mean() < 0.05 and (salted != 0).all()
    peppered = OPERATIONS["pepper"](frames, rng)
    assert 0.005 < (peppered == 0).all(axis=-1).mean() < 0.05
    blurred = OPERATIONS["gaussian_blur"](frames, rng)
    assert blurred.astype(float).std() < 0.6 * frames.astype(float).std()  # noise smoothed away
    rotated = OPERATIONS["rotate"](frames, rng)
    assert (rotated[:, 0, 0] == 0).all() or (rotated[:, -1, -1] == 0).all()  # corners rotated out
    for motionless in ("translate", "resize", "shear", "rotate"):  # same transform on every frame
        out = OPERATIONS[motionless](np.repeat(frames[:1], 3, axis=0), np.random.default_rng(5))
        assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2]), motionless


def test_augmented_clips_get_labels_manifest_entries_and_the_source_frame_rate(source, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(source, root)
    jobs = augment_dataset(root, copies=2, seed=0, progress=False).written
    assert len(jobs) == 6 * 2
    manifest = json.loads((root / "manifest.json").read_text())
    labels = {r["video_path"]: r for r in json.loads((root / "fine_grained_labels.json").read_text())}
    feedbacks = {r["video_path"]: r for r in json.loads((root / "feedbacks_short_clips.json").read_text())}
    assert len(manifest) == len(labels) == len(feedbacks) == 6 * 3
    for job in jobs:
        class_name, name = job.target.split("/")
        stem = name.removesuffix(".mp4")
        source_name = stem.split("_aug")[0] + ".mp4"
        assert manifest[f"dataset/{job.target}"] == class_name
        assert labels[f"./{name}"]["labels_descriptive"] == labels[f"./{source_name}"]["labels_descriptive"]
        assert labels[f"./{name}"]["augmentation"] == job.operation
        assert feedbacks[f"./{name}"]["feedbacks"] == feedbacks[f"./{source_name}"]["feedbacks"]
        info = probe_video(root / job.target, count_frames=True)
        assert info.fps == pytest.approx(10.0)
        assert (info.width, info.height) == (32, 32)
        assert info.num_frames == (5 if job.operation == "temporal_downsample" else 10)

    # a second run (or a resumed one) adds nothing twice
    assert augment_dataset(root, copies=2, seed=0, progress=False).written == jobs
    assert len(json.loads((root / "fine_grained_labels.json").read_text())) == 6 * 3

    # and prepare keeps every augmented clip in its source's split
    prepare_splits(root, tmp_path / "splits", ratios=(0.34, 0.33, 0.33))
    split_of = {}
    for split in ("train", "val", "test"):
        for record in json.loads((tmp_path / "splits" / f"qved_{split}.json").read_text()):
            split_of[record["video"]] = split
    assert len(split_of) == 18 and len(set(split_of.values())) == 3
    for video, split in split_of.items():
        assert split_of[video.split("_aug")[0].removesuffix(".mp4") + ".mp4"] == split


def test_same_seed_same_clips(source, tmp_path):
    for name in ("a", "b"):
        shutil.copytree(source, tmp_path / name)
        augment_dataset(tmp_path / name, copies=1, operations=["rotate", "salt"], seed=4, progress=False)
    clips = sorted((tmp_path / "a").rglob("*_aug1.mp4"))
    assert len(clips) == 6
    for clip in clips:
        assert clip.read_bytes() == (tmp_path / "b" / clip.relative_to(tmp_path / "a")).read_bytes()


def test_plan_never_augments_augmented_clips_and_checks_operations():
    videos = {
        "squats/00000001.mp4": "squats",
        "squats/00000001_aug1.mp4": "squats",
        "pushups/00000002.mp4": "pushups",
    }
    jobs = plan_augmentations(videos, copies=3, operations=["hflip", "vflip"], seed=0)
    assert [j.target for j in jobs if j.source == "squats/00000001.mp4"] == [
        "squats/00000001_aug1.mp4", "squats/00000001_aug2.mp4", "squats/00000001_aug3.mp4"
    ]  # fmt: skip
    assert {j.source for j in jobs} == {"squats/00000001.mp4", "pushups/00000002.mp4"}
    assert {j.source for j in plan_augmentations(videos, 1, ["hflip"], 0, classes=["pushups"])} == {
        "pushups/00000002.mp4"
    }
    with pytest.raises(ValueError, match="unknown augmentation"):
        plan_augmentations(videos, 1, ["sepia"], 0)


def test_a_mirrored_clip_swaps_left_and_right_in_its_labels():
    assert (
        mirror_text("tricep stretch (right arm) - Left elbow high")
        == "tricep stretch (left arm) - Right elbow high"
    )
    assert mirror_text(["bright light", "left"]) == ["bright light", "right"]
