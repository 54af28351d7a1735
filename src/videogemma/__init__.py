"""VideoGemma: Mobile-VideoGPT (VideoMamba + CLIP + ETP projectors) on Gemma-3n-E2B.

The package's names are imported on first use (`videogemma.load`, `videogemma.VideoGemmaProcessor`...), so that
`import videogemma` and the `videogemma` command start without torch and transformers; the Auto classes of
transformers resolve VideoGemma's saved models and processors once transformers is imported (`auto_classes`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from videogemma import auto_classes

if TYPE_CHECKING:
    from videogemma.config import VideoGemmaConfig, VideoMambaConfig
    from videogemma.loading import load
    from videogemma.modeling.modeling_videogemma import VideoGemmaForConditionalGeneration
    from videogemma.processing.processor import VideoGemmaProcessor

__version__ = "0.1.0"

# Public name → the module that defines it.
_LAZY_NAMES = {
    "VideoGemmaConfig": "videogemma.config",
    "VideoMambaConfig": "videogemma.config",
    "VideoGemmaForConditionalGeneration": "videogemma.modeling.modeling_videogemma",
    "VideoGemmaProcessor": "videogemma.processing.processor",
    "load": "videogemma.loading",
}
__all__ = [
    "VideoGemmaConfig",
    "VideoGemmaForConditionalGeneration",
    "VideoGemmaProcessor",
    "VideoMambaConfig",
    "load",
]

auto_classes.install()


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'videogemma' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES})
