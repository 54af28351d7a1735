"""The two preprocessings of the same decoded frames (ARCHITECTURE §1), batched in torch.

- `clip_transform`: resize the shortest side to `image_size` (bicubic, antialiased), centre crop
  `image_size`², scale to [0, 1], normalise with CLIP's mean/std.
- `videomamba_transform`: resize to `image_size`² ignoring the aspect ratio with OpenCV's bilinear rule
  (`cv2.INTER_LINEAR`: half-pixel centres, two taps per axis, no antialiasing, also when shrinking), as
  the original VideoMamba / Mobile-VideoGPT pipeline did; scale to [0, 1], normalise with ImageNet's mean/std.

Both take uint8 frames `(..., H, W, 3)` (numpy or torch, any leading dims such as (T,) or (B, T)) and return
float32 `(..., 3, S, S)`. Resizing runs on the uint8 frames and yields uint8, as the reference pipelines do
(PIL for CLIP, OpenCV for VideoMamba): torch's uint8 kernels compute in fixed point, like those libraries, and
agree with them within 1-2 grey levels (antialiased bicubic: a port of Pillow's; bilinear without antialias:
OpenCV's rule, within 1 level), ~20× faster on CPU than resizing in float. Sizes come from the model config
(`vision_config.image_size`, `videomamba_config.image_size`); the statistics default to the constants in
`videogemma.config`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from videogemma.config import CLIP_IMAGE_MEAN, CLIP_IMAGE_STD, IMAGENET_MEAN, IMAGENET_STD


def clip_transform(
    frames: np.ndarray | torch.Tensor,
    image_size: int,
    mean: Sequence[float] = CLIP_IMAGE_MEAN,
    std: Sequence[float] = CLIP_IMAGE_STD,
) -> torch.Tensor:
    """CLIP preprocessing: shortest side → `image_size` (bicubic), centre crop, [0, 1], normalise."""
    images, leading = _as_images(frames)
    height, width = images.shape[-2:]
    # Like CLIPImageProcessor / torchvision: the short side becomes exactly `image_size`, the long side
    # scales with it (truncated).
    if height <= width:
        size = (image_size, int(image_size * width / height))
    else:
        size = (int(image_size * height / width), image_size)
    if size != (height, width):
        images = _resize(images, size, "bicubic", antialias=True)
    top = (size[0] - image_size) // 2
    left = (size[1] - image_size) // 2
    images = images[:, :, top : top + image_size, left : left + image_size]
    return _normalise(images, mean, std).reshape(*leading, 3, image_size, image_size).contiguous()


def videomamba_transform(
    frames: np.ndarray | torch.Tensor,
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """VideoMamba preprocessing: resize to `image_size`² ignoring aspect (OpenCV's bilinear), [0, 1], normalise."""
    images, leading = _as_images(frames)
    if tuple(images.shape[-2:]) != (image_size, image_size):
        images = _resize(images, (image_size, image_size), "bilinear", antialias=False)
    return _normalise(images, mean, std).reshape(*leading, 3, image_size, image_size).contiguous()


def _resize(images: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool) -> torch.Tensor:
    """Resize of uint8 (N, 3, H, W), keeping uint8 (rounded and clamped, as PIL and OpenCV do).

    `align_corners=False` is the half-pixel-centre convention of both libraries. Always on CPU, where torch
    has the fixed-point uint8 kernels (decoded frames are there anyway).
    """
    resized = F.interpolate(images.cpu(), size=size, mode=mode, align_corners=False, antialias=antialias)
    return resized.to(images.device)


def _as_images(frames: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """uint8 (..., H, W, 3) → uint8 (N, 3, H, W), and the leading dims."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if tensor.dtype != torch.uint8:
        raise TypeError(f"expected uint8 frames (0..255), got {tensor.dtype}")
    if tensor.ndim < 3 or tensor.shape[-1] != 3:
        raise ValueError(f"expected frames shaped (..., H, W, 3), got {tuple(tensor.shape)}")
    leading = tuple(tensor.shape[:-3])
    images = tensor.reshape(-1, *tensor.shape[-3:]).permute(0, 3, 1, 2)
    return images, leading


def _normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    mean_t, std_t = mean_t.to(images.device), std_t.to(images.device)
    return (images.float() / 255.0 - mean_t) / std_t
