"""`VideoGemmaProcessor`: videos and conversations in, the model's tensors out.

One object holds everything that turns a sample into model inputs, and is saved beside the model:

- the tokenizer (Gemma-3n's, or the `tiny` preset's own);
- the frame count and how frames are picked (`frame_sampling`), both preprocessings (CLIP, VideoMamba:
  sizes, mean, std);
- the chat template settings: placeholder token and count, sequence limit, default system text and prompt.

    processor = VideoGemmaProcessor.from_preset("tiny")
    batch = processor(videos=["squats/00000340.mp4"], text=["How is my form?"])  # left-padded for generate
    # input_ids, attention_mask, clip_pixel_values (B,T,3,Sc,Sc), videomamba_pixel_values (B,T,3,Sv,Sv)

Training uses `process_sample` per item and `collate` per batch (right padding, labels); generation calls
the processor on a batch (left padding, a generation prompt). A plain class with Hugging Face's method names:
`transformers.ProcessorMixin` expects sub-processors this model does not have.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, BatchFeature, PreTrainedTokenizerBase
from transformers.utils import PushToHubMixin

from videogemma import auto_classes
from videogemma.config import (
    CLIP_IMAGE_MEAN,
    CLIP_IMAGE_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VideoGemmaConfig,
)
from videogemma.constants import CLIP_PIXEL_VALUES, DEFAULT_PROMPT, IMAGE_SOFT_TOKEN, VIDEOMAMBA_PIXEL_VALUES
from videogemma.errors import VideoGemmaDataError
from videogemma.processing.chat_template import (
    IGNORE_INDEX,
    ChatTemplate,
    ConversationError,
    Turn,
    normalize_conversation,
    split_video_parts,
)
from videogemma.processing.transforms import clip_transform, videomamba_transform
from videogemma.processing.video import (
    FrameSampling,
    fps_sample_positions,
    read_video_frames,
    sample_frame_indices,
)
from videogemma.processing.video_source import VideoLimits

PROCESSOR_CONFIG_NAME = "processor_config.json"

VideoInput = str | os.PathLike | np.ndarray | torch.Tensor | Sequence[Any]


# What `AutoProcessor.from_pretrained` and the Hub pass along besides the folder: where to download from.
HUB_DOWNLOAD_ARGUMENTS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only")


class VideoGemmaProcessor(PushToHubMixin):
    """Tokenizer + frame preprocessing + the chat template, with `from_pretrained` / `save_pretrained` /
    `push_to_hub` (the mixin uploads what `save_pretrained` writes)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        num_frames: int,
        clip_image_size: int,
        videomamba_image_size: int,
        num_visual_tokens: int,
        frame_sampling: str = "segment_centers",
        frame_sampling_fps: float = 1.0,
        clip_mean: Sequence[float] = CLIP_IMAGE_MEAN,
        clip_std: Sequence[float] = CLIP_IMAGE_STD,
        videomamba_mean: Sequence[float] = IMAGENET_MEAN,
        videomamba_std: Sequence[float] = IMAGENET_STD,
        image_token: str = IMAGE_SOFT_TOKEN,
        max_length: int | None = None,
        truncate_answer: bool = False,
        default_system: str | None = None,
        default_prompt: str = DEFAULT_PROMPT,
        video_limits: VideoLimits | Mapping[str, Any] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.num_frames = num_frames
        self.sampling = FrameSampling(frame_sampling, frame_sampling_fps)
        self.clip_image_size = clip_image_size
        self.videomamba_image_size = videomamba_image_size
        self.num_visual_tokens = num_visual_tokens
        self.clip_mean = tuple(clip_mean)
        self.clip_std = tuple(clip_std)
        self.videomamba_mean = tuple(videomamba_mean)
        self.videomamba_std = tuple(videomamba_std)
        self.image_token = image_token
        self.max_length = max_length
        self.truncate_answer = truncate_answer
        self.default_system = default_system
        self.default_prompt = default_prompt
        # What a video file may cost to read (resolution, duration, size, frames): saved with the processor,
        # so training and inference with a model apply the same bounds.
        self.video_limits = VideoLimits.from_value(video_limits)
        self.chat_template = ChatTemplate(tokenizer, image_token=image_token)

    # ---- construction and persistence ----------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, config: VideoGemmaConfig, tokenizer: PreTrainedTokenizerBase, **overrides: Any
    ) -> VideoGemmaProcessor:
        """The processor a model of `config` needs; checks the tokenizer's placeholder id against the config."""
        settings = dict(
            num_frames=config.num_frames,
            frame_sampling=config.frame_sampling,
            frame_sampling_fps=config.frame_sampling_fps,
            clip_image_size=config.vision_config.image_size,
            videomamba_image_size=config.videomamba_config.image_size,
            num_visual_tokens=config.num_visual_tokens,
            max_length=config.max_sequence_length,
        )
        processor = cls(tokenizer, **{**settings, **overrides})
        if processor.image_token_id != config.image_token_id:
            raise ValueError(
                f"the tokenizer maps {processor.image_token} to {processor.image_token_id} but the model "
                f"config expects image_token_id={config.image_token_id}: tokenizer and model do not match"
            )
        return processor

    @classmethod
    def from_preset(cls, name: str = "tiny", **overrides: Any) -> VideoGemmaProcessor:
        """The `tiny` preset's processor, with its own tokenizer built on the spot."""
        if name != "tiny":
            raise ValueError(
                f"preset {name!r} uses Gemma-3n's tokenizer, which is not built here: use "
                "VideoGemmaProcessor.from_config(config, AutoTokenizer.from_pretrained(<gemma-3n directory>))"
            )
        from videogemma.processing.tokenizer import build_tiny_tokenizer

        return cls.from_config(VideoGemmaConfig.from_preset(name), build_tiny_tokenizer(), **overrides)

    def to_dict(self) -> dict[str, Any]:
        return {
            "processor_class": type(self).__name__,
            "num_frames": self.num_frames,
            "frame_sampling": self.sampling.method,
            "frame_sampling_fps": self.sampling.fps,
            "clip_image_size": self.clip_image_size,
            "clip_mean": list(self.clip_mean),
            "clip_std": list(self.clip_std),
            "videomamba_image_size": self.videomamba_image_size,
            "videomamba_mean": list(self.videomamba_mean),
            "videomamba_std": list(self.videomamba_std),
            "num_visual_tokens": self.num_visual_tokens,
            "image_token": self.image_token,
            "max_length": self.max_length,
            "truncate_answer": self.truncate_answer,
            "default_system": self.default_system,
            "default_prompt": self.default_prompt,
            "video_limits": self.video_limits.to_dict(),
        }

    def save_pretrained(self, save_directory: str | os.PathLike, **_: Any) -> None:
        """Write the tokenizer files and `processor_config.json` (beside the model's own files). Other keyword
        arguments (`push_to_hub` passes `max_shard_size`) do not apply to a processor."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        (directory / PROCESSOR_CONFIG_NAME).write_text(text, encoding="utf-8")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **overrides: Any) -> VideoGemmaProcessor:
        """Load a processor saved by `save_pretrained`: a local folder, or a Hub repository id (downloaded when
        a network exists; `revision`, `token`, `cache_dir`... as for any Hub download). What
        `AutoProcessor.from_pretrained` adds (`trust_remote_code`, `_from_auto`) is not needed here."""
        hub = {key: overrides.pop(key) for key in HUB_DOWNLOAD_ARGUMENTS if key in overrides}
        for key in ("trust_remote_code", "_from_auto", "return_unused_kwargs", "subfolder", "code_revision"):
            overrides.pop(key, None)
        directory = _local_folder(directory, hub)
        config_path = Path(directory) / PROCESSOR_CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{config_path} not found: {directory} holds no saved VideoGemmaProcessor"
            )
        settings = json.loads(config_path.read_text(encoding="utf-8"))
        # A Hugging Face model directory may hold another processor's file under the same name.
        processor_class = settings.pop("processor_class", None)
        if processor_class != cls.__name__:
            raise ValueError(
                f"{config_path} describes a {processor_class or 'different'} processor, not a {cls.__name__}"
            )
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        return cls(tokenizer, **{**settings, **overrides})

    # ---- token ids -------------------------------------------------------------------------------------------

    @property
    def image_token_id(self) -> int:
        return self.chat_template.image_token_id

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    # ---- videos ----------------------------------------------------------------------------------------------

    def load_frames(self, video: VideoInput) -> np.ndarray:
        """`num_frames` frames, uint8 (T, H, W, 3): decoded from a path, or sampled from frames already
        in memory (an array (N, H, W, 3) or a list of PIL images / arrays) the way files are sampled.

        Frames in memory carry no timestamps: with `fps` sampling they are taken as already read at the rate
        (as the original took a folder of frames), and only capped and padded."""
        if isinstance(video, (str, os.PathLike)):
            return read_video_frames(video, self.num_frames, sampling=self.sampling, limits=self.video_limits)
        if isinstance(video, torch.Tensor):
            video = video.numpy(force=True)
        if isinstance(video, np.ndarray):
            frames = video
        elif isinstance(video, Sequence) and len(video) > 0:
            arrays = [_rgb_array(frame) for frame in video]
            if len({array.shape for array in arrays}) > 1:
                raise VideoGemmaDataError(
                    f"the frames of a video differ in shape: {sorted({a.shape for a in arrays})}"
                )
            frames = np.stack(arrays)
        else:
            raise VideoGemmaDataError(
                f"a video must be a path, an array or a list of frames, got {video!r:.80}"
            )
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise VideoGemmaDataError(
                f"video frames must be uint8 (T, H, W, 3) with T ≥ 1, got {frames.dtype} {frames.shape}"
            )
        if len(frames) == self.num_frames:
            return frames
        if self.sampling.method == "fps":
            return frames[fps_sample_positions(len(frames), self.num_frames)]
        return frames[sample_frame_indices(len(frames), self.num_frames)]

    def preprocess_video(self, video: VideoInput) -> tuple[torch.Tensor, torch.Tensor]:
        """Both encoders' inputs for one video: CLIP (T, 3, Sc, Sc) and VideoMamba (T, 3, Sv, Sv), float32."""
        frames = torch.from_numpy(np.ascontiguousarray(self.load_frames(video)))
        clip = clip_transform(frames, self.clip_image_size, self.clip_mean, self.clip_std)
        videomamba = videomamba_transform(
            frames, self.videomamba_image_size, self.videomamba_mean, self.videomamba_std
        )
        return clip, videomamba

    # ---- text ------------------------------------------------------------------------------------------------

    def encode_conversation(
        self,
        conversation: Any,
        *,
        system: str | None = None,
        has_video: bool = True,
        add_generation_prompt: bool | None = None,
        record: Any = None,
    ) -> dict[str, torch.Tensor]:
        """`input_ids` and `labels` (1-D, unpadded) of one conversation through the chat template.

        `system=None` uses the default system text; `add_generation_prompt=None` adds one when the
        conversation ends with a user turn (a question to answer).
        """
        rendered = self.chat_template.render(
            conversation,
            num_visual_tokens=self.num_visual_tokens if has_video else 0,
            system=self.default_system if system is None else system,
            add_generation_prompt=_generation_prompt(conversation, add_generation_prompt, record),
            max_length=self.max_length,
            truncate_answer=self.truncate_answer,
            record=record,
        )
        return {
            "input_ids": torch.tensor(rendered.input_ids, dtype=torch.long),
            "labels": torch.tensor(rendered.labels, dtype=torch.long),
        }

    def render_text(
        self,
        conversation: Any,
        *,
        system: str | None = None,
        has_video: bool = True,
        add_generation_prompt: bool | None = None,
        expand_placeholders: bool = False,
    ) -> str:
        """What `encode_conversation` tokenizes, as text for display (placeholders as `<image_soft_token>×N`)."""
        return self.chat_template.render_text(
            conversation,
            num_visual_tokens=self.num_visual_tokens if has_video else 0,
            system=self.default_system if system is None else system,
            add_generation_prompt=_generation_prompt(conversation, add_generation_prompt, None),
            expand_placeholders=expand_placeholders,
        )

    # ---- samples and batches ---------------------------------------------------------------------------------

    def process_sample(
        self,
        video: VideoInput | None,
        conversation: Any,
        *,
        system: str | None = None,
        add_generation_prompt: bool | None = None,
        record: Any = None,
    ) -> dict[str, torch.Tensor]:
        """One unpadded sample: `input_ids`, `labels` and, with a video, both pixel tensors (T, 3, S, S).

        The text is rendered first, so a sample too long for the limit fails before its video is decoded.
        """
        sample = self.encode_conversation(
            conversation,
            system=system,
            has_video=video is not None,
            add_generation_prompt=add_generation_prompt,
            record=record,
        )
        if video is not None:
            sample[CLIP_PIXEL_VALUES], sample[VIDEOMAMBA_PIXEL_VALUES] = self.preprocess_video(video)
        return sample

    def collate(
        self,
        samples: Sequence[dict[str, torch.Tensor]],
        padding_side: str = "right",
        return_labels: bool = True,
    ) -> BatchFeature:
        """Pad samples from `process_sample` into a batch: right padding to train, left padding to generate."""
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        with_video = [CLIP_PIXEL_VALUES in sample for sample in samples]
        if any(with_video) and not all(with_video):
            raise ValueError("a batch must be all video samples or all text-only samples")
        length = max(len(sample["input_ids"]) for sample in samples)
        input_ids = torch.full((len(samples), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
        for row, sample in enumerate(samples):
            n = len(sample["input_ids"])
            span = slice(0, n) if padding_side == "right" else slice(length - n, length)
            input_ids[row, span] = sample["input_ids"]
            attention_mask[row, span] = 1
            labels[row, span] = sample["labels"]
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if return_labels:
            batch["labels"] = labels
        if all(with_video):
            batch[CLIP_PIXEL_VALUES] = torch.stack([s[CLIP_PIXEL_VALUES] for s in samples])
            batch[VIDEOMAMBA_PIXEL_VALUES] = torch.stack([s[VIDEOMAMBA_PIXEL_VALUES] for s in samples])
        return BatchFeature(batch)

    def __call__(
        self,
        videos: VideoInput | Sequence[VideoInput | None] | None = None,
        text: str | Sequence[str] | None = None,
        conversations: Any = None,
        *,
        system: str | None = None,
        padding_side: str | None = None,
        return_labels: bool = False,
        add_generation_prompt: bool | None = None,
    ) -> BatchFeature:
        """A batch of model inputs from videos and questions (`text`) or whole conversations.

        `videos`: one video or a list (one per sample; `None` for none). `text`: questions, one per video
        (default: the default prompt). `conversations`: conversations in any of DATA.md's shapes, instead
        of `text`. A generation prompt is added where a conversation ends with a question, unless
        `add_generation_prompt` says otherwise. Padding (`padding_side=None`) is on the left when every sample
        ends in a generation prompt, so that `model.generate(**batch)` continues each one right after its
        prompt, and on the right otherwise (training batches).
        """
        if text is not None and conversations is not None:
            raise ValueError("give either text (questions) or conversations, not both")
        if isinstance(text, str):
            text = [text]
        if conversations is not None and (_is_turn_list(conversations) or isinstance(conversations, Mapping)):
            conversations = [conversations]
        if videos is None:
            count = len(conversations) if conversations is not None else len(text) if text is not None else 0
            videos = [None] * count
        elif not isinstance(videos, (list, tuple)) or _is_frame_list(videos):
            videos = [videos]
        if conversations is None:
            questions = text if text is not None else [self.default_prompt] * len(videos)
            conversations = [[{"from": "human", "value": question}] for question in questions]
        if len(conversations) != len(videos) or not videos:
            raise ValueError(f"got {len(videos)} videos for {len(conversations)} texts/conversations")
        prompts = [
            _generation_prompt(conversation, add_generation_prompt, index)
            for index, conversation in enumerate(conversations)
        ]
        samples = [
            self.process_sample(
                video, conversation, system=system, add_generation_prompt=prompt, record=index
            )
            for index, (video, conversation, prompt) in enumerate(zip(videos, conversations, prompts))
        ]
        if padding_side is None:
            padding_side = "left" if all(prompts) else "right"
        return self.collate(samples, padding_side=padding_side, return_labels=return_labels)

    def apply_chat_template(
        self,
        conversation: Any,
        *,
        add_generation_prompt: bool | None = None,
        tokenize: bool = False,
        return_dict: bool = True,
        system: str | None = None,
        expand_placeholders: bool = False,
        **_: Any,
    ) -> str | list[str] | BatchFeature | torch.Tensor:
        """Hugging Face's `apply_chat_template` over the one chat template (`processing.chat_template`).

        `conversation`: one conversation, or a list of them, as messages whose `content` is text or a list
        of parts (`{"type": "video", "video": "clip.mp4"}`, `{"type": "text", "text": "..."}`); DATA.md's
        `from`/`value` turns work too. `tokenize=False`: the rendered text (the placeholder run shown as
        `<image_soft_token>×N` unless `expand_placeholders`). `tokenize=True`: the batch `__call__` builds, videos
        read from the video parts, ready for `model.generate(**batch)` (`return_dict=False`: its `input_ids`).
        Other Hugging Face arguments (`return_tensors="pt"`...) are accepted: the result is always PyTorch.
        """
        batched = _is_conversation_list(conversation)
        conversations = list(conversation) if batched else [conversation]
        split = [split_video_parts(item, index) for index, item in enumerate(conversations)]
        for index, (_, videos) in enumerate(split):
            if len(videos) > 1:
                raise ConversationError(
                    index, f"{len(videos)} videos in one conversation; the model reads one"
                )
        if tokenize:
            videos = [videos[0] if videos else None for _, videos in split]
            batch = self(
                videos=None if not any(v is not None for v in videos) else videos,
                conversations=[turns for turns, _ in split],
                system=system,
                add_generation_prompt=add_generation_prompt,
            )
            return batch if return_dict else batch["input_ids"]
        texts = [
            self.render_text(
                turns,
                system=system,
                has_video=bool(videos),
                add_generation_prompt=add_generation_prompt,
                expand_placeholders=expand_placeholders,
            )
            for turns, videos in split
        ]
        return texts if batched else texts[0]

    # ---- decoding --------------------------------------------------------------------------------------------

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = True, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens, **kwargs)

    def decode(self, token_ids: Any, skip_special_tokens: bool = True, **kwargs: Any) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.to_dict(), ensure_ascii=False)})"


