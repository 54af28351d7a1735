"""Answering questions about videos: one batch of processor outputs in, one `Answer` per video out.

    model, processor = videogemma.load("tiny")
    print(answer(model, processor, "squats/00000340.mp4", "How is my form?").text)
    for piece in stream_answer(model, processor, "squats/00000340.mp4"):
        print(piece, end="", flush=True)

Generation is greedy unless `GenerationSettings.do_sample` is set. The video enters at prefill only (the
model's `prepare_inputs_for_generation`); generation stops at `<eos>` or `<end_of_turn>`. Batch inference
(`batch.py`) calls `generate_answers` on left-padded batches, the single-video helpers call it on a batch of
one, so both paths produce the same answers. An answer without text, or one whose scores were NaN or
infinite on the way, carries an `error` instead of passing for an answer.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import BatchFeature, LogitsProcessor, LogitsProcessorList, TextIteratorStreamer, set_seed
from transformers.generation.streamers import BaseStreamer

from videogemma.constants import PIXEL_INPUT_NAMES
from videogemma.errors import VideoGemmaDataError
from videogemma.inference.timing import GenerationTimer


class InferenceArgumentError(VideoGemmaDataError):
    """An inference option that cannot work (`--max-new-tokens 0`, `--batch-size 0`...), refused before any
    file is opened or the model loads."""


@dataclass
class GenerationSettings:
    """Decoding options of `generate` (greedy by default). Invalid values are refused on creation."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    seed: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `InferenceArgumentError` naming the first option that cannot work."""
        if self.max_new_tokens < 1:
            raise InferenceArgumentError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if not self.do_sample:
            return  # the sampling options are not used
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise InferenceArgumentError(
                f"--temperature must be above 0 with --do-sample, got {self.temperature} "
                "(for deterministic answers leave out --do-sample)"
            )
        if not 0 < self.top_p <= 1:
            raise InferenceArgumentError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InferenceArgumentError(f"--top-k must be 0 (no limit) or more, got {self.top_k}")

    def generate_kwargs(self) -> dict[str, Any]:
        self.validate()
        if not self.do_sample:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        return {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
        }


@dataclass
class Answer:
    text: str
    generated_tokens: int  # new tokens up to and including the stop token
    generation_time: float  # seconds from the start of `generate` (video encoding included) to its last token
    time_to_first_token: float | None
    error: str | None = None  # why this is no answer (no text, non-finite scores); None for an answer

    @property
    def tokens_per_second(self) -> float | None:
        return self.generated_tokens / self.generation_time if self.generation_time > 0 else None


class _NonFiniteScores(LogitsProcessor):
    """Notes, per sequence, the first step whose scores hold NaN or +inf, or no finite value at all.

    Such scores come from broken weights or an overflow; the token picked from them means nothing. (A
    suppressed token's -inf is normal, so only rows with no finite score at all count.)
    """

    def __init__(self) -> None:
        self.first_bad_step: dict[int, int] = {}
        self.step = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.step += 1
        bad = torch.isnan(scores).any(-1) | torch.isposinf(scores).any(-1) | ~torch.isfinite(scores).any(-1)
        for row in bad.nonzero().flatten().tolist():
            self.first_bad_step.setdefault(row, self.step)
        return scores


class _TimedStreamer(GenerationTimer):
    """A `GenerationTimer` that also forwards every step to the caller's streamer (`generate` takes one)."""

    def __init__(self, inner: BaseStreamer | None) -> None:
        super().__init__()
        self.inner = inner

    def put(self, value: Any) -> None:
        super().put(value)
        if self.inner is not None:
            self.inner.put(value)

    def end(self) -> None:
        super().end()
        if self.inner is not None:
            self.inner.end()


def stop_token_ids(model: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, (list, tuple)) else [eos])


