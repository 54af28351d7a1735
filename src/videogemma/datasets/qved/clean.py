"""The QVED quality filter (DATA.md "Cleaning"): measure every clip, reject the unusable ones, filter the
label files and manifest to the rest, and report why.

Per video, frames 0, 15, 30, … (at most 20) are measured: brightness (mean grey level), sharpness (variance
of the 3×3 Laplacian) and, for classes that must move, motion (5×5 blur, absolute difference of consecutive
samples above 18 grey levels; a pair is active when ≥ 1 % of the pixels changed; motion when ≥ 30 % of the
pairs are active). Every reason that applies is recorded: `corrupted_file`, `low_resolution`, `too_dark`,
`too_bright`, `blurry`, `insufficient_motion`, `too_short`, `low_fps`.

Outputs (in the output folder, or the dataset root when cleaning in place):
`clean_summary.csv` (per class, TOTAL row), `clean_metrics.csv` (per file: metrics, decision, reasons),
`rejected_videos.json`, and the filtered `manifest.json` and label files, each written to a temporary file
and renamed. In place, the originals are backed up first (`*.bak`, then numbered: never overwritten). Measurements are cached in
`clean_metrics_cache.jsonl` as they are made, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
    write_json,
)
from videogemma.errors import VideoGemmaDataError
from videogemma.files import atomic_write
from videogemma.processing.video_source import DEFAULT_LIMITS, VideoLimits

REASONS = (
    "corrupted_file",
    "low_resolution",
    "too_dark",
    "too_bright",
    "blurry",
    "insufficient_motion",
    "too_short",
    "low_fps",
)
CACHE_NAME = "clean_metrics_cache.jsonl"


@dataclass(frozen=True)
class CleanThresholds:
    """What a clip must meet to be kept (the `data clean` flags are made from these fields)."""

    min_width: int = field(default=640, metadata={"help": "pixels"})
    min_height: int = field(default=360, metadata={"help": "pixels"})
    min_brightness: float = field(default=35.0, metadata={"help": "mean grey level"})
    max_brightness: float = field(default=190.0, metadata={"help": "mean grey level"})
    min_sharpness: float = field(default=50.0, metadata={"help": "variance of the Laplacian"})
    frame_step: int = field(default=15, metadata={"help": "measure frames 0, step, 2·step, ..."})
    max_samples: int = field(default=20, metadata={"help": "frames measured per clip at most"})
    motion_classes: tuple[str, ...] = field(default=(), metadata={"help": "classes that must show motion"})
    motion_pixel_threshold: int = field(default=18, metadata={"help": "grey levels a pixel must change by"})
    motion_pixel_fraction: float = field(
        default=0.01, metadata={"help": "fraction of pixels changed for a pair of samples to count as active"}
    )
    motion_pair_fraction: float = field(
        default=0.30, metadata={"help": "fraction of active pairs for the clip to count as moving"}
    )
    min_frames: int = field(
        default=1, metadata={"help": "frames a clip must have (e.g. what the model reads)"}
    )
    min_duration: float = field(default=0.0, metadata={"help": "seconds"})
    min_fps: float = field(default=0.0, metadata={"help": "frames per second"})


@dataclass
class VideoMeasure:
    """What was measured on one clip (independent of the thresholds, so it can be cached)."""

    path: str  # relative to the dataset root
    class_name: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration: float | None = None
    num_frames: int | None = None
    brightness: float | None = None
    sharpness: float | None = None
    active_pair_fraction: float | None = None  # None with fewer than two samples
    error: str | None = None  # why the clip could not be measured


@dataclass
class Decision:
    measure: VideoMeasure
    reasons: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.reasons


# ---- measuring -----------------------------------------------------------------------------------------------


def grey(frame_rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma, as OpenCV's RGB→GRAY, in float32 0..255."""
    rgb = frame_rgb.astype(np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def laplacian_variance(grey_frame: np.ndarray) -> float:
    """Variance of the 3×3 Laplacian [[0,1,0],[1,-4,1],[0,1,0]] with mirrored borders (OpenCV's default)."""
    p = np.pad(grey_frame.astype(np.float64), 1, mode="reflect")
    laplacian = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4.0 * p[1:-1, 1:-1]
    return float(laplacian.var())


def blur5(grey_frame: np.ndarray) -> np.ndarray:
    """5×5 Gaussian blur (binomial 1-4-6-4-1 kernel, separable), mirrored borders."""
    weights = np.array([1, 4, 6, 4, 1], dtype=np.float32) / 16
    p = np.pad(grey_frame.astype(np.float32), 2, mode="reflect")
    rows = sum(w * p[i : i + p.shape[0] - 4, :] for i, w in enumerate(weights))
    return sum(w * rows[:, i : i + rows.shape[1] - 4] for i, w in enumerate(weights))


def active_pair_fraction(samples: list[np.ndarray], thresholds: CleanThresholds) -> float | None:
    """Fraction of consecutive sample pairs where ≥ `motion_pixel_fraction` of the pixels changed."""
    if len(samples) < 2:
        return None
    blurred = [np.round(blur5(s)) for s in samples]
    active = [
        float((np.abs(a - b) > thresholds.motion_pixel_threshold).mean()) >= thresholds.motion_pixel_fraction
        for a, b in itertools.pairwise(blurred)
    ]
    return sum(active) / len(active)


def sample_grey_frames(
    path: Path, step: int, max_samples: int, limits: VideoLimits = DEFAULT_LIMITS
) -> tuple[list[np.ndarray], int]:
    """Grey frames 0, step, 2·step, … (at most `max_samples`) and the number of frames in the clip.

    Every frame is decoded (to count them) but only the sampled ones are converted. The clip is opened the
    way every video is (`video_source.open_video`: no playlists, bounded by `limits`).
    """
    from videogemma.processing.video import frame_to_rgb, iter_video_frames

    samples, count = [], 0
    for frame in iter_video_frames(path, limits):
        if count % step == 0 and len(samples) < max_samples:
            samples.append(grey(frame_to_rgb(frame, limits)))
        count += 1
    return samples, count


def measure_video(
    root: Path,
    relative_path: str,
    class_name: str,
    thresholds: CleanThresholds,
    limits: VideoLimits = DEFAULT_LIMITS,
) -> VideoMeasure:
    from videogemma.processing.video import probe_video

    measure = VideoMeasure(relative_path, class_name)
    path = root / relative_path
    try:
        info = probe_video(path, limits=limits)
        samples, count = sample_grey_frames(path, thresholds.frame_step, thresholds.max_samples, limits)
    except Exception as error:  # any failure to read the clip is the clip's problem
        measure.error = f"{type(error).__name__}: {error}"
        return measure
    if not samples:
        measure.error = "no frame decodes"
        return measure
    measure.width, measure.height, measure.fps = info.width, info.height, info.fps
    measure.num_frames = count
    measure.duration = info.duration if info.duration else (count / info.fps if info.fps else None)
    measure.brightness = float(np.mean([s.mean() for s in samples]))
    measure.sharpness = float(np.mean([laplacian_variance(s) for s in samples]))
    measure.active_pair_fraction = active_pair_fraction(samples, thresholds)
    return measure


def decide(measure: VideoMeasure, thresholds: CleanThresholds) -> Decision:
    """Every reason `measure` fails `thresholds` (none: accepted)."""
    t, m = thresholds, measure
    metrics = (m.brightness, m.sharpness)
    if m.error or any(v is None or not math.isfinite(v) for v in metrics):
        return Decision(m, ["corrupted_file"])
    reasons = []
    if m.width < t.min_width or m.height < t.min_height:
        reasons.append("low_resolution")
    if m.brightness < t.min_brightness:
        reasons.append("too_dark")
    if m.brightness > t.max_brightness:
        reasons.append("too_bright")
    if m.sharpness < t.min_sharpness:
        reasons.append("blurry")
    if m.class_name in t.motion_classes and (m.active_pair_fraction or 0.0) < t.motion_pair_fraction:
        reasons.append("insufficient_motion")
    if m.num_frames < t.min_frames or (m.duration or 0.0) < t.min_duration:
        reasons.append("too_short")
    if (m.fps or 0.0) < t.min_fps:
        reasons.append("low_fps")
    return Decision(m, reasons)


# ---- the whole dataset ---------------------------------------------------------------------------------------


@dataclass
class CleanResult:
    decisions: list[Decision]
    output_dir: Path
    files: dict[str, str]

    @property
    def rejected(self) -> list[Decision]:
        return [d for d in self.decisions if not d.accepted]

    def summary_rows(self) -> list[list[Any]]:
        """[class, total, accepted, rejected, count per reason…] per class, then TOTAL."""
        rows = []
        classes = sorted({d.measure.class_name for d in self.decisions})
        for class_name in [*classes, None]:
            decisions = [
                d for d in self.decisions if class_name is None or d.measure.class_name == class_name
            ]
            reasons = Counter(r for d in decisions for r in d.reasons)
            accepted = sum(d.accepted for d in decisions)
            rows.append(
                [class_name or "TOTAL", len(decisions), accepted, len(decisions) - accepted]
                + [reasons[r] for r in REASONS]
            )
        return rows


SUMMARY_HEADER = ["class", "total", "accepted", "rejected", *REASONS]
METRICS_HEADER = [
    "video", "class", "width", "height", "fps", "duration", "num_frames", "brightness", "sharpness",
    "active_pair_fraction", "decision", "reasons", "error",
]  # fmt: skip


def _load_cache(path: Path) -> dict[tuple[str, int, int], VideoMeasure]:
    cache = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                key = (entry.pop("path_key"), entry.pop("size"), entry.pop("mtime_ns"))
                cache[key] = VideoMeasure(**entry)
            except (ValueError, TypeError, KeyError):
                continue  # a line cut short by an interruption
    return cache


def _file_key(root: Path, relative_path: str) -> tuple[str, int, int]:
    try:
        stat = (root / relative_path).stat()
        return relative_path, stat.st_size, stat.st_mtime_ns
    except OSError:
        return relative_path, -1, -1


def measure_dataset(
    root: Path,
    videos: dict[str, str],
    thresholds: CleanThresholds,
    cache_path: Path,
    progress: bool = True,
    limits: VideoLimits = DEFAULT_LIMITS,
) -> list[VideoMeasure]:
    """Measure every video, reusing and extending the cache (one JSON line per video, flushed at once)."""
    from tqdm import tqdm

    cache = _load_cache(cache_path)
    measures = []
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    with open(cache_path, "a", encoding="utf-8") as cache_file:
        for relative_path, class_name in tqdm(
            videos.items(), desc="clean", unit="video", disable=not progress
        ):
            key = _file_key(root, relative_path)
            cached = cache.get(key)
            if cached is not None and key[1] >= 0:
                cached.class_name = class_name
                measures.append(cached)
                continue
            measure = measure_video(root, relative_path, class_name, thresholds, limits)
            measures.append(measure)
            if key[1] >= 0:
                entry = {"path_key": key[0], "size": key[1], "mtime_ns": key[2], **asdict(measure)}
                cache_file.write(json.dumps(entry) + "\n")
                cache_file.flush()
    return measures


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def clean_dataset(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    thresholds: CleanThresholds = CleanThresholds(),
    delete_rejected: bool = False,
    progress: bool = True,
    limits: VideoLimits = DEFAULT_LIMITS,
) -> CleanResult:
    """Filter the dataset at `root`.

    With `out_dir`: a cleaned copy (accepted videos hard-linked, or copied where linking is impossible;
    filtered manifest and label files; reports). Without: in place, the manifest and label files as they
    were kept as `*.bak` the first time, `*.bak.1`, `*.bak.2`, … after (no backup is ever overwritten).
    Rejected videos are deleted from `root` only with `delete_rejected`. Every video comes from the
    manifest, confined to the root (a key leading outside stops the run before anything is measured).
    """
    root = Path(root)
    if not root.is_dir():
        raise VideoGemmaDataError(f"{root}: the dataset root is not a folder")
    in_place = out_dir is None or Path(out_dir).resolve() == root.resolve()
    output = root if in_place else Path(out_dir)
    videos = read_manifest(root)
    output.mkdir(parents=True, exist_ok=True)
    measures = measure_dataset(root, videos, thresholds, output / CACHE_NAME, progress, limits)
    decisions = [decide(m, thresholds) for m in measures]
    accepted = {d.measure.path for d in decisions if d.accepted}
    accepted_names = {basename(p) for p in accepted}

    result = CleanResult(decisions, output, _write_reports(output, decisions))
    files = result.files

    # The filtered manifest keeps the original keys (their style) of the accepted videos.
    manifest_path = root / MANIFEST_NAME
    if manifest_path.exists():
        original = read_json(manifest_path)
        manifest = {
            key: value
            for key, value in original.items()
            if resolve_manifest_path(root, key, manifest_class(key, value)) in accepted
        }
    else:
        manifest = {path: videos[path] for path in sorted(accepted)}
    label_files = {
        name: [r for r in read_label_records(root / name) if basename(r["video_path"]) in accepted_names]
        for name in (FINE_GRAINED_LABELS_NAME, FEEDBACKS_NAME)
        if (root / name).exists()
    }
    if in_place:
        for name in [MANIFEST_NAME, *label_files]:
            if (root / name).exists():
                backup_file(root / name)
    else:
        for path in sorted(accepted):
            _link_or_copy(root / path, output / path)
    write_json(output / MANIFEST_NAME, manifest)
    files[MANIFEST_NAME] = str(output / MANIFEST_NAME)
    for name, records in label_files.items():
        write_json(output / name, records)
        files[name] = str(output / name)
    if delete_rejected:
        _delete(root, [d.measure.path for d in result.rejected])
    return result


def _write_reports(output: Path, decisions: list[Decision]) -> dict[str, str]:
    """`clean_summary.csv`, `clean_metrics.csv` and `rejected_videos.json` in `output`: {name: path}."""
    _write_csv(
        output / "clean_summary.csv", SUMMARY_HEADER, CleanResult(decisions, output, {}).summary_rows()
    )
    metric_rows = []
    for d in decisions:
        m = d.measure
        values = [m.width, m.height, m.fps, m.duration, m.num_frames, m.brightness, m.sharpness]
        metric_rows.append(
            [
                m.path,
                m.class_name,
                *map(_round, values),
                _round(m.active_pair_fraction),
                "accepted" if d.accepted else "rejected",
                ";".join(d.reasons),
                m.error or "",
            ]
        )
    _write_csv(output / "clean_metrics.csv", METRICS_HEADER, metric_rows)
    rejected = [
        {"video": d.measure.path, "class": d.measure.class_name, "reasons": d.reasons}
        for d in decisions
        if not d.accepted
    ]
    write_json(output / "rejected_videos.json", rejected)
    return {
        name: str(output / name)
        for name in ("clean_summary.csv", "clean_metrics.csv", "rejected_videos.json")
    }


def _delete(root: Path, videos: list[str]) -> None:
    """Delete rejected videos (paths relative to `root`), each checked again right before: a long run
    leaves time for links to change, and nothing outside the root may ever be deleted."""
    for video in videos:
        resolve_in_root(video, root, source_file=root / MANIFEST_NAME, record=f"entry {video!r}")
        (root / video).unlink(missing_ok=True)


def backup_file(path: Path) -> Path:
    """Copy `path` to `<name>.bak` if that is free, else to the first free `<name>.bak.1`, `.bak.2`, …

    The name is claimed by exclusive creation, so an existing backup is never overwritten, even by a run
    started at the same time; a copy that fails midway is removed (it never poses as a backup).
    """
    number = 0
    while True:
        target = path.with_name(f"{path.name}.bak" + (f".{number}" if number else ""))
        try:
            claimed = open(target, "xb")  # noqa: SIM115 (closed below, and removed on failure)
        except FileExistsError:
            number += 1
            continue
        try:
            with claimed, open(path, "rb") as source:
                shutil.copyfileobj(source, claimed)
            shutil.copystat(path, target)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
