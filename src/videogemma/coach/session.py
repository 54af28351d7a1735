"""The coaching loop: frames in, a model answer per window, feedback out as it happens.

    session = CoachSession(model, processor, CoachSettings(window=3, stride=1), ChangePolicy(10), log)
    with VideoSource("workout.mp4") as source:
        stats = session.run(source)

Two ways to run, one result per window:
- A file read as fast as it decodes (the default for files): one thread reads a frame, and when that makes a
  window due, runs it before reading on; no window is skipped, and the run takes what the model takes.
- Real time (a camera, a stream, live frames a client pushes (`coach.pushed`), or a file with
  `realtime=True`, paced to its timestamps): a reader thread takes frames as they come and the model runs on
  the newest due window; the windows that fell due while the model was busy are skipped and counted, never
  queued (so a slow model lags by at most one window and memory stays bounded). A source that delivers no frame for `stall_timeout` seconds is an error.

Each window's answer goes to the emission policy (`policy.py`); what is said is one `Emission` written to
the JSON Lines log at once (`FeedbackLog` flushes every record). `time` is when the feedback is available
on the source's clock: the window's end plus the window's latency (from the moment it fell due, i.e. the
arrival of the first frame at or after its end, to the answer; waiting for the model included). Ctrl-C (KeyboardInterrupt) ends the run cleanly: the statistics say so and
everything said so far is in the log; a source failing mid-session ends it the same way, with the error
in the statistics.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from videogemma.coach.decoding import AnswerDecoder
from videogemma.coach.encoder import WindowEncoder
from videogemma.coach.source import FrameSource, TimedFrame
from videogemma.coach.windows import FrameGrid, FrameStore, Sample, Window, WindowSchedule, preprocess_frame
from videogemma.constants import COACH_MAX_NEW_TOKENS, EXERCISE_SEPARATOR
from videogemma.errors import VideoDecodeError
from videogemma.inference.generate import GenerationSettings

DEFAULT_MAX_NEW_TOKENS = COACH_MAX_NEW_TOKENS


@dataclass
class CoachSettings:
    window: float = 3.0  # seconds of video the model reads
    stride: float = 1.0  # seconds between windows
    realtime: bool = False  # pace a file to its timestamps (cameras and streams always are)
    prompt: str | None = None  # default: the processor's default prompt
    system: str | None = None
    generation: GenerationSettings = field(
        default_factory=lambda: GenerationSettings(max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
    )
    cache_features: bool = True  # each frame's CLIP features computed once (encoder.py)
    reuse_answers: bool = True  # check the previous answer in one pass before decoding (decoding.py)
    stall_timeout: float = 10.0  # seconds without a frame before a real-time source counts as stalled


@dataclass(frozen=True)
class WindowResult:
    window: Window
    text: str
    latency_s: float
    emitted: bool

    @property
    def time(self) -> float:
        return round(self.window.end + self.latency_s, 3)


@dataclass(frozen=True)
class Emission:
    """One record of the feedback log."""

    time: float  # seconds from the source's start: the window's end + its latency
    text: str
    exercise: str  # the text before " - ", when the answer names one
    window: tuple[float, float]
    latency_s: float
    source: str

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["window"] = list(self.window)
        return record


@dataclass
class SessionStats:
    windows_run: int = 0
    windows_skipped: int = 0
    emitted: int = 0
    frames_read: int = 0
    source_seconds: float = 0.0  # how far into the source reading got
    wall_seconds: float = 0.0
    compute_seconds: float = 0.0  # time spent running windows
    behind_s: float = 0.0  # how far the last window finished behind real time (0 when ahead)
    max_behind_s: float = 0.0
    frames_encoded: int = 0  # CLIP frame encodings run
    frames_reused: int = 0  # CLIP frame features taken from the cache instead
    answers_reused: int = 0  # windows whose answer was the previous one, confirmed in one pass
    interrupted: bool = False
    error: str | None = None

    @property
    def windows_per_second(self) -> float:
        return self.windows_run / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def realtime_factor(self) -> float:
        """Source seconds covered per wall second (above 1: faster than real time)."""
        return self.source_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


class EmissionSink(Protocol):
    """Where what is said goes: the JSON Lines log (`FeedbackLog`), or a client's stream (`serve.coaching`)."""

    def write(self, emission: Emission) -> None: ...


