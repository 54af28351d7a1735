"""`run_training`: one training run, top to bottom, into one run directory.

<output_dir>/
  train_config.yaml          the resolved configuration (what `load_run` rebuilds the model from)
  processor/                 tokenizer + processor settings
  model/                     `full` stage: the whole model (save_pretrained, safetensors)
  adapter/                   `finetune`: the LoRA adapter (PEFT, safetensors; projectors included)
  projectors.safetensors     both ETPs (every stage)
  trainer_state.json         the Trainer's state (log history, best checkpoint)
  metrics.jsonl, plots/      the metrics log and its PNG plots
  checkpoint-<step>/         Trainer checkpoints (`--resume` continues from the newest intact one)

A folder holding a run is not trained into again unless `--resume` continues it or `--overwrite` replaces it
(`run_files`). Checkpoints and the final `model/` / `adapter/` are staged and renamed into place when whole.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers.trainer_callback import ProgressCallback

from videogemma.constants import TRAINED_PROJECTORS_KEY
from videogemma.loading import (
    PROJECTOR_NAMES,
    PROJECTORS_NAME,
    RUN_ADAPTER_DIR,
    RUN_CONFIG_NAME,
    RUN_MODEL_DIR,
    RUN_PROCESSOR_DIR,
    build_model,
    build_processor,
)
from videogemma.processing.video_source import VideoLimits
from videogemma.train.answer_alignment import AnswerAlignment
from videogemma.train.callbacks import (
    METRICS_LOG_NAME,
    CompactProgressCallback,
    MetricsLogCallback,
    PlotCallback,
    TimeLimitCallback,
)
from videogemma.train.feature_cache import FeatureCache, module_weights_hash
from videogemma.train.run_files import (
    check_output_dir,
    clear_run,
    newest_intact_checkpoint,
    publish_folder,
    remove_staging,
    staging_path,
)
from videogemma.train.stages import (
    base_model,
    check_trainable,
    encoders_frozen,
    prepare_model_for_stage,
)
from videogemma.train.train_config import TrainConfig, TrainConfigError, save_train_config

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Everything a run writes into its directory besides checkpoints (what --overwrite removes).
RUN_FILES = (
    RUN_CONFIG_NAME,
    RUN_PROCESSOR_DIR,
    RUN_MODEL_DIR,
    RUN_ADAPTER_DIR,
    PROJECTORS_NAME,
    "trainer_state.json",
    METRICS_LOG_NAME,
    "plots",
)


def newest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest checkpoint that reads back whole (`run_files.checkpoint_problem`); newer ones that do not
    are passed over."""
    return newest_intact_checkpoint(Path(output_dir))[0]


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint `--resume` continues from: the newest intact one, with a warning for each newer damaged
    one passed over; None when there is no checkpoint. Checkpoints that are all damaged are an error."""
    checkpoint, problems = newest_intact_checkpoint(run_dir)
    for problem in problems:
        logger.warning("--resume: passing over a damaged checkpoint: %s", problem)
    if checkpoint is None and problems:
        raise TrainConfigError(
            f"--resume: every checkpoint in {run_dir} is damaged (newest: {problems[0]}); "
            "pass --overwrite to train from the beginning"
        )
    if checkpoint is not None and problems:
        logger.warning("--resume: continuing from %s instead", checkpoint.name)
    return checkpoint


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def precision_flags(precision: str) -> dict[str, bool]:
    """bf16 where the hardware computes it natively (`auto`), else fp32; explicit choices are taken as given."""
    from videogemma.precision import resolve_precision

    precision = resolve_precision(precision)
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def feature_cache_for(
    config: TrainConfig, model: torch.nn.Module, processor: Any, augment: bool
) -> FeatureCache | None:
    """The frozen-feature cache when it is valid: both encoders frozen and no random augmentation."""
    if config.feature_cache == "off" or not encoders_frozen(config.stage) or augment:
        return None
    from videogemma.precision import resolve_precision

    videogemma = base_model(model)
    directory = config.feature_cache_dir or str(Path(config.output_dir).resolve().parent / ".feature_cache")
    mc = videogemma.config
    settings = {
        **processor.to_dict(),
        "chunk_size": mc.chunk_size,
        "keyframes_per_chunk": mc.keyframes_per_chunk,
        "clip_select_layer": mc.clip_select_layer,
        "encoder_dtype": str(next(videogemma.clip.parameters()).dtype),
        "precision": resolve_precision(config.precision),  # the autocast the features are computed under
    }
    return FeatureCache(directory, module_weights_hash(videogemma.clip, videogemma.videomamba), settings)


def answer_alignment_for(
    config: TrainConfig, train_dataset: Any, processor: Any, model_config: Any
) -> AnswerAlignment | None:
    """The video-answer alignment loss over the training split's distinct answers, when the config asks."""
    if config.answer_alignment_weight <= 0:
        return None
    # Stage `full` trains the encoders, so the dataset is never the feature-cache wrapper.
    alignment = AnswerAlignment.from_records(
        train_dataset.records, processor, config.answer_alignment_temperature, model_config.image_token_id
    )
    logger.info("answer alignment: %d distinct answers in %s", len(alignment), config.data.train_file)
    return alignment


