"""Loading: from a name or a folder to a model and its processor, one way for training, inference and serving.

    model, processor = videogemma.load("tiny")              # a preset, random weights from `seed`
    model, processor = videogemma.load("e2b", tokenizer="path/to/gemma-3n-E2B-it")   # random E2B weights
    model, processor = videogemma.load("path/to/model")     # a saved model (save_pretrained + processor)
    model, processor = videogemma.load("runs/demo_tiny")    # a training run (adapter / projectors merged)
    model, processor = videogemma.load(lm=..., clip=..., videomamba=...)   # the pretrained components

A training run starts from a `ModelSource` (its config's `model:` section) and `load_run` rebuilds the same
base from it, so inference answers with exactly the model a run trained. A preset model is randomly
initialised from the run's seed (on the CPU, in the run's dtype: the same weights on every machine), so the
frozen parts need not be saved.

Devices and dtypes (`videogemma.precision`): `load` picks CUDA + bf16 when the GPU supports it, else the CPU
in fp32 (bf16 on a CPU with native bf16), builds the model there directly (real components are read straight
to the device, in the target dtype) and prints what it picked in one line on stderr.

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
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videogemma.constants import (
    ATTN_IMPLEMENTATIONS,
    DEFAULT_INT4_ACTIVATIONS,
    PRESET_NAMES,
    PROJECTOR_NAMES,
    TRAINED_PROJECTORS_KEY,
)
from videogemma.errors import ModelLoadError
from videogemma.hub import is_hub_id
from videogemma.precision import AUTO, DTYPE_CHOICES

if TYPE_CHECKING:  # torch and transformers are imported when a model is loaded, not when the package is
    import torch
    from torch import nn

    from videogemma.config import VideoGemmaConfig

logger = logging.getLogger(__name__)

# The run directory's layout, read here and written by `train.run`.
RUN_CONFIG_NAME = "train_config.yaml"
PROJECTORS_NAME = "projectors.safetensors"
RUN_PROCESSOR_DIR = "processor"
RUN_MODEL_DIR = "model"
RUN_ADAPTER_DIR = "adapter"
DEFAULT_SEED = 0
# The preset whose tokenizer the project builds itself; every other model reads Gemma-3n's.
TOKENIZER_PRESET = "tiny"
# Components that may be Hub ids instead of local paths (downloaded when a network exists).
HUB_SOURCES = ("lm", "clip", "tokenizer")


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
    # The frozen base's dtype: auto | float32 | bfloat16 | float16. In training, "auto" is the dtype of the
    # training precision (bf16 → bfloat16, fp32 → float32; `full` trains everything: float32) and a run saves
    # the dtype it resolved to; what trains (LoRA, projectors) stays fp32 whatever it says.
    dtype: str = AUTO
    # Gemma-3n's attention: sdpa | eager | flash_attention_2 (None: transformers' default, sdpa).
    attn_implementation: str | None = None

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
        if sources[0] == "preset" and self.preset not in preset_names():
            raise ModelLoadError(f"unknown preset {self.preset!r}; choose one of {preset_names()}")
        return sources[0]

    def check_paths(self) -> None:
        """Every named path exists (lm, clip and tokenizer may be Hub ids), the settings are valid, and a preset
        without a tokenizer of its own is given one."""
        for key in ("pretrained", "lm", "clip", "videomamba", "tokenizer"):
            path = getattr(self, key)
            if path is not None and not Path(path).exists() and not (key in HUB_SOURCES and is_hub_id(path)):
                raise ModelLoadError(f"{key}: {path} does not exist")
        if self.dtype not in DTYPE_CHOICES:
            raise ModelLoadError(f"dtype: {self.dtype!r} is not one of {', '.join(DTYPE_CHOICES)}")
        if self.attn_implementation not in (None, *ATTN_IMPLEMENTATIONS):
            raise ModelLoadError(
                f"attn_implementation: {self.attn_implementation!r} is not one of {', '.join(ATTN_IMPLEMENTATIONS)}"
            )
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


def preset_names() -> list[str]:
    return sorted(PRESET_NAMES)


def preset_config(name: str, overrides: dict[str, Any]) -> VideoGemmaConfig:
    """The preset's config with `overrides` deep-merged (a sub-config dict changes only the fields it names)."""
    from videogemma.config import VideoGemmaConfig

    base = VideoGemmaConfig.from_preset(name)
    check_overrides(base, overrides)
    try:
        return VideoGemmaConfig.from_dict(_deep_merge(base.to_dict(), overrides))
    except (TypeError, ValueError) as error:
        raise ModelLoadError(f"preset {name!r} with overrides {overrides}: {error}") from error


