"""A window's video features, each grid frame's CLIP features computed once.

CLIP encodes every frame on its own (`modeling.clip_encoder`), so the features of a frame are the same in
every window that holds it: `WindowEncoder` keeps them by grid index and runs CLIP only on the frames a
window brings in (`stride / step` of them, instead of `num_frames`). Keyframe selection and VideoMamba
depend on the whole window and run per window (`extract_video_features(clip_features=...)`). With
`cache=False` every window runs CLIP on all its frames, as a clip-at-a-time caller would (the benchmark's
baseline); both give the same features.
"""

from __future__ import annotations

from typing import Any

import torch

from videogemma.coach.windows import Window
from videogemma.modeling.modeling_videogemma import VideoFeatures


class WindowEncoder:
    def __init__(self, model: Any, cache: bool = True) -> None:
        self.model = model
        self.cache = cache
        self._features: dict[int, torch.Tensor] = {}  # grid index → (patches, clip_dim)
        self.frames_encoded = 0
        self.frames_reused = 0

    @torch.inference_mode()
    def features(self, window: Window) -> VideoFeatures:
        model = self.model
        device, dtype = model.device, model.dtype
        videomamba = torch.stack([s.videomamba_pixels for s in window.samples])[None].to(device, dtype)
        if not self.cache:
            clip = torch.stack([s.clip_pixels for s in window.samples])[None].to(device, dtype)
            self.frames_encoded += len(window.samples)
            return model.extract_video_features(clip, videomamba)
        for index in [i for i in self._features if i < window.first_index]:
            del self._features[index]  # no later window reads a frame before this one's first
        new = [s for s in window.samples if s.index not in self._features]
        if new:
            pixels = torch.stack([s.clip_pixels for s in new])[None].to(device, dtype)
            for sample, features in zip(new, model.clip(pixels)[0]):
                self._features[sample.index] = features
        self.frames_encoded += len(new)
        self.frames_reused += len(window.samples) - len(new)
        clip_features = torch.stack([self._features[s.index] for s in window.samples])[None]
        return model.extract_video_features(None, videomamba, clip_features=clip_features)
