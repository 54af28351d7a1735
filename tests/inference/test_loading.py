"""`videogemma.load` from the three pretrained components (tiny-sized stand-ins saved in their real layouts)."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionModel, Gemma3nForCausalLM

import videogemma
from videogemma.config import VideoGemmaConfig
from videogemma.inference.generate import GenerationSettings, answer
from videogemma.modeling.videomamba import VideoMamba
from videogemma.processing.tokenizer import build_tiny_tokenizer

TINY = VideoGemmaConfig.from_preset("tiny")
# A text-only Gemma-3n folder carries no multimodal config: the tiny geometry comes as overrides.
TINY_OVERRIDES = dict(
    num_frames=TINY.num_frames,
    chunk_size=TINY.chunk_size,
    keyframes_per_chunk=TINY.keyframes_per_chunk,
    image_projector_grid=TINY.image_projector_grid,
    video_projector_grid=TINY.video_projector_grid,
    image_token_id=TINY.image_token_id,
    end_of_turn_token_id=TINY.end_of_turn_token_id,
    max_sequence_length=TINY.max_sequence_length,
)


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    root = tmp_path_factory.mktemp("components")
    torch.manual_seed(0)
    lm = Gemma3nForCausalLM(TINY.text_config)
    lm.save_pretrained(root / "gemma-3n")
    build_tiny_tokenizer().save_pretrained(root / "gemma-3n")  # the tokenizer lives beside the weights
    clip = CLIPVisionModel(TINY.vision_config)
    clip.save_pretrained(root / "clip")
    videomamba = VideoMamba(TINY.videomamba_config)
    torch.save({"model": videomamba.state_dict()}, root / "videomamba.pth")
    return root, lm, clip, videomamba


def test_load_from_components_keeps_their_weights_and_answers(components, real_clip):
    root, lm, clip, videomamba = components
    model, processor = videogemma.load(
        lm=root / "gemma-3n", clip=root / "clip", videomamba=root / "videomamba.pth", **TINY_OVERRIDES
    )
    assert not model.training
    for name, tensor in lm.state_dict().items():
        assert torch.equal(model.language_model.state_dict()[name], tensor), name
    assert torch.equal(
        model.videomamba.state_dict()["patch_embed.proj.weight"],
        videomamba.state_dict()["patch_embed.proj.weight"],
    )
    clip_weights = model.clip.vision_model.state_dict()
    for name, tensor in clip.state_dict().items():
        assert torch.equal(clip_weights[name], tensor), name
    assert processor.image_token_id == model.config.image_token_id
    result = answer(model, processor, real_clip, settings=GenerationSettings(max_new_tokens=4))
    assert 1 <= result.generated_tokens <= 4


def test_load_components_must_come_together(components):
    root, *_ = components
    with pytest.raises(ValueError, match="videomamba"):
        videogemma.load(lm=root / "gemma-3n", clip=root / "clip")
    with pytest.raises(ValueError, match="not both"):
        videogemma.load("tiny", lm=root / "gemma-3n", clip=root / "clip", videomamba=root / "videomamba.pth")


def test_load_moves_to_the_requested_dtype():
    model, _ = videogemma.load("tiny", dtype="bfloat16")
    assert model.language_model.lm_head.weight.dtype == torch.bfloat16
