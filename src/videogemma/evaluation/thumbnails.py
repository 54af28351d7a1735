"""A strip of small frames per clip for the HTML report: a few evenly spaced frames side by side, one JPEG.

About 3-6 KB a clip at the default size (4 frames, 48 pixels high, quality 70), so a report of a few hundred
clips stays around a megabyte with the strips embedded. A clip that cannot be read gets no strip (its row
says why); the report is written anyway.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

STRIP_FRAMES = 4
STRIP_HEIGHT = 48
JPEG_QUALITY = 70
# More clips than this get no strips: the report would grow past what a browser opens comfortably.
MAX_STRIPS = 2000


@dataclass(frozen=True)
class Strip:
    data_uri: str | None  # data:image/jpeg;base64,...
    note: str = ""  # why there is no strip


def frame_strip(video: Path, frames: int = STRIP_FRAMES, height: int = STRIP_HEIGHT) -> bytes:
    """`frames` evenly spaced frames of `video`, each scaled to `height` pixels, side by side, as JPEG bytes."""
    import numpy as np
    from PIL import Image

    from videogemma.processing.video import read_video_frames

    decoded = read_video_frames(video, frames)
    images = []
    for frame in decoded:
        image = Image.fromarray(np.ascontiguousarray(frame))
        width = max(1, round(image.width * height / image.height))
        images.append(image.resize((width, height), Image.Resampling.BILINEAR))
    strip = Image.new("RGB", (sum(image.width for image in images) + len(images) - 1, height), "white")
    x = 0
    for image in images:
        strip.paste(image, (x, 0))
        x += image.width + 1
    buffer = io.BytesIO()
    strip.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def clip_strips(video_paths: Iterable[str | None], root: Path | None) -> dict[str, Strip]:
    """A strip for each distinct `video_path` (relative to `root`); {} without a root or past MAX_STRIPS."""
    from videogemma.datasets.paths import resolve_in_root
    from videogemma.errors import PathOutsideRootError, RecordError, VideoGemmaDataError

    names = sorted({name for name in video_paths if name})
    if root is None or not root.is_dir() or len(names) > MAX_STRIPS:
        return {}
    strips = {}
    for name in names:
        try:  # the dataset tools' confinement: real paths, symlinks followed, under the root
            path = resolve_in_root(name, root, source_file=root, record=name)
        except PathOutsideRootError:
            strips[name] = Strip(None, "outside the video folder")
            continue
        except RecordError:
            strips[name] = Strip(None, "invalid video path")
            continue
        if not path.is_file():
            strips[name] = Strip(None, "video not found")
            continue
        try:
            data = frame_strip(path)
        except (VideoGemmaDataError, OSError, ValueError) as error:
            strips[name] = Strip(None, f"unreadable: {type(error).__name__}")
            continue
        strips[name] = Strip("data:image/jpeg;base64," + base64.b64encode(data).decode("ascii"))
    return strips
