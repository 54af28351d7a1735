"""`load`: one call from a name or a folder to a model and its processor, ready to answer questions.

    model, processor = videogemma.load("tiny")              # a preset, random weights from `seed`
    model, processor = videogemma.load("path/to/model")     # a saved model (save_pretrained + processor)
    model, processor = videogemma.load("runs/demo_tiny")    # a training run (adapter / projectors merged)
    model, processor = videogemma.load(lm=..., clip=..., videomamba=...)   # the pretrained components

The model sources are the training code's (`train.model_source`, `train.export.load_run`), so inference
builds exactly the model a run trained.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videogemma.config import PRESETS

if TYPE_CHECKING:  # torch is imported when a model is loaded, not when the package is
    import torch

DEFAULT_SEED = 0


def load(
    preset_or_path: str | os.PathLike | None = None,
    *,
    lm: str | os.PathLike | None = None,
    clip: str | os.PathLike | None = None,
    videomamba: str | os.PathLike | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    seed: int = DEFAULT_SEED,
    **config_overrides: Any,
) -> tuple[Any, Any]:
    """(model, processor) in eval mode, from a preset name, a saved model, a training run, or components.

    A preset builds randomly initialised weights from `seed` (the same weights every time). A folder holding
    `train_config.yaml` is a training run; a folder holding `config.json` is a saved model. `dtype` (e.g.
    `torch.bfloat16` or "bfloat16") and `device` move the loaded model; `config_overrides` change
    `VideoGemmaConfig` fields of a preset, saved model or components (not of a training run).
    """
    from videogemma.train.export import load_run
    from videogemma.train.model_source import build_model, build_processor
    from videogemma.train.run import CONFIG_NAME
    from videogemma.train.train_config import ModelSource

    components = {"lm": lm, "clip": clip, "videomamba": videomamba}
    if any(components.values()):
        if preset_or_path is not None:
            raise ValueError("give either a preset / path or the components (lm, clip, videomamba), not both")
        missing = [name for name, value in components.items() if not value]
        if missing:
            raise ValueError(f"loading from components needs lm, clip and videomamba; missing {missing}")
        source = ModelSource(**{k: str(v) for k, v in components.items()}, overrides=config_overrides)
    elif preset_or_path is None:
        raise ValueError(
            "give a preset name, a model or run folder, or the components lm + clip + videomamba"
        )
    elif str(preset_or_path) in PRESETS and not Path(preset_or_path).exists():
        source = ModelSource(preset=str(preset_or_path), overrides=config_overrides)
    else:
        path = Path(preset_or_path)
        if (path / CONFIG_NAME).is_file():
            if config_overrides:
                raise ValueError(f"{path} is a training run: its config cannot be overridden at load time")
            model, processor = load_run(path)
            return _place(model, dtype, device), processor
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path}: not a preset ({', '.join(sorted(PRESETS))}), a saved model (config.json) or a "
                f"training run ({CONFIG_NAME})"
            )
        source = ModelSource(pretrained=str(path), overrides=config_overrides)

    model = build_model(source, seed)
    processor = build_processor(source, model.config)
    model.freeze_encoders(clip=True, videomamba=True)
    return _place(model.eval(), dtype, device), processor


def check_device(device: torch.device | str | None) -> None:
    """Refuse a device this machine cannot use (`cuda` on a CPU-only torch, `cuda:3` with two GPUs), before
    anything is loaded onto it."""
    if device is None:
        return
    import torch

    from videogemma.inference.generate import InferenceArgumentError

    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InferenceArgumentError(f"--device {device}: not a device name ({error})") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InferenceArgumentError(
                f"--device {device}: no CUDA GPU is usable here (torch {torch.__version__}, CUDA "
                f"{torch.version.cuda or 'not built in'}); leave out --device or pass cpu"
            )
        if device.index is not None and device.index >= count:
            raise InferenceArgumentError(f"--device {device}: only {count} CUDA GPU(s) are visible")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InferenceArgumentError(f"--device {device}: MPS is not available on this machine")


def _place(model: Any, dtype: torch.dtype | str | None, device: torch.device | str | None) -> Any:
    import torch

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is not None or device is not None:
        model = model.to(device=device, dtype=dtype)
    return model