def build_model(
    source: ModelSource,
    seed: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    fp32_modules: tuple[str, ...] = (),
    per_layer_on_disk: bool | None = False,
) -> nn.Module:
    """The model before any stage-specific freezing or LoRA, built in `dtype` (default fp32) without an fp32
    copy first; the top-level modules in `fp32_modules` (what a training stage trains) and VideoMamba's SSM
    parameters are fp32 whatever `dtype` says. Real components and saved models are read straight to
    `device`; a preset is built on the CPU, so that a seed gives the same weights everywhere, then moved.
    `per_layer_on_disk`: leave Gemma-3n's per-layer embedding table in its safetensors file (inference only;
    None: where the source has one, True: required)."""
    import torch

    from videogemma.config import VideoGemmaConfig
    from videogemma.modeling.modeling_videogemma import VideoGemmaForConditionalGeneration
    from videogemma.precision import default_dtype

    dtype = dtype or torch.float32
    kind = source.kind()
    if kind != "preset":
        check_overrides(VideoGemmaConfig.from_preset(TOKENIZER_PRESET), source.overrides)
    if kind == "preset":
        if per_layer_on_disk:
            raise ModelLoadError(
                f"preset {source.preset!r} has no weights file: its per-layer table cannot stay on disk"
            )
        config = preset_config(source.preset, source.overrides)
        torch.manual_seed(seed)
        with default_dtype(dtype):
            model = VideoGemmaForConditionalGeneration(config)
        for name in fp32_modules:
            getattr(model, name).float()
        model.to(device)
    elif kind == "pretrained":
        model = _load_pretrained(source, dtype, torch.device(device), fp32_modules, per_layer_on_disk)
    else:
        model = VideoGemmaForConditionalGeneration.from_components(
            lm=source.lm, clip=source.clip, videomamba=source.videomamba, dtype=dtype, device=device,
            fp32_modules=fp32_modules, per_layer_on_disk=per_layer_on_disk, **source.overrides,
        )  # fmt: skip
    for path in source.projector_weights:
        load_projector_weights(model, path)
    set_attn_implementation(model, source.attn_implementation)
    return model


def _load_pretrained(
    source: ModelSource,
    dtype: torch.dtype,
    device: torch.device,
    fp32_modules: tuple[str, ...],
    per_layer_on_disk: bool | None = False,
) -> nn.Module:
    """A saved VideoGemma in `dtype` on `device`; the `fp32_modules` read again from its files in fp32 (the
    bf16 load would have rounded them). A quantised one (`quantization.json`), or one whose per-layer table
    stays on disk, is read tensor by tensor (`modeling.lean`)."""
    import torch

    from videogemma.modeling.integrity import ModelWeightsError, check_saved_weights
    from videogemma.modeling.modeling_videogemma import VideoGemmaForConditionalGeneration
    from videogemma.modeling.quantization import QuantizationSettings

    quantized = QuantizationSettings.read(Path(source.pretrained)) is not None
    if per_layer_on_disk is None:
        per_layer_on_disk = bool(check_saved_weights(Path(source.pretrained)))
    if per_layer_on_disk or quantized:
        from videogemma.modeling.lean import build_from_saved

        if fp32_modules:
            what = "a quantised model" if quantized else "a model with its per-layer table on disk"
            raise ModelLoadError(f"{source.pretrained}: {what} is for inference, not training")
        return build_from_saved(
            VideoGemmaForConditionalGeneration, source.pretrained, dtype, device, per_layer_on_disk,
            **source.overrides,
        )  # fmt: skip

    placement = {} if device.type == "cpu" else {"device_map": {"": str(device)}}
    try:
        model = VideoGemmaForConditionalGeneration.from_pretrained(
            source.pretrained, dtype=dtype, **placement, **source.overrides
        )
    except ModelWeightsError:
        raise  # it names the file and the tensor already
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load the saved model {source.pretrained}: {error}") from error
    if fp32_modules and dtype != torch.float32:
        from videogemma.modeling.checkpoints import CheckpointFiles

        files = CheckpointFiles(Path(source.pretrained))
        for name in fp32_modules:
            module = getattr(model, name).float()
            keys = {key: f"{name}.{key}" for key in module.state_dict()}
            module.load_state_dict(files.read(keys, desc=f"{name} in fp32", device=device))
    return model


