"""`export_run`: a training run written as one model directory (LoRA merged), loadable by `from_pretrained`,
or, quantised (`quantize="int8" | "int4"`), by `videogemma.load` (its `quantization.json` says how)."""

from __future__ import annotations

import shutil
from pathlib import Path

from videogemma.errors import VideoGemmaError
from videogemma.loading import load_run
from videogemma.train.run_files import publish_folder, staging_path


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    overwrite: bool = False,
    quantize: str | None = None,
    quantize_lm_head: bool = False,
) -> Path:
    """Write a full model directory (LoRA merged) + processor, loadable by `from_pretrained`. A non-empty
    `out_dir` is refused unless `overwrite`; the model is written beside it and renamed into place whole.
    With `quantize`, the text decoder's linear layers (and the LM head with `quantize_lm_head`) are written
    weight-only quantised, the rest in the dtype the CPU computes (bf16 where native), for on-device use."""
    from videogemma.modeling.quantization import check_method, quantize_language_model
    from videogemma.precision import resolve_dtype

    check_method(quantize)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise VideoGemmaError(f"--merge {out_dir}: not an empty folder; pass --overwrite to replace it")
    dtype = resolve_dtype(None, "cpu") if quantize else None
    model, processor = load_run(run_dir, dtype=dtype)
    settings = quantize_language_model(model, quantize, quantize_lm_head) if quantize else None
    staging = staging_path(out_dir)
    shutil.rmtree(staging, ignore_errors=True)  # what a killed export left
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    if settings is not None:
        settings.save(staging)
    publish_folder(staging, out_dir)
    return out_dir
