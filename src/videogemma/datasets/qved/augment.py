"""Clip augmentation (DATA.md "Augmentation"): new clips `<stem>_aug<k>.mp4` beside their source, each with
its label records (both label files) and manifest entry.

An operation applies the same transform to every frame of a clip (a rotation of +7° rotates every frame by
+7°), so the motion stays intact. Random parameters come from a generator seeded by (seed, video, k):
the same call gives the same clips. `prepare` later keeps `<stem>_aug<k>` in `<stem>`'s split.
Resumable: clips already written are kept; the label files and manifest are updated at the end (also
when the run stops early), with exactly the copies on disk. A clip that cannot be read is reported and
skipped; sources and copies must lie under the dataset root (symlinks followed).
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from videogemma.datasets.paths import resolve_in_root
from videogemma.datasets.qved.io import (
    FEEDBACKS_NAME,
    FINE_GRAINED_LABELS_NAME,
    MANIFEST_NAME,
    basename,
    manifest_class,
    read_json,
    read_label_records,
    read_manifest,
    resolve_manifest_path,
    source_stem,
    write_json,
    write_mp4,
)
from videogemma.errors import VideoGemmaDataError

logger = logging.getLogger(__name__)

Frames = np.ndarray  # uint8 (T, H, W, 3)


def _per_frame(frames: Frames, transform: Callable[[Image.Image], Image.Image]) -> Frames:
    return np.stack([np.asarray(transform(Image.fromarray(frame))) for frame in frames])


def _affine(frames: Frames, matrix: tuple[float, ...]) -> Frames:
    """Apply the inverse affine map `matrix` (PIL's convention: output pixel → input pixel), black fill."""
    size = frames.shape[2], frames.shape[1]
    return _per_frame(
        frames, lambda im: im.transform(size, Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR)
    )


def hflip(frames: Frames, rng: np.random.Generator) -> Frames:
    return frames[:, :, ::-1].copy()


def vflip(frames: Frames, rng: np.random.Generator) -> Frames:
    return frames[:, ::-1].copy()


def rotate(frames: Frames, rng: np.random.Generator) -> Frames:
    angle = float(rng.uniform(-10, 10))
    return _per_frame(frames, lambda im: im.rotate(angle, resample=Image.Resampling.BILINEAR))


def gaussian_blur(frames: Frames, rng: np.random.Generator) -> Frames:
    return _per_frame(frames, lambda im: im.filter(ImageFilter.GaussianBlur(radius=1.5)))  # radius = σ


def brightness_add(frames: Frames, rng: np.random.Generator) -> Frames:
    return np.clip(frames.astype(np.int16) + 30, 0, 255).astype(np.uint8)


def brightness_scale(frames: Frames, rng: np.random.Generator) -> Frames:
    return np.clip(frames.astype(np.float32) * 1.2, 0, 255).round().astype(np.uint8)


def invert(frames: Frames, rng: np.random.Generator) -> Frames:
    return 255 - frames


def _impulse_noise(frames: Frames, rng: np.random.Generator, value: int) -> Frames:
    noisy = frames.copy()
    hit = rng.random(frames.shape[:3]) < 0.02  # 2 % of the pixels of every frame
    noisy[hit] = value
    return noisy


def salt(frames: Frames, rng: np.random.Generator) -> Frames:
    return _impulse_noise(frames, rng, 255)


def pepper(frames: Frames, rng: np.random.Generator) -> Frames:
    return _impulse_noise(frames, rng, 0)


def translate(frames: Frames, rng: np.random.Generator) -> Frames:
    height, width = frames.shape[1:3]
    dx, dy = rng.uniform(-0.1, 0.1) * width, rng.uniform(-0.1, 0.1) * height
    return _affine(frames, (1, 0, -dx, 0, 1, -dy))


def resize(frames: Frames, rng: np.random.Generator) -> Frames:
    """Zoom in 10-20 % about the centre (the frame size stays)."""
    height, width = frames.shape[1:3]
    zoom = float(rng.uniform(1.1, 1.2))
    crop_w, crop_h = width / zoom, height / zoom
    box = ((width - crop_w) / 2, (height - crop_h) / 2, (width + crop_w) / 2, (height + crop_h) / 2)
    return _per_frame(frames, lambda im: im.resize((width, height), Image.Resampling.BILINEAR, box=box))


def shear(frames: Frames, rng: np.random.Generator) -> Frames:
    height = frames.shape[1]
    factor = float(rng.uniform(0.08, 0.15) * rng.choice([-1, 1]))
    return _affine(
        frames, (1, factor, -factor * height / 2, 0, 1, 0)
    )  # horizontal shear about the middle row


def temporal_downsample(frames: Frames, rng: np.random.Generator) -> Frames:
    """Every second frame, played at the same rate: the exercise at double speed."""
    return frames[::2].copy()


OPERATIONS: dict[str, Callable[[Frames, np.random.Generator], Frames]] = {
    "hflip": hflip,
    "vflip": vflip,
    "rotate": rotate,
    "gaussian_blur": gaussian_blur,
    "brightness_add": brightness_add,
    "brightness_scale": brightness_scale,
    "invert": invert,
    "salt": salt,
    "pepper": pepper,
    "translate": translate,
    "resize": resize,
    "shear": shear,
    "temporal_downsample": temporal_downsample,
}


@dataclass(frozen=True)
class AugmentJob:
    source: str  # video path relative to the root
    target: str  # `<class>/<stem>_aug<k>.mp4`
    operation: str
    seed: int  # this copy's own seed


def plan_augmentations(
    videos: dict[str, str], copies: int, operations: list[str], seed: int, classes: list[str] | None = None
) -> list[AugmentJob]:
    """Which operation makes which copy of which video: a function of its inputs only (sorted, seeded by name)."""
    unknown = sorted(set(operations) - set(OPERATIONS))
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; choose from {sorted(OPERATIONS)}")
    if copies < 1 or not operations:
        raise ValueError(f"need at least one copy and one operation (got copies={copies}, ops={operations})")
    jobs = []
    for source in sorted(videos):
        name = basename(source)
        if source_stem(name) != PurePosixPath(name).stem or (classes and videos[source] not in classes):
            continue  # never augment an augmented clip
        video_seed = [seed, zlib.crc32(name.encode())]
        rng = np.random.default_rng(np.random.SeedSequence(video_seed))
        chosen = rng.choice(operations, size=copies, replace=copies > len(operations))
        parent = PurePosixPath(source).parent
        for k, operation in enumerate(chosen, start=1):
            target = str(parent / f"{PurePosixPath(name).stem}_aug{k}.mp4")
            jobs.append(
                AugmentJob(source, target, str(operation), int(zlib.crc32(f"{seed}/{target}".encode())))
            )
    return jobs


def augment_clip(root: Path, job: AugmentJob) -> None:
    """Decode the source whole, transform, and encode beside it at the same frame rate."""
    from videogemma.processing.video import probe_video, read_video_frames

    info = probe_video(root / job.source, count_frames=True)
    frames = read_video_frames(root / job.source, info.num_frames)
    augmented = OPERATIONS[job.operation](frames, np.random.default_rng(job.seed))
    write_mp4(root / job.target, augmented, info.fps or 30.0)


_SIDE = re.compile(r"\b(left|right|Left|Right|LEFT|RIGHT)\b")
_OTHER_SIDE = {
    "left": "right",
    "right": "left",
    "Left": "Right",
    "Right": "Left",
    "LEFT": "RIGHT",
    "RIGHT": "LEFT",
}


def mirror_text(value: Any) -> Any:
    """Swap left and right in label text (strings, lists of strings): a mirrored clip shows the other side."""
    if isinstance(value, str):
        return _SIDE.sub(lambda match: _OTHER_SIDE[match.group(0)], value)
    if isinstance(value, list):
        return [mirror_text(item) for item in value]
    return value


def _with_new_records(path: Path, jobs: list[AugmentJob]) -> list[dict[str, Any]] | None:
    """The label file's records plus one per new clip (a copy of its source's), or None without the file."""
    if not path.exists():
        return None
    records = read_label_records(path)
    by_name = {}
    for record in records:
        by_name.setdefault(basename(record["video_path"]), record)
    added = []
    for job in jobs:
        source_record = by_name.get(basename(job.source))
        if source_record is None or basename(job.target) in by_name:
            continue  # the source has no label here, or the copy already has one (a resumed run)
        directory = str(PurePosixPath(source_record["video_path"]).parent)
        video_path = (
            f"./{basename(job.target)}" if directory in ("", ".") else f"{directory}/{basename(job.target)}"
        )
        record = {**source_record, "video_path": video_path, "augmentation": job.operation}
        if job.operation == "hflip":
            record = {k: mirror_text(v) if k != "video_path" else v for k, v in record.items()}
        added.append(record)
    return records + added


@dataclass
class AugmentResult:
    """What `augment_dataset` did: every copy in `written` is on disk, labelled and in the manifest."""

    jobs: list[AugmentJob]  # the plan
    written: list[AugmentJob] = field(default_factory=list)  # new, or kept from an earlier run
    failed: list[tuple[AugmentJob, str]] = field(default_factory=list)  # not written, and why


def augment_dataset(
    root: str | os.PathLike[str],
    copies: int = 1,
    operations: list[str] | None = None,
    seed: int = 0,
    classes: list[str] | None = None,
    progress: bool = True,
) -> AugmentResult:
    """Write `copies` augmented clips per source video under `root` and register them in the label files
    and the manifest (in place).

    Everything that could stop the run is checked before the first clip is written: the manifest and label
    files parse, every source and copy lies under the root (symlinks followed). A source that fails to
    decode (or has no label record, so its copies would be unlabelled) is reported in `failed` and the run
    goes on; the copies written are registered even if the run is interrupted.
    """
    from tqdm import tqdm

    root = Path(root)
    if not root.is_dir():
        raise VideoGemmaDataError(f"{root}: the dataset root is not a folder")
    videos = read_manifest(root)
    jobs = plan_augmentations(videos, copies, operations or list(OPERATIONS), seed, classes)
    labelled = {  # label file → the basenames it has records for
        name: {basename(record["video_path"]) for record in read_label_records(root / name)}
        for name in LABEL_FILES
        if (root / name).exists()
    }
    manifest_path = root / MANIFEST_NAME
    if manifest_path.exists():
        read_json(manifest_path)  # parses: registering at the end will not fail on it
    for job in jobs:
        where = f"copy {job.target!r} of entry {job.source!r}"
        resolve_in_root(job.target, root, source_file=manifest_path, record=where)

    result = AugmentResult(jobs)
    try:
        for job in tqdm(jobs, desc="augment", unit="clip", disable=not progress):
            unlabelled = [name for name, names in labelled.items() if basename(job.source) not in names]
            if unlabelled:
                reason = f"no record in {', '.join(unlabelled)}: the copy would be unlabelled"
                result.failed.append((job, reason))
            elif (root / job.target).is_file():
                result.written.append(job)
            else:
                try:
                    augment_clip(root, job)
                    result.written.append(job)
                except VideoGemmaDataError as error:
                    result.failed.append((job, str(error)))
                    logger.warning("augment: %s: skipped (%s)", job.source, error)
    finally:  # register what is on disk, however the loop ended
        _register(root, videos, result.written)
    return result


LABEL_FILES = (FINE_GRAINED_LABELS_NAME, FEEDBACKS_NAME)


def _register(root: Path, videos: dict[str, str], jobs: list[AugmentJob]) -> None:
    """Label records and manifest entries for the copies `jobs` wrote (none twice)."""
    for name in LABEL_FILES:
        records = _with_new_records(root / name, jobs)
        if records is not None:
            write_json(root / name, records)
    manifest_path = root / MANIFEST_NAME
    if manifest_path.exists():
        manifest = read_json(manifest_path)
        key_of = {resolve_manifest_path(root, k, manifest_class(k, v)): k for k, v in manifest.items()}
        for job in jobs:
            source_key = key_of[job.source]
            target_key = str(PurePosixPath(source_key).parent / basename(job.target))
            manifest.setdefault(target_key, manifest[source_key])
    else:  # a folder-scanned dataset finds the new clips by itself; write a manifest anyway for clarity
        manifest = {**videos, **{job.target: videos[job.source] for job in jobs}}
    write_json(manifest_path, manifest)
