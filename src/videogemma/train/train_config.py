"""The training configuration: one YAML file, overridable from the command line, checked before training.

A config has a few sections (`model`, `data`, `lora`) and flat optimisation settings:

```yaml
stage: finetune                 # video-proj | image-proj | finetune | full (ARCHITECTURE §7)
output_dir: runs/qved_finetune
model: {preset: tiny}           # or {pretrained: DIR} or {lm: DIR, clip: DIR, videomamba: FILE}
data: {train_file: data/qved/qved_train.json, val_file: data/qved/qved_val.json}
learning_rate: 2.0e-4           # the LoRA / main learning rate
projector_learning_rate: 1.0e-4
```

Overrides use dotted keys (`--lora.r 16 --learning_rate 1e-4 --model.overrides.num_frames 16`); values are
parsed as YAML and converted to the field's type, so `1e-4` is a float even though YAML 1.1 reads a string.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from videogemma.errors import ModelLoadError, VideoGemmaError
from videogemma.loading import ModelSource, preset_config
from videogemma.precision import AUTO, PRECISION_CHOICES, PRECISION_DTYPES
from videogemma.settings import from_mapping

STAGES = ("video-proj", "image-proj", "finetune", "full")
# The shipped configs (package data): `--config qved_finetune` names one of them.
SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# The text decoder's attention and MLP projections, and nothing else (never PEFT's "all-linear", which would
# also hit AltUp, LAuReL and the per-layer-input projections of Gemma-3n). PEFT full-matches this on module names.
LORA_TARGET_REGEX = (
    r"language_model\.model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
)


class TrainConfigError(VideoGemmaError):
    """A training configuration that cannot work; the message names the key and the reason."""


@dataclass
class DataSettings:
    train_file: str = ""
    val_file: str | None = None
    # Videos are resolved against this folder; default: the folder of the split file.
    dataset_root: str | None = None
    bad_sample_policy: str = "skip"  # "skip" | "strict"
    # DataLoader worker processes per training process; None: `default_num_workers()` (0 on a CPU, where the
    # cores compute; on a GPU machine up to 4 per process, so that decoding keeps up with the GPU).
    num_workers: int | None = None
    # Decoded frames kept in memory, per data-loading process, so later epochs skip decoding. 0 = off.
    frame_cache_mb: int = 0
    # Bounds on reading a video (fields of `videogemma.processing.video_source.VideoLimits`, e.g. {max_duration: 600});
    # unset fields keep the processor's. Saved with the run's processor, so inference applies them too.
    video_limits: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoraSettings:
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_regex: str = LORA_TARGET_REGEX


@dataclass
class TrainConfig:
    stage: str = "finetune"
    output_dir: str = "runs/videogemma"
    model: ModelSource = field(default_factory=ModelSource)
    data: DataSettings = field(default_factory=DataSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    # Optimisation. `learning_rate` trains LoRA (finetune) or everything else trainable; projectors get
    # `projector_learning_rate` when set.
    learning_rate: float = 2e-4
    projector_learning_rate: float | None = None
    weight_decay: float = 0.0
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.05  # below 1: a ratio of the total steps (as TrainingArguments reads it)
    num_train_epochs: float = 3.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    # Samples per optimiser step over all processes; gradient accumulation makes up the difference.
    effective_batch_size: int = 64
    max_grad_norm: float = 1.0
    # Video-answer alignment (train/answer_alignment.py), stage `full` only: this weight times that auxiliary
    # loss is added to the LM loss; it gives encoders trained from scratch a direct signal. 0 = off.
    answer_alignment_weight: float = 0.0
    answer_alignment_temperature: float = 0.1
    # "auto" (bf16 where the device computes it natively: CUDA with bf16, CPUs with AVX512-BF16/AMX; else
    # fp32) | "bf16" | "fp16" | "fp32". The frozen base is built in this precision's dtype (model.dtype auto).
    precision: str = "auto"
    gradient_checkpointing: bool = True
    eval_steps: int = 50
    eval_on_start: bool = False  # a validation pass before the first step (the starting loss)
    save_steps: int | None = None  # default: eval_steps (the best checkpoint needs both on the same steps)
    save_total_limit: int = 2
    logging_steps: int = 1
    max_train_minutes: float | None = None  # stop (and save) once training has run this long
    seed: int = 42
    # torch intra-op threads per process (None: torch's default). The `tiny` model's ops are too small to gain
    # from threads: on a busy 2-core machine 1 thread ran ~5× faster than 2.
    torch_threads: int | None = None
    # "auto": cache the frozen encoders' features when both encoders are frozen and no augmentation is on.
    feature_cache: str = "auto"  # "auto" | "off"
    feature_cache_dir: str | None = None  # default: <output_dir>/../.feature_cache (shared by sibling runs)
    nonfinite_loss: str = "stop"  # "stop" | "skip"
    deepspeed: str | None = None  # a DeepSpeed JSON config (a path, or a shipped one: zero2, zero3)
    plots: bool = True

    # ---- derived ------------------------------------------------------------------------------------------

    def resolved_num_workers(self) -> int:
        return default_num_workers() if self.data.num_workers is None else self.data.num_workers

    def gradient_accumulation_steps(self, world_size: int) -> int:
        per_step = self.per_device_train_batch_size * world_size
        if self.effective_batch_size % per_step:
            raise TrainConfigError(
                f"effective_batch_size ({self.effective_batch_size}) must be a multiple of per_device_train_batch_size "
                f"({self.per_device_train_batch_size}) × processes ({world_size})"
            )
        return self.effective_batch_size // per_step

    @property
    def resolved_save_steps(self) -> int:
        return self.save_steps if self.save_steps is not None else self.eval_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Every check that needs no model weights: fail before anything slow starts."""
        if self.stage not in STAGES:
            raise TrainConfigError(f"stage: {self.stage!r} is not one of {', '.join(STAGES)}")
        try:
            if self.model.kind() == "preset":  # the geometry of the overrides, before anything is built
                preset_config(self.model.preset, self.model.overrides)
            self.model.check_paths()
        except ModelLoadError as error:
            raise TrainConfigError(f"model: {error}") from error
        if not self.data.train_file:
            raise TrainConfigError("data.train_file: required (a conversation JSON/JSONL split file)")
        for key, path in (("data.train_file", self.data.train_file), ("data.val_file", self.data.val_file)):
            if path is not None and not Path(path).is_file():
                raise TrainConfigError(f"{key}: split file {path} does not exist")
        if self.data.dataset_root is not None and not Path(self.data.dataset_root).is_dir():
            raise TrainConfigError(f"data.dataset_root: {self.data.dataset_root} is not a directory")
        _check_choice("data.bad_sample_policy", self.data.bad_sample_policy, ("skip", "strict"))
        for key in ("num_workers", "frame_cache_mb"):
            if (getattr(self.data, key) or 0) < 0:
                raise TrainConfigError(f"data.{key}: must be ≥ 0, got {getattr(self.data, key)}")
        try:
            from videogemma.processing.video_source import VideoLimits

            VideoLimits.from_value(self.data.video_limits)
        except (TypeError, ValueError) as error:
            raise TrainConfigError(f"data.video_limits: {error}") from None
        _check_choice("precision", self.precision, PRECISION_CHOICES)
        self._check_model_dtype()
        _check_choice("feature_cache", self.feature_cache, ("auto", "off"))
        _check_choice("nonfinite_loss", self.nonfinite_loss, ("stop", "skip"))
        for key in ("per_device_train_batch_size", "effective_batch_size", "eval_steps", "logging_steps"):
            if getattr(self, key) <= 0:
                raise TrainConfigError(f"{key}: must be positive, got {getattr(self, key)}")
        if self.resolved_save_steps % self.eval_steps:
            raise TrainConfigError(
                f"save_steps ({self.resolved_save_steps}) must be a multiple of eval_steps ({self.eval_steps}) "
                "so that the best checkpoint by validation loss is one that was saved"
            )
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise TrainConfigError("give num_train_epochs > 0 or max_steps > 0")
        if self.stage == "finetune" and (self.lora.r <= 0 or self.lora.alpha <= 0):
            raise TrainConfigError(
                f"lora: r and alpha must be positive, got r={self.lora.r} alpha={self.lora.alpha}"
            )
        if self.deepspeed is not None and not Path(self.deepspeed).is_file():
            shipped = SHIPPED_CONFIGS / "deepspeed" / f"{Path(self.deepspeed).stem}.json"
            if Path(self.deepspeed).parent != Path(".") or not shipped.is_file():
                raise TrainConfigError(f"deepspeed: config file {self.deepspeed} does not exist")
            self.deepspeed = str(shipped)
        if self.answer_alignment_weight < 0 or self.answer_alignment_temperature <= 0:
            raise TrainConfigError(
                f"answer_alignment_weight must be ≥ 0 and answer_alignment_temperature > 0, got "
                f"{self.answer_alignment_weight} and {self.answer_alignment_temperature}"
            )
        if self.answer_alignment_weight > 0 and self.stage != "full":
            raise TrainConfigError(
                f"answer_alignment_weight: for stage full (encoders trained from scratch), not {self.stage!r}; "
                "set it to 0"
            )

    def _check_model_dtype(self) -> None:
        dtype = self.model.dtype
        if dtype == AUTO:
            return
        if self.stage == "full" and dtype != "float32":
            raise TrainConfigError(
                f"model.dtype: {dtype} with stage full, which trains every weight (kept in fp32): use auto or float32"
            )
        from videogemma.precision import resolve_precision

        wanted = PRECISION_DTYPES[resolve_precision(self.precision)]
        if self.deepspeed is not None and dtype != wanted:
            raise TrainConfigError(
                f"model.dtype: {dtype} with DeepSpeed, which holds the whole model in the precision's dtype "
                f"({wanted}, with fp32 master weights in its optimizer): use auto or {wanted}"
            )


