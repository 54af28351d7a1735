"""CLIP and VideoMamba preprocessing against straightforward references.

CLIP: PIL's bicubic resize, which works on 8-bit images (rounding after each pass), so the tolerance is
2/255 before normalisation. VideoMamba: OpenCV's bilinear rule (`cv2.INTER_LINEAR`) written out in numpy
below, in exact arithmetic; OpenCV itself and torch's uint8 kernel use fixed-point weights, so the tolerance
is one grey level.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from videogemma.config import CLIP_IMAGE_MEAN, CLIP_IMAGE_STD, IMAGENET_MEAN, IMAGENET_STD, VideoGemmaConfig
from videogemma.processing.transforms import clip_transform, videomamba_transform
from videogemma.processing.video import read_video_frames

TOLERANCE = 2 / 255


def _reference_clip(frames: np.ndarray, size: int) -> np.ndarray:
    """PIL bicubic resize of the short side, numpy centre crop; (T, 3, S, S) in [0, 1]."""
    out = []
    for frame in frames:
        height, width = frame.shape[:2]
        new_h, new_w = (
            (size, int(size * width / height)) if height <= width else (int(size * height / width), size)
        )
        image = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.BICUBIC), dtype=np.float32)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        out.append(image[top : top + size, left : left + size].transpose(2, 0, 1) / 255)
    return np.stack(out)


def _opencv_linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR along one axis: output pixel d samples the input at (d + 0.5)·n_in/n_out - 0.5
    (half-pixel centres), between its two neighbours; before the first pixel or from the last one on, the
    edge pixel alone. Two taps whatever the scale: no antialiasing."""
    source = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    first = np.floor(source).astype(np.int64)
    weight = source - first
    before, after = first < 0, first >= n_in - 1
    first[before], weight[before] = 0, 0.0
    first[after], weight[after] = n_in - 1, 0.0
    return first, np.minimum(first + 1, n_in - 1), weight


def _reference_videomamba_uint8(frames: np.ndarray, size: int) -> np.ndarray:
    """`cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)` per frame, in float64, rounded."""
    height, width = frames.shape[1:3]
    y0, y1, wy = _opencv_linear_taps(height, size)
    x0, x1, wx = _opencv_linear_taps(width, size)
    image = frames.astype(np.float64)
    wx, wy = wx[None, None, :, None], wy[None, :, None, None]
    rows0 = image[:, y0][:, :, x0] * (1 - wx) + image[:, y0][:, :, x1] * wx
    rows1 = image[:, y1][:, :, x0] * (1 - wx) + image[:, y1][:, :, x1] * wx
    return np.clip(np.rint(rows0 * (1 - wy) + rows1 * wy), 0, 255).astype(np.uint8)


def _reference_videomamba(frames: np.ndarray, size: int) -> np.ndarray:
    return _reference_videomamba_uint8(frames, size).transpose(0, 3, 1, 2) / 255


def _unnormalise(pixels: torch.Tensor, mean, std) -> np.ndarray:
    return (pixels * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)).numpy()


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, height, width, 3), dtype=np.uint8)


_DECODED: dict[str, np.ndarray] = {}  # the real clip's frames, decoded once for the module


@pytest.fixture(params=["real_clip", "noise_landscape_odd", "noise_portrait", "noise_small_upsampled"])
def frames(request) -> np.ndarray:
    if request.param == "real_clip":
        path = request.getfixturevalue("real_clip")
        if str(path) not in _DECODED:
            _DECODED[str(path)] = read_video_frames(path, 4)
        return _DECODED[str(path)]
    shapes = {
        "noise_landscape_odd": (101, 333),
        "noise_portrait": (160, 90),
        "noise_small_upsampled": (37, 53),
    }
    return _noise(*shapes[request.param])


@pytest.mark.parametrize("size", [64, 224])
def test_clip_transform_matches_pil_reference(frames, size):
    pixels = clip_transform(frames, size)
    assert pixels.shape == (len(frames), 3, size, size)
    assert pixels.dtype == torch.float32
    reference = _reference_clip(frames, size)
    np.testing.assert_allclose(
        _unnormalise(pixels, CLIP_IMAGE_MEAN, CLIP_IMAGE_STD), reference, atol=TOLERANCE + 1e-6
    )


GREY_LEVEL = 1 / 255


@pytest.mark.parametrize("size", [64, 224])
def test_videomamba_transform_matches_opencv_bilinear(frames, size):
    pixels = videomamba_transform(frames, size)
    assert pixels.shape == (len(frames), 3, size, size)
    reference = _reference_videomamba(frames, size)
    np.testing.assert_allclose(
        _unnormalise(pixels, IMAGENET_MEAN, IMAGENET_STD), reference, atol=GREY_LEVEL + 1e-6
    )