@torch.inference_mode()
def generate_answers(
    model: Any,
    processor: Any,
    inputs: BatchFeature | dict[str, torch.Tensor],
    settings: GenerationSettings | None = None,
    streamer: BaseStreamer | None = None,
) -> list[Answer]:
    """Generate for a batch from the processor (left padded when it holds more than one sequence)."""
    settings = settings or GenerationSettings()
    inputs = dict(inputs)
    inputs.pop("labels", None)
    for name, tensor in inputs.items():
        dtype = model.dtype if name in PIXEL_INPUT_NAMES else None
        inputs[name] = tensor.to(device=model.device, dtype=dtype)
    if settings.seed is not None:
        set_seed(settings.seed)
    timer = _TimedStreamer(streamer)
    checker = _NonFiniteScores()
    sequences = model.generate(
        **inputs,
        **settings.generate_kwargs(),
        streamer=timer,
        logits_processor=LogitsProcessorList([checker]),
    )
    if timer.end_time is None:
        timer.end()

    new_tokens = sequences[:, inputs["input_ids"].shape[1] :].tolist()
    stops = stop_token_ids(model)
    answers = []
    for index, row in enumerate(new_tokens):
        # Rows that finished early are padded after their stop token: count up to the first stop.
        length = next((i + 1 for i, token in enumerate(row) if token in stops), len(row))
        # step_times[k] is when the k-th new token came (step_times[0] is the prompt).
        finished = timer.step_times[length] if length < len(timer.step_times) else timer.end_time
        text = processor.decode(row[:length], skip_special_tokens=True).strip()
        answers.append(
            Answer(
                text=text,
                generated_tokens=length,
                generation_time=finished - timer.start,
                time_to_first_token=timer.time_to_first_token,
                error=_answer_error(text, length, checker.first_bad_step.get(index)),
            )
        )
    return answers


def _answer_error(text: str, length: int, bad_step: int | None) -> str | None:
    # Steps after a sequence stopped are padding; only a bad step within the answer counts.
    if bad_step is not None and bad_step <= length:
        return (
            f"NonFiniteGenerationError: the model's scores were NaN or infinite at generation step {bad_step} "
            "(broken weights or a numeric overflow; try float32)"
        )
    if not text:
        return f"EmptyGenerationError: the model generated {length} tokens and no text"
    return None


def answer(
    model: Any,
    processor: Any,
    video: Any,
    question: str | None = None,
    *,
    system: str | None = None,
    settings: GenerationSettings | None = None,
    streamer: BaseStreamer | None = None,
) -> Answer:
    """Answer one question (default: the processor's default prompt) about one video (path or frames)."""
    inputs = processor(
        videos=[video], text=None if question is None else [question], system=system, padding_side="left"
    )
    return generate_answers(model, processor, inputs, settings, streamer)[0]


def stream_answer(
    model: Any,
    processor: Any,
    video: Any,
    question: str | None = None,
    *,
    system: str | None = None,
    settings: GenerationSettings | None = None,
) -> Iterator[str]:
    """Yield the answer's text piece by piece as it is generated (generation runs in a thread)."""
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            answer(model, processor, video, question, system=system, settings=settings, streamer=streamer)
        except BaseException as error:  # re-raised in the caller's thread below
            failure.append(error)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield from streamer
    thread.join()
    if failure:
        raise failure[0]


def check_device(device: torch.device | str | None) -> None:
    """Refuse a device this machine cannot use (`cuda` on a CPU-only torch, `cuda:3` with two GPUs), before
    anything is loaded onto it."""
    from videogemma.precision import AUTO

    if device is None or device == AUTO:  # chosen at load: CUDA when usable, else the CPU
        return
    import torch

    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InferenceArgumentError(f"--device {device}: not a device name ({error})") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InferenceArgumentError(
                f"--device {device}: no CUDA GPU is usable here (torch {torch.__version__}, CUDA "
                f"{torch.version.cuda or 'not built in'}); leave out --device or pass cpu"
            )
        if device.index is not None and device.index >= count:
            raise InferenceArgumentError(f"--device {device}: only {count} CUDA GPU(s) are visible")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InferenceArgumentError(f"--device {device}: MPS is not available on this machine")
