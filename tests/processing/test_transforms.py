"""CLIP and VideoMamba preprocessing against a straightforward PIL/numpy reference.

PIL resizes 8-bit images (rounding after each pass), so the tolerance is 2/255 before normalisation.
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


def _reference_videomamba(frames: np.ndarray, size: int) -> np.ndarray:
    images = [
        np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR), dtype=np.float32) for f in frames
    ]
    return np.stack(images).transpose(0, 3, 1, 2) / 255


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


@pytest.mark.parametrize("size", [64, 224])
def test_videomamba_transform_matches_pil_reference(frames, size):
    pixels = videomamba_transform(frames, size)
    assert pixels.shape == (len(frames), 3, size, size)
    reference = _reference_videomamba(frames, size)
    np.testing.assert_allclose(
        _unnormalise(pixels, IMAGENET_MEAN, IMAGENET_STD), reference, atol=TOLERANCE + 1e-6
    )


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
