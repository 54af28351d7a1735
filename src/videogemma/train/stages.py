"""What each training stage trains and freezes (ARCHITECTURE §7), LoRA wrapping and optimiser parameter groups.

| stage        | trains                                        | frozen                      |
|--------------|-----------------------------------------------|-----------------------------|
| `video-proj` | video ETP                                     | everything else             |
| `image-proj` | image ETP                                     | everything else             |
| `finetune`   | LoRA on the text decoder + both ETPs fully    | base LM, CLIP, VideoMamba   |
| `full`       | everything                                    | nothing                     |

LoRA goes on the text decoder's q, k, v, o, gate, up and down projections only, selected by an explicit regex
on `language_model.model.layers.*` (never "all-linear"). The projectors are PEFT `modules_to_save`, so they
stay trainable after wrapping and are saved with the adapter (and thus in every checkpoint).

Every trained parameter is held in fp32 (master weights) whatever the frozen base's dtype, and every trained
parameter gets a gradient at every step: CLIP's blocks after the selected layer (and its final norm), whose
output is never read, are frozen in `full`, so DDP runs without `find_unused_parameters`.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from videogemma.loading import PROJECTOR_NAMES
from videogemma.train.train_config import TrainConfig, TrainConfigError

ENCODERS = ("clip", "videomamba")

# Modules each stage trains fully (besides LoRA in `finetune`); `full` trains every parameter.
STAGE_TRAINED_MODULES: dict[str, tuple[str, ...]] = {
    "video-proj": ("video_projector",),
    "image-proj": ("image_projector",),
    "finetune": PROJECTOR_NAMES,
}


def encoders_frozen(stage: str) -> bool:
    return stage != "full"


def base_model(model: nn.Module) -> nn.Module:
    """The VideoGemma model under a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if get_base is not None else model


def lora_target_modules(model: nn.Module, target_regex: str) -> list[str]:
    """Names of the modules the regex selects (PEFT full-matches a string `target_modules` the same way)."""
    pattern = re.compile(target_regex)
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and pattern.fullmatch(name)
    ]


def prepare_model_for_stage(model: nn.Module, config: TrainConfig) -> nn.Module:
    """Freeze, unfreeze and (for `finetune`) wrap with LoRA; returns the model to train."""
    stage = config.stage
    if stage == "full":
        model.requires_grad_(True)
        model.freeze_encoders(clip=False, videomamba=False)
        for module in model.clip.unused_modules():
            module.requires_grad_(False)
        return keep_trained_in_fp32(model)
    model.requires_grad_(False)
    model.freeze_encoders(clip=True, videomamba=True)
    for name in STAGE_TRAINED_MODULES[stage]:
        getattr(model, name).requires_grad_(True)
    if stage != "finetune":
        return keep_trained_in_fp32(model)

    from peft import LoraConfig, get_peft_model

    targets = lora_target_modules(model, config.lora.target_regex)
    if not targets:
        raise TrainConfigError(
            f"lora.target_regex {config.lora.target_regex!r} matches no linear layer of the model"
        )
    lora_config = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_regex,
        modules_to_save=list(PROJECTOR_NAMES),
        bias="none",
    )
    peft_model = get_peft_model(model, lora_config)
    # The frozen encoders must stay in eval mode and frozen after wrapping.
    peft_model.get_base_model().freeze_encoders(clip=True, videomamba=True)
    untrained = [name for name in PROJECTOR_NAMES if not _any_trainable(peft_model, name)]
    if untrained:
        raise RuntimeError(f"PEFT wrapping left the projectors {untrained} frozen")
    return keep_trained_in_fp32(peft_model)


def keep_trained_in_fp32(model: nn.Module) -> nn.Module:
    """Every trainable parameter in fp32 (master weights for a bf16 / fp16 base; PEFT creates LoRA in fp32
    already): autocast computes in half precision, the optimizer updates in fp32."""
    import torch

    for parameter in model.parameters():
        if parameter.requires_grad and parameter.is_floating_point() and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    return model


def _any_trainable(model: nn.Module, module_name: str) -> bool:
    return any(p.requires_grad for n, p in model.named_parameters() if f"{module_name}." in n)


def check_trainable(model: nn.Module, stage: str) -> int:
    """The number of trainable parameters; a stage that trains nothing is an error before training."""
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if count == 0:
        raise TrainConfigError(f"stage {stage!r}: the model has no trainable parameters")
    return count


def is_projector_parameter(name: str) -> bool:
    return any(f"{projector}." in name for projector in PROJECTOR_NAMES)


def parameter_groups(model: nn.Module, config: TrainConfig, no_decay_names: set[str]) -> list[dict[str, Any]]:
    """Optimiser groups: main (LoRA or everything) and, when `projector_learning_rate` is set, the projectors
    at that rate; each split by
    weight decay (no decay for the names in `no_decay_names`: biases and norms). Empty groups are dropped;
    the main group comes first (the Trainer logs the first group's learning rate)."""
    projector_lr = config.projector_learning_rate
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        separate = config.projector_learning_rate is not None and is_projector_parameter(name)
        key = (separate, name in no_decay_names)
        groups.setdefault(key, []).append(parameter)
    ordered = []
    for projector in (False, True):
        for no_decay in (False, True):
            params = groups.get((projector, no_decay))
            if params:
                ordered.append(
                    {
                        "params": params,
                        "lr": projector_lr if projector else config.learning_rate,
                        "weight_decay": 0.0 if no_decay else config.weight_decay,
                    }
                )
    return ordered