def set_attn_implementation(model: nn.Module, implementation: str | None) -> None:
    """Gemma-3n's attention implementation (its config's `_attn_implementation`); None keeps the default."""
    if implementation is None:
        return
    if implementation not in ATTN_IMPLEMENTATIONS:
        raise ModelLoadError(
            f"attn_implementation: {implementation!r} is not one of {', '.join(ATTN_IMPLEMENTATIONS)}"
        )
    try:
        model.language_model.set_attn_implementation(implementation)
    except (ImportError, ValueError) as error:
        raise ModelLoadError(f"attn_implementation {implementation}: {error}") from error


def attention_of(model: nn.Module) -> str | None:
    return getattr(model.language_model.config, "_attn_implementation", None)


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
    # A Hub id (e.g. the `lm` a model was downloaded from) brings its tokenizer along; a local path is read
    # as it is, never looked up online.
    local = not is_hub_id(directory)
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=local)
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
    projectors it set. The model's `config.trained_projectors` gains those the file's metadata says were
    trained (a file without that note: every projector it holds). The file must be whole, hold only projector tensors, every tensor of each projector it
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
    _note_trained_projectors(model.config, path, loaded)
    return projectors


def _note_trained_projectors(config: Any, path: str | Path, loaded: list[str]) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as weights:
        note = (weights.metadata() or {}).get(TRAINED_PROJECTORS_KEY)
    trained = loaded if note is None else [name for name in note.split(",") if name in PROJECTOR_NAMES]
    if config.trained_projectors is not None or note is not None:
        config.trained_projectors = sorted({*(config.trained_projectors or []), *trained})


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


