"""VideoMamba: the forward of ARCHITECTURE §4, both scan directions, and loading the original checkpoints."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from videogemma.config import VideoMambaConfig
from videogemma.modeling.videomamba import VideoMamba

# Small but complete: 2 blocks, 3 frames of 2×2 patches -> sequence of 1 + 12 tokens.
SMALL = dict(
    embed_dim=24, depth=2, patch_size=8, num_frames=3, image_size=16, d_state=4, d_conv=3, expand=2, dt_rank=5
)
B_SUFFIX_KEYS = ("conv1d_b.weight", "conv1d_b.bias", "x_proj_b.weight", "dt_proj_b.weight", "dt_proj_b.bias")


def small_model(seed: int = 0, **overrides) -> VideoMamba:
    torch.manual_seed(seed)
    return VideoMamba(VideoMambaConfig(**{**SMALL, **overrides})).eval()


def frames_for(config: VideoMambaConfig, batch: int = 2, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config.num_frames, 3, config.image_size, config.image_size, generator=gen)


def original_checkpoint(model: VideoMamba) -> dict:
    """The OpenGVLab layout: a `model` dict, `vision_encoder.` keys, and heads VideoMamba does not use."""
    encoder = {f"vision_encoder.{k}": v.clone() for k, v in model.state_dict().items()}
    foreign = {
        "text_encoder.embeddings.word_embeddings.weight": torch.randn(10, 8),
        "vision_encoder.clip_decoder.0.head.weight": torch.randn(4, 24),
        "vision_encoder.head.weight": torch.randn(7, 24),
        "vision_encoder.clip_pos_embed": torch.randn(1, 5, 4),
        "vision_proj.weight": torch.randn(3, 24),
        "mask_token": torch.zeros(1, 1, 24),
    }
    return {"model": {**encoder, **foreign}, "epoch": 3}


def test_forward_gives_finite_patch_features_without_cls():
    model = small_model()
    frames = frames_for(model.config)
    with torch.no_grad():
        features = model(frames)
    assert features.shape == (2, 3 * 2 * 2, 24)
    assert torch.isfinite(features).all()
    # final RMSNorm with unit weight: every token has unit root-mean-square
    torch.testing.assert_close(features.pow(2).mean(-1), torch.ones(2, 12), rtol=1e-3, atol=1e-3)


def test_wrong_frame_count_or_size_is_rejected():
    model = small_model()
    with pytest.raises(
        ValueError, match=r"expects frames of shape \(batch, 3, 3, 16, 16\).*\(2, 4, 3, 16, 16\)"
    ):
        model(torch.zeros(2, 4, 3, 16, 16))
    with pytest.raises(ValueError, match="expects frames of shape"):
        model(torch.zeros(2, 3, 3, 32, 32))


def test_numba_backend_equals_reference_backend_on_the_whole_encoder():
    fast = small_model(scan_backend="cpu")
    reference = small_model(scan_backend="reference")
    reference.load_state_dict(fast.state_dict())
    frames = frames_for(fast.config)
    with torch.no_grad():
        torch.testing.assert_close(fast(frames), reference(frames), rtol=1e-4, atol=1e-5)


def test_bfloat16_encoder_stays_close_to_float32():
    model = small_model()
    frames = frames_for(model.config)
    with torch.no_grad():
        expected = model(frames)
        features = model.to(torch.bfloat16)(frames)
    assert features.dtype == torch.bfloat16
    torch.testing.assert_close(features.float(), expected, rtol=0.05, atol=0.05)


def test_sequence_order_cls_then_frame_major_patches():
    """Patch i of frame f is token f·h·w + i: changing one pixel block changes that output token most."""
    model = small_model()
    frames = frames_for(model.config, batch=1)
    changed = frames.clone()
    changed[0, 2, :, 8:16, 0:8] += 3.0  # frame 2, patch row 1, column 0 -> patch index 2
    with torch.no_grad():
        delta = (model(changed) - model(frames)).norm(dim=-1)[0]
    assert delta.argmax().item() == 2 * 4 + 2


def test_every_backward_scan_weight_changes_the_output():
    model = small_model()
    frames = frames_for(model.config)
    with torch.no_grad():
        before = model(frames)
    for name in ("A_b_log", "D_b", *B_SUFFIX_KEYS):
        perturbed = small_model()
        param = perturbed.get_parameter(f"layers.0.mixer.{name}")
        with torch.no_grad():
            param.add_(0.5 * torch.randn_like(param))
            after = perturbed(frames)
        assert not torch.allclose(after, before, atol=1e-4), f"layers.0.mixer.{name} has no effect"


def test_every_parameter_receives_gradient():
    model = small_model()
    model(frames_for(model.config)).pow(2).mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"{name} gets no gradient"


def test_mixer_mirrors_when_both_directions_share_weights():
    """With `_b` weights equal to the forward ones, reversing the sequence reverses the mixer's output."""
    mixer = small_model().layers[0].mixer
    with torch.no_grad():
        for name in ("conv1d", "x_proj", "dt_proj"):
            getattr(mixer, f"{name}_b").load_state_dict(getattr(mixer, name).state_dict())
        mixer.A_b_log.copy_(mixer.A_log)
        mixer.D_b.copy_(mixer.D)
        hidden = torch.randn(2, 13, 24)
        torch.testing.assert_close(mixer(hidden.flip(1)), mixer(hidden).flip(1), rtol=1e-4, atol=1e-5)