def _deepspeed_cpu_state() -> dict[str, Any]:
    """DeepSpeed without CUDA: set up the process group ourselves (gloo) and have the Trainer use it.

    `transformers` starts DeepSpeed without a backend name, and `accelerate` then counts a CPU process group
    as one process (each rank would train alone on the whole data); naming gloo gives the right world size.
    """
    from datetime import timedelta

    from accelerate.state import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend="gloo", timeout=timedelta(minutes=30))
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    return {"accelerator_config": {"use_configured_state": True}}


def training_arguments(config: TrainConfig, has_eval: bool) -> Any:
    from transformers import TrainingArguments

    distributed = world_size() > 1
    deepspeed_cpu = (
        _deepspeed_cpu_state()
        if config.deepspeed is not None and distributed and not torch.cuda.is_available()
        else {}
    )
    return TrainingArguments(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps(world_size()),
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,  # a float < 1 is a ratio of the total steps
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        max_grad_norm=config.max_grad_norm,
        **precision_flags(config.precision),
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.eval_steps if has_eval else None,
        eval_on_start=config.eval_on_start and has_eval,
        save_strategy="steps",
        save_steps=config.resolved_save_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=has_eval,
        metric_for_best_model="eval_loss" if has_eval else None,
        greater_is_better=False if has_eval else None,
        prediction_loss_only=True,
        label_names=["labels"],
        logging_steps=config.logging_steps,
        logging_first_step=True,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=config.resolved_num_workers(),
        # Workers live across epochs: their frame caches (data.frame_cache_mb) with them.
        dataloader_persistent_workers=config.resolved_num_workers() > 0,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,
        report_to=config.report_to_list(),
        deepspeed=config.deepspeed,
        ddp_backend="gloo" if distributed and not torch.cuda.is_available() else None,
        # Without it, `accelerate` sets up the gloo process group but treats the run as one process: no DDP
        # wrapper, each rank training alone on its shard with its own gradients.
        use_cpu=not torch.cuda.is_available(),
        # Every trained parameter gets a gradient at every step (`stages` freezes what never does), so DDP
        # need not search the graph for unused ones after each forward.
        ddp_find_unused_parameters=False if distributed else None,
        disable_tqdm=False,
        **deepspeed_cpu,
    )


