"""Build the model and processor a training run starts from: a preset, a saved directory, or the components.

A preset model is randomly initialised from the run's seed, so `load_run` can rebuild the exact base
weights a LoRA / projector run was trained on without saving the frozen parts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from videogemma.config import VideoGemmaConfig
from videogemma.train.stages import PROJECTORS
from videogemma.train.train_config import ModelSource, TrainConfigError


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def preset_config(name: str, overrides: dict[str, Any]) -> VideoGemmaConfig:
    """The preset's config with `overrides` deep-merged (a sub-config dict changes only the fields it names)."""
    base = VideoGemmaConfig.from_preset(name).to_dict()
    try:
        return VideoGemmaConfig.from_dict(_deep_merge(base, overrides))
    except (TypeError, ValueError) as error:
        raise TrainConfigError(f"model.overrides: {error}") from error


def build_model(source: ModelSource, seed: int) -> nn.Module:
    """The model before any stage-specific freezing or LoRA."""
    from videogemma.modeling.integrity import ModelWeightsError
    from videogemma.modeling.modeling_videogemma import VideoGemmaForConditionalGeneration

    kind = source.kind()
    if kind == "preset":
        config = preset_config(source.preset, source.overrides)
        torch.manual_seed(seed)
        model = VideoGemmaForConditionalGeneration(config)
    elif kind == "pretrained":
        try:
            model = VideoGemmaForConditionalGeneration.from_pretrained(source.pretrained, **source.overrides)
        except ModelWeightsError:
            raise  # it names the file and the tensor already
        except (OSError, ValueError) as error:
            raise TrainConfigError(f"model.pretrained: cannot load {source.pretrained}: {error}") from error
    else:
        model = VideoGemmaForConditionalGeneration.from_components(
            lm=source.lm, clip=source.clip, videomamba=source.videomamba, **source.overrides
        )
    for path in source.projector_weights:
        load_projector_weights(model, path)
    return model


def build_processor(source: ModelSource, model_config: VideoGemmaConfig) -> Any:
    """The processor matching the model: the preset's tokenizer, or the one saved beside the weights."""
    from transformers import AutoTokenizer

    from videogemma.data.processor import VideoGemmaProcessor

    kind = source.kind()
    if kind == "preset":
        if source.preset != "tiny":
            raise TrainConfigError(
                f"model.preset {source.preset!r}: only `tiny` has a tokenizer of its own; "
                "train the real model from its components (model.lm / clip / videomamba)"
            )
        from videogemma.data.tokenizer import build_tiny_tokenizer

        return VideoGemmaProcessor.from_config(model_config, build_tiny_tokenizer())
    if kind == "pretrained":
        processor = VideoGemmaProcessor.from_pretrained(source.pretrained)
        # Overrides (e.g. more frames) change the geometry: rebuild the settings from the model's config.
        return (
            VideoGemmaProcessor.from_config(model_config, processor.tokenizer)
            if source.overrides
            else processor
        )
    return VideoGemmaProcessor.from_config(
        model_config, AutoTokenizer.from_pretrained(source.lm, local_files_only=True)
    )


def load_projector_weights(model: nn.Module, path: str | Path, required: tuple[str, ...] = ()) -> list[str]:
    """Load `image_projector.*` / `video_projector.*` tensors (a `projectors.safetensors`); returns the
    projectors it set. The file must be whole, hold only projector tensors, every tensor of each projector it
    holds (and of each `required` one) with the model's shape, and no NaN or infinite value: anything else is
    a `ModelWeightsError` naming the file and the tensor."""
    from videogemma.modeling.integrity import (
        ModelWeightsError,
        check_finite,
        check_tensors_match,
        safetensors_header,
    )

    found = safetensors_header(path)
    loaded = sorted({name.split(".", 1)[0] for name in found})
    unknown = [p for p in loaded if p not in PROJECTORS]
    if unknown:
        raise ModelWeightsError(
            f"{path}: holds {unknown}, expected only image_projector / video_projector weights"
        )
    projectors = sorted(set(loaded) | set(required))
    expected = {
        f"{projector}.{name}": tuple(tensor.shape)
        for projector in projectors
        for name, tensor in getattr(model, projector).state_dict().items()
    }
    check_tensors_match(expected, found, path)
    state = load_file(str(path))
    check_finite(state.items(), path)
    for projector in projectors:
        prefix = f"{projector}."
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        getattr(model, projector).load_state_dict(part, strict=True)
    return projectors
