"""CLIP image encoder for the context frames (ARCHITECTURE §2).

Every frame goes through transformers' `CLIPVisionModel`; the feature is the hidden state of the selected
layer (`clip_select_layer`, -2: the output of the second-to-last block, before the final layer norm),
patch tokens only (the CLS token is dropped).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel


class CLIPFrameEncoder(nn.Module):
    def __init__(self, config: CLIPVisionConfig, select_layer: int = -2) -> None:
        super().__init__()
        num_states = config.num_hidden_layers + 1  # the embeddings, then one per block
        if not -num_states <= select_layer < num_states:
            raise ValueError(f"clip_select_layer {select_layer} out of range for {num_states} hidden states")
        self.select_layer = select_layer
        self.vision_model = CLIPVisionModel(config)

    @property
    def num_patches(self) -> int:
        config = self.vision_model.config
        return (config.image_size // config.patch_size) ** 2

    @property
    def hidden_size(self) -> int:
        return self.vision_model.config.hidden_size

    def unused_modules(self) -> list[nn.Module]:
        """The blocks after the selected layer and the final layer norm: they run but their output is never
        read, so they get no gradient (training freezes them, and DDP need not look for unused parameters)."""
        layers = self.vision_model.encoder.layers
        used = self.select_layer % (len(layers) + 1)  # hidden_states[k] is the output of k blocks
        return [*layers[used:], self.vision_model.post_layernorm]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values: (batch, frames, 3, H, W) CLIP-normalised → (batch, frames, patches, hidden)."""
        if pixel_values.dim() != 5:
            raise ValueError(
                f"expected CLIP pixel values (batch, frames, 3, H, W), got {tuple(pixel_values.shape)}"
            )
        batch, frames = pixel_values.shape[:2]
        dtype = self.vision_model.embeddings.patch_embedding.weight.dtype
        outputs = self.vision_model(pixel_values.flatten(0, 1).to(dtype), output_hidden_states=True)
        patch_tokens = outputs.hidden_states[self.select_layer][:, 1:]
        return patch_tokens.reshape(batch, frames, *patch_tokens.shape[1:])