def test_each_direction_is_causal_in_its_own_order():
    mixer = small_model().layers[0].mixer
    xz = torch.randn(1, 2 * mixer.d_inner, 13)
    changed = xz.clone()
    changed[..., 9:] += 1.0
    with torch.no_grad():
        before, after = mixer.scan_direction(xz, ""), mixer.scan_direction(changed, "")
    torch.testing.assert_close(after[..., :9], before[..., :9])
    assert not torch.allclose(after[..., 9:], before[..., 9:])


def test_e2b_videomamba_m_has_73_645_056_parameters():
    with torch.device("meta"):
        model = VideoMamba(VideoMambaConfig())
    assert sum(p.numel() for p in model.parameters()) == 73_645_056  # ≈ 74 M (ARCHITECTURE §4)
    assert model.config.d_inner == 1152 and model.config.dt_rank == 36


# ---- original checkpoints --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_original_checkpoint_infers_config_and_reproduces_output(tmp_path, suffix):
    source = small_model(seed=5, tubelet_size=1)
    checkpoint = original_checkpoint(source)
    path = tmp_path / f"videomamba_small{suffix}"
    if suffix == ".pth":
        torch.save(checkpoint, path)
    else:
        save_file(checkpoint["model"], path)
    loaded = VideoMamba.from_original_checkpoint(path, scan_backend="reference")
    for field in (*SMALL, "tubelet_size", "in_channels"):
        assert getattr(loaded.config, field) == getattr(source.config, field), field
    assert loaded.config.scan_backend == "reference"
    assert not loaded.training
    frames = frames_for(source.config)
    with torch.no_grad():
        out = loaded(frames)
        assert out.shape == (2, 12, 24) and torch.isfinite(out).all()
        torch.testing.assert_close(out, source(frames), rtol=1e-4, atol=1e-5)


def test_load_plain_state_dict_with_module_wrapper():
    source = small_model(seed=6)
    loaded = VideoMamba.from_original_checkpoint({"module": source.state_dict()})
    frames = frames_for(source.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(frames), source(frames))


