"""Configuration of the VideoGemma model and its presets, all in one place.

`VideoGemmaConfig` nests three sub-configs, one per network:

- `text_config`: the Gemma-3n text decoder (`transformers.Gemma3nTextConfig`);
- `vision_config`: the CLIP keyframe encoder (`transformers.CLIPVisionConfig`);
- `videomamba_config`: the VideoMamba video encoder (`VideoMambaConfig`, below).

The remaining fields describe how a video becomes tokens: how many frames are read, how they are cut
into chunks, how many keyframes each chunk keeps, the projector grids and the placeholder token id.
Every geometric quantity the code needs is derived from these fields (see the properties), so no
number of the E2B model is a constant anywhere else.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import CLIPVisionConfig, Gemma3nTextConfig, PretrainedConfig

from videogemma import auto_classes
from videogemma.constants import (
    AUDIO_SOFT_TOKEN,
    BOS,
    END_OF_AUDIO,
    END_OF_IMAGE,
    END_OF_TURN,
    EOS,
    FRAME_MERGES,
    FRAME_SAMPLINGS,
    IMAGE_SOFT_TOKEN,
    MASK,
    PAD,
    PRESET_NAMES,
    START_OF_IMAGE,
    START_OF_TURN,
    UNK,
)

# Preprocessing statistics (ARCHITECTURE §1). CLIP's own, and ImageNet's for VideoMamba.
CLIP_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Gemma-3n's special ids (its tokenizer); the `tiny` preset's own tokenizer keeps the names, not the ids.
GEMMA3N_BOS_ID = 2
GEMMA3N_START_OF_TURN_ID = 105
GEMMA3N_END_OF_TURN_ID = 106
GEMMA3N_START_OF_IMAGE_ID = 255999
GEMMA3N_END_OF_IMAGE_ID = 262144
GEMMA3N_IMAGE_SOFT_TOKEN_ID = 262145
# Gemma-3n's vision vocabulary block (`vision_config.vocab_size`): ids from its offset (262144) on are embedded
# by `embed_vision`, not by the text table.
GEMMA3N_VISION_VOCAB_SIZE = 128

# The `tiny` preset's tokenizer layout: Gemma's special-token names first (ids 0..7), byte-level BPE tokens up
# to `TINY_TEXT_VOCAB`, then the multimodal tokens above the per-layer-input table, in Gemma-3n's order,
# as Gemma-3n lays them out above 262144.
TINY_SPECIAL_TOKENS = (PAD, EOS, BOS, UNK, MASK, START_OF_TURN, END_OF_TURN, START_OF_IMAGE)
TINY_TEXT_VOCAB = 1024
TINY_MULTIMODAL_TOKENS = (END_OF_IMAGE, IMAGE_SOFT_TOKEN, END_OF_AUDIO, AUDIO_SOFT_TOKEN)
TINY_IMAGE_SOFT_TOKEN_ID = TINY_TEXT_VOCAB + TINY_MULTIMODAL_TOKENS.index(IMAGE_SOFT_TOKEN)
TINY_VOCAB = TINY_TEXT_VOCAB + 8  # room for the multimodal block, rounded up to a multiple of 8


class VideoMambaConfig(PretrainedConfig):
    """Bidirectional VideoMamba (OpenGVLab), defaults of the "middle" model `videomamba_m16_25M_f8_res224`."""

    model_type = "videogemma_videomamba"

    def __init__(
        self,
        embed_dim: int = 576,
        depth: int = 32,
        patch_size: int = 16,
        tubelet_size: int = 1,
        num_frames: int = 8,
        image_size: int = 224,
        in_channels: int = 3,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        rms_norm_eps: float = 1e-5,
        residual_in_fp32: bool = True,
        scan_backend: str = "auto",
        **kwargs: Any,
    ) -> None:
        self.embed_dim = embed_dim
        self.depth = depth
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.num_frames = num_frames
        self.image_size = image_size
        self.in_channels = in_channels
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        # Mamba's rule: dt_rank = ceil(d_model / 16) (36 for VideoMamba-M).
        self.dt_rank = dt_rank if dt_rank is not None else math.ceil(embed_dim / 16)
        self.rms_norm_eps = rms_norm_eps
        self.residual_in_fp32 = residual_in_fp32
        # "auto" | "reference" | "cpu" (numba) | "chunked" (pure PyTorch) | "mamba_ssm" (CUDA kernels)
        self.scan_backend = scan_backend
        super().__init__(**kwargs)

    @property
    def d_inner(self) -> int:
        return self.expand * self.embed_dim

    @property
    def grid_size(self) -> int:
        """Patches per side of one frame."""
        return self.image_size // self.patch_size


class VideoGemmaConfig(PretrainedConfig):
    """Configuration of `VideoGemmaForConditionalGeneration` (Mobile-VideoGPT on Gemma-3n)."""

    model_type = "videogemma"
    sub_configs = {
        "text_config": Gemma3nTextConfig,
        "vision_config": CLIPVisionConfig,
        "videomamba_config": VideoMambaConfig,
    }

    def __init__(
        self,
        text_config: Gemma3nTextConfig | dict | None = None,
        vision_config: CLIPVisionConfig | dict | None = None,
        videomamba_config: VideoMambaConfig | dict | None = None,
        num_frames: int = 16,
        frame_sampling: str = "segment_centers",
        frame_sampling_fps: float = 1.0,
        chunk_size: int = 8,
        keyframes_per_chunk: int = 4,
        clip_select_layer: int = -2,
        image_projector_grid: int = 12,
        video_projector_grid: int = 7,
        projector_norm: bool = True,
        video_keyframe_merge: str = "mean",
        keyframe_block_size: int = 512,
        image_token_id: int = GEMMA3N_IMAGE_SOFT_TOKEN_ID,
        vision_vocab_offset: int | None = None,
        vision_vocab_size: int = GEMMA3N_VISION_VOCAB_SIZE,
        end_of_turn_token_id: int = GEMMA3N_END_OF_TURN_ID,
        max_sequence_length: int = 4096,
        trained_projectors: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.text_config = _as_config(Gemma3nTextConfig, text_config, e2b_text_config)
        self.vision_config = _as_config(CLIPVisionConfig, vision_config, e2b_vision_config)
        self.videomamba_config = _as_config(VideoMambaConfig, videomamba_config, VideoMambaConfig)
        self.num_frames = num_frames
        # Which frames are read (ARCHITECTURE §1): "segment_centers" (the centres of num_frames equal segments)
        # or "fps" (the original Mobile-VideoGPT's: frames frame_sampling_fps per second apart from frame 0,
        # then np.linspace over them, endpoints included); see videogemma.processing.video.
        self.frame_sampling = frame_sampling
        self.frame_sampling_fps = frame_sampling_fps
        self.chunk_size = chunk_size
        self.keyframes_per_chunk = keyframes_per_chunk
        # `num_frames` is the one frame knob: VideoMamba reads the keyframes, so its frame count follows.
        if chunk_size > 0:
            self.videomamba_config.num_frames = num_frames // chunk_size * keyframes_per_chunk
        self.clip_select_layer = clip_select_layer
        self.image_projector_grid = image_projector_grid
        self.video_projector_grid = video_projector_grid
        # RMSNorm without a learnable scale at the end of each projector (Gemma's convention for soft tokens).
        self.projector_norm = projector_norm
        # How the video ETP merges a chunk's keyframes into one grid (ARCHITECTURE §5): "mean" (the mean over
        # the keyframes at each grid position) or "grid" (Mobile-VideoGPT's: the keyframes' tokens read as one
        # grid and pooled, which mixes neighbouring frames; needs a square number of keyframes per chunk).
        self.video_keyframe_merge = video_keyframe_merge
        # Query rows per block in keyframe scoring: bounds its memory, never changes its result.
        self.keyframe_block_size = keyframe_block_size
        self.image_token_id = image_token_id
        # Gemma-3n embeds the hard tokens of its vision vocabulary block (ids vision_vocab_offset ..
        # + vision_vocab_size - 1: <end_of_image>, ...) with `embed_vision`, not with the text table. Set (by
        # `from_components` from a full Gemma-3n checkpoint that holds `model.embed_vision.*`): the model keeps
        # those vectors in its `vision_token_embeds` buffer and uses them. None (text-only checkpoints, the
        # presets): those ids take their text embedding row.
        self.vision_vocab_offset = vision_vocab_offset
        self.vision_vocab_size = vision_vocab_size
        self.end_of_turn_token_id = end_of_turn_token_id
        # Generation stops at <eos> or <end_of_turn>.
        kwargs.setdefault("eos_token_id", [self.text_config.eos_token_id, end_of_turn_token_id])
        kwargs.setdefault("pad_token_id", self.text_config.pad_token_id)
        kwargs.setdefault("bos_token_id", self.text_config.bos_token_id)
        # Longest prompt + answer, in tokens after the visual block is expanded.
        self.max_sequence_length = max_sequence_length
        # Which ETPs have been trained (image_projector, video_projector): [] for a model built from its
        # components, filled in by training and by loading projector weights; None where nobody knows (a preset,
        # a model saved before this was recorded). A model answering with an untrained one warns (modeling).
        self.trained_projectors = None if trained_projectors is None else sorted(trained_projectors)
        kwargs.setdefault("tie_word_embeddings", self.text_config.tie_word_embeddings)
        super().__init__(**kwargs)
        self.validate()

    # ---- derived geometry -------------------------------------------------------------------------------

    @property
    def num_chunks(self) -> int:
        return self.num_frames // self.chunk_size

    @property
    def num_keyframes(self) -> int:
        """Frames VideoMamba reads: `keyframes_per_chunk` from every chunk."""
        return self.num_chunks * self.keyframes_per_chunk

    @property
    def clip_grid(self) -> int:
        return self.vision_config.image_size // self.vision_config.patch_size

    @property
    def image_tokens_per_frame(self) -> int:
        return self.image_projector_grid**2

    @property
    def video_tokens_per_chunk(self) -> int:
        return self.video_projector_grid**2

    @property
    def num_visual_tokens(self) -> int:
        """Soft tokens per video: `[CLIP frame 0 … N-1][video chunk 0 … C-1]`."""
        return self.num_frames * self.image_tokens_per_frame + self.num_chunks * self.video_tokens_per_chunk

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size

    def validate(self) -> None:
        """Fail early, with the offending numbers, on a geometry that cannot work."""
        if self.chunk_size <= 0 or self.num_frames % self.chunk_size:
            raise ValueError(
                f"num_frames ({self.num_frames}) must be a multiple of chunk_size ({self.chunk_size})"
            )
        if not 0 < self.keyframes_per_chunk <= self.chunk_size:
            raise ValueError(
                f"keyframes_per_chunk ({self.keyframes_per_chunk}) must be in 1..chunk_size ({self.chunk_size})"
            )
        if self.image_projector_grid > self.clip_grid:
            raise ValueError(
                f"image_projector_grid {self.image_projector_grid} exceeds CLIP's grid {self.clip_grid}"
            )
        if self.video_projector_grid > self.videomamba_config.grid_size:
            raise ValueError(
                f"video_projector_grid {self.video_projector_grid} exceeds VideoMamba's grid "
                f"{self.videomamba_config.grid_size}"
            )
        if self.frame_sampling not in FRAME_SAMPLINGS:
            raise ValueError(f"frame_sampling {self.frame_sampling!r} is not one of {FRAME_SAMPLINGS}")
        if not self.frame_sampling_fps > 0:
            raise ValueError(f"frame_sampling_fps must be positive, got {self.frame_sampling_fps}")
        if self.video_keyframe_merge not in FRAME_MERGES:
            raise ValueError(
                f"video_keyframe_merge {self.video_keyframe_merge!r} is not one of {FRAME_MERGES}"
            )
        if self.video_keyframe_merge == "grid":
            grid_merge_side(self.keyframes_per_chunk, self.video_projector_grid)
        vocab = self.text_config.vocab_size
        if not self.text_config.vocab_size_per_layer_input <= self.image_token_id < vocab:
            raise ValueError(
                f"image_token_id {self.image_token_id} must lie in [vocab_size_per_layer_input "
                f"{self.text_config.vocab_size_per_layer_input}, vocab_size {vocab})"
            )
        offset = self.vision_vocab_offset
        if offset is not None and not (offset >= 0 and 0 < self.vision_vocab_size <= vocab - offset):
            raise ValueError(
                f"the vision vocabulary block [vision_vocab_offset {offset}, + vision_vocab_size "
                f"{self.vision_vocab_size}) must be non-empty and lie in the vocabulary [0, {vocab})"
            )

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> VideoGemmaConfig:
        """`"e2b"` (Gemma-3n-E2B + CLIP ViT-B/16 + VideoMamba-M) or `"tiny"` (same code, CPU-sized)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name](), **overrides})


