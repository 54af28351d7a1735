"""`export_run`: a training run written as one model directory (LoRA merged), loadable by `from_pretrained`."""

from __future__ import annotations

from pathlib import Path

from videogemma.loading import load_run


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a full model directory (LoRA merged) + processor, loadable by `from_pretrained`."""
    model, processor = load_run(run_dir)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