def load_run(
    run_dir: str | Path,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    per_layer_on_disk: bool | None = False,
) -> tuple[Any, Any]:
    """(model, processor) of a finished training run, LoRA merged, ready for `generate`, in `dtype` (default
    fp32) on `device`. A preset's random base is rebuilt in the dtype the run trained it in (its weights depend on
    it), then converted; real components are read in `dtype` directly. `per_layer_on_disk`: see `build_model`
    (a run from a preset has no file for it; None leaves it in memory then)."""
    import torch

    from videogemma.precision import dtype_from_name
    from videogemma.processing.processor import VideoGemmaProcessor

    run_dir = Path(run_dir)
    dtype = dtype or torch.float32
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
        model = _load_pretrained(
            ModelSource(pretrained=str(model_dir)), dtype, torch.device(device), (), per_layer_on_disk
        )
        set_attn_implementation(model, run.model.attn_implementation)
    else:
        projectors = run_dir / PROJECTORS_NAME
        if not projectors.is_file():
            raise ModelLoadError(f"{run_dir}: {PROJECTORS_NAME} is missing (did the run finish?)")
        build_dtype = dtype
        if run.model.kind() == "preset":  # runs from before the dtype was saved built presets in fp32
            build_dtype = dtype_from_name("float32" if run.model.dtype == AUTO else run.model.dtype)
        model = build_model(run.model, run.seed, build_dtype, device, per_layer_on_disk=per_layer_on_disk)
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
    return _place(model.eval(), dtype, device), processor


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
    attn_implementation: str | None = None,
    seed: int = DEFAULT_SEED,
    quiet: bool = False,
    quantize: str | None = None,
    quantize_lm_head: bool = False,
    int4_activations: str = DEFAULT_INT4_ACTIVATIONS,
    per_layer_on_disk: bool | None = None,
    compile_prefill: bool = False,
    **config_overrides: Any,
) -> tuple[Any, Any]:
    """(model, processor) in eval mode, from a preset name, a saved model, a training run, or components.

    A preset builds randomly initialised weights from `seed` (the same weights every time); `e2b` needs
    `tokenizer` (a Gemma-3n tokenizer directory or Hub id). A folder holding `train_config.yaml` is a training
    run; a folder holding `config.json` is a saved model. `device` (default: CUDA when available, else the
    CPU) and `dtype` (`torch.bfloat16` or "bfloat16"...; default "auto": bf16 where the device computes it
    natively, else fp32) are where the model is built, directly; `attn_implementation` is Gemma-3n's attention
    (sdpa, eager, flash_attention_2). What was picked is printed in one line on stderr (unless `quiet`).
    `config_overrides` change `VideoGemmaConfig` fields of a preset, saved model or components (not of a
    training run); an unknown field is an error.

    On-device options: `quantize` ("int8" / "int4") the text decoder's linear layers (weight-only; and the LM
    head with `quantize_lm_head`; a saved quantised model is loaded as it was saved); `int4_activations`: an
    int4 decoder's decode step rounds its layers' inputs to int8 ("int8") or not ("exact"); `per_layer_on_disk`
    leaves Gemma-3n's per-layer embedding table (4 GiB at E2B) memory-mapped in its safetensors file (None:
    on the CPU, wherever the weights are a safetensors file; a preset has none); `compile_prefill` compiles
    the decoder layers for the prefill with `torch.compile` (CPU only; needs a C++ compiler; the first
    prompt pays the compile).
    """
    from videogemma.modeling.quantization import check_int4_activations, check_method
    from videogemma.precision import describe, resolve_device, resolve_dtype

    check_method(quantize)
    check_int4_activations(int4_activations)
    target_device = resolve_device(device)
    target_dtype = resolve_dtype(dtype, target_device)
    if per_layer_on_disk is None and target_device.type != "cpu":
        per_layer_on_disk = False
    source = _source(preset_or_path, lm, clip, videomamba, tokenizer, config_overrides)
    if source is None:  # a training run
        model, processor = load_run(preset_or_path, target_dtype, target_device, per_layer_on_disk)
        set_attn_implementation(model, attn_implementation)
    else:
        source.attn_implementation = attn_implementation
        source.check_paths()  # before anything is built: a missing tokenizer or path fails at once
        model = build_model(source, seed, target_dtype, target_device, per_layer_on_disk=per_layer_on_disk)
        processor = build_processor(source, model.config)
        model.freeze_encoders(clip=True, videomamba=True)
        model = _place(model.eval(), target_dtype, target_device)
    prepare_decoder(model, quantize, quantize_lm_head, int4_activations)
    if compile_prefill:
        from videogemma.modeling.compiled_prefill import compile_prefill as compile_layers

        compile_layers(model.language_model, notice=None if quiet else _say)
    if not quiet:
        picked = dtype in (None, AUTO)
        print(describe(target_device, target_dtype, picked, **on_device_summary(model)), file=sys.stderr)
    return model, processor


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare_decoder(
    model: Any, method: str | None, lm_head: bool = False, int4_activations: str = DEFAULT_INT4_ACTIVATIONS
) -> None:
    """Ready the text decoder's products for inference: quantise it (unless it already is: a saved quantised
    model), pack it for the CPU kernels, give its plain linear layers the one-row product and AltUp its fused
    prediction and correction, its norms the C pass, its sparse MLPs their cached quantile, its MLPs the C
    activation over a prompt and its layers the prompt pass and the few-call decode step, and put the linear
    layers' weights on 2 MiB pages (a CPU reads them faster there); on the CPU, large temporary tensors reused from
    the heap (a prompt's activations and dequantised weights, without fresh page faults). `int4_activations`:
    see `quantization.set_int4_activations`."""
    from torch import nn

    from videogemma.modeling.altup_predict import use_fused_altup_predict
    from videogemma.modeling.decode_layer import use_decode_steps
    from videogemma.modeling.gated_mlp import use_gated_mlps
    from videogemma.modeling.memory_pages import (
        give_back_freed_memory,
        place_on_huge_pages,
        reuse_freed_memory,
    )
    from videogemma.modeling.prompt_layer import use_prompt_steps
    from videogemma.modeling.quantization import (
        QuantizedLinear,
        prepare_for_inference,
        quantize_language_model,
        quantized_method,
        set_int4_activations,
    )
    from videogemma.modeling.row_norms import use_row_norms
    from videogemma.modeling.row_products import use_row_vector_products
    from videogemma.modeling.sparse_activation import use_cached_sparsity

    current = quantized_method(model)
    if method is not None and current is None:
        quantize_language_model(model, method, lm_head=lm_head)
    elif method is not None and method != current:
        raise ModelLoadError(f"the model was saved quantised to {current}; it cannot be loaded as {method}")
    prepare_for_inference(model)
    set_int4_activations(model, int4_activations)
    use_row_vector_products(model.language_model)
    use_fused_altup_predict(model.language_model)
    use_row_norms(model.language_model)
    use_cached_sparsity(model.language_model)
    use_gated_mlps(model.language_model)
    use_prompt_steps(model.language_model)
    use_decode_steps(model.language_model)  # after the prompt pass: its fallback
    place_on_huge_pages(model.language_model, (nn.Linear, QuantizedLinear))
    if next(model.parameters()).device.type == "cpu":
        reuse_freed_memory()
        warm_up_decoder(model)
        give_back_freed_memory()


