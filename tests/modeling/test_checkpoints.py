from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPConfig, CLIPModel, Gemma3nConfig, Gemma3nForCausalLM
from transformers.models.gemma3n.modeling_gemma3n import Gemma3nModel, Gemma3nMultimodalEmbedder

import videogemma.modeling.checkpoints as checkpoints
from videogemma.config import TINY_MULTIMODAL_TOKENS, TINY_TEXT_VOCAB, VideoGemmaConfig
from videogemma.constants import END_OF_AUDIO, END_OF_IMAGE
from videogemma.modeling.modeling_videogemma import VideoGemmaForConditionalGeneration
from videogemma.modeling.videomamba import VideoMamba, keeps_fp32

TINY = VideoGemmaConfig.from_preset("tiny")
# What the tiny preset sets beyond the three components' own configs.
TINY_OVERRIDES = dict(
    num_frames=TINY.num_frames,
    chunk_size=TINY.chunk_size,
    keyframes_per_chunk=TINY.keyframes_per_chunk,
    image_projector_grid=TINY.image_projector_grid,
    video_projector_grid=TINY.video_projector_grid,
    end_of_turn_token_id=TINY.end_of_turn_token_id,
    max_sequence_length=TINY.max_sequence_length,
)
END_OF_IMAGE_ID = TINY_TEXT_VOCAB + TINY_MULTIMODAL_TOKENS.index(END_OF_IMAGE)
# The tiny vocabulary's multimodal block laid out as Gemma-3n's: the vision block from <end_of_image> (its
# <image_soft_token> included), the audio block from <end_of_audio> to the end of the vocabulary.
AUDIO_VOCAB_OFFSET = TINY_TEXT_VOCAB + TINY_MULTIMODAL_TOKENS.index(END_OF_AUDIO)
TINY_GEMMA3N = Gemma3nConfig(
    text_config=TINY.text_config.to_dict(),
    vision_config=dict(
        hidden_size=32, vocab_offset=END_OF_IMAGE_ID, vocab_size=AUDIO_VOCAB_OFFSET - END_OF_IMAGE_ID
    ),
    audio_config=dict(
        hidden_size=24,
        vocab_offset=AUDIO_VOCAB_OFFSET,
        vocab_size=TINY.text_config.vocab_size - AUDIO_VOCAB_OFFSET,
    ),
    image_token_id=TINY.image_token_id,
)
# Tensors of a full Gemma-3n checkpoint that VideoGemma must never read.
FOREIGN_TENSORS = {
    "model.vision_tower.timm_model.conv_stem.conv.weight": (8, 3, 3, 3),
    "model.audio_tower.conformer.0.ffw_layer_start.ffw_layer_1.weight": (16, 8),
    # shared-KV layers carry no k/v projections in transformers; real checkpoints still hold them
    "model.language_model.layers.3.self_attn.k_proj.weight": (64, 128),
}


