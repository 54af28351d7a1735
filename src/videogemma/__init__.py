"""VideoGemma: Mobile-VideoGPT (VideoMamba + CLIP + ETP projectors) on Gemma-3n-E2B."""

from videogemma.config import VideoGemmaConfig, VideoMambaConfig

__all__ = ["VideoGemmaConfig", "VideoMambaConfig"]
__version__ = "0.1.0"