def default_num_workers() -> int:
    """DataLoader workers per process when `data.num_workers` is unset: 0 without CUDA (the CPU cores are
    busy computing), else min(4, the cores per process on this machine)."""
    import os

    import torch

    if not torch.cuda.is_available():
        return 0
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(4, (os.cpu_count() or 1) // processes))


def model_dtype_name(config: TrainConfig, precision: str) -> str:
    """The dtype the run builds its model in: `model.dtype`, or for auto the resolved precision's dtype
    (`full` trains every weight: float32)."""
    if config.model.dtype != AUTO:
        return config.model.dtype
    if config.stage == "full" and config.deepspeed is None:
        return "float32"
    return PRECISION_DTYPES[precision]


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TrainConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")


# ---- loading ------------------------------------------------------------------------------------------------


def load_train_config(
    path: str | Path | None = None, overrides: list[str] | None = None, validate: bool = True
) -> TrainConfig:
    """Read a YAML config (or start from the defaults), apply `--key value` overrides, validate (a saved run's
    config is read back with `validate=False`: its data files need not exist any more)."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise TrainConfigError(f"{path}: the top level must be a mapping of keys to values")
    for key, value in parse_overrides(overrides or []):
        _set_dotted(raw, key, value)
    config = from_mapping(TrainConfig, raw, error=TrainConfigError)
    if validate:
        config.validate()
    return config


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config file's path, or the shipped config of that name (`qved_finetune` or `qved_finetune.yaml`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SHIPPED_CONFIGS / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml")))
    raise TrainConfigError(f"config file {path} does not exist (shipped configs: {names})")


def parse_overrides(args: list[str]) -> list[tuple[str, Any]]:
    """`["--lora.r", "16", "--stage=full"]` → `[("lora.r", 16), ("stage", "full")]`."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise TrainConfigError(f"override {arg!r}: expected --key value")
        if "=" in arg:
            key, text = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise TrainConfigError(f"override {arg}: missing its value")
            key, text = arg[2:], args[i + 1]
            i += 2
        pairs.append((key.replace("-", "_"), yaml.safe_load(text)))
    return pairs


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise TrainConfigError(f"override {key}: {part} is not a section")
    node[parts[-1]] = value


def save_train_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