class Components:
    def __init__(self, root: Path) -> None:
        torch.manual_seed(0)
        self.lm = Gemma3nForCausalLM(TINY.text_config).eval()
        with torch.no_grad():
            for layer in self.lm.model.layers:
                layer.altup.correct_output_scale.normal_()
        self.clip = CLIPModel(
            CLIPConfig(
                text_config=dict(
                    hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
                ),
                vision_config=TINY.vision_config.to_dict(),
                projection_dim=32,
            )
        ).eval()
        self.videomamba = VideoMamba(TINY.videomamba_config).eval()
        # Gemma-3n's embedders of hard multimodal tokens, random weights (norm scales included)
        self.embed_vision = Gemma3nMultimodalEmbedder(TINY_GEMMA3N.vision_config, TINY.text_config)
        self.embed_audio = Gemma3nMultimodalEmbedder(TINY_GEMMA3N.audio_config, TINY.text_config)
        with torch.no_grad():
            for parameter in [*self.embed_vision.parameters(), *self.embed_audio.parameters()]:
                parameter.normal_()

        self.full_lm_dir = root / "gemma-3n-full"
        self.write_full_gemma3n(self.full_lm_dir)
        self.text_lm_dir = root / "gemma-3n-text"
        self.lm.save_pretrained(self.text_lm_dir)
        self.clip_dir = root / "clip"
        self.clip.save_pretrained(self.clip_dir)
        self.clip_vision_dir = root / "clip-vision"
        self.clip.vision_model.save_pretrained(self.clip_vision_dir)
        self.videomamba_path = root / "videomamba_m16_tiny.pth"
        self.write_original_videomamba(self.videomamba_path)

    def write_full_gemma3n(self, directory: Path) -> None:
        """The `google/gemma-3n-E2B` layout: text decoder under `model.language_model.`, towers beside it,
        the hard-token embedders, no lm_head (tied), two shards and an index."""
        directory.mkdir()
        TINY_GEMMA3N.save_pretrained(directory)
        tensors = {
            "model.language_model." + key.removeprefix("model."): value.clone()
            for key, value in self.lm.state_dict().items()
            if key.startswith("model.")
        }
        for name in ("embed_vision", "embed_audio"):
            embedder = getattr(self, name).state_dict()
            tensors.update({f"model.{name}.{key}": value.clone() for key, value in embedder.items()})
        tensors.update({key: torch.randn(shape) for key, shape in FOREIGN_TENSORS.items()})
        keys = sorted(tensors)
        shards = {
            "model-00001-of-00002.safetensors": keys[::2],
            "model-00002-of-00002.safetensors": keys[1::2],
        }
        weight_map = {}
        for file, shard_keys in shards.items():
            save_file({key: tensors[key] for key in shard_keys}, directory / file, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard_keys, file))
        index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index))

    def write_original_videomamba(self, path: Path) -> None:
        """OpenGVLab's layout: a `model` dict, encoder keys under `vision_encoder.`, unused heads beside."""
        state = {
            "vision_encoder." + key: value.clone() for key, value in self.videomamba.state_dict().items()
        }
        state["text_encoder.embeddings.word_embeddings.weight"] = torch.randn(10, 8)
        state["vision_encoder.clip_decoder.0.head.weight"] = torch.randn(4, 4)
        torch.save({"model": state}, path)


@pytest.fixture(scope="module")
def components(tmp_path_factory: pytest.TempPathFactory) -> Components:
    return Components(tmp_path_factory.mktemp("components"))


@pytest.fixture(scope="module")
def read_keys() -> list[str]:
    return []


@pytest.fixture(scope="module")
def model(components: Components, read_keys: list[str]) -> VideoGemmaForConditionalGeneration:
    original_safe_open = checkpoints.safe_open

    class RecordingSafeOpen:
        """safe_open that records every tensor read."""

        def __init__(self, *args, **kwargs) -> None:
            self.handle = original_safe_open(*args, **kwargs)

        def __enter__(self) -> RecordingSafeOpen:
            self.inner = self.handle.__enter__()
            return self

        def __exit__(self, *exc) -> None:
            self.handle.__exit__(*exc)

        def keys(self) -> list[str]:
            return self.inner.keys()

        def get_tensor(self, key: str) -> torch.Tensor:
            read_keys.append(key)
            return self.inner.get_tensor(key)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoints, "safe_open", RecordingSafeOpen)
        return VideoGemmaForConditionalGeneration.from_components(
            lm=str(components.full_lm_dir),
            clip=str(components.clip_dir),
            videomamba=str(components.videomamba_path),
            **TINY_OVERRIDES,
        )


def text_ids() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randint(8, TINY.text_config.vocab_size_per_layer_input, (2, 9))


