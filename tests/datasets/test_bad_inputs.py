"""Bad and hostile inputs to the data package: each is refused with an error naming the file or record, and
nothing outside the dataset root is read, written or deleted, nor any earlier result lost.

The hostile dataset: a root with two good clips and a manifest entry for a third clip that lives outside
the root, reached four ways (absolute key, `../` key, a symlinked file, a symlinked class folder); plus an
HLS playlist inside the root whose segment lies outside. Every tool must refuse and leave the outside
folder byte for byte as it was.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import videogemma
from videogemma.cli import main as cli_main
from videogemma.constants import QVED_FINE_GRAINED_PROMPT
from videogemma.datasets.dataset import ConversationDataset
from videogemma.datasets.qved.augment import augment_dataset
from videogemma.datasets.qved.clean import CleanThresholds, clean_dataset
from videogemma.datasets.qved.io import read_manifest, write_json, write_mp4
from videogemma.datasets.qved.prepare import prepare_splits
from videogemma.datasets.qved.stats import collect_stats
from videogemma.datasets.qved.validate import validate_split_files
from videogemma.datasets.records import resolve_video_path
from videogemma.errors import (
    PathOutsideRootError,
    RecordError,
    VideoDecodeError,
    VideoGemmaDataError,
    VideoLimitError,
)
from videogemma.files import atomic_write
from videogemma.inference.batch import list_samples
from videogemma.processing.processor import VideoGemmaProcessor
from videogemma.processing.video import read_video_frames
from videogemma.processing.video_source import VideoLimits, open_video
from videogemma.train.train_config import TrainConfigError, load_train_config

HOSTILE = ("absolute", "dotdot", "symlink_file", "symlink_folder")
# Thresholds under which the good (bright, textured 32×32) clips pass and the dark outside one is rejected,
# so that `--delete-rejected` would delete it if it were ever considered.
THRESHOLDS = CleanThresholds(min_width=16, min_height=16, min_sharpness=0.0, frame_step=3)


def _clip(level: int, num_frames: int = 10, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    texture = rng.integers(-20, 20, size=(num_frames, size, size, 1))
    return np.clip(level + texture, 0, 255).repeat(3, axis=-1).astype(np.uint8)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (links not followed) and its bytes: what "untouched" compares."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _labels(root: Path, names: list[str]) -> None:
    write_json(root / "fine_grained_labels.json", [{"video_path": f"./{n}", "labels": [f"squats - {n}"]} for n in names])  # fmt: skip
    write_json(
        root / "feedbacks_short_clips.json", [{"video_path": f"./{n}", "feedbacks": [n]} for n in names]
    )


def hostile_dataset(tmp_path: Path, kind: str) -> tuple[Path, Path, str]:
    """(root, outside folder, the hostile manifest key)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    write_mp4(root / "squats" / "00000001.mp4", _clip(120, seed=1), fps=10)
    write_mp4(root / "squats" / "00000002.mp4", _clip(100, seed=2), fps=10)
    secret = outside / "squats" / "00000099.mp4"
    write_mp4(secret, _clip(10, seed=3), fps=10)  # dark: `clean` would reject (and delete) it
    if kind == "absolute":
        key = str(secret)
    elif kind == "dotdot":
        key = "../outside/squats/00000099.mp4"
    elif kind == "symlink_file":
        key = "squats/00000099.mp4"
        (root / key).symlink_to(secret)
    else:
        key = "linked/00000099.mp4"
        (root / "linked").symlink_to(outside / "squats", target_is_directory=True)
    write_json(
        root / "manifest.json",
        {"squats/00000001.mp4": "squats", "squats/00000002.mp4": "squats", key: "squats"},
    )
    _labels(root, ["00000001.mp4", "00000002.mp4", "00000099.mp4"])
    return root, outside, key


def _assert_names_entry(error: pytest.ExceptionInfo, root: Path, key: str) -> None:
    assert isinstance(error.value, PathOutsideRootError)
    assert error.value.source_file == str(root / "manifest.json")
    assert repr(key) in str(error.value) and "outside the dataset root" in str(error.value)


