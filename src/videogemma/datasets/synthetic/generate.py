"""Generating the synthetic dataset: every clip's spec, its own random generator, the QVED label files.

Determinism: each clip draws from its own `numpy` generator seeded by (seed, exercise, variant, index),
and the encoder runs single-threaded, so the same seed writes the same bytes in any process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videogemma.datasets.qved.io import (
    FEEDBACKS_NAME,
    FINE_GRAINED_LABELS_NAME,
    MANIFEST_NAME,
    write_json,
    write_mp4,
)
from videogemma.datasets.synthetic.exercises import EXERCISES, Exercise, Variant
from videogemma.datasets.synthetic.rendering import render_clip

# ---- the dataset -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSpec:
    video_id: str  # 8 digits, unique across classes
    exercise_index: int
    variant_index: int
    index: int  # clip number within its variant

    @property
    def exercise(self) -> Exercise:
        return EXERCISES[self.exercise_index]

    @property
    def variant(self) -> Variant:
        return self.exercise.variants[self.variant_index]

    @property
    def relative_path(self) -> str:
        return f"{self.exercise.class_name}/{self.video_id}.mp4"


def clip_specs(per_variant: int, exercises: tuple[Exercise, ...] = EXERCISES) -> list[ClipSpec]:
    """Every clip of the dataset in id order: exercise by exercise, variant by variant."""
    specs = []
    for exercise in exercises:
        exercise_index = EXERCISES.index(exercise)
        for variant_index in range(len(exercise.variants)):
            for index in range(per_variant):
                specs.append(ClipSpec(f"{len(specs) + 1:08d}", exercise_index, variant_index, index))
    return specs


def clip_rng(seed: int, spec: ClipSpec) -> np.random.Generator:
    """The clip's own generator: the same (seed, exercise, clip index) gives the same scene for every variant."""
    return np.random.default_rng(np.random.SeedSequence([seed, spec.exercise_index, spec.index]))


def _write_clip(job: tuple[ClipSpec, Path, int, int, int, float]) -> str:
    spec, out_dir, seed, size, num_frames, fps = job
    path = out_dir / spec.relative_path
    frames = render_clip(spec.exercise, spec.variant, clip_rng(seed, spec), size, num_frames, fps)
    write_mp4(path, frames, fps)
    return spec.relative_path


def label_records(specs: list[ClipSpec]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """(fine_grained_labels, feedbacks, manifest) of the clips, QVED style."""
    labels, feedbacks, manifest = [], [], {}
    for spec in specs:
        video_path = f"./{spec.video_id}.mp4"
        labels.append({
            "video_path": video_path,
            "labels": [spec.exercise.label(spec.variant)],
            "labels_descriptive": [spec.exercise.descriptive_label(spec.variant)],
            "split": "train",
        })  # fmt: skip
        feedbacks.append(
            {"video_path": video_path, "feedbacks": list(spec.variant.feedbacks), "split": "train"}
        )
        manifest[spec.relative_path] = spec.exercise.class_name
    return labels, feedbacks, manifest


def generate_dataset(
    out_dir: str | Path,
    per_variant: int = 20,
    seed: int = 0,
    size: int = 64,
    num_frames: int = 36,
    fps: float = 12.0,
    workers: int = 1,
    exercises: tuple[Exercise, ...] = EXERCISES,
    progress: bool = True,
) -> dict[str, Any]:
    """Write a QVED-shaped dataset of synthetic clips into `out_dir`; return a summary.

    Resumable: clips already present are kept (they are deterministic, so rewriting would give the same
    bytes); the label files and manifest are written last, once every clip exists.
    """
    from tqdm import tqdm

    if per_variant < 1 or size < 16 or num_frames < 1 or fps <= 0:
        raise ValueError(f"need per_variant ≥ 1, size ≥ 16, frames ≥ 1, fps > 0 (got {per_variant}, {size}, "
                         f"{num_frames}, {fps})")  # fmt: skip
    out_dir = Path(out_dir)
    specs = clip_specs(per_variant, exercises)
    jobs = [
        (s, out_dir, seed, size, num_frames, fps) for s in specs if not (out_dir / s.relative_path).exists()
    ]
    bar = tqdm(
        total=len(specs), initial=len(specs) - len(jobs), desc="synth", unit="clip", disable=not progress
    )
    if workers > 1 and len(jobs) > 1:
        import multiprocessing

        # fork (where there is one) spares each worker re-importing the package.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with context.Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_clip, jobs, chunksize=4):
                bar.update()
    else:
        for job in jobs:
            _write_clip(job)
            bar.update()
    bar.close()
    labels, feedbacks, manifest = label_records(specs)
    write_json(out_dir / FINE_GRAINED_LABELS_NAME, labels)
    write_json(out_dir / FEEDBACKS_NAME, feedbacks)
    write_json(out_dir / MANIFEST_NAME, manifest)
    return {
        "clips": len(specs),
        "written": len(jobs),
        "classes": [e.class_name for e in exercises],
        "variants": sum(len(e.variants) for e in exercises),
        "size": size,
        "frames": num_frames,
        "fps": fps,
        "seed": seed,
    }
