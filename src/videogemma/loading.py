"""Loading: from a name or a folder to a model and its processor, one way for training, inference and serving.

    model, processor = videogemma.load("tiny")              # a preset, random weights from `seed`
    model, processor = videogemma.load("e2b", tokenizer="path/to/gemma-3n-E2B-it")   # random E2B weights
    model, processor = videogemma.load("path/to/model")     # a saved model (save_pretrained + processor)
    model, processor = videogemma.load("runs/demo_tiny")    # a training run (adapter / projectors merged)
    model, processor = videogemma.load(lm=..., clip=..., videomamba=...)   # the pretrained components

A training run starts from a `ModelSource` (its config's `model:` section) and `load_run` rebuilds the same
base from it, so inference answers with exactly the model a run trained. A preset model is randomly
initialised from the run's seed, so the frozen parts need not be saved.

A run directory holds (written by `train.run`):

    train_config.yaml          the resolved training configuration
    processor/                 tokenizer + processor settings
    model/                     `full` stage: the whole model (save_pretrained, safetensors)
    adapter/                   `finetune`: the LoRA adapter (PEFT, safetensors)
    projectors.safetensors     both ETPs (every stage)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videogemma.config import PRESETS, VideoGemmaConfig
from videogemma.errors import ModelLoadError

if TYPE_CHECKING:  # torch is imported when a model is loaded, not when the package is
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

# The run directory's layout, read here and written by `train.run`.
RUN_CONFIG_NAME = "train_config.yaml"
PROJECTORS_NAME = "projectors.safetensors"
RUN_PROCESSOR_DIR = "processor"
RUN_MODEL_DIR = "model"
RUN_ADAPTER_DIR = "adapter"
PROJECTOR_NAMES = ("image_projector", "video_projector")
DEFAULT_SEED = 0
# The preset whose tokenizer the project builds itself; every other model reads Gemma-3n's.
TOKENIZER_PRESET = "tiny"


@dataclass
class ModelSource:
    """Where the model comes from: exactly one of a preset, a saved VideoGemma directory, or components."""

    preset: str | None = None
    pretrained: str | None = None
    lm: str | None = None
    clip: str | None = None
    videomamba: str | None = None
    # A Gemma-3n tokenizer directory, for a preset without a tokenizer of its own (`e2b`).
    tokenizer: str | None = None
    # VideoGemmaConfig fields to change, deep-merged into the source's config (e.g. larger tiny encoders).
    overrides: dict[str, Any] = field(default_factory=dict)
    # Projector weights (`projectors.safetensors` of earlier projector-stage runs) loaded over the source's.
    projector_weights: list[str] = field(default_factory=list)

    def kind(self) -> str:
        sources = [
            name
            for name, present in (
                ("preset", self.preset),
                ("pretrained", self.pretrained),
                ("components", self.lm or self.clip or self.videomamba),
            )
            if present
        ]
        if len(sources) != 1:
            raise ModelLoadError(
                "give exactly one source (a preset, a pretrained directory, or the components lm + clip "
                f"+ videomamba); got {sources or 'none'}"
            )
        if sources[0] == "components" and not (self.lm and self.clip and self.videomamba):
            missing = [name for name in ("lm", "clip", "videomamba") if not getattr(self, name)]
            raise ModelLoadError(f"loading from components needs lm, clip and videomamba; missing {missing}")
        if sources[0] == "preset" and self.preset not in PRESETS:
            raise ModelLoadError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        return sources[0]

    def check_paths(self) -> None:
        """Every named path exists, and a preset without a tokenizer of its own is given one."""
        for key in ("pretrained", "lm", "clip", "videomamba", "tokenizer"):
            path = getattr(self, key)
            if path is not None and not Path(path).exists():
                raise ModelLoadError(f"{key}: {path} does not exist")
        for path in self.projector_weights:
            if not Path(path).is_file():
                raise ModelLoadError(f"projector_weights: {path} does not exist")
        if self.kind() == "preset" and self.preset != TOKENIZER_PRESET and self.tokenizer is None:
            raise ModelLoadError(
                f"preset {self.preset!r} reads Gemma-3n's tokenizer, which the project does not ship: pass "
                "tokenizer=DIR (a local Gemma-3n tokenizer directory, e.g. a download of "
                "google/gemma-3n-E2B-it)"
            )


# ---- the model and its processor ---------------------------------------------------------------------------


def check_overrides(config: VideoGemmaConfig, overrides: dict[str, Any]) -> None:
    """Refuse an override naming no field of the config (or of a sub-config): a typo would be ignored."""
    fields = config.to_dict()
    for key, value in overrides.items():
        if key not in fields:
            raise ModelLoadError(f"overrides: {key!r} is not a VideoGemmaConfig field")
        if isinstance(value, dict) and isinstance(fields[key], dict):
            unknown = sorted(set(value) - set(fields[key]))
            if unknown:
                raise ModelLoadError(f"overrides: {key} has no field(s) {', '.join(unknown)}")


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
    base = VideoGemmaConfig.from_preset(name)
    check_overrides(base, overrides)
    try:
        return VideoGemmaConfig.from_dict(_deep_merge(base.to_dict(), overrides))
    except (TypeError, ValueError) as error:
        raise ModelLoadError(f"preset {name!r} with overrides {overrides}: {error}") from error


def build_model(source: ModelSource, seed: int) -> nn.Module:
    """The model before any stage-specific freezing or LoRA."""
    import torch

    from videogemma.modeling.integrity import ModelWeightsError
    from videogemma.modeling.modeling_videogemma import VideoGemmaForConditionalGeneration

    kind = source.kind()
    if kind != "preset":
        check_overrides(VideoGemmaConfig.from_preset(TOKENIZER_PRESET), source.overrides)
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
            raise ModelLoadError(f"cannot load the saved model {source.pretrained}: {error}") from error
    else:
        model = VideoGemmaForConditionalGeneration.from_components(
            lm=source.lm, clip=source.clip, videomamba=source.videomamba, **source.overrides
        )
    for path in source.projector_weights:
        load_projector_weights(model, path)
    return model


def build_processor(source: ModelSource, model_config: VideoGemmaConfig) -> Any:
    """The processor matching the model: the tiny tokenizer, the one saved beside the weights, or Gemma-3n's."""
    from videogemma.processing.processor import VideoGemmaProcessor

    kind = source.kind()
    if kind == "pretrained":
        processor = VideoGemmaProcessor.from_pretrained(source.pretrained)
        # Overrides (e.g. more frames) change the geometry: rebuild the settings from the model's config.
        if source.overrides:
            return VideoGemmaProcessor.from_config(
                model_config, processor.tokenizer, video_limits=processor.video_limits
            )
        check_processor_matches(processor, model_config, source.pretrained)
        return processor
    if kind == "preset" and source.tokenizer is None:
        if source.preset != TOKENIZER_PRESET:
            source.check_paths()  # says what to pass
        from videogemma.processing.tokenizer import build_tiny_tokenizer

        return VideoGemmaProcessor.from_config(model_config, build_tiny_tokenizer())
    from transformers import AutoTokenizer

    directory = source.tokenizer or source.lm
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{directory}: no tokenizer can be read from it ({error})") from error
    return VideoGemmaProcessor.from_config(model_config, tokenizer)