def random_video(batch: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    shape = (batch, TINY.num_frames, 3, TINY.vision_config.image_size, TINY.vision_config.image_size)
    return {
        "clip_pixel_values": torch.randn(shape, generator=generator),
        "videomamba_pixel_values": torch.randn(shape, generator=generator),
    }


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


def test_full_gemma3n_layout_loads_the_text_decoder_only(
    components: Components, model: VideoGemmaForConditionalGeneration, read_keys: list[str]
) -> None:
    assert read_keys and not set(read_keys) & set(FOREIGN_TENSORS)
    readable = ("model.language_model.", "vision_model.", "model.embed_vision.")
    assert all(key.startswith(readable) for key in read_keys)
    # embed_vision's hard-token path, not its soft-token norm
    assert {key for key in read_keys if key.startswith("model.embed_vision.")} == {
        f"model.embed_vision.{name}.weight"
        for name in ("embedding", "hard_embedding_norm", "embedding_projection")
    }
    assert_same_tensors(model.language_model.state_dict(), components.lm.state_dict())
    assert_same_tensors(model.clip.vision_model.state_dict(), components.clip.vision_model.state_dict())
    assert_same_tensors(model.videomamba.state_dict(), components.videomamba.state_dict())
    assert model.config.image_token_id == TINY.image_token_id  # read from the multimodal config
    assert model.config.num_visual_tokens == TINY.num_visual_tokens


def test_built_model_computes_what_its_components_compute(
    components: Components, model: VideoGemmaForConditionalGeneration
) -> None:
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert model.language_model.lm_head.weight is model.language_model.model.embed_tokens.weight
    ids = text_ids()
    video = random_video()
    with torch.no_grad():
        # non-persistent buffers (RoPE, embedding scales) were rebuilt, not left empty
        torch.testing.assert_close(model(ids).logits, components.lm(ids).logits)
        clip_out = components.clip.vision_model(video["clip_pixel_values"][0], output_hidden_states=True)
        torch.testing.assert_close(
            model.clip(video["clip_pixel_values"])[0], clip_out.hidden_states[-2][:, 1:]
        )
        frames = video["videomamba_pixel_values"][:, : TINY.num_keyframes]
        torch.testing.assert_close(model.videomamba(frames), components.videomamba(frames))
    # the projectors are the only new weights: initialised, small, finite
    for projector in (model.image_projector, model.video_projector):
        weight = projector.mlp[0].weight
        assert torch.isfinite(weight).all() and 0.01 < weight.std() < 0.03
        assert torch.equal(projector.mlp[0].bias, torch.zeros_like(projector.mlp[0].bias))
    assert not any(p.requires_grad for p in model.clip.parameters())
    assert not model.videomamba.training


def test_text_only_gemma3n_and_clip_vision_dirs(
    components: Components, model: VideoGemmaForConditionalGeneration
) -> None:
    other = VideoGemmaForConditionalGeneration.from_components(
        lm=components.text_lm_dir,
        clip=components.clip_vision_dir,
        videomamba=components.videomamba_path,
        image_token_id=TINY.image_token_id,
        **TINY_OVERRIDES,
    )
    assert_same_tensors(other.language_model.state_dict(), model.language_model.state_dict())
    assert_same_tensors(other.clip.state_dict(), model.clip.state_dict())
    # no embed_vision: <end_of_image> keeps its text embedding row, as before
    assert other.config.vision_vocab_offset is None and other.vision_token_embeds is None
    ids = torch.tensor([[2, 7, END_OF_IMAGE_ID, 30]])
    with torch.no_grad():
        embeds, _ = other.embed_inputs(ids)
        assert torch.equal(embeds, other.language_model.model.embed_tokens(ids))
    # a dict override updates a sub-config's fields
    overridden = VideoGemmaForConditionalGeneration.from_components(
        lm=components.text_lm_dir,
        clip=components.clip_vision_dir,
        videomamba=components.videomamba_path,
        image_token_id=TINY.image_token_id,
        text_config={"final_logit_softcapping": 5.0},
        dtype=torch.bfloat16,
        **TINY_OVERRIDES,
    )
    # everything in bf16 but VideoMamba's SSM parameters (A_log, D, Δ bias), which stay fp32 as in Mamba
    dtypes = {name: p.dtype for name, p in overridden.named_parameters()}
    assert {d for n, d in dtypes.items() if not keeps_fp32(n)} == {torch.bfloat16}
    assert {d for n, d in dtypes.items() if keeps_fp32(n)} == {torch.float32}
    with torch.no_grad():
        logits = overridden(text_ids()).logits
    assert overridden.config.text_config.final_logit_softcapping == 5.0
    assert torch.isfinite(logits).all() and logits.abs().max() <= 5.0


def test_a_clip_directory_with_pytorch_bin_weights_only(
    components: Components, model: VideoGemmaForConditionalGeneration, tmp_path: Path
) -> None:
    # Older CLIP uploads ship `pytorch_model.bin` only: read with torch.load(weights_only=True).
    bin_dir = tmp_path / "clip-bin"
    components.clip.config.save_pretrained(bin_dir)
    torch.save(components.clip.state_dict(), bin_dir / "pytorch_model.bin")
    other = VideoGemmaForConditionalGeneration.from_components(
        lm=components.full_lm_dir, clip=bin_dir, videomamba=components.videomamba_path, **TINY_OVERRIDES
    )
    assert_same_tensors(other.clip.state_dict(), model.clip.state_dict())
    (bin_dir / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"no weights in .*clip-bin .*pytorch_model\.bin"):
        VideoGemmaForConditionalGeneration.from_components(
            lm=components.full_lm_dir, clip=bin_dir, videomamba=components.videomamba_path, **TINY_OVERRIDES
        )


def test_missing_pieces_are_named(components: Components, tmp_path: Path) -> None:
    broken = tmp_path / "gemma-3n-broken"
    broken.mkdir()
    (broken / "config.json").write_text((components.text_lm_dir / "config.json").read_text())
    tensors = load_file(components.text_lm_dir / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    arguments = dict(clip=components.clip_dir, videomamba=components.videomamba_path, **TINY_OVERRIDES)
    with pytest.raises(KeyError, match=r"gemma-3n-broken.*model\.norm\.weight"):
        VideoGemmaForConditionalGeneration.from_components(
            lm=broken, image_token_id=TINY.image_token_id, **arguments
        )
    (broken / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"gemma-3n-broken has no config\.json"):
        VideoGemmaForConditionalGeneration.from_components(lm=broken, **arguments)
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        VideoGemmaForConditionalGeneration.from_components(lm=tmp_path / "does-not-exist", **arguments)


def test_save_pretrained_from_pretrained_round_trip(
    model: VideoGemmaForConditionalGeneration, tmp_path: Path
) -> None:
    model.save_pretrained(tmp_path / "videogemma")
    assert (tmp_path / "videogemma" / "model.safetensors").exists()
    loaded = VideoGemmaForConditionalGeneration.from_pretrained(tmp_path / "videogemma")
    assert_same_tensors(loaded.state_dict(), model.state_dict())
    assert loaded.language_model.lm_head.weight is loaded.language_model.model.embed_tokens.weight
    assert loaded.frozen_encoders == {"clip", "videomamba"}
    assert not any(p.requires_grad for p in loaded.videomamba.parameters())
    assert loaded.config.num_visual_tokens == model.config.num_visual_tokens
    assert "vision_token_embeds" in load_file(tmp_path / "videogemma" / "model.safetensors")
    assert loaded.config.vision_vocab_offset == END_OF_IMAGE_ID
    n = TINY.num_visual_tokens
    ids = torch.tensor([[2, 5, 7, *([TINY.image_token_id] * n), END_OF_IMAGE_ID, 30, 31, 32]])
    video = random_video()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, **video).logits, model(ids, **video).logits, rtol=0, atol=0)