def _stripes(height: int, width: int) -> np.ndarray:
    """Black and white lines one pixel wide, across and down: all detail, no average to fall back on."""
    rows, cols = np.indices((height, width))
    pattern = np.where((rows + cols) % 2 == 0, 255, 0).astype(np.uint8)
    vertical = np.where(cols % 2 == 0, 255, 0).astype(np.uint8)
    return np.stack([pattern, vertical, np.full_like(pattern, 128)], axis=-1)[None]


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(_noise(720, 1280, seed=5)[:1], id="720p_noise"),
        pytest.param(_stripes(720, 1280), id="720p_stripes"),
        pytest.param(_stripes(333, 250), id="odd_stripes"),
    ],
)
def test_videomamba_downscaling_is_opencv_bilinear_without_antialiasing(frame):
    pixels = _unnormalise(videomamba_transform(frame, 224), IMAGENET_MEAN, IMAGENET_STD)
    reference = _reference_videomamba(frame, 224)
    np.testing.assert_allclose(pixels, reference, atol=GREY_LEVEL + 1e-6)
    # Two taps per axis: fine stripes survive the shrinking as far from grey as OpenCV leaves them, where an
    # antialiased resize averages them away (the difference the pretrained weights would notice).
    antialiased = np.asarray(Image.fromarray(frame[0]).resize((224, 224), Image.BILINEAR), np.float32) / 255
    assert np.abs(antialiased.transpose(2, 0, 1) - reference[0]).mean() > 4 * GREY_LEVEL


def test_sizes_come_from_the_config(real_clip):
    config = VideoGemmaConfig.from_preset("tiny")
    frames = read_video_frames(real_clip, 2)
    assert clip_transform(frames, config.vision_config.image_size).shape == (2, 3, 64, 64)
    assert videomamba_transform(frames, config.videomamba_config.image_size).shape == (2, 3, 64, 64)


def test_leading_dims_and_numpy_or_torch_input():
    batch = np.random.default_rng(1).integers(0, 256, (2, 3, 30, 40, 3), dtype=np.uint8)  # (B, T, H, W, 3)
    for transform in (clip_transform, videomamba_transform):
        from_numpy = transform(batch, 16)
        assert from_numpy.shape == (2, 3, 3, 16, 16)
        assert torch.equal(transform(torch.from_numpy(batch), 16), from_numpy)
        # Each frame is transformed on its own: the batch equals the frames one by one.
        assert torch.equal(transform(batch[1, 2], 16), from_numpy[1, 2])


def test_normalisation_uses_the_given_statistics():
    grey = np.full((1, 20, 20, 3), 200, np.uint8)
    expected = (200 / 255 - torch.tensor(CLIP_IMAGE_MEAN)) / torch.tensor(CLIP_IMAGE_STD)
    np.testing.assert_allclose(clip_transform(grey, 8)[0, :, 3, 5], expected, rtol=1e-6)
    expected = (200 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    np.testing.assert_allclose(videomamba_transform(grey, 8)[0, :, 3, 5], expected, rtol=1e-6)
    custom = clip_transform(grey, 8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    np.testing.assert_allclose(custom, np.full((1, 3, 8, 8), 200 / 255), rtol=1e-6)


def test_clip_crops_the_centre_and_videomamba_keeps_everything():
    # 64 x 192: the short side is already 64, so CLIP only crops the middle third (white).
    frame = np.zeros((1, 64, 192, 3), np.uint8)
    frame[:, :, 64:128] = 255
    clip = _unnormalise(clip_transform(frame, 64)[0], CLIP_IMAGE_MEAN, CLIP_IMAGE_STD)
    np.testing.assert_allclose(clip, 1.0, atol=1e-6)
    # VideoMamba squeezes the whole width in: black sides, white middle.
    mamba = _unnormalise(videomamba_transform(frame, 64)[0], IMAGENET_MEAN, IMAGENET_STD)
    assert (
        mamba[:, :, :15].max() < 0.01 and mamba[:, :, 25:40].min() > 0.99 and mamba[:, :, -15:].max() < 0.01
    )


def test_bad_frames_are_rejected():
    with pytest.raises(TypeError, match="uint8"):
        clip_transform(np.zeros((2, 8, 8, 3), np.float32), 8)
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W, 3\)"):
        videomamba_transform(np.zeros((2, 3, 8, 8), np.uint8), 8)
