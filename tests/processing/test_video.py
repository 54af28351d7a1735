"""Decoding: which frames are chosen, that they are the real frames, upright and RGB, and every bad file."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from videogemma.errors import VideoDecodeError, VideoGemmaDataError
from videogemma.processing import video
from videogemma.processing.video import decode_frames, probe_video, read_video_frames, sample_frame_indices

# ---- frame choice -------------------------------------------------------------------------------------------


def test_sample_frame_indices_take_segment_centres():
    assert sample_frame_indices(16, 8) == [1, 3, 5, 7, 9, 11, 13, 15]
    assert sample_frame_indices(145, 16) == [
        4,
        13,
        22,
        31,
        40,
        49,
        58,
        67,
        77,
        86,
        95,
        104,
        113,
        122,
        131,
        140,
    ]
    assert sample_frame_indices(1, 4) == [0, 0, 0, 0]


def test_sample_frame_indices_repeat_for_short_clips():
    indices = sample_frame_indices(3, 8)
    assert indices == [0, 0, 0, 1, 1, 2, 2, 2]
    assert sorted(set(sample_frame_indices(5, 64))) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        sample_frame_indices(0, 8)


def _full_decode(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def _no_full_decode(path, limits):
    raise AssertionError(f"{path}: planned from the packets, the clip should not need a counting decode")


def test_real_clip_gives_uniform_real_frames(real_clip, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(video, "_decoded_timeline", _no_full_decode)
        decoded = decode_frames(real_clip, 16)
    assert decoded.indices == sample_frame_indices(145, 16)
    assert decoded.frames.shape == (16, 480, 640, 3)
    assert decoded.frames.dtype == np.uint8
    assert decoded.timestamps == pytest.approx([k / 30 for k in decoded.indices])
    reference = _full_decode(real_clip)
    assert len(reference) == 145
    for frame, k in zip(decoded.frames, decoded.indices):
        np.testing.assert_array_equal(frame, reference[k])
    np.testing.assert_array_equal(read_video_frames(real_clip, 16), decoded.frames)


def test_probe_real_clip(real_clip):
    info = probe_video(real_clip)
    assert (info.num_frames, info.width, info.height, info.rotation) == (145, 640, 480, 0)
    assert info.fps == pytest.approx(30.0)
    assert info.duration == pytest.approx(4.83, abs=0.01)
    assert info.codec == "h264"
    assert probe_video(real_clip, count_frames=True).num_frames == 145


def test_small_clip_frames_are_the_chosen_ones(tmp_path, write_clip, level_frames, frame_level, monkeypatch):
    path = write_clip(tmp_path / "clip.mp4", level_frames(20), fps=10)
    monkeypatch.setattr(video, "_decoded_timeline", _no_full_decode)
    decoded = decode_frames(path, 8)
    assert decoded.indices == [1, 3, 6, 8, 11, 13, 16, 18]
    assert [frame_level(f) for f in decoded.frames] == decoded.indices
    assert decoded.timestamps == pytest.approx([k / 10 for k in decoded.indices])


def test_short_clip_repeats_real_frames_never_black(tmp_path, write_clip, level_frames, frame_level):
    path = write_clip(tmp_path / "short.mp4", level_frames(3), fps=10)
    decoded = decode_frames(path, 8)
    assert decoded.indices == [0, 0, 0, 1, 1, 2, 2, 2]
    assert [frame_level(f) for f in decoded.frames] == decoded.indices
    assert decoded.frames.min() >= 15  # no black padding frame


@pytest.mark.parametrize(
    ("name", "pix_fmt", "codec", "height", "width", "grey"),
    [
        ("yuv444_odd.mp4", "yuv444p", "libx264", 47, 63, False),
        ("gray.mkv", "gray", "ffv1", 48, 64, True),
        ("yuv420_vp9.webm", "yuv420p", "libvpx-vp9", 36, 50, False),
        ("mjpeg.avi", "yuvj422p", "mjpeg", 48, 64, False),
    ],
)
def test_pixel_formats_and_odd_sizes_become_rgb(
    tmp_path, write_clip, level_frames, frame_level, name, pix_fmt, codec, height, width, grey
):
    frames = level_frames(12, height, width)
    path = write_clip(tmp_path / name, frames[..., 0] if grey else frames, pix_fmt=pix_fmt, codec=codec)
    decoded = decode_frames(path, 6)
    assert decoded.frames.shape == (6, height, width, 3)
    assert decoded.indices == sample_frame_indices(12, 6)
    assert [frame_level(f) for f in decoded.frames] == decoded.indices
    info = probe_video(path)
    assert (info.width, info.height, info.pix_fmt) == (width, height, pix_fmt)


def _marked_frames(num_frames: int = 6) -> np.ndarray:
    """Grey frames with a white block in the top-left corner of the stored image."""
    frames = np.full((num_frames, 48, 64, 3), 60, np.uint8)
    frames[:, :16, :16] = 255
    return frames


def _white_corner(frame: np.ndarray) -> str:
    h, w = frame.shape[:2]
    corners = {
        "top-left": frame[: h // 4, : w // 4],
        "top-right": frame[: h // 4, -w // 4 :],
        "bottom-left": frame[-h // 4 :, : w // 4],
        "bottom-right": frame[-h // 4 :, -w // 4 :],
    }
    return max(corners, key=lambda name: corners[name].mean())


@pytest.mark.skipif(
    not hasattr(av.VideoStream, "set_display_rotation"),
    reason="writing a display matrix needs VideoStream.set_display_rotation (recent PyAV)",
)
@pytest.mark.parametrize(
    ("rotation", "shape", "corner"),
    # Counter-clockwise display rotation moves the stored top-left corner as follows.
    [(90, (64, 48), "bottom-left"), (180, (48, 64), "bottom-right"), (270, (64, 48), "top-right")],
)
def test_display_matrix_rotation_is_applied(tmp_path, write_clip, rotation, shape, corner):
    path = write_clip(tmp_path / f"rot{rotation}.mp4", _marked_frames(), rotation=rotation)
    frames = read_video_frames(path, 4)
    assert frames.shape == (4, *shape, 3)
    assert all(_white_corner(f) == corner for f in frames)
    info = probe_video(path)
    assert (info.height, info.width, info.rotation) == (*shape, rotation)


def test_legacy_rotate_tag_is_applied(tmp_path):
    path = tmp_path / "legacy.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.metadata["rotate"] = "90"  # old muxers' tag: clockwise degrees
        for image in _marked_frames(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    frames = read_video_frames(path, 2)
    assert frames.shape == (2, 64, 48, 3)
    assert _white_corner(frames[0]) == "top-right"


def test_variable_frame_rate_is_sampled_by_time(tmp_path, write_clip, level_frames, frame_level):
    # 20 frames in the first 0.2 s, then 4 frames one second apart: uniform in time, not in index.
    pts = [10 * k for k in range(20)] + [1000, 2000, 3000, 4000]
    path = write_clip(tmp_path / "vfr.mp4", level_frames(24), pts=pts, time_base=Fraction(1, 1000))
    decoded = decode_frames(path, 4)
    assert [frame_level(f) for f in decoded.frames] == decoded.indices
    # By index, 3 of the 4 samples would land in the 0.2 s burst; by time at most the first one does.
    assert sum(k < 20 for k in decoded.indices) <= 1
    assert decoded.indices == sorted(decoded.indices)
    assert len(set(decoded.indices)) == 4
    # Each chosen frame is the one on screen at its segment's centre.
    seconds = [p / 1000 for p in pts]
    for t, k in zip(decoded.timestamps, decoded.indices):
        assert t == pytest.approx(seconds[k], abs=1e-3)


def test_wrong_packet_timeline_falls_back_to_decoding(
    tmp_path, write_clip, level_frames, frame_level, monkeypatch
):
    path = write_clip(tmp_path / "clip.mp4", level_frames(20), fps=10)
    expected = decode_frames(path, 8)
    real_timeline = video._packet_timeline

    def overcounting_timeline(p, limits):  # as if the container promised 10 frames more than there are
        timeline = real_timeline(p, limits)
        step = timeline.pts[1] - timeline.pts[0]
        pts = [*timeline.pts, *(timeline.pts[-1] + step * k for k in range(1, 11))]
        return video._Timeline(pts, timeline.end + 10 * step, timeline.time_base)

    monkeypatch.setattr(video, "_packet_timeline", overcounting_timeline)
    decoded = decode_frames(path, 8)
    assert decoded.indices == expected.indices
    np.testing.assert_array_equal(decoded.frames, expected.frames)

    monkeypatch.setattr(video, "_packet_timeline", lambda p, limits: None)  # e.g. packets without timestamps
    decoded = decode_frames(path, 8)
    assert decoded.indices == expected.indices
    assert [frame_level(f) for f in decoded.frames] == decoded.indices


def test_decoding_stops_after_the_last_wanted_frame(tmp_path, write_clip, level_frames, monkeypatch):
    path = write_clip(tmp_path / "clip.mp4", level_frames(20), fps=10)
    converted = []
    to_ndarray = av.VideoFrame.to_ndarray

    def counting_to_ndarray(self, *args, **kwargs):
        converted.append(self.pts)
        return to_ndarray(self, *args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "to_ndarray", counting_to_ndarray)
    decoded = decode_frames(path, 2)
    assert decoded.indices == [5, 15]
    assert len(converted) == 2  # only the wanted frames are converted to RGB


def test_long_clip_jumps_to_keyframes(tmp_path, monkeypatch):
    path = tmp_path / "long.mp4"
    with av.open(str(path), "w") as container:  # 120 frames, a keyframe every 10
        stream = container.add_stream("libx264", rate=10, options={"g": "10", "sc_threshold": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for k in range(120):
            image = np.full((48, 64, 3), 10 + 2 * k, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    seeks = []
    seek = av.container.InputContainer.seek
    monkeypatch.setattr(
        av.container.InputContainer, "seek", lambda self, *a, **k: (seeks.append(a), seek(self, *a, **k))[1]
    )
    monkeypatch.setattr(video, "_decoded_timeline", _no_full_decode)
    decoded = decode_frames(path, 4)
    assert decoded.indices == [15, 45, 75, 105]
    assert len(seeks) == 4  # to the keyframes 10, 40, 70 and 100
    reference = _full_decode(path)
    for frame, k in zip(decoded.frames, decoded.indices):
        np.testing.assert_array_equal(frame, reference[k])


# ---- bad files ------------------------------------------------------------------------------------------


def _assert_names_file(error: pytest.ExceptionInfo, path, reason: str) -> None:
    assert isinstance(error.value, VideoGemmaDataError)
    assert isinstance(error.value, ValueError)
    assert str(path) in str(error.value)
    assert reason in str(error.value)
    assert error.value.path == str(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(VideoDecodeError) as error:
        read_video_frames(path, 4)
    _assert_names_file(error, path, "not found")
    with pytest.raises(VideoDecodeError):
        probe_video(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(VideoDecodeError) as error:
        read_video_frames(path, 4)
    _assert_names_file(error, path, "empty")


def test_directory_is_not_a_video(tmp_path):
    with pytest.raises(VideoDecodeError) as error:
        read_video_frames(tmp_path, 4)
    _assert_names_file(error, tmp_path, "not a regular file")


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError) as error:
        read_video_frames(path, 4)
    _assert_names_file(error, path, "not a readable video")
    with pytest.raises(VideoDecodeError):
        probe_video(path)


def test_truncated_real_clip(tmp_path, real_clip):
    path = tmp_path / "truncated.mp4"
    path.write_bytes(real_clip.read_bytes()[: real_clip.stat().st_size // 2])
    with pytest.raises(VideoDecodeError) as error:
        read_video_frames(path, 4)
    _assert_names_file(error, path, "")


def test_zero_frame_video(tmp_path):
    path = tmp_path / "zero.y4m"
    path.write_text("YUV4MPEG2 W64 H48 F10:1 Ip A1:1 C420jpeg\n")  # a header, no frame
    with pytest.raises(VideoDecodeError) as error:
        read_video_frames(path, 4)
    _assert_names_file(error, path, "no decodable frames")
    with pytest.raises(VideoDecodeError, match="no decodable frames"):
        probe_video(path)


def test_file_without_video_stream(tmp_path):
    path = tmp_path / "audio.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(VideoDecodeError) as error:
        read_video_frames(path, 4)
    _assert_names_file(error, path, "no video stream")


def test_num_frames_must_be_positive(real_clip):
    with pytest.raises(ValueError, match="num_frames"):
        read_video_frames(real_clip, 0)
