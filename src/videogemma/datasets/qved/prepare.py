"""QVED label files + manifest → the six conversation split files of DATA.md.

```
qved_{train,val,test}.json            fine-grained prompt → labels_descriptive (or labels[0])
qved_feedbacks_{train,val,test}.json  feedback prompt → the feedback sentences
```

Splitting rules:
- videos are joined on the basename of `video_path`; when both label files exist only videos present in
  both (and in the manifest) are used, so one video lands in the same split in both families;
- an augmented clip `<stem>_aug<k>` travels with its source `<stem>`: the split is made over source groups;
- reproducible byte for byte: groups are sorted before a seeded shuffle and JSON is written with fixed
  key order and indentation; the upstream `split` field is ignored;
- confined: a manifest key leading outside the dataset root (symlinks followed) stops the
  command before any split file is written (`PathOutsideRootError` naming the entry).
"""

from __future__ import annotations

import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videogemma.constants import QVED_FEEDBACK_PROMPT, QVED_FINE_GRAINED_PROMPT
from videogemma.datasets.qved.io import (
    FEEDBACKS_NAME,
    FINE_GRAINED_LABELS_NAME,
    basename,
    read_label_records,
    read_manifest,
    source_stem,
    write_json,
)
from videogemma.errors import RecordError, VideoGemmaDataError

NO_FEEDBACK = "No feedback available."
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Family:
    """One family of split files: which label file feeds it, its prompt, and how a record gives an answer."""

    name: str  # "fine_grained" | "feedbacks"
    label_file: str
    file_prefix: str  # qved_ | qved_feedbacks_
    prompt: str

    def split_file(self, split: str) -> str:
        return f"{self.file_prefix}{split}.json"


FAMILIES = (
    Family("fine_grained", FINE_GRAINED_LABELS_NAME, "qved_", QVED_FINE_GRAINED_PROMPT),
    Family("feedbacks", FEEDBACKS_NAME, "qved_feedbacks_", QVED_FEEDBACK_PROMPT),
)

SPLIT_FILE_NAMES = tuple(family.split_file(split) for family in FAMILIES for split in SPLITS)


