"""Dataset statistics: videos per class and split, durations, frame rates, resolutions; a table and a plot.

The split of a video comes from the fine-grained split files (`qved_{train,val,test}.json`) when they exist
beside the dataset, else every video counts as "unsplit". Manifest keys and split records must lie under
the dataset root (symlinks followed); nothing outside it is probed.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videogemma.datasets.paths import relative_in_root
from videogemma.datasets.qved.io import read_json, read_manifest, write_json
from videogemma.datasets.qved.prepare import FAMILIES, SPLITS
from videogemma.errors import VideoGemmaDataError
from videogemma.files import atomic_write
from videogemma.processing.video_source import DEFAULT_LIMITS, VideoLimits


@dataclass
class VideoStats:
    path: str
    class_name: str
    split: str
    duration: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    error: str | None = None


@dataclass
class DatasetStats:
    videos: list[VideoStats] = field(default_factory=list)

    @property
    def splits(self) -> list[str]:
        present = {v.split for v in self.videos}
        return [s for s in (*SPLITS, "unsplit") if s in present]

    def counts(self) -> dict[str, dict[str, int]]:
        """class → split → videos."""
        table: dict[str, dict[str, int]] = defaultdict(dict)
        for (class_name, split), count in sorted(
            Counter((v.class_name, v.split) for v in self.videos).items()
        ):
            table[class_name][split] = count
        return dict(table)

    def table_rows(self) -> list[list[Any]]:
        """[class, count per split…, total, mean duration, min, max] per class, then TOTAL."""
        rows = []
        classes = sorted({v.class_name for v in self.videos})
        for class_name in [*classes, None]:
            videos = [v for v in self.videos if class_name is None or v.class_name == class_name]
            per_split = Counter(v.split for v in videos)
            durations = [v.duration for v in videos if v.duration is not None]
            summary = [float(np.mean(durations)), min(durations), max(durations)] if durations else ["-"] * 3
            rows.append([class_name or "TOTAL", *(per_split[s] for s in self.splits), len(videos), *summary])
        return rows

    def table_header(self) -> list[str]:
        return ["class", *self.splits, "total", "mean s", "min s", "max s"]

    def resolutions(self) -> dict[str, int]:
        counts = Counter(f"{v.width}x{v.height}" for v in self.videos if v.width)
        return dict(counts.most_common())

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts(),
            "resolutions": self.resolutions(),
            "frame_rates": dict(Counter(f"{v.fps:g}" for v in self.videos if v.fps).most_common()),
            "unreadable": [v.path for v in self.videos if v.error],
            "videos": [asdict(v) for v in self.videos],
        }


def split_membership(split_dir: Path, root: Path) -> dict[str, str]:
    """video path (relative to `root`) → split, from the fine-grained split files in `split_dir` (empty
    when there are none). A record whose video lies outside `root` (symlinks followed) is refused."""
    fine_grained = FAMILIES[0]
    membership = {}
    for split in SPLITS:
        path = split_dir / fine_grained.split_file(split)
        if path.exists():
            for index, record in enumerate(read_json(path)):
                if isinstance(record, dict) and isinstance(record.get("video"), str):
                    video = relative_in_root(record["video"], root, source_file=path, record=index)
                    membership[video] = split
    return membership


def collect_stats(
    root: str | os.PathLike[str],
    split_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    limits: VideoLimits = DEFAULT_LIMITS,
) -> DatasetStats:
    """Probe every manifest video (confined to `root`); unreadable ones are listed, not fatal."""
    from tqdm import tqdm

    from videogemma.processing.video import probe_video

    root = Path(root)
    if not root.is_dir():
        raise VideoGemmaDataError(f"{root}: the dataset root is not a folder")
    videos = read_manifest(root)
    membership = split_membership(Path(split_dir) if split_dir else root, root)
    stats = DatasetStats()
    for path, class_name in tqdm(videos.items(), desc="stats", unit="video", disable=not progress):
        video = VideoStats(path, class_name, membership.get(path, "unsplit"))
        try:
            info = probe_video(root / path, limits=limits)
            video.duration, video.fps, video.num_frames = info.duration, info.fps, info.num_frames
            video.width, video.height = info.width, info.height
        except Exception as error:  # an unreadable clip is reported, not fatal
            video.error = f"{type(error).__name__}: {error}"
        stats.videos.append(video)
    return stats


def plot_stats(stats: DatasetStats, path: str | os.PathLike[str]) -> None:
    """Three panels: videos per class (stacked by split), duration histogram, resolutions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = stats.counts()
    classes = sorted(counts)
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5), gridspec_kw={"width_ratios": [2, 1, 1]})
    bottom = np.zeros(len(classes))
    for split in stats.splits:
        values = np.array([counts[c].get(split, 0) for c in classes])
        axes[0].bar(classes, values, bottom=bottom, label=split)
        bottom += values
    axes[0].set_title("videos per class")
    axes[0].tick_params(axis="x", rotation=45, labelsize=8)
    for label in axes[0].get_xticklabels():
        label.set_horizontalalignment("right")
    axes[0].legend()
    durations = [v.duration for v in stats.videos if v.duration is not None]
    axes[1].hist(durations, bins=20, color="tab:green")
    axes[1].set_title("duration (s)")
    resolutions = stats.resolutions()
    axes[2].barh(list(resolutions)[:10], list(resolutions.values())[:10], color="tab:purple")
    axes[2].set_title("resolutions (top 10)")
    figure.tight_layout()
    with atomic_write(path, "wb") as file:
        figure.savefig(file, dpi=100, format="png")
    plt.close(figure)


def write_stats(stats: DatasetStats, out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """`dataset_stats.png` and `dataset_stats.json` in `out`, each written whole or not at all."""
    out = Path(out)
    plot_stats(stats, out / "dataset_stats.png")
    write_json(out / "dataset_stats.json", stats.as_dict())
    return out / "dataset_stats.png", out / "dataset_stats.json"
