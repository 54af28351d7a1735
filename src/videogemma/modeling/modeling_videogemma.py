"""VideoGemma: Mobile-VideoGPT's two video encoders and ETP projectors feeding Gemma-3n (ARCHITECTURE §2-§6).

    frames ─► CLIP ─► keyframe scores ─► keyframe indices
       │        └────────────────────────────┼──► image ETP ─┐
       └─ VideoMamba preprocessing ─► keyframes ─► VideoMamba ─► video ETP ─┴─► visual tokens
    input_ids (placeholders) ─► embed_tokens + scatter visual tokens + per-layer inputs ─► Gemma-3n decoder

The pipeline is cut in two halves so that training can cache the frozen part:
`extract_video_features` runs the frozen encoders (and the parameter-free keyframe selection) and
`project_video_features` runs the trainable projectors. `forward` accepts any of the three stages:
pixel values, `video_features` (the encoders' outputs) or `visual_tokens` (the projectors' outputs); pixel
values and `video_features` together are a batch whose first videos come as pixels (the training feature
cache's misses, encoded inside the forward, where DeepSpeed ZeRO-3 gathers the encoders' parameters).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Gemma3nForCausalLM, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.generation.logits_process import LogitsProcessorList
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.models.gemma3n.modeling_gemma3n import Gemma3nTextAttention
from transformers.utils.deprecation import deprecate_kwarg

from videogemma import auto_classes
from videogemma.config import VideoGemmaConfig
from videogemma.constants import IGNORE_INDEX, PROJECTOR_NAMES, VIDEO_INPUT_NAMES, WINDOWED_ATTENTION
from videogemma.modeling.clip_encoder import CLIPFrameEncoder
from videogemma.modeling.growing_cache import GrowingCache
from videogemma.modeling.keyframes import select_keyframes
from videogemma.modeling.memory_pages import give_back_freed_memory
from videogemma.modeling.projector import EfficientTokenProjector
from videogemma.modeling.suppressed_tokens import index_suppression
from videogemma.modeling.videomamba import KEEP_IN_FP32, VideoMamba
from videogemma.modeling.windowed_attention import register_windowed_attention

# The keyword arguments that carry a video; `generate` passes them at prefill only.


@dataclass
class VideoFeatures:
    """The frozen encoders' outputs for a batch of videos (what the training feature cache stores).

    clip_features: (batch, frames, clip_patches, clip_dim), all frames.
    videomamba_features: (batch, keyframes · videomamba_patches, videomamba_dim), keyframes in time order.
    keyframe_indices: (batch, keyframes) int64 indices of the frames VideoMamba read.
    """

    clip_features: torch.Tensor
    videomamba_features: torch.Tensor
    keyframe_indices: torch.Tensor

    def to(self, *args: Any, **kwargs: Any) -> VideoFeatures:
        """Move the features (`Tensor.to` arguments); the indices only change device."""
        moved = {f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)}
        moved["keyframe_indices"] = self.keyframe_indices.to(moved["clip_features"].device)
        return VideoFeatures(**moved)

    def __getitem__(self, index: Any) -> VideoFeatures:
        """Select videos of the batch (`features[i:j]`)."""
        return VideoFeatures(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def repeat_interleave(self, repeats: int) -> VideoFeatures:
        """Repeat each video `repeats` times along the batch (beam search, several samples per prompt)."""
        return VideoFeatures(
            **{f.name: getattr(self, f.name).repeat_interleave(repeats, 0) for f in fields(self)}
        )

    @classmethod
    def cat(cls, items: list[VideoFeatures]) -> VideoFeatures:
        """Concatenate along the batch."""
        return cls(**{f.name: torch.cat([getattr(i, f.name) for i in items]) for f in fields(cls)})


@dataclass
class VideoGemmaOutput(CausalLMOutputWithPast):
    """`CausalLMOutputWithPast` plus the visual tokens the decoder read (Hugging Face's `image_hidden_states`).

    video_hidden_states: (batch, num_visual_tokens, hidden), the projectors' outputs; None without a video.
    Training losses on the video side (`train/answer_alignment.py`) read them without running the encoders twice.
    """

    video_hidden_states: torch.FloatTensor | None = None
    # The encoders' outputs for the videos given as pixels (None without any): what the training feature cache
    # stores for its misses.
    video_features: VideoFeatures | None = None


def init_attention_scale(language_model: nn.Module) -> None:
    """Start each Gemma-3n attention's q-norm weights at head_dim^-0.5 (pretrained weights overwrite them).

    Gemma-3n scores attention as q̂·k̂ with both RMS-normalised and no 1/√head_dim factor: the trained q-norm
    weights carry the scale. At the RMSNorm default of 1 a random model's attention is nearly one-hot
    (0.1 to 2 nats of entropy over ~80 keys in `tiny`, against 4.4 for uniform), and a model trained from
    scratch then stops attending to the visual tokens within ~100 steps and never learns from the video.
    head_dim^-0.5 starts it as standard scaled dot-product attention.
    """
    with torch.no_grad():
        for module in language_model.modules():
            if isinstance(module, Gemma3nTextAttention):
                module.q_norm.weight.fill_(module.head_dim**-0.5)


class VideoGemmaPreTrainedModel(PreTrainedModel):
    config: VideoGemmaConfig
    config_class = VideoGemmaConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Gemma3nTextDecoderLayer", "CLIPEncoderLayer", "VideoMambaBlock"]
    # VideoMamba's SSM parameters stay fp32 when the model is loaded in bf16 or fp16 (as in Mamba).
    _keep_in_fp32_modules_strict = [f"mixer.{name}" for name in KEEP_IN_FP32]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True


class VideoGemmaForConditionalGeneration(VideoGemmaPreTrainedModel, GenerationMixin):
    def __init__(self, config: VideoGemmaConfig) -> None:
        super().__init__(config)
        # Names of the encoders that run frozen: eval mode, no gradients (see `freeze_encoders`).
        self.frozen_encoders: set[str] = set()
        hidden = config.hidden_size
        eps = config.text_config.rms_norm_eps
        self.clip = CLIPFrameEncoder(config.vision_config, config.clip_select_layer)
        self.videomamba = VideoMamba(config.videomamba_config)
        self.image_projector = EfficientTokenProjector(
            config.vision_config.hidden_size,
            hidden,
            config.clip_grid,
            config.image_projector_grid,
            norm=config.projector_norm,
            eps=eps,
        )
        self.video_projector = EfficientTokenProjector(
            config.videomamba_config.embed_dim,
            hidden,
            config.videomamba_config.grid_size,
            config.video_projector_grid,
            norm=config.projector_norm,
            eps=eps,
            pool_first=True,
            frame_merge=config.video_keyframe_merge,
        )
        register_windowed_attention()  # before the LM checks its config's implementation name
        attention_requested = config.text_config._attn_implementation_internal is not None
        self.language_model = Gemma3nForCausalLM(config.text_config)
        if not attention_requested:
            self.language_model.set_attn_implementation(WINDOWED_ATTENTION)
        # Gemma-3n's `embed_vision` vector for each id of its vision vocabulary block (<end_of_image>, ...),
        # read once from the checkpoint (`from_components`), saved with the model; not trained. None: the
        # text embedding rows (see `VideoGemmaConfig.vision_vocab_offset`).
        vision_token_embeds = None
        if config.vision_vocab_offset is not None:
            vision_token_embeds = torch.zeros(config.vision_vocab_size, hidden)
        self.register_buffer("vision_token_embeds", vision_token_embeds)
        # VideoMamba initialises itself (Mamba's dt / A / D initialisation); the generic HF init must not redo it.
        for module in self.videomamba.modules():
            module._is_hf_initialized = True
        self.post_init()
        init_attention_scale(self.language_model)
        self.freeze_encoders(clip=True, videomamba=True)
        if self.generation_config is not None:
            # A placeholder is never a valid answer token: without a video behind it, it means nothing.
            self.generation_config.suppress_tokens = [config.image_token_id]

    # ---- encoders: frozen by default -----------------------------------------------------------------

    def freeze_encoders(self, clip: bool = True, videomamba: bool = True) -> None:
        """Freeze (True) or unfreeze (False) each vision encoder.

        A frozen encoder has `requires_grad=False`, stays in eval mode through `model.train()` (no dropout or
        drop-path) and runs under `torch.no_grad()`, so its outputs are deterministic and cacheable.
        """
        for name, frozen in (("clip", clip), ("videomamba", videomamba)):
            encoder: nn.Module = getattr(self, name)
            encoder.requires_grad_(not frozen)
            if frozen:
                self.frozen_encoders.add(name)
                encoder.eval()
            else:
                self.frozen_encoders.discard(name)
                encoder.train(self.training)

    def train(self, mode: bool = True) -> VideoGemmaForConditionalGeneration:
        super().train(mode)
        for name in getattr(self, "frozen_encoders", ()):
            getattr(self, name).eval()
        return self

    def _run_encoder(self, name: str, pixel_values: torch.Tensor) -> torch.Tensor:
        encoder: nn.Module = getattr(self, name)
        if name in self.frozen_encoders:
            with torch.no_grad():
                return encoder(pixel_values)
        return encoder(pixel_values)

    # ---- embeddings (tied: lm_head shares embed_tokens, as in Gemma-3n) ------------------------------

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self) -> nn.Module:
        return self.language_model.model

    # ---- video → visual tokens -----------------------------------------------------------------------

    def _check_frames(self, pixel_values: torch.Tensor, name: str) -> None:
        if pixel_values.dim() != 5 or pixel_values.shape[1] != self.config.num_frames:
            raise ValueError(
                f"{name} must be (batch, {self.config.num_frames} frames, 3, H, W), got {tuple(pixel_values.shape)}"
            )

    def extract_video_features(
        self,
        clip_pixel_values: torch.Tensor | None,
        videomamba_pixel_values: torch.Tensor,
        clip_features: torch.Tensor | None = None,
    ) -> VideoFeatures:
        """Run the frozen half: CLIP on all frames, keyframe selection, VideoMamba on the keyframes.

        `clip_features` (batch, frames, patches, dim), CLIP's output computed before, replaces
        `clip_pixel_values`: CLIP reads every frame on its own, so a sliding window (the live coach) encodes
        each frame once and reuses it in every window that holds it.

        A batch of no videos gives empty features, but the encoders still run (on one blank video whose
        outputs are dropped): under ZeRO-3 every process must gather the same parameters in the same order,
        also one whose videos all came from the feature cache while another process encodes its misses.
        """
        if clip_features is None:
            self._check_frames(clip_pixel_values, "clip_pixel_values")
        self._check_frames(videomamba_pixel_values, "videomamba_pixel_values")
        given = clip_features if clip_features is not None else clip_pixel_values
        if given.shape[0] != videomamba_pixel_values.shape[0] or given.shape[1] != self.config.num_frames:
            raise ValueError(
                f"the CLIP input holds {given.shape[0]} videos of {given.shape[1]} frames but "
                f"videomamba_pixel_values hold {videomamba_pixel_values.shape[0]} of {self.config.num_frames}"
            )
        if clip_features is None and clip_pixel_values.shape[0] == 0:
            blank = [
                pixels.new_zeros(1, *pixels.shape[1:])
                for pixels in (clip_pixel_values, videomamba_pixel_values)
            ]
            return self.extract_video_features(*blank)[:0]
        config = self.config
        if clip_features is None:
            clip_features = self._run_encoder("clip", clip_pixel_values)
        keyframe_indices = select_keyframes(
            clip_features, config.chunk_size, config.keyframes_per_chunk, config.keyframe_block_size
        ).to(videomamba_pixel_values.device)
        batch_index = torch.arange(videomamba_pixel_values.shape[0], device=keyframe_indices.device)[:, None]
        keyframes = videomamba_pixel_values[batch_index, keyframe_indices]
        videomamba_dtype = next(self.videomamba.parameters()).dtype
        videomamba_features = self._run_encoder("videomamba", keyframes.to(videomamba_dtype))
        return VideoFeatures(clip_features, videomamba_features, keyframe_indices)

    def project_video_features(self, features: VideoFeatures) -> torch.Tensor:
        """Run the trainable half: both ETPs → (batch, num_visual_tokens, hidden), `[CLIP frames][video chunks]`."""
        config = self.config
        clip_features = features.clip_features
        batch, frames, patches, clip_dim = clip_features.shape
        if frames != config.num_frames:
            raise ValueError(f"clip_features hold {frames} frames, the model reads {config.num_frames}")
        image_tokens = self.image_projector(clip_features.reshape(batch * frames, 1, patches, clip_dim))
        image_tokens = image_tokens.reshape(batch, frames * config.image_tokens_per_frame, -1)

        videomamba_features = features.videomamba_features
        keyframes = config.num_keyframes
        if videomamba_features.shape[0] != batch or videomamba_features.shape[1] % keyframes:
            raise ValueError(
                f"videomamba_features {tuple(videomamba_features.shape)} do not hold {keyframes} keyframes for "
                f"each of {batch} videos"
            )
        per_frame = videomamba_features.shape[1] // keyframes
        chunks = videomamba_features.reshape(
            batch * config.num_chunks, config.keyframes_per_chunk, per_frame, videomamba_features.shape[-1]
        )
        video_tokens = self.video_projector(chunks)
        video_tokens = video_tokens.reshape(batch, config.num_chunks * config.video_tokens_per_chunk, -1)
        return torch.cat([image_tokens, video_tokens], dim=1)

    def encode_video(
        self, clip_pixel_values: torch.Tensor, videomamba_pixel_values: torch.Tensor
    ) -> torch.Tensor:
        """Frames → (batch, num_visual_tokens, hidden) soft tokens (not scaled by sqrt(hidden))."""
        return self.project_video_features(
            self.extract_video_features(clip_pixel_values, videomamba_pixel_values)
        )

    def _visual_tokens(
        self,
        clip_pixel_values: torch.Tensor | None,
        videomamba_pixel_values: torch.Tensor | None,
        video_features: VideoFeatures | None,
        visual_tokens: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, VideoFeatures | None]:
        """(visual tokens, the features computed from pixels or None)."""
        has_pixels = clip_pixel_values is not None or videomamba_pixel_values is not None
        if visual_tokens is not None and (has_pixels or video_features is not None):
            given = "clip_pixel_values/videomamba_pixel_values" if has_pixels else "video_features"
            raise ValueError(f"pass the video in one form only, got {given} and visual_tokens")
        if has_pixels:
            if clip_pixel_values is None or videomamba_pixel_values is None:
                raise ValueError("a video needs both clip_pixel_values and videomamba_pixel_values")
            computed = self.extract_video_features(clip_pixel_values, videomamba_pixel_values)
            # Pixels and features together: the pixel videos are the batch's first ones.
            features = computed if video_features is None else VideoFeatures.cat([computed, video_features])
            return self.project_video_features(features), computed
        if video_features is not None:
            return self.project_video_features(video_features), None
        return visual_tokens, None

    # ---- fusion into Gemma-3n ------------------------------------------------------------------------

    def embed_inputs(
        self,
        input_ids: torch.LongTensor,
        visual_tokens: torch.Tensor | None = None,
        allow_bare_placeholders=False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder inputs: (inputs_embeds, per_layer_inputs), the visual tokens scattered into the placeholders.

        Placeholders are embedded as the pad id before the scatter; the other ids of Gemma-3n's vision vocabulary
        block (<end_of_image>) take Gemma-3n's `embed_vision` vectors when the model holds them
        (`vision_token_embeds`). The per-layer inputs are looked up from the ids with every id outside the
        per-layer table (placeholders and <end_of_image> included) mapped to 0, as Gemma-3n does for its own
        image tokens. Both go to the decoder: `inputs_embeds` alone would drop the per-layer token part.
        """
        text_model = self.language_model.model
        is_placeholder = input_ids == self.config.image_token_id
        pad_id = self.config.text_config.pad_token_id or 0
        inputs_embeds = text_model.embed_tokens(input_ids.masked_fill(is_placeholder, pad_id))
        inputs_embeds = self._embed_vision_vocab(input_ids, inputs_embeds, is_placeholder)
        per_layer_inputs = text_model.get_per_layer_inputs(input_ids)
        if visual_tokens is not None:
            counts = is_placeholder.sum(dim=1)
            expected = visual_tokens.shape[1]
            if visual_tokens.shape[0] != input_ids.shape[0] or bool((counts != expected).any()):
                raise ValueError(
                    f"input_ids hold {counts.tolist()} placeholder tokens (id {self.config.image_token_id}) per "
                    f"sequence but the video gives {expected} visual tokens for each of {visual_tokens.shape[0]} "
                    f"videos"
                )
            inputs_embeds = inputs_embeds.masked_scatter(
                is_placeholder.unsqueeze(-1), visual_tokens.to(inputs_embeds.device, inputs_embeds.dtype)
            )
        elif not allow_bare_placeholders and bool(is_placeholder.any()):
            raise ValueError(
                f"input_ids hold {int(is_placeholder.sum())} placeholder tokens (id {self.config.image_token_id}) "
                f"but no video was given"
            )
        return inputs_embeds, per_layer_inputs

    def _embed_vision_vocab(
        self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, is_placeholder: torch.Tensor
    ) -> torch.Tensor:
        """Gemma-3n's rule for its vision vocabulary block: those ids (placeholders aside, which the visual
        tokens replace) are embedded by `embed_vision` (table, RMSNorm, projection, RMSNorm; no √hidden scale),
        not by the text table. Here the precomputed vectors replace the text rows; without them, unchanged."""
        table = self.vision_token_embeds
        if table is None:
            return inputs_embeds
        index = input_ids - self.config.vision_vocab_offset
        in_block = (index >= 0) & (index < table.shape[0]) & ~is_placeholder
        rows = table.to(inputs_embeds.device, inputs_embeds.dtype)[index.clamp(0, table.shape[0] - 1)]
        return torch.where(in_block.unsqueeze(-1), rows, inputs_embeds)

    def _lm_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        logits = self.language_model.lm_head(hidden_states)
        softcap = self.config.text_config.final_logit_softcapping
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        clip_pixel_values: torch.Tensor | None = None,
        videomamba_pixel_values: torch.Tensor | None = None,
        video_features: VideoFeatures | None = None,
        visual_tokens: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        position_ids: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs: Any,
    ) -> VideoGemmaOutput:
        """Language-model logits (and loss) for token ids holding `config.image_token_id` placeholders.

        The video comes as pixel values (both preprocessings), `video_features` or `visual_tokens`, or not
        at all (text only); pixel values and `video_features` together hold the batch's videos in that order
        (pixels first), and `video_features` of the output are the features computed from the pixels. With `labels` (-100 = unsupervised; placeholder labels are ignored too), the LM head
        and loss are computed only at the supervised positions: `logits` is then (num_supervised, vocab) in batch-major order (the prediction
        of each supervised label), and the loss equals the mean cross-entropy over them (or their sum divided
        by `num_items_in_batch` when given, for gradient accumulation).
        """
        if labels is not None and labels.shape != input_ids.shape:
            raise ValueError(
                f"labels {tuple(labels.shape)} and input_ids {tuple(input_ids.shape)} differ in shape"
            )
        visual, computed_features = self._visual_tokens(
            clip_pixel_values, videomamba_pixel_values, video_features, visual_tokens
        )
        # In a decode step the video is already in the cache; a bare placeholder is then only ever a token
        # the caller forced, embedded as padding.
        decoding = cache is not None and cache.get_seq_length() > 0
        inputs_embeds, per_layer_inputs = self.embed_inputs(
            input_ids, visual, allow_bare_placeholders=decoding
        )
        if use_cache is None and labels is not None:
            use_cache = False
        outputs = self.language_model.model(
            inputs_embeds=inputs_embeds,
            per_layer_inputs=per_layer_inputs,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state

        loss = None
        if labels is None:
            logits = self._lm_logits(slice_logits_to_keep(hidden_states, logits_to_keep))
        else:
            # Position t predicts token t+1: only the positions whose next label is supervised get logits.
            # A placeholder is never a target, even if the caller left it in the labels.
            targets = labels[:, 1:].to(hidden_states.device)
            supervised = (targets != IGNORE_INDEX) & (targets != self.config.image_token_id)
            logits = self._lm_logits(hidden_states[:, :-1][supervised])
            loss_sum = F.cross_entropy(logits.float(), targets[supervised], reduction="sum")
            denominator = (
                num_items_in_batch if num_items_in_batch is not None else supervised.sum().clamp(min=1)
            )
            if isinstance(denominator, torch.Tensor):
                denominator = denominator.to(loss_sum.device)
            loss = loss_sum / denominator

        return VideoGemmaOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            video_hidden_states=visual,
            video_features=computed_features,
        )

    def prepare_inputs_for_generation(
        self, input_ids: torch.LongTensor, cache: Cache | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        model_inputs = super().prepare_inputs_for_generation(input_ids, cache=cache, **kwargs)
        if cache is not None and cache.get_seq_length() > 0:
            # Decode step: the video's tokens are already in the cache, only new text ids go in.
            for name in VIDEO_INPUT_NAMES:
                model_inputs.pop(name, None)
        return model_inputs

    def _expand_inputs_for_generation(
        self,
        expand_size: int = 1,
        is_encoder_decoder: bool = False,
        input_ids: Any = None,
        **model_kwargs: Any,
    ) -> tuple[Any, dict[str, Any]]:
        # `generate` repeats tensor inputs for beams / num_return_sequences; VideoFeatures is not a tensor.
        if expand_size > 1 and model_kwargs.get("video_features") is not None:
            model_kwargs["video_features"] = model_kwargs["video_features"].repeat_interleave(expand_size)
        return super()._expand_inputs_for_generation(
            expand_size, is_encoder_decoder, input_ids, **model_kwargs
        )

    # ---- building from real checkpoints --------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`, strict: a weights file that is corrupt, lacks a tensor, holds one
        of another shape or one the model does not have, or holds NaN / infinite values is a
        `ModelWeightsError` naming the file and the tensor (Hugging Face would initialise what is missing at
        random and go on). `ignore_mismatched_sizes=True` keeps Hugging Face's meaning (re-initialise those)."""
        from videogemma.console import quiet_transformers
        from videogemma.modeling.integrity import check_loaded_model, check_saved_weights

        files = check_saved_weights(Path(pretrained_model_name_or_path))
        wants_info = kwargs.pop("output_loading_info", False)
        tolerate_mismatch = kwargs.pop("ignore_mismatched_sizes", False)
        # Its load report would only repeat the error raised below; no progress bar on every load.
        with quiet_transformers():
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, ignore_mismatched_sizes=True,
                **kwargs,
            )  # fmt: skip
        check_loaded_model(model, info, files, Path(pretrained_model_name_or_path), tolerate_mismatch)
        # Loading replaces the parameters, and with them their requires_grad flags: freeze again.
        model.freeze_encoders("clip" in model.frozen_encoders, "videomamba" in model.frozen_encoders)
        return (model, info) if wants_info else model

    def save_pretrained(self, save_directory: str | Path, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.save_pretrained` without a progress bar per shard and DeepSpeed's CPU notice."""
        from videogemma.console import quiet_third_party_logs, quiet_transformers

        quiet_third_party_logs()
        with quiet_transformers():
            return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_components(
        cls,
        lm: str | Path,
        clip: str | Path,
        videomamba: str | Path,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        fp32_modules: tuple[str, ...] = (),
        per_layer_on_disk: bool | None = False,
        **config_overrides: Any,
    ) -> VideoGemmaForConditionalGeneration:
        """Build the model from the three pretrained components; only the projectors are newly initialised.

        lm: a Gemma-3n directory (full multimodal `google/gemma-3n-E2B(-it)` layout or a text-only
        `Gemma3nForCausalLM`) or Hub id; clip: a `CLIPModel` or `CLIPVisionModel` directory or Hub id;
        videomamba: an original OpenGVLab `.pth` checkpoint. `dtype`: the weights' dtype (default: fp32),
        each tensor converted as it is read, so no fp32 copy of a bf16 checkpoint is ever made; VideoMamba's
        A_log, D and Δ bias stay fp32, and so do the modules named in `fp32_modules` (training keeps the
        projectors it trains there). `device`: where the tensors are read to and the model is built.
        `config_overrides` set `VideoGemmaConfig` fields (frames, chunks, grids...); a dict given for a
        sub-config updates that sub-config's fields. `per_layer_on_disk`: leave the per-layer embedding table
        memory-mapped in the Gemma-3n safetensors file (None: when it is one; inference only).
        """
        from videogemma.modeling.checkpoints import build_from_components

        model = build_from_components(
            cls, lm=lm, clip=clip, videomamba=videomamba, dtype=dtype, device=device,
            fp32_modules=fp32_modules, per_layer_on_disk=per_layer_on_disk, **config_overrides,
        )  # fmt: skip
        model.config.trained_projectors = []  # newly initialised: noise until a projector stage trains them
        return model

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """`GenerationMixin.generate`, after warning (once per process) if a projector was never trained; the
        cache is a `GrowingCache` unless the caller gives one or asks for another kind (or none)."""
        warn_untrained_projectors(self.config)
        settings = kwargs.get("generation_config") or self.generation_config
        wants_default_cache = (
            kwargs.get("cache") is None
            and kwargs.get("past_key_values") is None
            and kwargs.get("use_cache", settings.use_cache) is not False
            and kwargs.get("cache_implementation", settings.cache_implementation) is None
        )
        if wants_default_cache:
            kwargs["cache"] = GrowingCache(config=self.config.text_config)
        try:
            return super().generate(*args, **kwargs)
        finally:
            # The heap an answer's prompt used (kept for reuse within it, `reuse_freed_memory`) goes back, so
            # between answers the process holds about the model (E2B int4: 3.9 → 2.9 GiB resident); the next
            # prompt faults those pages in again (within the noise of its prefill here).
            if self.device.type == "cpu":
                give_back_freed_memory()

    def _get_logits_processor(self, *args: Any, **kwargs: Any) -> LogitsProcessorList:
        """The library's processors, its token suppression as one indexed write (`suppressed_tokens.py`)."""
        return index_suppression(super()._get_logits_processor(*args, **kwargs))


class UntrainedProjectorsWarning(UserWarning):
    """A model answers whose image or video projector was never trained: its answers mean nothing yet."""


_warned_untrained: set[tuple[str, ...]] = set()


def untrained_projectors(config: VideoGemmaConfig) -> list[str]:
    """The projectors `config` records as never trained ([] when it records nothing)."""
    trained = config.trained_projectors
    return [] if trained is None else [name for name in PROJECTOR_NAMES if name not in trained]


def warn_untrained_projectors(config: VideoGemmaConfig) -> None:
    missing = tuple(untrained_projectors(config))
    if not missing or missing in _warned_untrained:
        return
    _warned_untrained.add(missing)
    names = " and ".join(name.replace("_", " ") for name in missing)
    warnings.warn(
        UntrainedProjectorsWarning(
            f"the {names} {'was' if len(missing) == 1 else 'were'} never trained (a model built from its "
            "components starts with new projectors): answers are noise until the video-proj / image-proj "
            "stages train them (docs/REAL_WEIGHTS.md)"
        ),
        stacklevel=3,
    )


# The real class replaces its stand-in in transformers' Auto model mappings (see auto_classes).
auto_classes.register_loaded()
auto_classes.register_model_class(VideoGemmaForConditionalGeneration)