def _text(value: Any) -> str:
    """A label field as one string: lists joined by newlines (empty entries dropped), strings stripped."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return "\n".join(item.strip() for item in value if isinstance(item, str) and item.strip())
    return ""


def fine_grained_answer(record: dict[str, Any]) -> str | None:
    """`labels_descriptive` (joined), else `labels[0]`; None when the record has neither."""
    descriptive = _text(record.get("labels_descriptive"))
    if descriptive:
        return descriptive
    labels = record.get("labels")
    first = labels[0] if isinstance(labels, list) and labels else labels
    return _text(first) or None


def feedback_answer(record: dict[str, Any]) -> str | None:
    """The feedback sentences joined by newlines; None when there are none."""
    return _text(record.get("feedbacks")) or None


ANSWER_OF = {"fine_grained": fine_grained_answer, "feedbacks": feedback_answer}


@dataclass
class PrepareResult:
    """What `prepare_splits` wrote and what it had to leave out or fill in."""

    files: dict[str, str] = field(default_factory=dict)  # split file name → path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split → class → videos
    families: list[str] = field(default_factory=list)
    no_feedback: dict[str, int] = field(default_factory=dict)  # family → records answered NO_FEEDBACK
    duplicate_labels: dict[str, int] = field(default_factory=dict)  # family → repeated basenames (first kept)
    labels_without_video: dict[str, int] = field(
        default_factory=dict
    )  # family → basenames not in the manifest
    videos_without_labels: int = 0  # manifest videos missing from a label file
    capped: int = 0  # source videos dropped by the per-class cap

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def split_counts(total: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """Sizes of train/val/test for `total` items: floors, then the remainder to the largest fractions."""
    exact = [total * ratio / sum(ratios) for ratio in ratios]
    sizes = [int(value) for value in exact]
    by_fraction = sorted(range(3), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in by_fraction[: total - sum(sizes)]:
        sizes[i] += 1
    return sizes[0], sizes[1], sizes[2]


def assign_splits(
    groups: dict[str, list[str]],
    group_class: dict[str, str],
    ratios: tuple[float, float, float],
    seed: int,
    max_per_class: int | None = None,
    stratify: bool = False,
) -> tuple[dict[str, str], int]:
    """`{group: split}` and the number of groups the cap dropped. Groups are source stems; sorted before
    every seeded shuffle, so the result depends only on the inputs and the seed."""
    rng = random.Random(seed)
    by_class: dict[str, list[str]] = defaultdict(list)
    for group in sorted(groups):
        by_class[group_class[group]].append(group)
    kept: dict[str, list[str]] = {}
    capped = 0
    for class_name in sorted(by_class):
        members = by_class[class_name]
        if max_per_class is not None and len(members) > max_per_class:
            members = sorted(rng.sample(members, max_per_class))
            capped += len(by_class[class_name]) - max_per_class
        kept[class_name] = members
    pools = [kept[c] for c in sorted(kept)] if stratify else [sorted(g for m in kept.values() for g in m)]
    assignment = {}
    for pool in pools:
        shuffled = list(pool)
        rng.shuffle(shuffled)
        n_train, n_val, _ = split_counts(len(shuffled), ratios)
        for index, group in enumerate(shuffled):
            assignment[group] = "train" if index < n_train else "val" if index < n_train + n_val else "test"
    return assignment, capped


def _answers_by_basename(root: Path, family: Family, result: PrepareResult) -> dict[str, str]:
    answer_of = ANSWER_OF[family.name]
    answers: dict[str, str] = {}
    duplicates = no_feedback = 0
    for record in read_label_records(root / family.label_file):
        name = basename(record["video_path"])
        if name in answers:
            duplicates += 1
            continue
        answer = answer_of(record)
        if answer is None:
            no_feedback += 1
            answer = NO_FEEDBACK
        answers[name] = answer
    result.duplicate_labels[family.name] = duplicates
    result.no_feedback[family.name] = no_feedback
    return answers


def prepare_splits(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    ratios: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 42,
    max_per_class: int | None = None,
    stratify: bool = False,
) -> PrepareResult:
    """Write the split files of every label family present under `root` into `out_dir` (default `root`)."""
    root = Path(root)
    out_dir = Path(out_dir) if out_dir is not None else root
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"ratios must be three non-negative numbers with a positive sum, got {ratios}")
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"max_per_class must be at least 1, got {max_per_class}")
    families = [family for family in FAMILIES if (root / family.label_file).exists()]
    if not families:
        raise VideoGemmaDataError(f"{root}: neither {FINE_GRAINED_LABELS_NAME} nor {FEEDBACKS_NAME} found")

    videos = read_manifest(root)
    by_basename: dict[str, str] = {}
    for path in videos:
        name = basename(path)
        if name in by_basename:
            raise RecordError(
                root / "manifest.json", path, f"basename {name} also used by {by_basename[name]}"
            )
        by_basename[name] = path

    result = PrepareResult(families=[family.name for family in families])
    answers = {family.name: _answers_by_basename(root, family, result) for family in families}
    for family in families:
        result.labels_without_video[family.name] = len(set(answers[family.name]) - set(by_basename))
    usable = sorted(name for name in by_basename if all(name in answers[f.name] for f in families))
    result.videos_without_labels = len(by_basename) - len(usable)

    groups: dict[str, list[str]] = defaultdict(list)
    group_class: dict[str, str] = {}
    for name in usable:
        path = by_basename[name]
        group = f"{videos[path]}/{source_stem(name)}"
        groups[group].append(path)
        group_class[group] = videos[path]
    assignment, result.capped = assign_splits(groups, group_class, ratios, seed, max_per_class, stratify)

    members: dict[str, list[str]] = {split: [] for split in SPLITS}
    for group, split in assignment.items():
        members[split].extend(groups[group])
    for split in SPLITS:
        members[split].sort()
        result.counts[split] = dict(sorted(Counter(videos[path] for path in members[split]).items()))

    for family in families:
        for split in SPLITS:
            records = [
                {
                    "video": path,
                    "conversations": [
                        {"from": "human", "value": family.prompt},
                        {"from": "gpt", "value": answers[family.name][basename(path)]},
                    ],
                    "split": split,
                }
                for path in members[split]
            ]
            target = out_dir / family.split_file(split)
            write_json(target, records)
            result.files[family.split_file(split)] = str(target)
    return result