def load_processor(model: str | os.PathLike[str]) -> Any:
    """The processor whose checks validation applies: `tiny` (the preset's), or a folder holding a saved one
    (a model saved with `save_pretrained`, or a training run's `processor/`)."""
    from videogemma.processing.processor import PROCESSOR_CONFIG_NAME, VideoGemmaProcessor

    if str(model) == TOKENIZER_PRESET:
        return VideoGemmaProcessor.from_preset(TOKENIZER_PRESET)
    for folder in (Path(model), Path(model) / RUN_PROCESSOR_DIR):
        if (folder / PROCESSOR_CONFIG_NAME).is_file():
            return VideoGemmaProcessor.from_pretrained(folder)
    raise ModelLoadError(
        f"{model}: not `tiny` nor a folder with a saved processor ({PROCESSOR_CONFIG_NAME} in it or in its "
        "processor/ subfolder, as a saved model or a training run has)"
    )


def check_processor_matches(processor: Any, config: VideoGemmaConfig, where: str | os.PathLike) -> None:
    """A saved processor must give the model the frames and tokens its config reads; names each field that
    differs."""
    expected = {
        "num_frames": config.num_frames,
        "clip_image_size": config.vision_config.image_size,
        "videomamba_image_size": config.videomamba_config.image_size,
        "num_visual_tokens": config.num_visual_tokens,
        "image_token_id": config.image_token_id,
    }
    differing = [
        f"{name} (processor {getattr(processor, name)}, model {value})"
        for name, value in expected.items()
        if getattr(processor, name) != value
    ]
    if differing:
        raise ModelLoadError(f"{where}: the processor does not match the model: {', '.join(differing)}")