class FeedbackLog:
    """The JSON Lines log of what is said; each record is flushed as it is written."""

    def __init__(self, path: str | os.PathLike, append: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = open(self.path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115

    def write(self, emission: Emission) -> None:
        self._file.write(json.dumps(emission.to_json(), ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def exercise_of(text: str) -> str:
    return text.split(EXERCISE_SEPARATOR, 1)[0].strip() if EXERCISE_SEPARATOR in text else ""


class CoachSession:
    def __init__(
        self,
        model: Any,
        processor: Any,
        settings: CoachSettings,
        policy: Any,
        log: EmissionSink | None = None,
        on_window: Callable[[WindowResult, SessionStats], None] | None = None,
        tokenizer_lock: contextlib.AbstractContextManager[Any] | None = None,
    ) -> None:
        """`tokenizer_lock` is held around every use of the processor's tokenizer (a server shares one
        tokenizer between threads)."""
        self.model, self.processor, self.settings, self.policy, self.log = (
            model,
            processor,
            settings,
            policy,
            log,
        )
        self.on_window = on_window
        self.schedule = WindowSchedule(settings.window, settings.stride, model.config.num_frames)
        self.encoder = WindowEncoder(model, cache=settings.cache_features)
        self.stats = SessionStats()
        question = settings.prompt or processor.default_prompt
        lock = tokenizer_lock or contextlib.nullcontext()
        with lock:
            encoded = processor.encode_conversation(
                [{"from": "human", "value": question}], system=settings.system, add_generation_prompt=True
            )
        self.decoder = AnswerDecoder(
            model,
            processor,
            encoded["input_ids"][None],
            settings.generation,
            reuse=settings.reuse_answers,
            tokenizer_lock=lock,
        )
        self._source_name = ""
        self._start = 0.0

    # ---- the two loops -------------------------------------------------------------------------------

    def run(self, source: FrameSource) -> SessionStats:
        self._source_name = source.name
        self._start = time.monotonic()
        try:
            if source.live or self.settings.realtime:
                self._run_realtime(source)
            else:
                self._run_inline(source)
        except KeyboardInterrupt:
            self.stats.interrupted = True
        except VideoDecodeError as error:
            self.stats.error = str(error)
        finally:
            self.stats.wall_seconds = time.monotonic() - self._start
            self.stats.frames_encoded = self.encoder.frames_encoded
            self.stats.frames_reused = self.encoder.frames_reused
        return self.stats

    def _run_inline(self, source: FrameSource) -> None:
        grid, store = FrameGrid(self.schedule.step), self._store()
        number = 0
        for item in source.frames():
            self._take(source, grid, store, item)
            while self.schedule.end(number) <= store.reached + 1e-6:
                self._run_window(store.window(self.schedule, number), store)
                number += 1

    def _run_realtime(self, source: FrameSource) -> None:
        reader = _Reader(self, source)
        reader.start()
        number = 0
        try:
            while True:
                if reader.wait_for_window(number, self.settings.stall_timeout) is None:
                    break
                window = reader.store.newest_window(self.schedule)  # the reader may have gone on meanwhile
                self.stats.windows_skipped += window.number - number
                self._run_window(window, reader.store)
                number = window.number + 1
        finally:
            reader.stop()
            if reader.is_alive():  # still blocked in a read: closing the container under it could crash
                source.abandon()
        if reader.error is not None:
            raise reader.error

    # ---- shared steps --------------------------------------------------------------------------------

    def _store(self) -> FrameStore:
        # The frames of the next window and one stride more (the reader may run ahead of the model by that).
        per_stride = math.ceil(self.settings.stride / self.schedule.step)
        return FrameStore(keep=self.schedule.num_frames + per_stride + 2)

    def _take(self, source: FrameSource, grid: FrameGrid, store: FrameStore, item: TimedFrame) -> None:
        self.stats.frames_read += 1
        self.stats.source_seconds = item.time
        for index, frame in grid.push(item):
            clip, videomamba = preprocess_frame(self.processor, source.to_rgb(frame))
            store.add(Sample(index, round(index * self.schedule.step, 6), clip, videomamba))
        store.mark_reached(item.time, time.monotonic())

    def _run_window(self, window: Window, store: FrameStore) -> WindowResult:
        began = time.monotonic()
        text = self.decoder.answer(self.encoder.features(window))
        finished = time.monotonic()
        latency = finished - store.due_since(window.end)
        result = WindowResult(window, text, round(latency, 4), False)
        if self.policy.decide(result.time, text):
            result = WindowResult(window, text, result.latency_s, True)
            self._emit(result)
        stats = self.stats
        stats.windows_run += 1
        stats.wall_seconds = finished - self._start
        stats.compute_seconds += finished - began
        stats.answers_reused = self.decoder.drafts_kept
        stats.behind_s = max(0.0, (finished - self._start) - window.end)
        stats.max_behind_s = max(stats.max_behind_s, stats.behind_s)
        if self.on_window is not None:
            self.on_window(result, stats)
        return result

    def _emit(self, result: WindowResult) -> None:
        self.stats.emitted += 1
        if self.log is not None:
            emission = Emission(
                result.time,
                result.text,
                exercise_of(result.text),
                (result.window.start, result.window.end),
                result.latency_s,
                self._source_name,
            )
            self.log.write(emission)


class _Reader(threading.Thread):
    """Reads a real-time source into the frame store (pacing a file to its timestamps); the model's thread
    waits on it for the newest due window."""

    def __init__(self, session: CoachSession, source: FrameSource) -> None:
        super().__init__(name="coach-reader", daemon=True)  # a camera read that blocks must not hold exit
        self.session, self.source = session, source
        self.store = session._store()
        self.error: VideoDecodeError | None = None
        self._grid = FrameGrid(session.schedule.step)
        self._done = False
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._last_frame = time.monotonic()

    def run(self) -> None:
        pace = not self.source.live
        start = self.session._start
        try:
            for item in self.source.frames():
                if self._stopping.is_set():
                    break
                if pace:
                    self._stopping.wait(max(0.0, start + item.time - time.monotonic()))
                self.session._take(self.source, self._grid, self.store, item)
                with self._changed:
                    self._last_frame = time.monotonic()
                    self._changed.notify_all()
        except VideoDecodeError as error:
            self.error = error
        finally:
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def wait_for_window(self, number: int, stall_timeout: float) -> int | None:
        """The newest due window at or after `number`, waiting for one; None when the source ended."""
        schedule = self.session.schedule
        with self._changed:
            while True:
                latest = schedule.latest_due(self.store.reached)
                if latest is not None and latest >= number:
                    return latest
                if self._done:
                    return None
                self._changed.wait(timeout=0.25)
                if not self._done and time.monotonic() - self._last_frame > stall_timeout:
                    raise VideoDecodeError(
                        self.source.name,
                        f"no frame for {stall_timeout:g} s: the source stalled or disappeared",
                    )

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=2.0)
