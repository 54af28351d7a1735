"""`clean`: bad clips are rejected with the right reasons; labels, manifest and reports follow."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from videogemma.datasets.qved import clean as qved_clean
from videogemma.datasets.qved.clean import CleanThresholds, clean_dataset, laplacian_variance
from videogemma.datasets.qved.io import write_json, write_mp4

THRESHOLDS = CleanThresholds(
    min_width=64, min_height=64, frame_step=3, motion_classes=("squats",), min_frames=8
)


def _textured(num_frames: int, size: int, level: float, moving: bool, seed: int = 0) -> np.ndarray:
    """Sharp blocky texture around `level`; shifted every frame when `moving`."""
    rng = np.random.default_rng(seed)
    blocks = rng.uniform(-60, 60, size=(size // 4, size // 4 + num_frames, 1))
    texture = np.repeat(np.repeat(blocks, 4, axis=0), 4, axis=1)
    frames = [texture[:, 4 * t * moving : 4 * t * moving + size] + level for t in range(num_frames)]
    return np.clip(np.broadcast_to(np.stack(frames), (num_frames, size, size, 3)), 0, 255).astype(np.uint8)


def _smooth(num_frames: int, size: int) -> np.ndarray:
    ramp = np.linspace(80, 160, size)[None, None, :, None]
    return np.broadcast_to(ramp, (num_frames, size, size, 3)).astype(np.uint8)


CLIPS = {  # name → (class, frames, expected reasons)
    "good": ("squats", lambda: _textured(12, 64, 120, True), []),
    "dark": ("squats", lambda: _textured(12, 64, 12, True), ["too_dark"]),
    "bright": ("pushups", lambda: _textured(12, 64, 235, False), ["too_bright"]),
    "blurry": ("pushups", lambda: _smooth(12, 64), ["blurry"]),
    "small": ("pushups", lambda: _textured(12, 32, 120, False), ["low_resolution"]),
    "still": ("squats", lambda: _textured(12, 64, 120, False), ["insufficient_motion"]),
    "short": ("pushups", lambda: _textured(4, 64, 120, False), ["too_short"]),
    "dark_blurry_small": ("pushups", lambda: _smooth(12, 32) // 8, ["low_resolution", "too_dark", "blurry"]),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    manifest, labels, feedbacks = {}, [], []
    for index, (name, (class_name, make_frames, _)) in enumerate(CLIPS.items()):
        file = f"{index:08d}.mp4"
        write_mp4(root / class_name / file, make_frames(), fps=10)
        manifest[f"dataset/{class_name}/{file}"] = class_name
        labels.append({"video_path": f"./{file}", "labels": [f"{class_name} - {name}"]})
        feedbacks.append({"video_path": f"./{file}", "feedbacks": [name]})
    (root / "squats" / "99999999.mp4").write_bytes(b"\x00" * 100)  # corrupt
    manifest["dataset/squats/99999999.mp4"] = "squats"
    labels.append({"video_path": "./99999999.mp4", "labels": ["squats - corrupt"]})
    write_json(root / "manifest.json", manifest)
    write_json(root / "fine_grained_labels.json", labels)
    write_json(root / "feedbacks_short_clips.json", feedbacks)
    return root


def _reasons_by_name(result) -> dict[str, list[str]]:
    names = {f"{i:08d}.mp4": name for i, name in enumerate(CLIPS)} | {"99999999.mp4": "corrupt"}
    return {names[Path(d.measure.path).name]: d.reasons for d in result.decisions}


def test_each_bad_clip_is_rejected_for_its_reasons(dataset, tmp_path):
    result = clean_dataset(dataset, tmp_path / "out", THRESHOLDS, progress=False)
    reasons = _reasons_by_name(result)
    for name, (_, _, expected) in CLIPS.items():
        assert sorted(reasons[name]) == sorted(expected), name
    assert reasons["corrupt"] == ["corrupted_file"]


def test_reports_and_filtered_copy(dataset, tmp_path):
    out = tmp_path / "out"
    clean_dataset(dataset, out, THRESHOLDS, progress=False)
    with open(out / "clean_summary.csv") as f:
        summary = list(csv.DictReader(f))
    total = summary[-1]
    assert total["class"] == "TOTAL"
    assert (total["total"], total["accepted"], total["rejected"]) == ("9", "1", "8")
    assert total["too_dark"] == "2" and total["corrupted_file"] == "1"
    assert {row["class"] for row in summary[:-1]} == {"squats", "pushups"}
    with open(out / "clean_metrics.csv") as f:
        metrics = {row["video"]: row for row in csv.DictReader(f)}
    assert metrics["squats/00000000.mp4"]["decision"] == "accepted"
    assert float(metrics["squats/00000000.mp4"]["sharpness"]) > 50
    assert metrics["pushups/00000007.mp4"]["reasons"] == "low_resolution;too_dark;blurry"
    rejected = json.loads((out / "rejected_videos.json").read_text())
    assert len(rejected) == 8 and {"video", "class", "reasons"} <= set(rejected[0])

    # the copy holds the accepted video and labels for it only; the manifest keeps its key style
    assert json.loads((out / "manifest.json").read_text()) == {"dataset/squats/00000000.mp4": "squats"}
    assert [r["video_path"] for r in json.loads((out / "fine_grained_labels.json").read_text())] == [
        "./00000000.mp4"
    ]
    assert len(json.loads((out / "feedbacks_short_clips.json").read_text())) == 1
    assert (out / "squats" / "00000000.mp4").read_bytes() == (
        dataset / "squats" / "00000000.mp4"
    ).read_bytes()
    assert (dataset / "squats" / "00000001.mp4").exists()  # the source is never touched


def test_in_place_keeps_backups_and_deletes_only_when_asked(dataset, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(dataset, root)
    original_manifest = (root / "manifest.json").read_bytes()
    clean_dataset(root, None, THRESHOLDS, progress=False)
    assert (root / "manifest.json.bak").read_bytes() == original_manifest
    assert len(json.loads((root / "manifest.json").read_text())) == 1
    assert (root / "squats" / "00000001.mp4").exists()
    shutil.copy(root / "manifest.json.bak", root / "manifest.json")
    clean_dataset(root, None, THRESHOLDS, delete_rejected=True, progress=False)
    assert not (root / "squats" / "00000001.mp4").exists()
    assert (root / "squats" / "00000000.mp4").exists()


def test_an_interrupted_run_resumes_from_its_cache(dataset, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = clean_dataset(dataset, out, THRESHOLDS, progress=False)

    def must_not_measure(*args, **kwargs):
        raise AssertionError("measured again instead of reading the cache")

    monkeypatch.setattr(qved_clean, "measure_video", must_not_measure)
    # new thresholds apply to the cached measures without decoding anything
    second = clean_dataset(dataset, out, CleanThresholds(min_width=16, min_height=16), progress=False)
    assert len(second.decisions) == len(first.decisions)
    assert not _reasons_by_name(second)["small"]


def test_the_real_clip_passes_the_default_filter(real_clip, tmp_path):
    (tmp_path / "plank").mkdir()  # no manifest: the class folders are scanned
    shutil.copy(real_clip, tmp_path / "plank" / "00000340.mp4")
    result = clean_dataset(tmp_path, tmp_path / "out", CleanThresholds(), progress=False)
    (decision,) = result.decisions
    assert decision.accepted, decision.reasons
    assert (decision.measure.width, decision.measure.height, decision.measure.num_frames) == (640, 480, 145)


def test_laplacian_variance_matches_a_direct_computation():
    image = np.random.default_rng(0).uniform(0, 255, size=(9, 7))
    padded = np.pad(image, 1, mode="reflect")
    direct = np.empty_like(image)
    for y in range(9):
        for x in range(7):
            cy, cx = y + 1, x + 1
            neighbours = padded[cy - 1, cx] + padded[cy + 1, cx] + padded[cy, cx - 1] + padded[cy, cx + 1]
            direct[y, x] = neighbours - 4 * padded[cy, cx]
    assert laplacian_variance(image) == pytest.approx(direct.var())
    assert laplacian_variance(np.full((8, 8), 100.0)) == 0.0