# ---- confinement, tool by tool ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", HOSTILE)
def test_prepare_refuses_an_entry_outside_the_root_and_writes_no_split(tmp_path, kind):
    root, outside, key = hostile_dataset(tmp_path, kind)
    before_root, before_outside = snapshot(root), snapshot(outside)
    with pytest.raises(PathOutsideRootError) as error:
        prepare_splits(root, tmp_path / "splits")
    _assert_names_entry(error, root, key)
    assert not (tmp_path / "splits").exists()
    assert snapshot(root) == before_root and snapshot(outside) == before_outside


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("mode", ["copy", "in_place_delete"])
def test_clean_never_deletes_or_reads_outside_the_root(tmp_path, kind, mode):
    root, outside, key = hostile_dataset(tmp_path, kind)
    before_root, before_outside = snapshot(root), snapshot(outside)
    out = tmp_path / "cleaned" if mode == "copy" else None
    with pytest.raises(PathOutsideRootError) as error:
        clean_dataset(root, out, THRESHOLDS, delete_rejected=mode != "copy", progress=False)
    _assert_names_entry(error, root, key)
    assert snapshot(outside) == before_outside  # the dark clip is still there, same bytes
    assert snapshot(root) == before_root  # no .bak, no filtered manifest, no report
    assert out is None or not out.exists()


@pytest.mark.parametrize("kind", HOSTILE)
def test_augment_writes_nothing_beside_an_outside_clip(tmp_path, kind):
    root, outside, key = hostile_dataset(tmp_path, kind)
    before_root, before_outside = snapshot(root), snapshot(outside)
    with pytest.raises(PathOutsideRootError) as error:
        augment_dataset(root, copies=1, operations=["hflip"], progress=False)
    _assert_names_entry(error, root, key)
    assert not list(tmp_path.rglob("*_aug*"))  # neither beside the outside clip nor in the root
    assert snapshot(root) == before_root and snapshot(outside) == before_outside


@pytest.mark.parametrize("kind", HOSTILE)
def test_stats_refuses_an_entry_outside_the_root(tmp_path, kind):
    root, outside, key = hostile_dataset(tmp_path, kind)
    before_outside = snapshot(outside)
    with pytest.raises(PathOutsideRootError) as error:
        collect_stats(root, progress=False)
    _assert_names_entry(error, root, key)
    assert snapshot(outside) == before_outside


def test_stats_refuses_a_split_record_outside_the_root(tmp_path):
    root, _, _ = hostile_dataset(tmp_path, "absolute")
    write_json(root / "manifest.json", {"squats/00000001.mp4": "squats"})
    write_json(root / "qved_train.json", [{"video": "../outside/squats/00000099.mp4", "conversations": []}])
    with pytest.raises(PathOutsideRootError, match=r"qved_train\.json, record 0"):
        collect_stats(root, progress=False)


def test_a_class_folder_linked_outside_is_refused_without_a_manifest(tmp_path):
    root, _, _ = hostile_dataset(tmp_path, "symlink_folder")
    (root / "manifest.json").unlink()
    with pytest.raises(PathOutsideRootError, match="folder 'linked'"):
        read_manifest(root)
    with pytest.raises(PathOutsideRootError):
        prepare_splits(root)


def test_links_and_absolute_paths_that_stay_inside_the_root_are_fine(tmp_path):
    root, _, _ = hostile_dataset(tmp_path, "dotdot")
    (root / "squats" / "alias.mp4").symlink_to(root / "squats" / "00000001.mp4")
    write_json(
        root / "manifest.json",
        {str(root / "squats" / "00000001.mp4"): "squats", "dataset/squats/alias.mp4": "squats"},
    )
    assert read_manifest(root) == {"squats/00000001.mp4": "squats", "squats/alias.mp4": "squats"}
    where = {"source_file": "train.json", "record": 0}
    assert (
        resolve_video_path("squats/alias.mp4", root, **where) == (root / "squats" / "00000001.mp4").resolve()
    )


def _hls_playlist(root: Path, outside: Path, write_clip) -> Path:
    segment = write_clip(outside / "secret.ts", _clip(200), fps=10)
    playlist = root / "clips" / "p.m3u8"
    playlist.parent.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(segment, playlist.parent)
    playlist.write_text(
        f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n{relative}\n#EXT-X-ENDLIST\n"
    )
    return playlist


def _conversation(video: str, question: str = QVED_FINE_GRAINED_PROMPT) -> dict:
    return {
        "video": video,
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": "ok"}],
    }