def _as_config(config_class: type, value: Any, default_factory: Any) -> Any:
    if value is None:
        return default_factory()
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "model_type"}
        return config_class(**value)
    return value


def grid_merge_side(frames: int, grid_out: int) -> int:
    """Side of the grid the "grid" merge reads `frames` pooled grids as; an error when it is not a square."""
    tokens = frames * grid_out**2
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(
            f"the 'grid' keyframe merge reads {frames} frames × {grid_out}² tokens = {tokens} tokens as one "
            f"square grid, but {tokens} is not a square number (use a square number of keyframes per chunk, "
            f"or the 'mean' merge)"
        )
    return side


# ---- presets ----------------------------------------------------------------------------------------------


def e2b_text_config() -> Gemma3nTextConfig:
    """The text decoder of `google/gemma-3n-E2B` (its `text_config`)."""
    layers = 30
    return Gemma3nTextConfig(
        vocab_size=262_400,
        vocab_size_per_layer_input=262_144,
        hidden_size=2048,
        hidden_size_per_layer_input=256,
        intermediate_size=[8192] * layers,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=256,
        sliding_window=512,
        layer_types=["full_attention" if (i + 1) % 5 == 0 else "sliding_attention" for i in range(layers)],
        num_kv_shared_layers=10,
        activation_sparsity_pattern=[0.95] * 10 + [0.0] * (layers - 10),
        laurel_rank=64,
        altup_num_inputs=4,
        max_position_embeddings=32_768,
        final_logit_softcapping=30.0,
    )


