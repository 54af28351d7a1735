"""Captioned videos for projector pretraining (`video-proj`, `image-proj`), converted to conversation files.

    videogemma data captions --format llava  --input valley_702k.json --out data/pretrain
    videogemma data captions --format webvid --input results_2M_train.csv --out data/pretrain \
        --video-template "{page_dir}/{videoid}.mp4"

The projector stages read the conversation files every stage reads (docs/DATA.md): one record per video, a
caption request as the question and the caption as the answer. Two common sources convert:

- `llava`: a LLaVA / Valley / Video-LLaVA pretraining JSON (or JSON Lines): records with `video` and
  `conversations` (`from`: human / gpt); the `<image>` / `<video>` tag becomes our `<video>` tag. Records
  without a video (image-only rows of mixed files) are left out and counted.
- `webvid`: a WebVid CSV (`videoid`, `name` = the caption, `page_dir`, ...): the video path comes from
  `--video-template` over the row's columns, the question is `CAPTION_PROMPT`.

The records are split deterministically (`--val-fraction`, by a hash of the video path) into
`pretrain_train.json` and `pretrain_val.json`, the names the shipped projector configs read.
"""

from __future__ import annotations

import csv
import hashlib
import json
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videogemma.constants import VIDEO_TAG
from videogemma.errors import RecordError, VideoGemmaDataError
from videogemma.files import atomic_write

FORMATS = ("llava", "webvid")
CAPTION_PROMPT = "Describe this video briefly."
WEBVID_CAPTION_COLUMN = "name"
DEFAULT_VIDEO_TEMPLATE = "{page_dir}/{videoid}.mp4"
OUTPUT_NAMES = {"train": "pretrain_train.json", "val": "pretrain_val.json"}
# Tags other projects put where the visual input goes, read as ours.
VISUAL_TAGS = ("<image>", "<video>")


@dataclass
class CaptionSummary:
    records: dict[str, int] = field(default_factory=dict)
    without_video: int = 0
    files: dict[str, Path] = field(default_factory=dict)


def convert_captions(
    source: str | Path,
    out_dir: str | Path,
    source_format: str,
    *,
    video_template: str = DEFAULT_VIDEO_TEMPLATE,
    val_fraction: float = 0.01,
) -> CaptionSummary:
    """Read `source` (`llava` or `webvid`), write the train / val conversation files into `out_dir`."""
    source = Path(source)
    if source_format not in FORMATS:
        raise VideoGemmaDataError(f"--format {source_format!r} is not one of {', '.join(FORMATS)}")
    if not 0 <= val_fraction < 1:
        raise VideoGemmaDataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if not source.is_file():
        raise FileNotFoundError(2, "No such file", str(source))
    summary = CaptionSummary()
    rows = (
        _llava_records(source, summary)
        if source_format == "llava"
        else _webvid_records(source, video_template)
    )
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    for record in rows:
        splits[_split_of(record["video"], val_fraction)].append(record)
    if not splits["train"] and not splits["val"]:
        raise VideoGemmaDataError(
            f"{source}: no captioned video in it ({summary.without_video} records without one)"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, records in splits.items():
        path = out_dir / OUTPUT_NAMES[split]
        with atomic_write(path) as file:
            json.dump(records, file, ensure_ascii=False, indent=1)
            file.write("\n")
        summary.records[split] = len(records)
        summary.files[split] = path
    return summary


def _split_of(video: str, val_fraction: float) -> str:
    # A hash of the path, not a random draw: the same file converts to the same split on every machine.
    value = int.from_bytes(hashlib.sha256(video.encode("utf-8")).digest()[:8], "big") / 2**64
    return "val" if value < val_fraction else "train"


def _caption_record(video: str, caption: str) -> dict[str, Any]:
    return {
        "video": video,
        "conversations": [
            {"from": "human", "value": f"{VIDEO_TAG}\n{CAPTION_PROMPT}"},
            {"from": "gpt", "value": caption},
        ],
    }


# ---- LLaVA-style JSON ---------------------------------------------------------------------------------------


def _llava_records(source: Path, summary: CaptionSummary) -> Iterator[dict[str, Any]]:
    for index, raw in enumerate(_read_json_records(source)):
        if not isinstance(raw, dict):
            raise RecordError(source, index, f"expected an object, got {type(raw).__name__}")
        video = raw.get("video")
        if video is None:
            summary.without_video += 1
            continue
        if not isinstance(video, str) or not video:
            raise RecordError(source, index, "'video' must be a non-empty path")
        turns = raw.get("conversations")
        if not isinstance(turns, list) or len(turns) < 2:
            raise RecordError(source, index, "'conversations' must hold a question and a caption")
        yield {
            "video": video,
            "conversations": [_llava_turn(source, index, n, t) for n, t in enumerate(turns)],
        }


def _llava_turn(source: Path, index: int, number: int, turn: Any) -> dict[str, str]:
    if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or "from" not in turn:
        raise RecordError(source, index, f"turn {number} needs 'from' and a text 'value'")
    text = turn["value"]
    for tag in VISUAL_TAGS:
        text = text.replace(tag, VIDEO_TAG)
    return {"from": str(turn["from"]), "value": text}


def _read_json_records(source: Path) -> list[Any]:
    text = source.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, list):
        return data
    records = []  # JSON Lines
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise RecordError(source, f"line {number}", f"not JSON ({error.msg})") from None
    return records


# ---- WebVid CSV ---------------------------------------------------------------------------------------------


def _webvid_records(source: Path, video_template: str) -> Iterator[dict[str, Any]]:
    fields = {name for _, name, _, _ in string.Formatter().parse(video_template) if name}
    with open(source, encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        columns = set(reader.fieldnames or ())
        missing = sorted((fields | {WEBVID_CAPTION_COLUMN}) - columns)
        if missing:
            raise RecordError(
                source, None, f"no column {', '.join(missing)} (columns: {', '.join(sorted(columns))})"
            )
        for number, row in enumerate(reader, start=2):
            caption = (row[WEBVID_CAPTION_COLUMN] or "").strip()
            if not caption:
                raise RecordError(source, f"line {number}", "an empty caption")
            yield _caption_record(video_template.format(**row), caption)
