"""Names and values the whole package shares, each written once: token names, the label ignore index, the
model's input names, the video suffixes the tools accept and the QVED prompts."""

from __future__ import annotations

# Gemma-3n's control and multimodal tokens, by name; their ids come from the tokenizer (config.py holds
# Gemma-3n's ids as the model's defaults).
PAD = "<pad>"
EOS = "<eos>"
BOS = "<bos>"
UNK = "<unk>"
MASK = "<mask>"
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
START_OF_IMAGE = "<start_of_image>"
END_OF_IMAGE = "<end_of_image>"
IMAGE_SOFT_TOKEN = "<image_soft_token>"
END_OF_AUDIO = "<end_of_audio>"
AUDIO_SOFT_TOKEN = "<audio_soft_token>"
# Where a conversation's first user turn places the video (LLaVA's convention).
VIDEO_TAG = "<video>"

# Label value the loss ignores (PyTorch's cross-entropy default, Hugging Face's convention).
IGNORE_INDEX = -100

# The model's video inputs: pixels for both encoders, or what the encoders and projectors made of them.
CLIP_PIXEL_VALUES = "clip_pixel_values"
VIDEOMAMBA_PIXEL_VALUES = "videomamba_pixel_values"
PIXEL_INPUT_NAMES = (CLIP_PIXEL_VALUES, VIDEOMAMBA_PIXEL_VALUES)
VIDEO_INPUT_NAMES = (*PIXEL_INPUT_NAMES, "video_features", "visual_tokens")

# Files the dataset tools and batch inference take for videos.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

# QVED's two questions (DATA.md): the fine-grained label's, which is also what the processor asks when a call
# gives a video but no text, and the feedback's.
QVED_FINE_GRAINED_PROMPT = (
    "Please evaluate the exercise form shown. What mistakes, if any, are present, "
    "and what corrections would you recommend?"
)
QVED_FEEDBACK_PROMPT = (
    "Please evaluate the exercise form shown. What feedback would you provide to improve the performance?"
)
DEFAULT_PROMPT = QVED_FINE_GRAINED_PROMPT
# Labels read `<exercise> - <detail>` (DATA.md); exercise names may hold hyphens, never this separator.
EXERCISE_SEPARATOR = " - "
# The answer a live-coaching window model is trained to give when no feedback is due in its window
# (`videogemma data workout-windows`); the coach stays silent on it.
NO_FEEDBACK_ANSWER = "No new feedback."
# Tokens a live-coaching answer may take (short cues, one per window).
COACH_MAX_NEW_TOKENS = 48

# How the frames of a clip are chosen (the config's `frame_sampling`, `processing.video.FrameSampling`).
FRAME_SAMPLINGS = ("segment_centers", "fps")
# How the video ETP merges a chunk's keyframes (the config's `video_keyframe_merge`, ARCHITECTURE §5).
FRAME_MERGES = ("mean", "grid")
# The two ETPs, by their module names in the model.
PROJECTOR_NAMES = ("image_projector", "video_projector")
# The key of `projectors.safetensors` metadata naming the projectors a run (and its base) trained.
TRAINED_PROJECTORS_KEY = "trained_projectors"

# The model presets (`config.PRESETS`): known here so that the command line checks a name without transformers.
PRESET_NAMES = ("e2b", "tiny")

# Gemma-3n's attention implementations (its config's `_attn_implementation`). Unset: WINDOWED_ATTENTION, SDPA
# that gives a long prompt's local layers only their windows' keys (modeling.windowed_attention).
WINDOWED_ATTENTION = "sdpa_windowed"
ATTN_IMPLEMENTATIONS = (WINDOWED_ATTENTION, "sdpa", "eager", "flash_attention_2")
# Weight-only quantisation of the text decoder for inference (`--quantize`, modeling.quantization).
QUANTIZE_CHOICES = ("int8", "int4")
# What an int4 decoder's decode step multiplies its weights by (`--int4-activations`, modeling.quantization):
# the activations rounded to int8 a group of 128 at a time (the default), or as they are (bf16 / fp32).
INT4_ACTIVATION_CHOICES = ("int8", "exact")
DEFAULT_INT4_ACTIVATIONS = "int8"