def _hostile_split(tmp_path: Path, write_clip) -> tuple[Path, Path, Path]:
    """A split file in the root naming the outside clip in every way, the playlist, and one good clip."""
    root, outside, _ = hostile_dataset(tmp_path, "symlink_file")
    (root / "linked").symlink_to(outside / "squats", target_is_directory=True)
    _hls_playlist(root, outside, write_clip)
    videos = [
        str(outside / "squats" / "00000099.mp4"),  # 0 absolute
        "../outside/squats/00000099.mp4",  # 1 ..
        "squats/00000099.mp4",  # 2 symlinked file
        "linked/00000099.mp4",  # 3 symlinked folder
        "clips/p.m3u8",  # 4 a playlist whose segment is outside
        "squats/00000001.mp4",  # 5 fine
    ]
    write_json(root / "qved_train.json", [_conversation(v) for v in videos])
    return root, outside, root / "qved_train.json"


def test_validate_reports_every_way_out_of_the_root_and_reads_none(tmp_path, write_clip):
    root, outside, split = _hostile_split(tmp_path, write_clip)
    before_outside = snapshot(outside)
    report = validate_split_files([split], root=root, min_frames=8, progress=False)
    problems = {p.record: p for p in report.problems}
    assert sorted(problems) == [0, 1, 2, 3, 4]
    assert {problems[i].kind for i in range(4)} == {"path_outside_root"}
    assert problems[2].message.endswith("only files under the root are used")
    assert str(outside / "squats" / "00000099.mp4") in problems[2].message  # says where the link leads
    assert problems[4].kind == "undecodable" and "HLS playlist" in problems[4].message
    assert not any(str(outside) in video for video in report.videos)  # nothing outside was probed
    assert snapshot(outside) == before_outside


def test_train_and_infer_refuse_the_same_records(tmp_path, write_clip):
    root, _, split = _hostile_split(tmp_path, write_clip)
    processor = VideoGemmaProcessor.from_preset("tiny")
    dataset = ConversationDataset(split, root, processor, "skip")
    assert [record.index for record in dataset.records] == [4, 5]  # the playlist fails when decoded
    assert isinstance(dataset[0], type(dataset.skipped_samples[0]))  # skipped: not decoded from outside
    assert "HLS playlist" in dataset[0].reason and "clips/p.m3u8" in dataset[0].reason
    with pytest.raises(PathOutsideRootError, match="record 0"):
        ConversationDataset(split, root, processor, "strict")
    samples = list_samples(split, root)
    assert all("outside the dataset root" in samples[i].error for i in range(4))
    with pytest.raises(VideoDecodeError, match="HLS playlist"):
        processor.process_sample(samples[4].video, samples[4].conversation)


def test_the_format_whitelist_alone_stops_a_playlist_before_it_opens_a_segment(tmp_path):
    """With the text check disabled, FFmpeg must still refuse the playlist before opening its segment: the
    segment is a FIFO, so opening it would block and the child process would time out."""
    (tmp_path / "outside").mkdir()
    fifo = tmp_path / "outside" / "segment.ts"
    os.mkfifo(fifo)
    playlist = tmp_path / "p.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n{fifo}\n#EXT-X-ENDLIST\n")
    code = (
        "import sys\nimport videogemma.processing.video_source as video\nvideo._refuse_text = lambda path: None\n"
        "try:\n    video.open_video(sys.argv[1])\nexcept video.VideoDecodeError as error:\n    print(error)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(videogemma.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", code, str(playlist)], env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "FFmpeg found no accepted container format" in done.stdout, done.stderr


def test_an_audio_file_named_like_a_video_is_refused_as_not_a_readable_video(tmp_path):
    """FFmpeg probes it as `wav`, a format off the whitelist: the message must still say what the user needs
    to know (not a readable video), as it does for a corrupt file that FFmpeg probes as some other format."""
    samples = 8000
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + samples * 2, b"WAVE", b"fmt ", 16, 1, 1, 8000, 16000, 2, 16, b"data", samples * 2)  # fmt: skip
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(header + bytes(samples * 2))
    with pytest.raises(
        VideoDecodeError, match=r"clip\.mp4: not a readable video file: FFmpeg found no accepted"
    ):
        open_video(clip)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"ffconcat version 1.0\nfile '../outside/x.mp4'\n", "ffconcat list"),
        (b"file1.mp4\nfile2.mp4\n", "text file"),
    ],
)
def test_lists_of_other_files_are_refused(tmp_path, content, expected):
    path = tmp_path / "list.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoDecodeError, match=expected) as error:
        read_video_frames(path, 8)
    assert str(path) in str(error.value)