# Tokens of the pass `warm_up_decoder` makes: enough for a prompt's code paths (not a decode step's).
WARM_UP_TOKENS = 8


def warm_up_decoder(model: Any) -> None:
    """A few-token prompt and one decode step through the text decoder, at load: what its first pass builds to
    keep (the C kernels' library, oneDNN's engine, the layers' cached values and decode plans) is built now, not
    among a real prompt's large temporary tensors, where each small block kept would pin the heap around it. At
    E2B int4 on this CPU the first video prompt's peak fell 4.39 → 3.68 GiB (docs/ONDEVICE.md)."""
    import torch

    from videogemma.modeling.growing_cache import GrowingCache

    text_config = model.config.text_config
    ids = torch.full((1, WARM_UP_TOKENS), text_config.bos_token_id or 0, dtype=torch.long)
    with torch.inference_mode():
        cache = GrowingCache(config=text_config)
        model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        model(
            input_ids=ids[:, :1],
            cache=cache,
            use_cache=True,
            cache_position=torch.tensor([WARM_UP_TOKENS]),
            logits_to_keep=1,
        )


def on_device_summary(model: Any) -> dict[str, str | None]:
    """What `load` says about a model beside its device and dtype: attention, quantisation (and an int4
    decoder's decode-step inputs), per-layer table, compiled prefill."""
    from videogemma.modeling.compiled_prefill import is_prefill_compiled
    from videogemma.modeling.disk_embedding import PER_LAYER_EMBEDDING, DiskEmbedding
    from videogemma.modeling.quantization import int4_activations_in_use, quantized_method

    table = getattr(model.language_model.model, PER_LAYER_EMBEDDING)
    return {
        "attention": attention_of(model),
        "decoder": quantized_method(model),
        "int4 decode inputs": int4_activations_in_use(model),
        "per-layer embeddings": "on disk" if isinstance(table, DiskEmbedding) else None,
        "prefill": "compiled" if is_prefill_compiled(model.language_model) else None,
    }


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
    if str(preset_or_path) in preset_names() and not Path(preset_or_path).exists():
        return ModelSource(preset=str(preset_or_path), tokenizer=tokenizer, overrides=overrides)
    path = Path(preset_or_path)
    if (path / RUN_CONFIG_NAME).is_file():
        if overrides:
            raise ModelLoadError(f"{path} is a training run: its config cannot be overridden at load time")
        return None
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{path}: not a preset ({', '.join(preset_names())}), a saved model (config.json) or a "
            f"training run ({RUN_CONFIG_NAME})"
        )
    return ModelSource(pretrained=str(path), overrides=overrides)


def _place(model: Any, dtype: torch.dtype, device: torch.device | str) -> Any:
    """The model on `device` with its floating parameters in `dtype`, but VideoMamba's SSM parameters (fp32)
    and the buffers: those are computed constants such as RoPE's inverse frequencies, which bf16 would round
    (a 0.4 % error in a frequency turns by radians at position 2,500). A no-op where it already is."""
    from videogemma.modeling.videomamba import keeps_fp32

    model.to(device)
    for name, parameter in model.named_parameters():
        if parameter.is_floating_point() and parameter.dtype != dtype and not keeps_fp32(name):
            parameter.data = parameter.data.to(dtype)
    return model
