"""`prepare`: QVED label files + manifest → six reproducible, consistent conversation split files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import videogemma
from videogemma.constants import QVED_FEEDBACK_PROMPT, QVED_FINE_GRAINED_PROMPT
from videogemma.datasets.qved.io import write_json
from videogemma.datasets.qved.prepare import (
    NO_FEEDBACK,
    SPLIT_FILE_NAMES,
    prepare_splits,
    split_counts,
)
from videogemma.datasets.synthetic.exercises import EXERCISES
from videogemma.datasets.synthetic.generate import generate_dataset


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, per_variant=4, size=32, num_frames=10, exercises=EXERCISES[:3], progress=False)
    return root


def _load(folder: Path, name: str) -> list[dict]:
    return json.loads((folder / name).read_text())


def _membership(folder: Path, prefix: str) -> dict[str, str]:
    return {
        r["video"]: split
        for split in ("train", "val", "test")
        for r in _load(folder, f"{prefix}{split}.json")
    }


def _fake_dataset(
    root: Path, videos: dict[str, str], labels: list[dict], feedbacks: list[dict] | None
) -> Path:
    """A QVED folder whose 'videos' are empty files (prepare only needs their names)."""
    for path in videos:
        target = root / path.removeprefix("dataset/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    write_json(root / "manifest.json", videos)
    write_json(root / "fine_grained_labels.json", labels)
    if feedbacks is not None:
        write_json(root / "feedbacks_short_clips.json", feedbacks)
    return root


def test_six_files_in_the_conversation_format(synthetic_root, tmp_path):
    result = prepare_splits(synthetic_root, tmp_path)
    assert sorted(result.files) == sorted(SPLIT_FILE_NAMES)
    record = _load(tmp_path, "qved_train.json")[0]
    assert record["conversations"][0] == {"from": "human", "value": QVED_FINE_GRAINED_PROMPT}
    assert record["conversations"][1]["from"] == "gpt"
    assert " - " in record["conversations"][1]["value"]
    assert record["split"] == "train"
    assert (synthetic_root / record["video"]).is_file()  # relative to the dataset root
    feedback = _load(tmp_path, "qved_feedbacks_train.json")[0]
    assert feedback["conversations"][0]["value"] == QVED_FEEDBACK_PROMPT
    total = sum(len(_load(tmp_path, name)) for name in SPLIT_FILE_NAMES[:3])
    assert total == 36  # 3 exercises × 3 variants × 4 clips, nothing lost
    assert sum(sum(c.values()) for c in result.counts.values()) == 36


def test_both_families_put_each_video_in_the_same_split(synthetic_root, tmp_path):
    prepare_splits(synthetic_root, tmp_path, seed=5)
    assert _membership(tmp_path, "qved_") == _membership(tmp_path, "qved_feedbacks_")


def test_ratios_and_seed(synthetic_root, tmp_path):
    prepare_splits(synthetic_root, tmp_path / "a", ratios=(0.5, 0.25, 0.25), seed=1)
    counts = Counter(_membership(tmp_path / "a", "qved_").values())
    assert (
        (counts["train"], counts["val"], counts["test"]) == split_counts(36, (0.5, 0.25, 0.25)) == (18, 9, 9)
    )
    prepare_splits(synthetic_root, tmp_path / "b", ratios=(0.5, 0.25, 0.25), seed=2)
    assert _membership(tmp_path / "a", "qved_") != _membership(tmp_path / "b", "qved_")


def test_split_counts_sum_to_the_total():
    for total in range(0, 30):
        sizes = split_counts(total, (0.6, 0.2, 0.2))
        assert sum(sizes) == total and all(s >= 0 for s in sizes)
    assert split_counts(10, (0.6, 0.2, 0.2)) == (6, 2, 2)
    assert split_counts(10, (6, 2, 2)) == (6, 2, 2)  # ratios need not sum to 1


# The package's __init__ imports transformers (seconds); the split code does not need it, so the fresh
# interpreter registers the package by path only and imports just the prepare module.
_PREPARE_IN_A_FRESH_PROCESS = """
import sys, types
package = types.ModuleType("videogemma")
package.__path__ = [sys.argv[3]]
sys.modules["videogemma"] = package
from videogemma.datasets.qved.prepare import prepare_splits
prepare_splits(sys.argv[1], sys.argv[2], seed=42, max_per_class=10, stratify=True)
"""


def test_byte_identical_across_processes(synthetic_root, tmp_path):
    """Two fresh interpreters with different hash seeds write the same bytes (no set-order dependence)."""
    package_dir = str(Path(videogemma.__file__).parent)
    runs = []
    for name, hash_seed in (("first", "1"), ("second", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        arguments = [str(synthetic_root), str(tmp_path / name), package_dir]
        command = [sys.executable, "-c", _PREPARE_IN_A_FRESH_PROCESS, *arguments]
        runs.append(subprocess.Popen(command, env=env))
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    for name in SPLIT_FILE_NAMES:
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name
    prepare_splits(synthetic_root, tmp_path / "here", seed=42, max_per_class=10, stratify=True)
    for name in SPLIT_FILE_NAMES:
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "first" / name).read_bytes(), name


def test_augmented_clips_follow_their_source(synthetic_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(synthetic_root, root)
    manifest = json.loads((root / "manifest.json").read_text())
    labels = json.loads((root / "fine_grained_labels.json").read_text())
    feedbacks = json.loads((root / "feedbacks_short_clips.json").read_text())
    for path, class_name in list(manifest.items()):
        stem = Path(path).stem
        for k in (1, 2):
            manifest[f"{class_name}/{stem}_aug{k}.mp4"] = class_name
            labels.append({"video_path": f"./{stem}_aug{k}.mp4", "labels": ["x - y"]})
            feedbacks.append({"video_path": f"./{stem}_aug{k}.mp4", "feedbacks": ["z"]})
    write_json(root / "manifest.json", manifest)
    write_json(root / "fine_grained_labels.json", labels)
    write_json(root / "feedbacks_short_clips.json", feedbacks)

    prepare_splits(root, tmp_path / "out", seed=3)
    membership = _membership(tmp_path / "out", "qved_")
    assert len(membership) == 36 * 3
    for video, split in membership.items():
        source = video.split("_aug")[0].removesuffix(".mp4") + ".mp4"
        assert membership[source] == split, video
    # the ratios count source videos: augmentations do not skew which sources land where
    sources = Counter(split for video, split in membership.items() if "_aug" not in video)
    assert (sources["train"], sources["val"], sources["test"]) == split_counts(36, (0.6, 0.2, 0.2))


def test_per_class_cap_and_stratification(synthetic_root, tmp_path):
    result = prepare_splits(synthetic_root, tmp_path, max_per_class=5, stratify=True, seed=0)
    assert result.capped == 3 * (12 - 5)
    for class_name in ("squats", "jumping_jacks", "alternating_forward_lunges"):
        per_split = tuple(result.counts[s].get(class_name, 0) for s in ("train", "val", "test"))
        assert per_split == split_counts(5, (0.6, 0.2, 0.2)), class_name


def test_stratification_keeps_every_class_in_every_split(synthetic_root, tmp_path):
    result = prepare_splits(synthetic_root, tmp_path, stratify=True, seed=9)
    for split in ("train", "val", "test"):
        assert set(result.counts[split]) == {"squats", "jumping_jacks", "alternating_forward_lunges"}


def test_label_choice_rules_manifest_styles_and_join_on_basename(tmp_path):
    videos = {
        "dataset/squats/00000001.mp4": "squats",  # keys relative to the root's parent
        "squats/00000002.mp4": "squats",
        "pushups/00000003.mp4": {"duration": 5.0},  # old manifests: dict values, class from the folder
        "pushups/00000004.mp4": "pushups",
        "pushups/00000005.mp4": "pushups",
    }
    labels = [
        {
            "video_path": "./00000001.mp4",
            "labels": ["a"],
            "labels_descriptive": ["squats - x; y", "second line"],
        },
        {"video_path": "00000002.mp4", "labels": ["squats - short"], "labels_descriptive": []},
        {"video_path": "/somewhere/else/00000003.mp4", "labels_descriptive": "pushups - string form"},
        {"video_path": "./00000004.mp4", "labels": []},
        {"video_path": "./00000005.mp4", "labels": ["pushups - ok"], "split": "test"},
        {"video_path": "./00000099.mp4", "labels": ["no such video"]},
    ]
    root = _fake_dataset(tmp_path, videos, labels, feedbacks=None)
    result = prepare_splits(root, ratios=(1, 0, 0))
    assert result.families == ["fine_grained"]  # no feedback file: only its family is written
    assert not (root / "qved_feedbacks_train.json").exists()
    answers = {r["video"]: r["conversations"][1]["value"] for r in _load(root, "qved_train.json")}
    assert answers == {
        "squats/00000001.mp4": "squats - x; y\nsecond line",
        "squats/00000002.mp4": "squats - short",
        "pushups/00000003.mp4": "pushups - string form",
        "pushups/00000004.mp4": NO_FEEDBACK,
        "pushups/00000005.mp4": "pushups - ok",  # upstream split ignored
    }
    assert result.no_feedback == {"fine_grained": 1}
    assert result.labels_without_video == {"fine_grained": 1}
    assert result.counts["train"] == {"pushups": 3, "squats": 2}


def test_only_videos_labelled_in_both_files_are_used(tmp_path):
    videos = {f"squats/0000000{i}.mp4": "squats" for i in range(1, 5)}
    labels = [{"video_path": f"./0000000{i}.mp4", "labels": ["squats - a"]} for i in (1, 2, 3)]
    feedbacks = [{"video_path": f"./0000000{i}.mp4", "feedbacks": ["f", "g"]} for i in (2, 3, 4)]
    root = _fake_dataset(tmp_path, videos, labels, feedbacks)
    result = prepare_splits(root, ratios=(1, 0, 0))
    assert result.videos_without_labels == 2
    assert [r["video"] for r in _load(root, "qved_train.json")] == [
        "squats/00000002.mp4",
        "squats/00000003.mp4",
    ]
    assert _load(root, "qved_feedbacks_train.json")[0]["conversations"][1]["value"] == "f\ng"


def test_class_folder_scan_without_a_manifest(synthetic_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(synthetic_root, root)
    (root / "manifest.json").unlink()
    prepare_splits(root, tmp_path / "scan", seed=4)
    prepare_splits(synthetic_root, tmp_path / "manifest", seed=4)
    for name in SPLIT_FILE_NAMES:
        assert (tmp_path / "scan" / name).read_bytes() == (tmp_path / "manifest" / name).read_bytes()


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"fine_grained_labels\.json"):
        prepare_splits(tmp_path)
    root = _fake_dataset(
        tmp_path, {"a/00000001.mp4": "a", "b/00000001.mp4": "b"}, [{"video_path": "00000001.mp4"}], None
    )
    with pytest.raises(ValueError, match=r"00000001\.mp4"):
        prepare_splits(root)
    with pytest.raises(ValueError, match="ratios"):
        prepare_splits(root, ratios=(0.5, -0.1, 0.6))