def load_projector_weights(model: nn.Module, path: str | Path, required: tuple[str, ...] = ()) -> list[str]:
    """Load `image_projector.*` / `video_projector.*` tensors (a `projectors.safetensors`); returns the
    projectors it set. The file must be whole, hold only projector tensors, every tensor of each projector it
    holds (and of each `required` one) with the model's shape, and no NaN or infinite value: anything else is
    a `ModelWeightsError` naming the file and the tensor."""
    from safetensors.torch import load_file

    from videogemma.modeling.integrity import (
        ModelWeightsError,
        check_finite,
        check_tensors_match,
        safetensors_header,
    )

    found = safetensors_header(path)
    loaded = sorted({name.split(".", 1)[0] for name in found})
    unknown = [p for p in loaded if p not in PROJECTOR_NAMES]
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


# ---- training runs -----------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """What loading needs of a run's `train_config.yaml`: the stage, the seed and the model source."""

    stage: str
    seed: int
    model: ModelSource


def read_run_summary(run_dir: Path) -> RunSummary:
    import yaml

    from videogemma.settings import from_mapping

    config_path = run_dir / RUN_CONFIG_NAME
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ModelLoadError(f"{config_path}: cannot read the run's configuration ({error})") from error
    if not isinstance(raw, dict) or not {"stage", "seed", "model"} <= set(raw):
        raise ModelLoadError(f"{config_path}: not a training run's configuration (stage, seed, model)")
    source = from_mapping(ModelSource, raw["model"], "model.", ModelLoadError)
    return RunSummary(stage=str(raw["stage"]), seed=int(raw["seed"]), model=source)


def load_run(run_dir: str | Path) -> tuple[Any, Any]:
    """(model, processor) of a finished training run, LoRA merged, ready for `generate`."""
    from videogemma.modeling.modeling_videogemma import VideoGemmaForConditionalGeneration
    from videogemma.processing.processor import VideoGemmaProcessor

    run_dir = Path(run_dir)
    if not (run_dir / RUN_CONFIG_NAME).is_file():
        raise ModelLoadError(f"{run_dir} is not a training run directory: {RUN_CONFIG_NAME} is missing")
    run = read_run_summary(run_dir)
    processor = VideoGemmaProcessor.from_pretrained(run_dir / RUN_PROCESSOR_DIR)
    if run.stage == "full":
        model_dir = run_dir / RUN_MODEL_DIR
        if not model_dir.is_dir():
            raise ModelLoadError(
                f"{run_dir}: the `full` run saved no {RUN_MODEL_DIR}/ directory (did it finish?)"
            )
        model = VideoGemmaForConditionalGeneration.from_pretrained(model_dir)
    else:
        projectors = run_dir / PROJECTORS_NAME
        if not projectors.is_file():
            raise ModelLoadError(f"{run_dir}: {PROJECTORS_NAME} is missing (did the run finish?)")
        model = build_model(run.model, run.seed)
        load_projector_weights(model, projectors, required=PROJECTOR_NAMES)
        if run.stage == "finetune":
            adapter_dir = run_dir / RUN_ADAPTER_DIR
            if not adapter_dir.is_dir():
                raise ModelLoadError(f"{run_dir}: the LoRA {RUN_ADAPTER_DIR}/ directory is missing")
            model = load_adapter(model, adapter_dir).merge_and_unload()
            # modules_to_save copies were merged back into the projectors; the file is the ground truth.
            load_projector_weights(model, projectors, required=PROJECTOR_NAMES)
    check_processor_matches(processor, model.config, run_dir / RUN_PROCESSOR_DIR)
    model.freeze_encoders(clip=True, videomamba=True)
    return model.eval(), processor


