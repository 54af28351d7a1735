"""`export_run`: a training run written as one model directory (LoRA merged), loadable by `from_pretrained`."""

from __future__ import annotations

import shutil
from pathlib import Path

from videogemma.errors import VideoGemmaError
from videogemma.loading import load_run
from videogemma.train.run_files import publish_folder, staging_path


def export_run(run_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write a full model directory (LoRA merged) + processor, loadable by `from_pretrained`. A non-empty
    `out_dir` is refused unless `overwrite`; the model is written beside it and renamed into place whole."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise VideoGemmaError(f"--merge {out_dir}: not an empty folder; pass --overwrite to replace it")
    model, processor = load_run(run_dir)
    staging = staging_path(out_dir)
    shutil.rmtree(staging, ignore_errors=True)  # what a killed export left
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    publish_folder(staging, out_dir)
    return out_dir
