"""`frame_sampling: fps`: Mobile-VideoGPT's frame choice (frames at a fixed rate, then an endpoint-inclusive
linspace over them), against the original's rule written out below, in files and frames in memory."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from videogemma.config import VideoGemmaConfig
from videogemma.errors import VideoDecodeError
from videogemma.processing import video
from videogemma.processing.processor import PROCESSOR_CONFIG_NAME, VideoGemmaProcessor
from videogemma.processing.video import (
    FrameSampling,
    decode_frames,
    fps_sample_positions,
    read_video_frames,
    sample_frame_indices,
)


def original_positions(num_available: int, video_fps: float, rate: float, max_frames: int) -> list[int]:
    """Mobile-VideoGPT's `_get_rawvideo_dec` for a clip with at least `max_frames` frames at the rate: every
    `round(video_fps / rate)`-th frame from frame 0 to the last one, then `np.linspace(..., dtype=int)`."""
    stride = round(video_fps / rate)
    all_pos = list(range(0, num_available, stride))
    assert len(all_pos) >= max_frames  # the original's other branches pad with black frames: not copied
    return [all_pos[i] for i in np.linspace(0, len(all_pos) - 1, num=max_frames, dtype=int)]


def test_positions_are_an_endpoint_inclusive_linspace_capped_and_padded():
    # More samples than frames: the original's linspace, first and last sample included.
    assert fps_sample_positions(30, 16) == np.linspace(0, 29, 16, dtype=int).tolist()
    assert fps_sample_positions(30, 16)[0] == 0 and fps_sample_positions(30, 16)[-1] == 29
    assert fps_sample_positions(16, 16) == list(range(16))
    # Fewer: every sample, each repeated in time order (never a black frame).
    assert fps_sample_positions(3, 8) == [0, 0, 0, 1, 1, 1, 2, 2]
    assert fps_sample_positions(1, 4) == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="positive"):
        fps_sample_positions(0, 4)


@pytest.mark.parametrize(
    ("num_available", "clip_fps", "rate", "num_frames"),
    [(145, 30, 1, 4), (145, 30, 5, 16), (20, 10, 5, 4), (120, 10, 2, 8), (24, 12, 12, 16)],
)
def test_constant_rate_clips_give_the_original_frames(
    tmp_path, write_clip, level_frames, frame_level, num_available, clip_fps, rate, num_frames
):
    expected = original_positions(num_available, clip_fps, rate, num_frames)
    levels = level_frames(min(num_available, 24))  # flat greys: frame k shows level 20 + 10·(k mod 24)
    frames = levels[np.arange(num_available) % len(levels)]
    path = write_clip(tmp_path / "clip.mp4", frames, fps=clip_fps)
    decoded = decode_frames(path, num_frames, sampling=FrameSampling("fps", rate))
    assert decoded.indices == expected
    assert [frame_level(f) for f in decoded.frames] == [k % len(levels) for k in expected]
    assert decoded.timestamps == pytest.approx([k / clip_fps for k in expected])


def test_a_short_clip_is_read_at_the_rate_and_padded_with_its_own_frames(
    tmp_path, write_clip, level_frames, frame_level
):
    path = write_clip(tmp_path / "short.mp4", level_frames(20), fps=4)  # 5 s
    decoded = decode_frames(path, 8, sampling=FrameSampling("fps", 1.0))
    # One frame a second, 0 s to 4 s: frames 0, 4, 8, 12, 16, repeated in time order to fill 8.
    assert decoded.indices == [0, 0, 4, 4, 8, 12, 12, 16]
    assert [frame_level(f) for f in decoded.frames] == decoded.indices
    assert decoded.frames.min() >= 15  # no black frame


def test_real_clip_at_two_frames_a_second(real_clip):
    sampling = FrameSampling("fps", 2.0)
    decoded = decode_frames(real_clip, 8, sampling=sampling)
    # 145 frames at 30 fps: a frame every 15 (0 … 135, ten of them), eight of those by linspace.
    assert decoded.indices == original_positions(145, 30, 2, 8) == [0, 15, 30, 45, 75, 90, 105, 135]
    np.testing.assert_array_equal(read_video_frames(real_clip, 8, sampling=sampling), decoded.frames)
    # The default is unchanged: the centres of equal segments.
    assert decode_frames(real_clip, 8).indices == sample_frame_indices(145, 8)


def test_variable_frame_rate_is_sampled_by_time(tmp_path, write_clip, level_frames, frame_level):
    # 20 frames in the first 0.2 s, then 4 frames one second apart.
    pts = [10 * k for k in range(20)] + [1000, 2000, 3000, 4000]
    path = write_clip(tmp_path / "vfr.mp4", level_frames(24), pts=pts, time_base=Fraction(1, 1000))
    decoded = decode_frames(path, 5, sampling=FrameSampling("fps", 1.0))
    # At 0, 1, 2, 3 and 4 s the frames on screen are 0, 20, 21, 22 and 23.
    assert decoded.indices == [0, 20, 21, 22, 23]
    assert [frame_level(f) for f in decoded.frames] == decoded.indices


def test_fps_sampling_without_timestamps_is_an_error_naming_the_file(
    tmp_path, write_clip, level_frames, monkeypatch
):
    path = write_clip(tmp_path / "clip.mp4", level_frames(12), fps=10)
    monkeypatch.setattr(video, "_packet_timeline", lambda path, limits: None)
    monkeypatch.setattr(video, "_decoded_timeline", lambda path, limits: (None, 12))
    with pytest.raises(VideoDecodeError, match="no usable timestamps") as error:
        decode_frames(path, 4, sampling=FrameSampling("fps", 1.0))
    assert str(path) in str(error.value)
    # Segment centres need no timestamps: frames are counted.
    assert decode_frames(path, 4).indices == sample_frame_indices(12, 4)


@pytest.mark.parametrize(
    ("method", "fps", "message"),
    [
        ("uniform", 1.0, "'uniform' is not one of"),
        ("fps", 0.0, "positive"),
        ("fps", float("nan"), "positive"),
    ],
)
def test_bad_sampling_is_refused(method, fps, message):
    with pytest.raises(ValueError, match=message):
        FrameSampling(method, fps)
    with pytest.raises(ValueError, match="frame_sampling"):
        VideoGemmaConfig.from_preset("tiny", frame_sampling=method, frame_sampling_fps=fps)


def test_processor_follows_the_config_and_saves_its_sampling(tmp_path, real_clip):
    config = VideoGemmaConfig.from_preset("tiny", frame_sampling="fps", frame_sampling_fps=2.0)
    processor = VideoGemmaProcessor.from_preset("tiny", frame_sampling="fps", frame_sampling_fps=2.0)
    from_config = VideoGemmaProcessor.from_config(config, processor.tokenizer)
    assert from_config.to_dict() == processor.to_dict()
    assert processor.to_dict()["frame_sampling"] == "fps" and processor.to_dict()["frame_sampling_fps"] == 2.0
    expected = read_video_frames(real_clip, 8, sampling=FrameSampling("fps", 2.0))
    np.testing.assert_array_equal(processor.load_frames(real_clip), expected)
    processor.save_pretrained(tmp_path / "p")
    loaded = VideoGemmaProcessor.from_pretrained(tmp_path / "p")
    np.testing.assert_array_equal(loaded.load_frames(real_clip), expected)
    # Frames in memory have no timestamps: taken as already read at the rate, capped and padded.
    frames = np.random.default_rng(0).integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(processor.load_frames(frames), frames[fps_sample_positions(30, 8)])
    np.testing.assert_array_equal(processor.load_frames(frames[:3]), frames[[0, 0, 0, 1, 1, 1, 2, 2]])


def test_processor_saved_before_the_setting_reads_segment_centres(tmp_path, real_clip):
    VideoGemmaProcessor.from_preset("tiny").save_pretrained(tmp_path)
    path = tmp_path / PROCESSOR_CONFIG_NAME
    saved = json.loads(path.read_text())
    del saved["frame_sampling"], saved["frame_sampling_fps"]
    path.write_text(json.dumps(saved))
    loaded = VideoGemmaProcessor.from_pretrained(tmp_path)
    assert loaded.sampling == FrameSampling("segment_centers")
    np.testing.assert_array_equal(loaded.load_frames(real_clip), read_video_frames(real_clip, 8))
