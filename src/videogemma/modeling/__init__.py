"""The networks: VideoMamba and its selective scan, the CLIP keyframe encoder, keyframe selection, the ETP
projectors, the fused Gemma-3n model and the loaders for real checkpoints."""
