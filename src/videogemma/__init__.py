"""VideoGemma: Mobile-VideoGPT (VideoMamba + CLIP + ETP projectors) on Gemma-3n-E2B."""

from videogemma.config import VideoGemmaConfig, VideoMambaConfig
from videogemma.loading import load

__all__ = ["VideoGemmaConfig", "VideoGemmaForConditionalGeneration", "VideoMambaConfig", "load"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The model pulls in the vision encoders and the scan kernels: import it on first use only.
    if name == "VideoGemmaForConditionalGeneration":
        from videogemma.modeling.modeling_videogemma import VideoGemmaForConditionalGeneration

        return VideoGemmaForConditionalGeneration
    raise AttributeError(f"module 'videogemma' has no attribute {name!r}")