def e2b_vision_config() -> CLIPVisionConfig:
    """`openai/clip-vit-base-patch16`'s vision tower."""
    return CLIPVisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=16,
        projection_dim=512,
        hidden_act="quick_gelu",
    )


def _e2b() -> dict[str, Any]:
    return dict(
        text_config=e2b_text_config(),
        vision_config=e2b_vision_config(),
        videomamba_config=VideoMambaConfig(),
        num_frames=16,
        chunk_size=8,
        keyframes_per_chunk=4,
        image_projector_grid=12,
        video_projector_grid=7,
    )


def _tiny() -> dict[str, Any]:
    """Every network a few layers deep and ≤ 128 wide; 64-pixel frames; 8 frames in 2 chunks keeping 2 each.

    Gemma-3n's structure is kept whole: sliding and global layers, KV sharing, AltUp, LAuReL, per-layer
    inputs, activation sparsity, logit soft-capping.
    """
    layers = 4
    return dict(
        text_config=Gemma3nTextConfig(
            vocab_size=TINY_VOCAB,
            vocab_size_per_layer_input=TINY_TEXT_VOCAB,
            hidden_size=128,
            hidden_size_per_layer_input=16,
            intermediate_size=[256] * layers,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            sliding_window=32,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
            num_kv_shared_layers=2,
            activation_sparsity_pattern=[0.95, 0.0, 0.0, 0.0],
            laurel_rank=8,
            altup_num_inputs=4,
            max_position_embeddings=1024,
            final_logit_softcapping=30.0,
        ),
        vision_config=CLIPVisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=2,
            image_size=64,
            patch_size=16,
            projection_dim=64,
            hidden_act="quick_gelu",
        ),
        videomamba_config=VideoMambaConfig(
            embed_dim=64, depth=3, patch_size=16, image_size=64, d_state=8, d_conv=4, expand=2
        ),
        num_frames=8,
        chunk_size=4,
        keyframes_per_chunk=2,
        image_projector_grid=2,
        video_projector_grid=2,
        image_token_id=TINY_IMAGE_SOFT_TOKEN_ID,
        end_of_turn_token_id=TINY_SPECIAL_TOKENS.index(END_OF_TURN),
        max_sequence_length=512,
    )


PRESETS = dict(zip(PRESET_NAMES, (_e2b, _tiny), strict=True))


# Registers the class above with its Auto class of transformers if that is imported already (see auto_classes).
auto_classes.register_loaded()
