"""`VideoGemmaTrainer`: the `transformers` Trainer with projector parameter groups, the frozen-feature cache,
the optional video-answer alignment loss and a guard against non-finite losses.

Feature-cache misses are encoded inside the model's forward (their pixels go in with the hits' features), so
they run under the same autocast as training and, under DeepSpeed ZeRO-3, where the engine gathers the
encoders' parameters; with ZeRO-3 every process runs the encoders when any process has a miss (the
parameter gathers are collective). Under ZeRO-3 a save gathers only the trained parameters (adapter,
projectors), not the whole model.

Checkpoints are written into a staging folder and renamed to `checkpoint-<step>` once every process has
written its part (`run_files.publish_folder`), so a kill never leaves a half-written checkpoint to resume from.

Everything else (gradient accumulation, clipping, checkpoint contents and rotation, DDP / DeepSpeed, evaluation, best checkpoint,
resumption with RNG and data order) is the Trainer's own.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from videogemma.constants import CLIP_PIXEL_VALUES, PIXEL_INPUT_NAMES, VIDEOMAMBA_PIXEL_VALUES
from videogemma.train.answer_alignment import AnswerAlignment
from videogemma.train.feature_cache import FeatureCache
from videogemma.train.run_files import publish_folder, staging_path
from videogemma.train.stages import base_model, parameter_groups
from videogemma.train.train_config import TrainConfig

logger = logging.getLogger(__name__)

# Batch keys that describe the samples but are not model inputs.
VIDEO_PATHS_KEY = "video_paths"
CACHED_FEATURES_KEY = "cached_features"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite (`nonfinite_loss: stop`)."""


