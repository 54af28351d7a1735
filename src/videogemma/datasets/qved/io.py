"""Reading and writing the QVED folder layout (DATA.md): manifest, label files, JSON outputs, mp4 clips.

```
dataset/
  manifest.json               {"squats/00000340.mp4": "squats", ...}   local path → class
  fine_grained_labels.json    [{"video_path": "./00000340.mp4", "labels": [...], "labels_descriptive": [...]}]
  feedbacks_short_clips.json  [{"video_path": "./00000340.mp4", "feedbacks": [...]}]
  <class>/<8-digit id>.mp4
```

Every tool of `videogemma data` reads and writes these files through this module, so the layout's quirks
(mixed manifest key styles, dict values of old manifests) are handled in one place, and so is confinement:
every manifest key and scanned file must really lie under the dataset root (symlinks followed,
`paths.resolve_in_root`), or the tool stops with `PathOutsideRootError` naming the entry before it reads,
writes or deletes anything. Files are written to a temporary name in their folder and renamed (atomic).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from videogemma.constants import VIDEO_SUFFIXES
from videogemma.datasets.paths import relative_in_root, resolve_in_root
from videogemma.errors import RecordError, VideoGemmaDataError
from videogemma.files import atomic_write

MANIFEST_NAME = "manifest.json"
FINE_GRAINED_LABELS_NAME = "fine_grained_labels.json"
FEEDBACKS_NAME = "feedbacks_short_clips.json"

# An augmented copy of `<stem>.mp4` is `<stem>_aug<k>.mp4`; it belongs with its source wherever it goes.
_AUGMENTED_STEM = re.compile(r"^(?P<source>.+)_aug\d+$")


def source_stem(video_name: str) -> str:
    """The stem of the original clip: `00000340` for `squats/00000340_aug3.mp4` and for `00000340.mp4`."""
    stem = PurePosixPath(video_name).stem
    match = _AUGMENTED_STEM.match(stem)
    return match.group("source") if match else stem


def basename(video_path: str) -> str:
    """The join key of the label files: `00000340.mp4` for `./00000340.mp4` or `dataset/squats/00000340.mp4`."""
    return PurePosixPath(str(video_path).replace("\\", "/")).name


# ---- JSON -------------------------------------------------------------------------------------------------


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise VideoGemmaDataError(f"{path}: file not found") from None
    except json.JSONDecodeError as error:
        raise RecordError(path, None, f"not valid JSON ({error})") from None


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write `data` so that the same data gives the same bytes in any process; atomically (no half files)."""
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    with atomic_write(path) as file:
        file.write(text)


# ---- manifest ---------------------------------------------------------------------------------------------


def manifest_class(key: str, value: Any) -> str:
    """The class of a manifest entry: the value if it is a string, else the folder the file sits in."""
    if isinstance(value, str):
        return value
    parts = PurePosixPath(key.replace("\\", "/")).parts
    if len(parts) < 2:
        raise VideoGemmaDataError(
            f"manifest entry {key!r} has no class (neither a string value nor a folder)"
        )
    return parts[-2]


def resolve_manifest_path(root: Path, key: str, class_name: str) -> str:
    """The path of a manifest entry relative to the dataset root.

    Keys come as `dataset/<class>/<file>` (relative to the root's parent) or `<class>/<file>`; the first
    candidate that exists wins, else `<class>/<file>` (the layout's own place, reported later if missing).
    Each candidate must lie under the root once symlinks are followed, whether it exists or not: a key that
    is absolute elsewhere, climbs out with `..`, or reaches a link pointing outside is refused
    (`PathOutsideRootError`, naming the entry) before anything there is looked at.
    """
    manifest = Path(root) / MANIFEST_NAME
    where = f"entry {key!r}"
    key = key.replace("\\", "/").removeprefix("./")
    parts = PurePosixPath(key).parts
    if not parts:
        raise RecordError(manifest, where, "empty video path")
    candidates = [key, str(PurePosixPath(*parts[1:])) if len(parts) > 1 else key, f"{class_name}/{parts[-1]}"]
    relative = [relative_in_root(c, root, source_file=manifest, record=where) for c in candidates]
    return next((r for r in relative if (Path(root) / r).is_file()), relative[-1])


def read_manifest(root: str | os.PathLike[str]) -> dict[str, str]:
    """`{video path relative to root: class}` from `manifest.json`, or from the class folders without one."""
    root = Path(root)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.exists():
        return scan_class_folders(root)
    manifest = read_json(manifest_path)
    if not isinstance(manifest, dict):
        raise RecordError(
            manifest_path, None, f"expected an object {{path: class}}, got {type(manifest).__name__}"
        )
    videos = {}
    for key, value in manifest.items():
        class_name = manifest_class(key, value)
        videos[resolve_manifest_path(root, key, class_name)] = class_name
    return dict(sorted(videos.items()))


