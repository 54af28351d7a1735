"""Bad samples (DATA.md): the policy, the record of what was skipped, and refilling a batch.

A bad sample is a record that does not parse, a video path outside the dataset root, a video that does not
decode, or a conversation the chat template cannot render (e.g. a prompt too long for the limit):

- `"strict"`: the first one raises, naming the file and the record.
- `"skip"`: it is logged with a warning and left out. A sample that fails after the dataset was built comes
  back from `dataset[i]` as a `SkippedSample` marker, which the collators drop and replace (`refill`) by
  the next good sample of the dataset it came from, so that batches keep their size. DataLoader workers are
  separate processes, so every skip is appended to a small JSON Lines log that the main process reads back.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

BadSamplePolicy = Literal["skip", "strict"]
BAD_SAMPLE_POLICIES = ("skip", "strict")


@dataclass(frozen=True)
class SkippedSample:
    """A record left out under the "skip" policy, and why. Also the marker `dataset[i]` returns for it."""

    source_file: str
    index: int | None  # the record's index in its file (None: the file position is unknown)
    label: str  # as errors name the record
    video: str | None  # resolved path, when known
    error: str  # exception type, e.g. "VideoDecodeError"
    reason: str  # the error message
    position: int | None = None  # index in the dataset (None: left out when the dataset was built)


class SkipLog:
    """Append-only JSON Lines file of skipped samples, shared by the main process and DataLoader workers.

    Appends of one short line from several processes do not interleave (O_APPEND). A given file is
    truncated when the log is created. Without one, the log goes to a temporary file, created at the first
    skip (so that a clean dataset leaves nothing behind) and removed when its dataset is garbage-collected.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        if path is None:
            name = f"videogemma-skipped-{os.getpid()}-{uuid.uuid4().hex}.jsonl"
            self.path = Path(tempfile.gettempdir()) / name
            self.temporary = True
        else:
            self.path = Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("", encoding="utf-8")
            self.temporary = False

    def append(self, sample: SkippedSample) -> None:
        line = json.dumps(asdict(sample), ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)

    def read(self) -> list[SkippedSample]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [SkippedSample(**json.loads(line)) for line in lines if line.strip()]


def refill(items: Sequence[Any], refill_from: Mapping[str, Any]) -> list[Any]:
    """The good samples of `items`, each `SkippedSample` replaced by the next good sample of the dataset it came
    from (`refill_from`: split file → dataset with `next_good_sample`); markers of other files are dropped."""
    samples = [item for item in items if not isinstance(item, SkippedSample)]
    for item in items:
        if isinstance(item, SkippedSample) and item.source_file in refill_from:
            samples.append(refill_from[item.source_file].next_good_sample(item.position))
    return samples
