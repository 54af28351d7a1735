"""Dynamic batching: requests that arrive within a few milliseconds share one batched prefill and decode.

One thread owns the models. It takes the oldest waiting job, gathers the waiting jobs that can share its batch
(same model, same decoding settings) until the batch is full, `wait_s` has passed since the oldest arrived or
no other admitted request is still being decoded (none could join), collates them with left padding (as batch
inference does) and runs `inference.generate.generate_answers` once.
Greedy answers do not depend on the batch (tested: batched equals one by one). A sampled request with a seed
runs alone, so that its seed gives the answer it gives alone.

While the batch generates, `RowStreamer` hands each row's new text to its job's sink (for `stream: true`) and
notes whether the row stopped on a stop token (`finish_reason` "stop") or ran out of tokens ("length"). A
failure while generating fails that batch's jobs, never the thread: the next batch runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from transformers.generation.streamers import BaseStreamer

from videogemma.inference.generate import Answer, GenerationSettings, generate_answers, stop_token_ids

logger = logging.getLogger(__name__)


class JobSink(Protocol):
    """Where a job's results go (called from the batching thread)."""

    streaming: bool

    def delta(self, text: str) -> None: ...
    def finish(self, answer: Answer, finish_reason: str) -> None: ...
    def fail(self, error: BaseException) -> None: ...


@dataclass
class ServedModel:
    name: str
    model: Any
    processor: Any
    # The tokenizer is shared by request threads (encoding) and the batching thread (decoding): a fast
    # tokenizer's state is not safe to use from two threads at once.
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Job:
    model: str
    inputs: dict[str, Any]  # one unpadded sample from the processor (input_ids, labels, pixels)
    settings: GenerationSettings
    sink: JobSink
    arrived: float = field(default_factory=time.monotonic)

    @property
    def runs_alone(self) -> bool:
        return self.settings.do_sample and self.settings.seed is not None

    def can_share(self, other: Job) -> bool:
        return not (self.runs_alone or other.runs_alone) and (self.model, self.settings) == (
            other.model,
            other.settings,
        )


@dataclass
class BatchStats:
    batches: int = 0
    requests: int = 0
    largest: int = 0

    def add(self, size: int) -> None:
        self.batches += 1
        self.requests += size
        self.largest = max(self.largest, size)


class Batcher:
    """The model thread: `submit(job)` queues a job (the caller bounds how many are in flight)."""

    def __init__(
        self,
        models: Mapping[str, ServedModel],
        max_batch_size: int,
        wait_s: float,
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        self.models = models
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        # How many requests are admitted (queued here or still decoding): a batch waits only while some are
        # still on their way, so a request alone never waits for company that cannot come.
        self._in_flight = in_flight
        self.stats = BatchStats()
        self._queue: deque[Job] = deque()
        self._condition = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="videogemma-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify_all()
        self._thread.join(timeout=60)

    def submit(self, job: Job) -> None:
        with self._condition:
            self._queue.append(job)
            self._condition.notify_all()

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(batch)

    def _next_batch(self) -> list[Job] | None:
        with self._condition:
            while not self._queue and not self._stopped:
                self._condition.wait()
            if self._stopped:
                return None
            first = self._queue[0]
            while True:
                batch = [job for job in self._queue if job is first or first.can_share(job)]
                batch = batch[: self.max_batch_size]
                remaining = first.arrived + self.wait_s - time.monotonic()
                if (
                    len(batch) >= self.max_batch_size
                    or first.runs_alone
                    or remaining <= 0
                    or self._all_here()
                ):
                    break
                self._condition.wait(remaining)
                if self._stopped:
                    return None
            for job in batch:
                self._queue.remove(job)
            return batch

    def _all_here(self) -> bool:
        return self._in_flight is not None and self._in_flight() <= len(self._queue)

    def _run(self, batch: list[Job]) -> None:
        served = self.models[batch[0].model]
        self.stats.add(len(batch))
        try:
            inputs = served.processor.collate(
                [job.inputs for job in batch], padding_side="left", return_labels=False
            )
            streamer = RowStreamer(
                lambda ids: _decode(served, ids), [job.sink for job in batch], stop_token_ids(served.model)
            )
            answers = generate_answers(served.model, served.processor, inputs, batch[0].settings, streamer)
        except Exception as error:  # the batch's requests fail; the server goes on
            logger.exception("generation failed for a batch of %d request(s)", len(batch))
            for job in batch:
                job.sink.fail(error)
            return
        for job, answer, reason in zip(batch, answers, streamer.finish_reasons()):
            job.sink.finish(answer, reason)


def _decode(served: ServedModel, ids: list[int]) -> str:
    with served.tokenizer_lock:
        return served.processor.decode(ids, skip_special_tokens=True)


class RowStreamer(BaseStreamer):
    """A `generate` streamer for a batch: each row's tokens to its sink's text, as they come.

    The text a row shows is what the final answer will be (stripped): leading and trailing whitespace and a
    trailing incomplete character (�) are held back until more text follows, so the pieces sent add up to a
    prefix of the answer; the rest is sent when it is known (`finish`).
    """

    def __init__(self, decode: Callable[[list[int]], str], sinks: list[JobSink], stops: set[int]) -> None:
        self.decode = decode
        self.sinks = sinks
        self.stops = stops
        self.tokens: list[list[int]] = [[] for _ in sinks]
        self.sent = [""] * len(sinks)
        self.stopped = [False] * len(sinks)
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # the first call carries the prompts
            self._prompt_seen = True
            return
        for row, token in enumerate(value.reshape(len(self.sinks), -1)[:, -1].tolist()):
            if self.stopped[row]:
                continue  # padding after the row's stop token
            if token in self.stops:
                self.stopped[row] = True
                continue
            self.tokens[row].append(token)
            if self.sinks[row].streaming:
                self._send(row)

    def end(self) -> None:
        pass

    def _send(self, row: int) -> None:
        shown = self.decode(self.tokens[row]).strip().rstrip("\ufffd").rstrip()
        if len(shown) > len(self.sent[row]) and shown.startswith(self.sent[row]):
            self.sinks[row].delta(shown[len(self.sent[row]) :])
            self.sent[row] = shown

    def finish_reasons(self) -> list[str]:
        return ["stop" if stopped else "length" for stopped in self.stopped]