def scan_class_folders(root: str | os.PathLike[str]) -> dict[str, str]:
    """`{<class>/<file>: class}` for every video in a direct subfolder of `root`.

    A class folder or video that is a link leading outside the root is refused, like a manifest key.
    """
    root = Path(root)
    if not root.is_dir():
        raise VideoGemmaDataError(f"{root}: the dataset root is not a folder")
    videos = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        resolve_in_root(folder.name, root, source_file=root, record=f"folder {folder.name!r}")
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() in VIDEO_SUFFIXES:
                relative = f"{folder.name}/{file.name}"
                if resolve_in_root(relative, root, source_file=root, record=f"file {relative!r}").is_file():
                    videos[relative] = folder.name
    if not videos:
        raise VideoGemmaDataError(f"{root}: no {MANIFEST_NAME} and no videos in class folders")
    return videos


def manifest_key_like(existing_keys: Iterable[str], relative_path: str) -> str:
    """A manifest key for a new video in the style the manifest already uses (`dataset/<class>/...` or not)."""
    for key in existing_keys:
        parts = PurePosixPath(key).parts
        if len(parts) >= 3:
            return str(PurePosixPath(*parts[:-2], relative_path))
        break
    return relative_path


# ---- label files ------------------------------------------------------------------------------------------


def read_label_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a label file (a JSON list of objects, each with a `video_path`).

    `video_path` is only a join key (its basename, DATA.md): no tool opens, writes or deletes a file by it,
    the file used is always the manifest's (confined to the root), so a path written elsewhere is harmless.
    """
    records = read_json(path)
    if not isinstance(records, list):
        raise RecordError(path, None, f"expected a JSON list of records, got {type(records).__name__}")
    for index, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("video_path"), str):
            raise RecordError(path, index, "expected an object with a string 'video_path'")
    return records


# ---- mp4 --------------------------------------------------------------------------------------------------


def write_mp4(
    path: str | os.PathLike[str], frames: np.ndarray | list[np.ndarray], fps: float, codec: str = "libx264"
) -> None:
    """Encode RGB uint8 frames (T, H, W, 3) to an H.264 (yuv420p) mp4, bit-identical for identical input.

    Determinism: one encoder thread, explicit timestamps, RGB→YUV done here in numpy, and x264's
    macroblock tree off: with it, the bytes of noisy clips changed from process to process once other
    video had been decoded in the process (it reads memory it never wrote). Odd sizes are cropped by one
    pixel (yuv420p needs even ones). Written to a temporary name first, so an interrupted run never
    leaves a truncated clip.
    """
    import av  # heavy; only the commands that write video need it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"expected frames of shape (T, H, W, 3) with T > 0, got {frames.shape}")
    height, width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    frames = np.ascontiguousarray(frames[:, :height, :width].astype(np.uint8, copy=False))
    temporary = path.with_name(path.stem + ".partial" + path.suffix)
    temporary.unlink(missing_ok=True)  # FFmpeg would write through a link left (or planted) under this name
    try:
        with av.open(str(temporary), "w", format="mp4") as container:
            stream = container.add_stream(codec, rate=_fps_fraction(fps))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.thread_count = 1
            if codec == "libx264":
                params = "threads=1:lookahead-threads=1:sliced-threads=0:mbtree=0:rc-lookahead=0"
                stream.options = {"preset": "veryfast", "crf": "18", "x264-params": params}
            for index, frame in enumerate(frames):
                video_frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")
                video_frame.pts = index  # explicit: x264's rate control reads timestamps
                for packet in stream.encode(video_frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    except BaseException:
        temporary.unlink(missing_ok=True)  # no half-written clip left to look like a video
        raise
    os.replace(temporary, path)


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3), H and W even → planar yuv420p as PyAV wants it: (H·3/2, W) uint8.

    BT.601 limited range (what decoders assume for untagged SD video); chroma is the mean of each 2×2 block.
    """
    rgb = frame.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    height, width = y.shape
    u = u.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
    v = v.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
    planes = [np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in (y, u, v)]
    # PyAV reads the array flat: the luma plane, then U, then V (H/2 rows of width W for both together).
    return np.concatenate([p.ravel() for p in planes]).reshape(height * 3 // 2, width)


def _fps_fraction(fps: float) -> Any:
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)