# ---- clean --in-place: every backup kept, JSON written atomically -----------------------------------------


def test_three_in_place_runs_keep_every_backup(tmp_path):
    root = tmp_path / "root"
    names = [f"{k:08d}.mp4" for k in range(6)]
    for k, name in enumerate(names):
        write_mp4(root / "squats" / name, _clip(40 + 30 * k, seed=k), fps=10)  # brightness 40, 70, ..., 190
    write_json(root / "manifest.json", {f"squats/{n}": "squats" for n in names})
    _labels(root, names)
    versions = [{n: (root / n).read_bytes() for n in ("manifest.json", "fine_grained_labels.json")}]
    for min_brightness in (50, 110, 170):  # each run rejects more
        thresholds = CleanThresholds(
            min_width=16, min_height=16, min_sharpness=0.0, min_brightness=min_brightness
        )
        clean_dataset(root, None, thresholds, progress=False)
        versions.append({n: (root / n).read_bytes() for n in ("manifest.json", "fine_grained_labels.json")})
    assert [len(json.loads(v["manifest.json"])) for v in versions] == [6, 5, 3, 1]
    for name in ("manifest.json", "fine_grained_labels.json"):
        backups = [root / f"{name}.bak", root / f"{name}.bak.1", root / f"{name}.bak.2"]
        assert [b.read_bytes() for b in backups] == [v[name] for v in versions[:3]]
        assert not (root / f"{name}.bak.3").exists()
    assert not list(root.glob("*.tmp")) and not list(root.glob(".*.tmp"))


def test_an_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "manifest.json"
    write_json(path, {"a.mp4": "squats"})
    with pytest.raises(KeyboardInterrupt), atomic_write(path) as file:
        file.write('{"half": ')
        raise KeyboardInterrupt
    assert json.loads(path.read_text()) == {"a.mp4": "squats"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]  # no temporary left


# ---- bounded inputs --------------------------------------------------------------------------------------