def _local_folder(name: str | os.PathLike, hub: dict[str, Any]) -> Path:
    """`name` itself when it is a folder; a Hub repository id's download (the processor's files only)."""
    from videogemma.hub import is_hub_id

    if Path(name).is_dir() or not is_hub_id(name):
        return Path(name)
    from huggingface_hub import snapshot_download

    patterns = [PROCESSOR_CONFIG_NAME, "tokenizer*", "special_tokens_map.json", "*.model", "chat_template*"]
    return Path(snapshot_download(str(name), allow_patterns=patterns, **hub))


def _rgb_array(frame: Any) -> np.ndarray:
    if hasattr(frame, "convert"):  # a PIL image
        frame = frame.convert("RGB")
    return np.asarray(frame)


def _is_frame_list(videos: Sequence[Any]) -> bool:
    """A list of frames (one video) rather than a list of videos."""
    first = videos[0] if len(videos) else None
    return hasattr(first, "convert") or (isinstance(first, (np.ndarray, torch.Tensor)) and first.ndim == 3)


def _is_conversation_list(value: Any) -> bool:
    """A list of conversations (each a list of turns or a record) rather than one conversation."""
    if not isinstance(value, (list, tuple)) or not value:
        return False
    first = value[0]
    return _is_turn_list(first) or (isinstance(first, Mapping) and "conversations" in first)


def _is_turn_list(conversations: Any) -> bool:
    """One conversation (a list of turns) rather than a list of conversations or records."""
    if not isinstance(conversations, (list, tuple)) or not conversations:
        return False
    first = conversations[0]
    return isinstance(first, Turn) or (isinstance(first, Mapping) and ("from" in first or "role" in first))


def _generation_prompt(conversation: Any, add_generation_prompt: bool | None, record: Any) -> bool:
    """`None` means: add one when the conversation ends with a user turn (a question awaiting its answer)."""
    if add_generation_prompt is not None:
        return add_generation_prompt
    turns = normalize_conversation(conversation, record)
    return bool(turns) and turns[-1].role == "user"


# Registers the class above with its Auto class of transformers if that is imported already (see auto_classes).
auto_classes.register_loaded()