@pytest.mark.parametrize("name", ["A_b_log", "D_b", *B_SUFFIX_KEYS])
def test_checkpoint_without_backward_scan_weights_is_rejected(name):
    checkpoint = original_checkpoint(small_model())
    del checkpoint["model"][f"vision_encoder.layers.1.mixer.{name}"]
    with pytest.raises(ValueError, match=rf"'layers\.1\.mixer\.{name}' is missing"):
        VideoMamba.from_original_checkpoint(checkpoint)


def test_forward_only_checkpoint_is_rejected():
    state = {k: v for k, v in small_model().state_dict().items() if "_b" not in k}
    with pytest.raises(ValueError, match=r"'layers\.0\.mixer\.A_b_log' is missing"):
        VideoMamba.from_original_checkpoint(state)


def test_mis_shaped_key_is_rejected_naming_it(tmp_path):
    checkpoint = original_checkpoint(small_model())
    checkpoint["model"]["vision_encoder.layers.1.mixer.x_proj_b.weight"] = torch.zeros(14, 48)
    path = tmp_path / "bad.pth"
    torch.save(checkpoint, path)
    with pytest.raises(
        ValueError, match=r"bad\.pth: 'layers\.1\.mixer\.x_proj_b\.weight' has shape \(14, 48\)"
    ):
        VideoMamba.from_original_checkpoint(path)


def test_override_contradicting_the_weights_is_rejected():
    with pytest.raises(ValueError, match="the weights have embed_dim=24, cannot override with 32"):
        VideoMamba.from_original_checkpoint(small_model().state_dict(), embed_dim=32)


def test_other_frame_count_needs_explicit_interpolation():
    source = small_model()
    with pytest.raises(ValueError, match="'temporal_pos_embedding' is for 3 frames but num_frames=5"):
        VideoMamba.from_original_checkpoint(source.state_dict(), num_frames=5)
    loaded = VideoMamba.from_original_checkpoint(
        source.state_dict(), num_frames=5, interpolate_temporal_pos_embedding=True
    )
    assert loaded.config.num_frames == 5
    resampled = loaded.temporal_pos_embedding.detach()[0]
    original = source.temporal_pos_embedding.detach()[0]
    assert resampled.shape == (5, 24)
    torch.testing.assert_close(resampled[0], original[0])  # linear, ends kept
    torch.testing.assert_close(resampled[-1], original[-1])
    with torch.no_grad():
        assert loaded(frames_for(loaded.config)).shape == (2, 5 * 4, 24)


def test_missing_checkpoint_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        VideoMamba.from_original_checkpoint(tmp_path / "nope.pth")
    odd = tmp_path / "weights.npz"
    odd.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"weights\.npz: unknown checkpoint format"):
        VideoMamba.from_original_checkpoint(odd)


def test_ssm_parameters_stay_fp32_when_the_encoder_is_cast() -> None:
    from videogemma.modeling.videomamba import keeps_fp32

    config = VideoMambaConfig(embed_dim=32, depth=2, patch_size=16, image_size=32, num_frames=2, d_state=4)
    encoder = VideoMamba(config)
    a_log = encoder.layers[0].mixer.A_log.detach().clone()
    for cast in (lambda m: m.to(torch.bfloat16), lambda m: m.half(), lambda m: m.bfloat16()):
        cast(encoder)
        dtypes = {name: p.dtype for name, p in encoder.named_parameters()}
        kept = {name for name in dtypes if keeps_fp32(name)}
        assert len(kept) == 6 * config.depth  # A_log, D, Δ bias of both directions in every mixer
        assert {dtypes[n] for n in kept} == {torch.float32}
        assert {d for n, d in dtypes.items() if n not in kept} <= {torch.float16, torch.bfloat16}
        assert torch.equal(encoder.layers[0].mixer.A_log, a_log)  # never rounded on the way
    frames = torch.randn(1, 2, 3, 32, 32, dtype=torch.bfloat16)
    assert torch.isfinite(encoder.bfloat16()(frames).float()).all()
    encoder.float()
    assert {p.dtype for p in encoder.parameters()} == {torch.float32}
