"""The lmms-eval plugin: VideoGemma as a chat model of the lmms-eval harness, so that its video benchmarks run
on a VideoGemma model:

    python -m lmms_eval --model videogemma --model_args pretrained=RUN_DIR[,max_new_tokens=64] --tasks TASK

lmms-eval finds the model through the entry-point group `lmms_eval.models` (pyproject: `manifest` below gives
its `ModelManifest`). As a chat model (`is_simple = False`) it receives, per request, the task's messages
(`doc_to_messages(doc)`: text and video parts) and the generation options, and returns the generated text.
Messages become the processor's conversation as the server's do (`inference.messages`: one video, in the first
user message); requests with the same options are generated in batches of `batch_size` (left padded, greedy
unless `temperature` > 0); `until` stop strings cut the answer at the first one. A request whose video cannot
be read or whose messages the model cannot take (an image, two videos) is logged, naming the task and
document, and answered with an empty text, as lmms-eval's own models do, so the rest of the run goes on (the
empty answer scores as wrong). Log-likelihood requests (multiple-choice scoring) are refused: the model is
evaluated on generation tasks.

lmms-eval itself is not a dependency: its full install replaces a CPU torch with a CUDA build and pins an
older PyAV. The plugin needs only its model API (`lmms_eval.api`, `lmms_eval.protocol`), present wherever
lmms-eval runs; the development set-up installs the package without its dependencies for the plugin's test.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from lmms_eval.api.model import lmms
from lmms_eval.protocol import ChatMessages

from videogemma.errors import VideoGemmaDataError
from videogemma.inference.generate import GenerationSettings, generate_answers
from videogemma.inference.messages import TextPart, VideoPart, chat_conversation

logger = logging.getLogger(__name__)

MODEL_ID = "videogemma"
DEFAULT_MAX_NEW_TOKENS = 128


def manifest() -> Any:
    """The entry point's payload: lmms-eval's registration of this chat model."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, chat_class_path=f"{__name__}.{VideoGemma.__name__}")


class VideoGemma(lmms):
    """A VideoGemma model (`pretrained`: a preset, a saved model or a training run) as an lmms-eval chat model."""

    is_simple = False

    def __init__(
        self,
        pretrained: str = "tiny",
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | str = 1,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        max_batch_size: int | None = None,  # lmms-eval passes it to every model; batches are `batch_size`
    ) -> None:
        super().__init__()
        from videogemma.loading import load

        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise VideoGemmaDataError(f"batch_size must be a positive whole number, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.model, self.processor = load(str(pretrained), dtype=dtype, device=device)
        self._device = self.model.device

    @property
    def device(self) -> Any:
        return self._device

    def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "VideoGemma is evaluated on generation tasks (generate_until); log-likelihood scoring is not implemented"
        )

    def generate_until_multi_round(self, requests: Sequence[Any]) -> list[str]:
        raise NotImplementedError("VideoGemma answers one question per request (generate_until)")

    def generate_until(self, requests: Sequence[Any]) -> list[str]:
        """One answer per request, in the requests' order."""
        answers: list[str] = [""] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.args[2].items())), []).append(index)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                for index, text in zip(chunk, self._answer_chunk([requests[i] for i in chunk])):
                    answers[index] = text
                    request = requests[index]
                    self.cache_hook.add_partial("generate_until", (request.args[0], request.args[2]), text)
        return answers

    def _answer_chunk(self, requests: list[Any]) -> list[str]:
        """Texts for requests sharing their generation options: the unreadable ones empty, the rest batched."""
        texts = [""] * len(requests)
        samples, rows = [], []
        for row, request in enumerate(requests):
            try:
                samples.append(self._sample(request))
                rows.append(row)
            except (VideoGemmaDataError, OSError, ValueError) as error:
                _, _, _, doc_id, task, split = request.args
                logger.error(
                    "videogemma: %s/%s document %s: %s (answered with no text)", task, split, doc_id, error
                )
        if not samples:
            return texts
        gen_kwargs = dict(requests[0].args[2])
        batch = self.processor.collate(samples, padding_side="left", return_labels=False)
        for row, result in zip(
            rows, generate_answers(self.model, self.processor, batch, self._settings(gen_kwargs))
        ):
            texts[row] = _cut(result.text, gen_kwargs.get("until"))
        return texts

    def _sample(self, request: Any) -> dict[str, Any]:
        _, doc_to_messages, _, doc_id, task, split = request.args
        messages = ChatMessages(messages=doc_to_messages(self.task_dict[task][split][doc_id]))
        chat = chat_conversation(
            [
                (message.role, [_part(content) for content in message.content])
                for message in messages.messages
            ],
            default_prompt=self.processor.default_prompt,
        )
        return self.processor.process_sample(
            chat.video, chat.conversation, add_generation_prompt=True, record=f"{task}/{split}/{doc_id}"
        )

    def _settings(self, gen_kwargs: dict[str, Any]) -> GenerationSettings:
        temperature = float(gen_kwargs.get("temperature") or 0)
        max_new_tokens = int(gen_kwargs.get("max_new_tokens") or self.max_new_tokens)
        if temperature <= 0 and not gen_kwargs.get("do_sample"):
            return GenerationSettings(max_new_tokens=max_new_tokens)
        return GenerationSettings(
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=temperature or 1.0,
            top_p=float(gen_kwargs.get("top_p") or 1.0),
        )


def _part(content: Any) -> TextPart | VideoPart:
    if content.type == "text":
        return TextPart(content.text)
    if content.type == "video":
        return VideoPart(str(content.url))
    raise VideoGemmaDataError(f"a {content.type} part: VideoGemma reads text and one video")


def _cut(text: str, until: Any) -> str:
    """The text up to the first stop string (lmms-eval's `until`: a string or a list)."""
    stops = [until] if isinstance(until, str) else list(until or [])
    for stop in stops:
        if stop:
            text = text.split(stop, 1)[0]
    return text