def run_training(
    config: TrainConfig,
    resume: bool = False,
    extra_callbacks: list[Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Train as `config` says; returns the run directory. An `output_dir` that holds a run is refused unless
    `resume` (continue from its newest intact checkpoint) or `overwrite` (remove the run's files first).
    `extra_callbacks`: more Trainer callbacks (timing)."""
    from transformers import set_seed

    from videogemma.train.data import build_datasets
    from videogemma.train.trainer import VideoGemmaTrainer

    config.validate()
    run_dir = Path(config.output_dir)
    check_output_dir(run_dir, resume, overwrite, RUN_FILES)
    checkpoint = resume_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        # A fresh run (the demo always passes --resume) is no cause for a warning; damaged checkpoints are.
        damaged = run_dir.is_dir() and any(run_dir.glob("checkpoint-*"))
        log = logger.warning if damaged else logger.info
        log(
            "--resume: no %scheckpoint in %s, starting from the beginning",
            "intact " if damaged else "",
            run_dir,
        )
    args = training_arguments(config, has_eval=config.data.val_file is not None)
    if world_size() > 1 and args.parallel_mode.value != "distributed":
        # Each rank would train its own model on its shard, with nothing averaged between them.
        raise RuntimeError(
            f"{world_size()} processes were launched but the Trainer runs them in parallel mode "
            f"{args.parallel_mode.value!r}, not 'distributed': no gradient would be shared"
        )

    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    set_seed(config.seed)
    model = build_training_model(config)
    processor = build_processor(config.model, model.config)
    if config.data.video_limits:
        processor.video_limits = VideoLimits.from_value(
            {**processor.video_limits.to_dict(), **config.data.video_limits}
        )
    model = prepare_model_for_stage(model, config)
    trainable = check_trainable(model, config.stage)
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "stage %s: %s of %s parameters train; %d processes (parallel mode %s), gradient accumulation %d",
        config.stage,
        f"{trainable:,}",
        f"{total:,}",
        world_size(),
        args.parallel_mode.value,
        args.gradient_accumulation_steps,
    )

    augment = False  # the conversation dataset applies no random augmentation (DATA.md augments offline)
    cache = feature_cache_for(config, model, processor, augment)
    train_dataset, eval_dataset, collator = build_datasets(config, processor, cache)
    alignment = answer_alignment_for(config, train_dataset, processor, base_model(model).config)

    if args.process_index == 0:
        if overwrite:
            removed = clear_run(run_dir, RUN_FILES)
            if removed:
                logger.info("--overwrite: removed the earlier run's %s", ", ".join(p.name for p in removed))
        remove_staging(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_train_config(config, run_dir / RUN_CONFIG_NAME)  # model.dtype as resolved: load_run rebuilds it
        processor.save_pretrained(run_dir / RUN_PROCESSOR_DIR)

    callbacks: list[Any] = [MetricsLogCallback(run_dir)]
    if config.plots:
        callbacks.append(PlotCallback(run_dir))
    if config.max_train_minutes is not None:
        callbacks.append(TimeLimitCallback(config.max_train_minutes))
    trainer = VideoGemmaTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        train_config=config,
        feature_cache=cache,
        answer_alignment=alignment,
        callbacks=callbacks + list(extra_callbacks or []),
    )
    # The stock bar (disable_tqdm is off), replaced by the quiet one.
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(CompactProgressCallback)
    with warnings.catch_warnings():
        # The depthwise convolution's backward (the ETP's PEG) gives the weight gradient's size-1 dimension
        # another stride than DDP's bucket view: the same memory layout, so DDP's warning about it is noise.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    save_run_outputs(trainer, config, run_dir)
    return run_dir


def build_training_model(config: TrainConfig) -> torch.nn.Module:
    """The run's model: the frozen base in the run's dtype (`model.dtype`, resolved and written back into
    `config` so that the saved config rebuilds it), what the stage trains in fp32, read straight to this
    process's GPU unless ZeRO-3 partitions it from the CPU; under ZeRO-3 with leaf modules marked."""
    from videogemma.precision import dtype_from_name, resolve_precision
    from videogemma.train.stages import STAGE_TRAINED_MODULES
    from videogemma.train.train_config import model_dtype_name
    from videogemma.train.zero3 import is_zero3_config, mark_leaf_modules

    config.model.dtype = model_dtype_name(config, resolve_precision(config.precision))
    zero3 = is_zero3_config(config.deepspeed)
    device = "cpu"
    if torch.cuda.is_available() and not zero3:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    fp32_modules = STAGE_TRAINED_MODULES.get(config.stage, ())
    model = build_model(config.model, config.seed, dtype_from_name(config.model.dtype), device, fp32_modules)
    if zero3:
        mark_leaf_modules(model)
    return model


def save_run_outputs(trainer: Any, config: TrainConfig, run_dir: Path) -> None:
    """Final weights (the best checkpoint's, when validation ran) and the trainer state, in `run_dir`."""
    trained = note_trained_projectors(trainer.model, config.stage)
    weights_dir = {"full": RUN_MODEL_DIR, "finetune": RUN_ADAPTER_DIR}.get(config.stage)
    if weights_dir is not None:
        # Written whole or not at all: staged, then renamed over an earlier one.
        final = run_dir / weights_dir
        trainer.save_model(str(staging_path(final)))
        trainer.accelerator.wait_for_everyone()
        if trainer.args.should_save:
            publish_folder(staging_path(final), final)
    # The state dict on the main process (under ZeRO-3 the trained parameters, gathered); the projectors from it.
    state = trainer.trained_state_dict()
    if trainer.args.should_save:
        staged = staging_path(run_dir / PROJECTORS_NAME)
        save_file(projector_state(state), staged, metadata={TRAINED_PROJECTORS_KEY: ",".join(trained)})
        os.replace(staged, run_dir / PROJECTORS_NAME)
        trainer.save_state()  # trainer_state.json in the run directory
    trainer.accelerator.wait_for_everyone()


def note_trained_projectors(model: torch.nn.Module, stage: str) -> list[str]:
    """The projectors trained once this run is done (the base's and this stage's), recorded in the model's
    config (a `full` run's model/ keeps it) and returned for the projectors file's metadata."""
    from videogemma.train.stages import STAGE_TRAINED_MODULES, base_model

    model_config = base_model(model).config
    this_stage = PROJECTOR_NAMES if stage == "full" else STAGE_TRAINED_MODULES.get(stage, ())
    trained = sorted({*(model_config.trained_projectors or []), *this_stage})
    model_config.trained_projectors = trained
    return trained


def projector_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`image_projector.*` / `video_projector.*` tensors out of a (possibly PEFT-wrapped) model's state dict."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        name = name.removeprefix("base_model.model.")
        projector = name.split(".", 1)[0]
        if projector not in PROJECTOR_NAMES or ".original_module." in name:
            continue
        out[name.replace(".modules_to_save.default.", ".")] = tensor.detach().cpu().contiguous()
    if not out:
        raise TrainConfigError("the trained model holds no projector weights")
    return out