class Gemma3nEmbeddingPath(nn.Module):
    """What `transformers.Gemma3nModel.forward` reads for text ids: the text model and both hard-token
    embedders (its vision and audio towers need timm and only run on pixels and audio features)."""

    def __init__(self, components: Components) -> None:
        super().__init__()
        self.config = TINY_GEMMA3N
        self.language_model = components.lm.model
        self.embed_vision = components.embed_vision
        self.embed_audio = components.embed_audio

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.embed_tokens

    def decoder_inputs(self, input_ids: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The inputs Gemma3nModel.forward hands its text decoder, and the decoder's last hidden state."""
        captured: dict[str, torch.Tensor] = {}

        def capture(module: nn.Module, args: tuple, kwargs: dict) -> None:
            captured.update({k: kwargs[k] for k in ("inputs_embeds", "per_layer_inputs")})

        handle = self.language_model.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            with torch.no_grad():
                hidden = Gemma3nModel.forward(self, input_ids=input_ids).last_hidden_state
        finally:
            handle.remove()
        return captured, hidden


def test_end_of_image_takes_gemma3n_embed_vision_vector(
    components: Components, model: VideoGemmaForConditionalGeneration
) -> None:
    # <bos>, text, <start_of_image> (7, a text token), <end_of_image>, text; a second prompt without it
    ids = torch.tensor([[2, 5, 40, 41, 7, END_OF_IMAGE_ID, 108, 42], [2, 5, 43, 7, 44, 45, 46, 47]])
    reference, hidden = Gemma3nEmbeddingPath(components).decoder_inputs(ids)
    with torch.no_grad():
        embeds, per_layer = model.embed_inputs(ids)
        logits = model(ids).logits
        text_rows = model.language_model.model.embed_tokens(ids)
    is_end = ids == END_OF_IMAGE_ID
    torch.testing.assert_close(embeds, reference["inputs_embeds"])
    torch.testing.assert_close(per_layer, reference["per_layer_inputs"], rtol=0, atol=0)
    torch.testing.assert_close(logits, model._lm_logits(hidden))
    # text positions are the text rows, bit for bit; <end_of_image> is not (it is embed_vision's, unscaled)
    assert torch.equal(embeds[~is_end], text_rows[~is_end])
    expected = components.embed_vision(input_ids=torch.tensor([END_OF_IMAGE_ID])).detach()
    torch.testing.assert_close(embeds[is_end], expected)
    assert (embeds[is_end] - text_rows[is_end]).abs().max() > 0.1


def test_vision_token_vectors_follow_dtype_and_can_be_left_out(
    components: Components, model: VideoGemmaForConditionalGeneration
) -> None:
    arguments = dict(clip=components.clip_dir, videomamba=components.videomamba_path, **TINY_OVERRIDES)
    bf16 = VideoGemmaForConditionalGeneration.from_components(
        lm=components.full_lm_dir, dtype=torch.bfloat16, **arguments
    )
    assert bf16.vision_token_embeds.dtype == torch.bfloat16
    torch.testing.assert_close(
        bf16.vision_token_embeds.float(), model.vision_token_embeds, rtol=1e-2, atol=1e-2
    )
    plain = VideoGemmaForConditionalGeneration.from_components(
        lm=components.full_lm_dir, vision_vocab_offset=None, **arguments
    )
    assert plain.vision_token_embeds is None and "vision_token_embeds" not in plain.state_dict()
    with pytest.raises(ValueError, match="gemma-3n-text is a text-only Gemma-3n checkpoint"):
        VideoGemmaForConditionalGeneration.from_components(
            lm=components.text_lm_dir,
            image_token_id=TINY.image_token_id,
            vision_vocab_offset=END_OF_IMAGE_ID,
            vision_vocab_size=TINY_GEMMA3N.vision_config.vocab_size,
            **arguments,
        )