def _huge_png(path: Path, size: int) -> Path:
    """A size×size grey PNG written row by row (a few hundred KB on disk, size² × 3 bytes once decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    compressor, row, body = zlib.compressobj(1), b"\x00" + b"\x80" * (3 * size), []
    body = [compressor.compress(row) for _ in range(size)] + [compressor.flush()]
    header = size.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])  # 8-bit RGB
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(body)) + chunk(b"IEND", b"")
    )
    return path


def test_a_huge_image_renamed_mp4_is_refused_fast_and_small(tmp_path):
    """The issue's 12000² PNG renamed .mp4 (4.25 GB and 33 s in `infer` before): refused in a moment,
    without decoding it (measured in a fresh process, whose peak memory the refusal must not raise)."""
    path = _huge_png(tmp_path / "image.mp4", 12000)
    code = (
        "import resource, sys, time\nfrom videogemma.processing.video import read_video_frames\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\nstart = time.perf_counter()\n"
        "try:\n    read_video_frames(sys.argv[1], 8)\nexcept Exception as error:\n    print(type(error).__name__, error)\n"
        "print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(videogemma.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    message, figures = done.stdout.strip().rsplit("\n", 1)
    seconds, grown_kb = map(float, figures.split())
    assert message.startswith("VideoLimitError") and str(path) in message and "max_source_pixels" in message
    assert seconds < 5 and grown_kb < 100 * 1024, (seconds, grown_kb)


def test_large_frames_are_downscaled_while_decoding_and_huge_ones_refused(tmp_path, write_clip):
    path = write_clip(tmp_path / "clip.mp4", _clip(120, num_frames=10, size=64)[:, :48], fps=10)  # 64×48
    frames = read_video_frames(
        path, 8, limits=VideoLimits(max_frame_pixels=32 * 24, max_source_pixels=64 * 48)
    )
    assert frames.shape == (8, 24, 32, 3)  # half the size each way: the aspect ratio kept
    assert abs(float(frames.mean()) - float(read_video_frames(path, 8).mean())) < 3
    with pytest.raises(VideoLimitError, match=r"64×48.*max_source_pixels") as error:
        read_video_frames(path, 8, limits=VideoLimits(max_frame_pixels=1000, max_source_pixels=3000))
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        (VideoLimits(max_duration=0.5), "max_duration"),
        (VideoLimits(max_frames=5), "max_frames"),
        (VideoLimits(max_file_bytes=100), "max_file_bytes"),
    ],
)
def test_duration_frame_count_and_file_size_limits(tmp_path, write_clip, limits, field):
    path = write_clip(tmp_path / "clip.mp4", _clip(120, num_frames=10), fps=10)  # 1 s, 10 frames
    with pytest.raises(VideoLimitError, match=field) as error:
        read_video_frames(path, 8, limits=limits)
    assert str(path) in str(error.value)
    read_video_frames(path, 8)  # the defaults let it through


def test_limits_come_from_the_processor_and_are_saved_with_it(tmp_path, write_clip):
    path = write_clip(tmp_path / "clip.mp4", _clip(120, num_frames=10), fps=10)
    processor = VideoGemmaProcessor.from_preset("tiny", video_limits={"max_duration": 0.5})
    with pytest.raises(VideoLimitError, match="max_duration"):
        processor.load_frames(str(path))
    processor.save_pretrained(tmp_path / "saved")
    assert VideoGemmaProcessor.from_pretrained(tmp_path / "saved").video_limits == VideoLimits(
        max_duration=0.5
    )
    with pytest.raises(ValueError, match="unknown video limit"):
        VideoGemmaProcessor.from_preset("tiny", video_limits={"max_pixels": 10})
    with pytest.raises(ValueError, match="positive"):
        VideoLimits(max_frames=0)


def test_a_train_config_with_an_unknown_video_limit_is_refused(tmp_path):
    split = tmp_path / "train.json"
    write_json(split, [_conversation("a.mp4")])
    overrides = [
        "--model.preset",
        "tiny",
        "--data.train_file",
        str(split),
        "--data.video_limits.max_pixels",
        "10",
    ]
    with pytest.raises(TrainConfigError, match=r"data\.video_limits: unknown video limit"):
        load_train_config(None, overrides)
    overrides[-2:] = ["--data.video_limits.max_duration", "60"]
    config = load_train_config(None, overrides)
    assert config.data.video_limits == {"max_duration": 60}


def test_clips_with_fewer_frames_than_read_are_warned_about(tmp_path, write_clip, caplog):
    from PIL import Image

    short = [write_clip(tmp_path / f"{n}_frames.mp4", _clip(120, num_frames=n), fps=10) for n in (1, 2)]
    image = tmp_path / "image.mp4"
    Image.fromarray(_clip(120, num_frames=1)[0]).save(image, format="PNG")
    enough = write_clip(tmp_path / "enough.mp4", _clip(120, num_frames=10), fps=10)
    with caplog.at_level("WARNING", logger="videogemma.processing.video"):
        for path in [*short, image, enough]:
            assert read_video_frames(path, 8).shape[0] == 8
    warned = [record.getMessage() for record in caplog.records]
    for path, count in zip([*short, image], (1, 2, 1)):
        assert any(str(path) in m and f"only {count} frame" in m for m in warned), warned
    assert not any(str(enough) in m for m in warned)


# ---- validate applies what train and infer apply ---------------------------------------------------------


@pytest.fixture
def small_root(tmp_path) -> Path:
    root = tmp_path / "root"
    for k in range(2):
        write_mp4(root / "squats" / f"{k:08d}.mp4", _clip(120, seed=k), fps=10)
    return root


def test_validate_finds_what_training_refuses(small_root):
    records = [
        _conversation("squats/00000000.mp4", "why " * 600),  # 0: longer than the tiny context (512)
        _conversation("squats/00000000.mp4", "<video> <video> twice"),  # 1: two video tags
        _conversation("squats/00000001.mp4"),  # 2: fine
        _conversation("squats/00000001.mp4"),  # 3: the same video and prompt as 2
    ]
    write_json(small_root / "qved_train.json", records)
    report = validate_split_files([small_root / "qved_train.json"], root=small_root, progress=False)
    kinds = sorted((p.record, p.kind) for p in report.problems)
    assert kinds == [(0, "prompt_too_long"), (1, "bad_conversation"), (3, "duplicate_record")]
    assert "same video and prompt as record 2" in str(next(p for p in report.problems if p.record == 3))
    processor = VideoGemmaProcessor.from_preset("tiny")
    dataset = ConversationDataset(small_root / "qved_train.json", small_root, processor, "strict")
    for index in (0, 1):  # training refuses the same two records
        with pytest.raises(VideoGemmaDataError, match=f"record {index}"):
            dataset[index]


def test_validate_refuses_an_empty_split(small_root):
    write_json(small_root / "qved_val.json", [])
    report = validate_split_files([small_root / "qved_val.json"], root=small_root, progress=False)
    assert [p.kind for p in report.problems] == ["empty_split"] and not report.ok


def test_validate_command_argument_errors(small_root, capsys):
    write_json(small_root / "qved_train.json", [_conversation("squats/00000000.mp4")])
    split = str(small_root / "qved_train.json")
    with pytest.raises(SystemExit) as exit_:
        cli_main(["data", "validate", split, "--min-frames", "-5"])
    assert exit_.value.code == 2 and "--min-frames" in capsys.readouterr().err
    assert cli_main(["data", "validate", split, "--dataset-root", "/nonexistent"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["videogemma data validate: error: --root /nonexistent: the dataset root is not a folder"]
    assert cli_main(["data", "validate", split, "--dataset-root", str(small_root)]) == 0


def test_a_refused_tool_says_so_in_one_line_with_exit_2(tmp_path, capsys):
    root, outside, key = hostile_dataset(tmp_path, "dotdot")
    assert cli_main(["data", "clean", "--root", str(root), "--in-place", "--delete-rejected"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("videogemma data clean: error: ") and repr(key) in line
    assert (outside / "squats" / "00000099.mp4").exists()


# ---- augment: a bad clip is reported and skipped; every copy written is labelled and listed ---------------


def test_augment_goes_on_past_a_bad_clip_and_labels_every_copy(tmp_path, capsys):
    root = tmp_path / "root"
    names = ["00000001.mp4", "00000002.mp4", "00000003.mp4", "00000004.mp4"]
    for k, name in enumerate(names):
        write_mp4(root / "squats" / name, _clip(120, seed=k), fps=10)
    (root / "squats" / "00000002.mp4").write_bytes(
        b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4
    )  # corrupt
    write_json(root / "manifest.json", {f"dataset/squats/{n}": "squats" for n in names})
    _labels(root, names[:3])  # 00000004 has no labels: a copy of it would be unlabelled
    assert cli_main(["data", "augment", "--root", str(root), "--copies", "1", "--ops", "hflip"]) == 1
    err = capsys.readouterr().err
    assert "squats/00000002.mp4" in err and "squats/00000004.mp4" in err
    written = sorted(p.name for p in root.rglob("*_aug*"))
    assert written == ["00000001_aug1.mp4", "00000003_aug1.mp4"]  # the clips after the bad one too
    manifest = json.loads((root / "manifest.json").read_text())
    for label_file in ("fine_grained_labels.json", "feedbacks_short_clips.json"):
        records = {r["video_path"] for r in json.loads((root / label_file).read_text())}
        assert {f"./{name}" for name in written} <= records
    assert {f"dataset/squats/{name}" for name in written} <= set(manifest)
    assert not any("00000002_aug" in key or "00000004_aug" in key for key in manifest)


def test_augment_with_a_malformed_label_file_fails_before_writing_any_clip(tmp_path):
    root = tmp_path / "root"
    write_mp4(root / "squats" / "00000001.mp4", _clip(120), fps=10)
    write_json(root / "manifest.json", {"squats/00000001.mp4": "squats"})
    (root / "fine_grained_labels.json").write_text("[{broken")
    with pytest.raises(RecordError, match=r"fine_grained_labels\.json"):
        augment_dataset(root, copies=1, operations=["hflip"], progress=False)
    assert not list(root.rglob("*_aug*"))


def test_open_video_refuses_a_missing_or_empty_file_by_name(tmp_path):
    with pytest.raises(VideoDecodeError, match="file not found"):
        open_video(tmp_path / "nothing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoDecodeError, match=r"empty\.mp4: empty file"):
        open_video(tmp_path / "empty.mp4")


def test_refusals_are_fast(tmp_path, write_clip):
    """A refusal is a check, not a decode: a playlist and an over-long clip are refused in milliseconds."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    playlist = _hls_playlist(root, outside, write_clip)
    long_clip = write_clip(root / "long.mp4", _clip(120, num_frames=10), fps=10)
    for path, limits in ((playlist, VideoLimits()), (long_clip, VideoLimits(max_duration=0.5))):
        start = time.perf_counter()
        for _ in range(10):
            with pytest.raises(VideoDecodeError):
                read_video_frames(path, 8, limits=limits)
        assert (time.perf_counter() - start) / 10 < 0.1, path