class VideoGemmaTrainer(Trainer):
    def __init__(
        self,
        *args: Any,
        train_config: TrainConfig,
        feature_cache: FeatureCache | None = None,
        answer_alignment: AnswerAlignment | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.train_config = train_config
        self.feature_cache = feature_cache
        self.answer_alignment = answer_alignment
        self.skipped_nonfinite_batches = 0
        self._alignment_losses: list[float] = []  # since the last log
        self._staging: Path | None = None  # while a checkpoint is being written: the folder it goes into

    # ---- checkpoints: staged, then renamed into place ---------------------------------------------------

    def _get_output_dir(self, trial: Any) -> str:
        # While the Trainer writes a checkpoint, it writes into the staging folder instead of the run directory.
        return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        run_dir = Path(super()._get_output_dir(trial))
        final = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._staging = staging_path(final)
        try:
            super()._save_checkpoint(model, trial)  # writes <staging>/checkpoint-<step>
        finally:
            staged, self._staging = self._staging / final.name, None
        self._fix_best_checkpoint(run_dir, staged)
        self.accelerator.wait_for_everyone()  # every rank has written its part (RNG state, ZeRO shards)
        if self.args.should_save:
            publish_folder(staged, final)
            os.rmdir(staged.parent)
            rotate_checkpoints(
                output_dir=str(run_dir),
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()

    def _fix_best_checkpoint(self, run_dir: Path, staged: Path) -> None:
        """The Trainer looked for the best checkpoint in the staging folder: point it at the run directory."""
        best_step = self.state.best_global_step
        if not best_step:
            return
        best = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{best_step}"
        if best_step == self.state.global_step or best.is_dir():
            self.state.best_model_checkpoint = str(best)
        if self.args.should_save:
            self.state.save_to_json(str(staged / TRAINER_STATE_NAME))

    # ---- optimiser: the projectors at their own learning rate -------------------------------------------

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(opt_model))
            no_decay = {name for name, _ in opt_model.named_parameters() if name not in decay}
            groups = parameter_groups(opt_model, self.train_config, no_decay)
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            optimizer_kwargs.pop("lr", None)  # every group carries its own
            self.optimizer = optimizer_cls(groups, lr=self.train_config.learning_rate, **optimizer_kwargs)
        return self.optimizer

    # ---- the loss: cached encoder features, non-finite guard ---------------------------------------------

    def _attach_video_features(
        self, model: nn.Module, inputs: dict[str, Any]
    ) -> tuple[list[str] | None, list[str]]:
        """Give the model the hits' cached features and the misses' pixels, the misses first (the rows are
        reordered to match); returns the batch's paths and the misses' paths, in that order."""
        paths = inputs.pop(VIDEO_PATHS_KEY, None)
        cached = inputs.pop(CACHED_FEATURES_KEY, None)
        if cached is None:
            return paths, []
        missing = [i for i, features in enumerate(cached) if features is None]
        hits = [i for i, features in enumerate(cached) if features is not None]
        order = missing + hits
        if order != list(range(len(cached))):  # the loss is a sum over rows: their order does not matter
            rows = torch.tensor(order)
            for key, value in list(inputs.items()):
                if (
                    isinstance(value, torch.Tensor)
                    and key not in PIXEL_INPUT_NAMES
                    and value.shape[:1] == rows.shape
                ):
                    inputs[key] = value[rows.to(value.device)]
            paths = [paths[i] for i in order]
        # Under ZeRO-3 each encoder forward gathers parameters across processes, so all of them must run it:
        # a process without misses encodes no videos when another one has some.
        lockstep = self._partitioned() and self.args.world_size > 1
        if lockstep and _any_process(bool(missing), self.args.device) and not missing:
            inputs.update(self._no_videos(model))
        if hits:
            from videogemma.modeling.modeling_videogemma import VideoFeatures

            device = inputs["input_ids"].device
            inputs["video_features"] = VideoFeatures(
                **{name: torch.stack([cached[i][name] for i in hits]).to(device) for name in FEATURE_NAMES}
            )
        return paths, [paths[i] for i in range(len(missing))]

    def _no_videos(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Both encoders' pixel inputs for a batch of no videos (what the processor's frames look like)."""
        config = base_model(self.accelerator.unwrap_model(model)).config
        shapes = {
            CLIP_PIXEL_VALUES: (config.vision_config.num_channels, config.vision_config.image_size),
            VIDEOMAMBA_PIXEL_VALUES: (
                config.videomamba_config.in_channels,
                config.videomamba_config.image_size,
            ),
        }
        return {
            key: torch.zeros(0, config.num_frames, channels, size, size, device=self.args.device)
            for key, (channels, size) in shapes.items()
        }

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        paths, missing_paths = self._attach_video_features(model, inputs)
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        if missing_paths and self.feature_cache is not None and outputs.video_features is not None:
            computed = outputs.video_features
            for row, path in enumerate(missing_paths):
                self.feature_cache.store(path, {name: getattr(computed, name)[row] for name in FEATURE_NAMES})
        if self.answer_alignment is not None and model.training:
            loss = loss + self._alignment_term(model, outputs, inputs["labels"], num_items_in_batch)
        if model.training and not torch.isfinite(loss).all():
            loss = self._nonfinite(model, loss, paths)
        return (loss, outputs) if return_outputs else loss

    # ---- saving: under ZeRO-3 only what trains is gathered ---------------------------------------------

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict the run directory needs: under ZeRO-3 the trained parameters only, gathered from
        their partitions (every process must call this); else the model's whole state dict (no copy)."""
        if not self._partitioned():
            wrapped = self.model_wrapped if self.is_deepspeed_enabled else self.model
            return self.accelerator.get_state_dict(wrapped)
        import deepspeed

        named = [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]
        logger.info(
            "ZeRO-3: gathering the %d trained tensors (%s values) of %d to save",
            len(named),
            f"{sum(p.ds_numel for _, p in named):,}",
            sum(1 for _ in self.model.parameters()),
        )
        with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
            return {name: p.detach().cpu().clone() for name, p in named} if self.args.should_save else {}

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        # ZeRO-3, a stage that trains part of the model: gather the adapter / projectors, not all 4 B weights.
        if self._partitioned() and self.train_config.stage != "full":
            state = self.trained_state_dict()
            self._save(output_dir or self.args.output_dir, state_dict=state)
            return
        super().save_model(output_dir, _internal_call)

    def _partitioned(self) -> bool:
        from transformers.integrations import is_deepspeed_zero3_enabled

        return self.is_deepspeed_enabled and is_deepspeed_zero3_enabled()

    def _alignment_term(
        self, model: nn.Module, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any
    ) -> torch.Tensor:
        """`answer_alignment_weight` × the alignment loss of this micro-batch, scaled as the Trainer scales
        the LM loss: that one is already normalized over the accumulated batch, this per-batch mean is not."""
        assert self.answer_alignment is not None
        if outputs.video_hidden_states is None:  # a batch without video (none is aligned)
            return torch.zeros((), device=labels.device)
        embed_tokens = base_model(self.accelerator.unwrap_model(model)).get_input_embeddings()
        alignment = self.answer_alignment.loss(outputs.video_hidden_states, labels, embed_tokens)
        self._alignment_losses.append(float(alignment.detach()))
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            alignment = alignment / self.current_gradient_accumulation_steps
        return self.train_config.answer_alignment_weight * alignment

    def _nonfinite(self, model: nn.Module, loss: torch.Tensor, paths: list[str] | None) -> torch.Tensor:
        step = self.state.global_step + 1
        where = f"optimizer step {step} (epoch {self.state.epoch or 0:.2f}), batch of videos {paths}"
        if self.train_config.nonfinite_loss == "stop":
            raise NonFiniteLossError(
                f"non-finite training loss {loss.item()} at {where}; lower the learning rate, check the data, "
                "or set `nonfinite_loss: skip` to skip such batches"
            )
        self.skipped_nonfinite_batches += 1
        logger.warning("skipping a batch with non-finite loss %s at %s", loss.item(), where)
        # A zero loss still tied to every trainable parameter: the batch contributes zero gradients (and
        # every DDP rank still takes part in the gradient all-reduce).
        return sum(
            (p.sum() * 0.0 for p in model.parameters() if p.requires_grad),
            torch.zeros((), device=loss.device),
        )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs = {**logs, **self.extra_metrics()}
            if "answer_alignment_loss" in logs:
                # `loss` is LM + weight × alignment; the validation loss is the LM loss alone. Both parts are
                # logged so that the plot (and TensorBoard) compare like with like.
                term = self.train_config.answer_alignment_weight * logs["answer_alignment_loss"]
                logs["answer_alignment_term"] = term
                logs["lm_loss"] = logs["loss"] - term
        super().log(logs, start_time)

    def extra_metrics(self) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        if self.skipped_nonfinite_batches:
            metrics["skipped_nonfinite_batches"] = self.skipped_nonfinite_batches
        if self._alignment_losses:
            # The unweighted alignment loss (mean since the last log); `loss` includes its weighted part.
            metrics["answer_alignment_loss"] = sum(self._alignment_losses) / len(self._alignment_losses)
            self._alignment_losses.clear()
        if self.feature_cache is not None:
            metrics["feature_cache_hits"] = self.feature_cache.hits
            metrics["feature_cache_misses"] = self.feature_cache.misses
        for name, dataset in (("train", self.train_dataset), ("eval", self.eval_dataset)):
            counts = getattr(dataset, "bad_sample_counts", None)
            if callable(counts):
                for key, value in counts().items():
                    metrics[f"{name}_bad_samples_{key}"] = value
        return {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}


FEATURE_NAMES = ("clip_features", "videomamba_features", "keyframe_indices")


def _any_process(flag: bool, device: torch.device) -> bool:
    """Whether `flag` holds on any process (an all-reduce every process must join)."""
    import torch.distributed as dist

    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
