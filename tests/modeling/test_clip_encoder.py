from __future__ import annotations

import pytest
import torch

from videogemma.config import VideoGemmaConfig
from videogemma.modeling.clip_encoder import CLIPFrameEncoder


@pytest.fixture(scope="module")
def encoder() -> CLIPFrameEncoder:
    torch.manual_seed(0)
    config = VideoGemmaConfig.from_preset("tiny")
    return CLIPFrameEncoder(config.vision_config, config.clip_select_layer).eval()


def test_features_are_the_patch_tokens_of_the_second_to_last_block(encoder: CLIPFrameEncoder) -> None:
    pixels = torch.randn(2, 3, 3, 64, 64)
    features = encoder(pixels)
    assert features.shape == (2, 3, encoder.num_patches, encoder.hidden_size) == (2, 3, 16, 64)
    vision = encoder.vision_model
    # block by block, by hand: embeddings → pre-layernorm → all blocks but the last; CLS dropped
    hidden = vision.pre_layrnorm(vision.embeddings(pixels.flatten(0, 1)))
    for layer in vision.encoder.layers[:-1]:
        hidden = layer(hidden, attention_mask=None)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    torch.testing.assert_close(features, hidden[:, 1:].reshape(2, 3, 16, 64), rtol=1e-5, atol=1e-5)


def test_each_frame_is_encoded_independently(encoder: CLIPFrameEncoder) -> None:
    pixels = torch.randn(1, 4, 3, 64, 64)
    together = encoder(pixels)
    alone = torch.cat([encoder(pixels[:, i : i + 1]) for i in range(4)], dim=1)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_bad_input_is_an_error(encoder: CLIPFrameEncoder) -> None:
    with pytest.raises(ValueError, match="batch, frames"):
        encoder(torch.randn(3, 3, 64, 64))
    config = VideoGemmaConfig.from_preset("tiny").vision_config
    with pytest.raises(ValueError, match="out of range"):
        CLIPFrameEncoder(config, select_layer=-5)