def load_adapter(model: Any, adapter_dir: Path) -> Any:
    """The PEFT model of `model` with the LoRA adapter saved in `adapter_dir`, strictly: the adapter file must be
    whole, hold every tensor the adapter's config creates, each with its shape, nothing else and no NaN or
    infinite value (PEFT alone would warn and leave what is missing at its random initialisation)."""
    import warnings

    from peft import PeftModel, get_peft_model_state_dict
    from peft.utils import SAFETENSORS_WEIGHTS_NAME
    from safetensors.torch import load_file

    from videogemma.modeling.integrity import (
        ModelWeightsError,
        check_finite,
        check_tensors_match,
        safetensors_header,
    )

    weights = adapter_dir / SAFETENSORS_WEIGHTS_NAME
    if not weights.is_file():
        raise ModelWeightsError(f"{weights}: missing (the run's LoRA adapter weights)")
    found = safetensors_header(weights)
    with warnings.catch_warnings():
        # PEFT warns about the tensors it skips; the check below names them and stops instead.
        warnings.simplefilter("ignore")
        peft_model = PeftModel.from_pretrained(model, adapter_dir, ignore_mismatched_sizes=True)
    expected = {name: tuple(t.shape) for name, t in get_peft_model_state_dict(peft_model).items()}
    check_tensors_match(expected, found, weights)
    check_finite(load_file(str(weights)).items(), weights)
    return peft_model


# ---- one call ----------------------------------------------------------------------------------------------


def load(
    preset_or_path: str | os.PathLike | None = None,
    *,
    lm: str | os.PathLike | None = None,
    clip: str | os.PathLike | None = None,
    videomamba: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    seed: int = DEFAULT_SEED,
    **config_overrides: Any,
) -> tuple[Any, Any]:
    """(model, processor) in eval mode, from a preset name, a saved model, a training run, or components.

    A preset builds randomly initialised weights from `seed` (the same weights every time); `e2b` needs
    `tokenizer` (a Gemma-3n tokenizer directory). A folder holding `train_config.yaml` is a training run; a
    folder holding `config.json` is a saved model. `dtype` (e.g. `torch.bfloat16` or "bfloat16") and `device`
    move the loaded model; `config_overrides` change `VideoGemmaConfig` fields of a preset, saved model or
    components (not of a training run); an unknown field is an error.
    """
    source = _source(preset_or_path, lm, clip, videomamba, tokenizer, config_overrides)
    if source is None:  # a training run
        model, processor = load_run(preset_or_path)
        return _place(model, dtype, device), processor
    source.check_paths()  # before anything is built: a missing tokenizer or path fails at once
    model = build_model(source, seed)
    processor = build_processor(source, model.config)
    model.freeze_encoders(clip=True, videomamba=True)
    return _place(model.eval(), dtype, device), processor


def _source(
    preset_or_path: str | os.PathLike | None,
    lm: str | os.PathLike | None,
    clip: str | os.PathLike | None,
    videomamba: str | os.PathLike | None,
    tokenizer: str | os.PathLike | None,
    overrides: dict[str, Any],
) -> ModelSource | None:
    """The model source `load` was asked for; None for a training run."""
    tokenizer = None if tokenizer is None else str(tokenizer)
    components = {"lm": lm, "clip": clip, "videomamba": videomamba}
    if any(components.values()):
        if preset_or_path is not None:
            raise ModelLoadError(
                "give either a preset / path or the components (lm, clip, videomamba), not both"
            )
        paths = {k: (None if v is None else str(v)) for k, v in components.items()}
        source = ModelSource(**paths, tokenizer=tokenizer, overrides=overrides)
        source.kind()
        return source
    if preset_or_path is None:
        raise ModelLoadError(
            "give a preset name, a model or run folder, or the components lm + clip + videomamba"
        )
    if str(preset_or_path) in PRESETS and not Path(preset_or_path).exists():
        return ModelSource(preset=str(preset_or_path), tokenizer=tokenizer, overrides=overrides)
    path = Path(preset_or_path)
    if (path / RUN_CONFIG_NAME).is_file():
        if overrides:
            raise ModelLoadError(f"{path} is a training run: its config cannot be overridden at load time")
        return None
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{path}: not a preset ({', '.join(sorted(PRESETS))}), a saved model (config.json) or a "
            f"training run ({RUN_CONFIG_NAME})"
        )
    return ModelSource(pretrained=str(path), overrides=overrides)


def _place(model: Any, dtype: torch.dtype | str | None, device: torch.device | str | None) -> Any:
    import torch

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is not None or device is not None:
        model = model.to(device=device, dtype=dtype)
    return model
