from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.generation.streamers import BaseStreamer

from videogemma.config import VideoGemmaConfig
from videogemma.modeling.keyframes import select_keyframes
from videogemma.modeling.modeling_videogemma import VideoFeatures, VideoGemmaForConditionalGeneration

CONFIG = VideoGemmaConfig.from_preset("tiny")
N_VISUAL = CONFIG.num_visual_tokens
IMAGE = CONFIG.image_token_id


def build_tiny_model(seed: int = 0) -> VideoGemmaForConditionalGeneration:
    torch.manual_seed(seed)
    model = VideoGemmaForConditionalGeneration(VideoGemmaConfig.from_preset("tiny"))
    with torch.no_grad():
        # AltUp's output scale is zero at init, which silences the per-layer inputs: make it count.
        for layer in model.language_model.model.layers:
            layer.altup.correct_output_scale.normal_(0.0, 1.0)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> VideoGemmaForConditionalGeneration:
    return build_tiny_model()


def video_ids(prefix: list[int], suffix: list[int]) -> list[int]:
    return [2, *prefix, 7, *([IMAGE] * N_VISUAL), *suffix]


def random_video(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size = CONFIG.vision_config.image_size
    shape = (batch, CONFIG.num_frames, 3, size, size)
    return {
        "clip_pixel_values": torch.randn(shape, generator=generator),
        "videomamba_pixel_values": torch.randn(shape, generator=generator),
    }


# ---- fusion with Gemma-3n -----------------------------------------------------------------------------


def test_text_only_logits_equal_gemma3n_causal_lm(model: VideoGemmaForConditionalGeneration) -> None:
    torch.manual_seed(1)
    ids = torch.randint(8, CONFIG.text_config.vocab_size_per_layer_input, (2, 12))
    with torch.no_grad():
        ours = model(ids).logits
        reference = model.language_model(ids).logits
        # What a naive port does: inputs_embeds alone drops the per-layer token embeddings.
        embeds_only = model.language_model(inputs_embeds=model.language_model.model.embed_tokens(ids)).logits
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    assert (embeds_only - reference).abs().max() > 1e-2


def test_a_fresh_model_starts_with_spread_attention_and_loaded_weights_keep_theirs(tmp_path) -> None:
    """Gemma-3n's attention has no 1/sqrt(head_dim): at q-norm weights of 1 a random model attends nearly one-hot
    and, trained from scratch, learns to ignore the video. A fresh model starts at head_dim^-0.5 instead."""
    model = build_tiny_model()
    head_dim = CONFIG.text_config.head_dim
    config = model.config.text_config
    config._attn_implementation = "eager"  # attention weights are returned by the eager path only
    ids = torch.randint(
        8, CONFIG.text_config.vocab_size_per_layer_input, (2, 80), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        attentions = model(ids, output_attentions=True).attentions
        last = torch.stack([a[:, :, -1] for a in attentions if a is not None])  # (layers, batch, heads, keys)
        entropy = -(last * last.clamp_min(1e-12).log()).sum(-1)
    # Full-attention layers see 80 keys (uniform: 4.4 nats); at q-norm weights of 1 the mean was about 1.
    assert float(entropy.mean()) > 2.0
    for layer in model.language_model.model.layers:
        assert torch.equal(layer.self_attn.q_norm.weight, torch.full((head_dim,), head_dim**-0.5))

    with torch.no_grad():
        model.language_model.model.layers[0].self_attn.q_norm.weight.fill_(0.7)
    config._attn_implementation = "sdpa"
    model.save_pretrained(tmp_path)
    loaded = VideoGemmaForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(
        loaded.language_model.model.layers[0].self_attn.q_norm.weight, torch.full((head_dim,), 0.7)
    )


def test_visual_tokens_fill_the_placeholders_and_per_layer_inputs_treat_them_as_pad(
    model: VideoGemmaForConditionalGeneration,
) -> None:
    # Visual tokens equal to the pad embedding must give Gemma-3n's logits for the ids with placeholders → 0:
    # the scatter lands on the placeholder positions, the per-layer inputs use id 0 there.
    ids = torch.tensor([video_ids([11, 12], [13, 14, 15]), video_ids([21, 22], [23, 24, 25])])
    pad_embedding = model.language_model.model.embed_tokens(torch.zeros(1, dtype=torch.long))
    visual = pad_embedding.expand(2, N_VISUAL, -1)
    with torch.no_grad():
        ours = model(ids, visual_tokens=visual).logits
        reference = model.language_model(ids.masked_fill(ids == IMAGE, 0)).logits
        shuffled = model(ids, visual_tokens=torch.randn_like(visual)).logits
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    assert (shuffled - reference).abs().max() > 1e-2


def test_placeholder_count_must_match_the_visual_tokens(model: VideoGemmaForConditionalGeneration) -> None:
    ids = torch.tensor([video_ids([11], [12])])
    visual = torch.randn(1, N_VISUAL, CONFIG.hidden_size)
    with pytest.raises(ValueError, match=rf"\[{N_VISUAL - 1}\] placeholder.*{N_VISUAL} visual tokens"):
        model(ids.masked_fill(torch.arange(ids.shape[1]) == 4, 9), visual_tokens=visual)
    with pytest.raises(ValueError, match="no video was given"):
        model(ids)
    with pytest.raises(ValueError, match="one form only"):
        model(ids, visual_tokens=visual, **random_video(1))


# ---- the video path -----------------------------------------------------------------------------------


def test_video_tokens_are_clip_frames_then_video_chunks(model: VideoGemmaForConditionalGeneration) -> None:
    video = random_video(2)
    with torch.no_grad():
        features = model.extract_video_features(**video)
        tokens = model.project_video_features(features)
    config = CONFIG
    clip_features = features.clip_features
    assert clip_features.shape == (2, config.num_frames, config.clip_grid**2, 64)
    assert features.keyframe_indices.shape == (2, config.num_keyframes)
    expected_indices = select_keyframes(clip_features, config.chunk_size, config.keyframes_per_chunk)
    assert torch.equal(features.keyframe_indices, expected_indices)
    assert tokens.shape == (2, N_VISUAL, config.hidden_size)

    with torch.no_grad():
        torch.testing.assert_close(model.clip(video["clip_pixel_values"]), clip_features)
        keyframes = torch.stack(
            [video["videomamba_pixel_values"][b, features.keyframe_indices[b]] for b in range(2)]
        )
        torch.testing.assert_close(model.videomamba(keyframes), features.videomamba_features)
        frame_tokens = [model.image_projector(clip_features[:, t : t + 1]) for t in range(config.num_frames)]
        mamba = features.videomamba_features.reshape(2, config.num_keyframes, -1, 64)
        k = config.keyframes_per_chunk
        chunk_tokens = [
            model.video_projector(mamba[:, c * k : (c + 1) * k]) for c in range(config.num_chunks)
        ]
    expected = torch.cat([*frame_tokens, *chunk_tokens], dim=1)
    torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-5)


def test_pixels_features_and_visual_tokens_give_the_same_logits(
    model: VideoGemmaForConditionalGeneration,
) -> None:
    video = random_video(2, seed=3)
    ids = torch.tensor([video_ids([11], [12, 13]), video_ids([14], [15, 16])])
    with torch.no_grad():
        features = model.extract_video_features(**video)
        from_pixels = model(ids, **video).logits
        from_features = model(ids, video_features=features).logits
        from_tokens = model(ids, visual_tokens=model.encode_video(**video)).logits
        # cached features of single videos are concatenated back into a batch
        from_cat = model(ids, video_features=VideoFeatures.cat([features[0:1], features[1:2]])).logits
    torch.testing.assert_close(from_features, from_pixels)
    torch.testing.assert_close(from_tokens, from_pixels)
    torch.testing.assert_close(from_cat, from_pixels)


def test_pixels_then_features_in_one_batch(model: VideoGemmaForConditionalGeneration) -> None:
    # The training feature cache: misses come as pixels (first), hits as features, one forward for both.
    video = random_video(2, seed=5)
    ids = torch.tensor([video_ids([11], [12, 13]), video_ids([14], [15, 16])])
    first = {name: tensor[:1] for name, tensor in video.items()}
    with torch.no_grad():
        features = model.extract_video_features(**video)
        from_pixels = model(ids, **video).logits
        mixed = model(ids, **first, video_features=features[1:2])
    torch.testing.assert_close(mixed.logits, from_pixels)
    assert mixed.video_features.clip_features.shape[0] == 1  # what was encoded here, for the cache
    torch.testing.assert_close(mixed.video_features.videomamba_features, features.videomamba_features[:1])


def test_no_pixel_videos_still_run_the_encoders(
    model: VideoGemmaForConditionalGeneration, monkeypatch
) -> None:
    # A ZeRO-3 process whose videos all came from the cache runs the encoders with the others (on a blank
    # video): their parameter gathers are collective.
    calls = []
    forward = type(model.videomamba).forward
    monkeypatch.setattr(
        type(model.videomamba), "forward", lambda self, x: calls.append(x.shape) or forward(self, x)
    )
    empty = {name: tensor[:0] for name, tensor in random_video(1).items()}
    with torch.no_grad():
        features = model.extract_video_features(**empty)
    assert calls and calls[0][0] == 1
    assert features.clip_features.shape == (
        0,
        CONFIG.num_frames,
        *model.extract_video_features(**random_video(1)).clip_features.shape[2:],
    )
    assert features.keyframe_indices.shape == (0, CONFIG.num_keyframes)


def test_the_output_carries_the_visual_tokens_the_decoder_read(
    model: VideoGemmaForConditionalGeneration,
) -> None:
    # Training losses on the video side read them from here instead of running the encoders a second time.
    video = random_video(2, seed=4)
    ids = torch.tensor([video_ids([11], [12]), video_ids([14], [15])])
    with torch.no_grad():
        output = model(ids, **video)
        torch.testing.assert_close(output.video_hidden_states, model.encode_video(**video))
        assert model(torch.tensor([[2, 11, 12]])).video_hidden_states is None


def test_frozen_encoders_stay_in_eval_mode_and_get_no_gradients() -> None:
    model = build_tiny_model()
    model.train()
    assert not model.clip.training and not model.videomamba.training
    assert model.image_projector.training and model.language_model.training
    assert not any(p.requires_grad for p in [*model.clip.parameters(), *model.videomamba.parameters()])
    ids = torch.tensor([video_ids([11], [12, 13])])
    labels = ids.masked_fill(ids == IMAGE, -100)
    model(ids, labels=labels, **random_video(1)).loss.backward()
    assert all(p.grad is None for p in [*model.clip.parameters(), *model.videomamba.parameters()])
    assert model.image_projector.mlp[0].weight.grad is not None
    assert model.video_projector.peg.weight.grad is not None

    model.freeze_encoders(clip=False, videomamba=False)
    assert model.clip.training and model.videomamba.training
    model.zero_grad()
    model(ids, labels=labels, **random_video(1)).loss.backward()
    assert model.clip.vision_model.embeddings.patch_embedding.weight.grad is not None
    assert any(p.grad is not None for p in model.videomamba.parameters())


# ---- loss at supervised positions -----------------------------------------------------------------------


def test_loss_at_supervised_positions_equals_full_cross_entropy(
    model: VideoGemmaForConditionalGeneration,
) -> None:
    video = random_video(2, seed=4)
    ids = torch.tensor([video_ids([11, 12], [13, 14, 15, 16]), video_ids([21, 22], [23, 24, 25, 0])])
    labels = torch.full_like(ids, -100)
    labels[0, -4:] = ids[0, -4:]
    labels[1, -3:-1] = ids[1, -3:-1]
    attention_mask = torch.ones_like(ids)
    attention_mask[1, -1] = 0
    with torch.no_grad():
        features = model.extract_video_features(**video)
        full_logits = model(ids, attention_mask=attention_mask, video_features=features).logits
        out = model(ids, attention_mask=attention_mask, labels=labels, video_features=features)
    expected_loss = F.cross_entropy(
        full_logits[:, :-1].reshape(-1, full_logits.shape[-1]), labels[:, 1:].reshape(-1)
    )
    torch.testing.assert_close(out.loss, expected_loss)
    supervised = labels[:, 1:] != -100
    assert out.logits.shape == (int(supervised.sum()), CONFIG.text_config.vocab_size)
    torch.testing.assert_close(out.logits, full_logits[:, :-1][supervised])
    # gradient accumulation: the sum over the batch divided by the caller's token count
    with torch.no_grad():
        summed = model(
            ids, attention_mask=attention_mask, labels=labels, num_items_in_batch=10, video_features=features
        ).loss
    torch.testing.assert_close(summed, expected_loss * int(supervised.sum()) / 10)
    # placeholders left in the labels are not supervised
    with torch.no_grad():
        unmasked = labels.masked_scatter(ids == IMAGE, ids[ids == IMAGE])
        assert (unmasked == IMAGE).sum() == 2 * N_VISUAL
        torch.testing.assert_close(
            model(ids, attention_mask=attention_mask, labels=unmasked, video_features=features).loss,
            expected_loss,
        )


def test_package_exports_the_model() -> None:
    import videogemma

    assert videogemma.VideoGemmaForConditionalGeneration is VideoGemmaForConditionalGeneration


# ---- KV cache, KV sharing, gradient checkpointing -----------------------------------------------------


def test_incremental_decoding_with_cache_equals_full_forward(
    model: VideoGemmaForConditionalGeneration,
) -> None:
    # Longer than the sliding window (32), through the KV-shared layers (tiny shares the last 2 of 4).
    assert CONFIG.text_config.num_kv_shared_layers > 0
    video = random_video(1, seed=5)
    ids = torch.tensor([video_ids(list(range(11, 16)), list(range(20, 32)))])
    assert ids.shape[1] > CONFIG.text_config.sliding_window
    prefill = ids.shape[1] - 8
    with torch.no_grad():
        full = model(ids, use_cache=False, **video).logits
        out = model(ids[:, :prefill], use_cache=True, **video)
        steps = [out.logits]
        cache = out.cache
        for t in range(prefill, ids.shape[1]):
            out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-4)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients() -> None:
    model = build_tiny_model(seed=6)
    model.train()
    features = model.extract_video_features(**random_video(1, seed=6))
    ids = torch.tensor([video_ids([11], list(range(20, 30)))])
    labels = ids.masked_fill(ids == IMAGE, -100)

    def loss_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        loss = model(ids, labels=labels, video_features=features).loss
        loss.backward()
        params = [
            model.video_projector.mlp[0].weight,
            model.language_model.model.layers[3].self_attn.q_proj.weight,
        ]
        return loss.detach(), [p.grad.clone() for p in params]

    plain_loss, plain_grads = loss_and_grads()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert model.language_model.model.layers[0].gradient_checkpointing
    checkpointed_loss, checkpointed_grads = loss_and_grads()
    torch.testing.assert_close(checkpointed_loss, plain_loss)
    for plain, checkpointed in zip(plain_grads, checkpointed_grads):
        torch.testing.assert_close(checkpointed, plain)


# ---- generate -------------------------------------------------------------------------------------------


class CollectingStreamer(BaseStreamer):
    def __init__(self) -> None:
        self.chunks: list[list[int]] = []
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        self.chunks.append(value.flatten().tolist())

    def end(self) -> None:
        self.ended = True


def test_batched_left_padded_greedy_generation_equals_one_by_one(
    model: VideoGemmaForConditionalGeneration,
) -> None:
    video = random_video(2, seed=7)
    prompts = [video_ids([11, 12, 13, 14, 15], [16, 17]), video_ids([21], [22])]
    singles = []
    streamer = CollectingStreamer()  # streamers see the prompt, then each new token
    for i, prompt in enumerate(prompts):
        one_video = {name: value[i : i + 1] for name, value in video.items()}
        out = model.generate(
            torch.tensor([prompt]),
            **one_video,
            max_new_tokens=6,
            do_sample=False,
            streamer=streamer if i == 0 else None,
        )
        singles.append(out[0, len(prompt) :].tolist())
    assert streamer.ended and streamer.chunks[0] == prompts[0]
    assert [token for chunk in streamer.chunks[1:] for token in chunk] == singles[0]

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    batched = model.generate(ids, attention_mask=attention_mask, **video, max_new_tokens=6, do_sample=False)
    assert [row[width:].tolist() for row in batched] == singles
    assert all(IMAGE not in tokens for tokens in singles)  # a placeholder is never generated


def test_sampling_and_beam_search_with_video_features(model: VideoGemmaForConditionalGeneration) -> None:
    video = random_video(1, seed=8)
    with torch.no_grad():
        features = model.extract_video_features(**video)
    prompt = torch.tensor([video_ids([11], [12])])
    torch.manual_seed(0)
    samples = model.generate(
        prompt, video_features=features, max_new_tokens=4, do_sample=True, top_k=20, num_return_sequences=3
    )
    assert samples.shape[0] == 3 and prompt.shape[1] < samples.shape[1] <= prompt.shape[1] + 4
    assert torch.equal(samples[:, : prompt.shape[1]], prompt.expand(3, -1))
    beams = model.generate(prompt, video_features=features, max_new_tokens=4, num_beams=2, do_sample=False)
    beams_from_pixels = model.generate(prompt, **video, max_new_tokens=4, num_beams=2, do_sample=False)
    assert torch.equal(beams, beams_from_pixels)


# ---- the e2b preset -------------------------------------------------------------------------------------


@pytest.mark.parametrize("merge", ["mean", "grid"])
def test_e2b_preset_builds_on_meta_with_the_expected_sizes(merge: str) -> None:
    config = VideoGemmaConfig.from_preset("e2b", video_keyframe_merge=merge)
    with torch.device("meta"):
        model = VideoGemmaForConditionalGeneration(config)

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())  # tied lm_head counted once

    text = count(model.language_model)
    per_layer_table = model.language_model.model.embed_tokens_per_layer.weight.numel()
    assert 4.3e9 < text < 4.5e9
    assert 1.95e9 < per_layer_table < 2.05e9
    assert 70e6 < count(model.videomamba) < 78e6
    assert 85e6 < count(model.clip) < 89e6
    assert config.num_visual_tokens == 2402
    features = VideoFeatures(
        clip_features=torch.empty(1, 16, 196, 768, device="meta"),
        videomamba_features=torch.empty(1, 8 * 196, 576, device="meta"),
        keyframe_indices=torch.empty(1, 8, dtype=torch.long, device="meta"),
    )
    assert model.project_video_features(features).shape == (1, 2402, 2048)
    # The video ETP in Mobile-VideoGPT's order with the configured merge; the image ETP projects, then pools.
    assert model.video_projector.pool_first and model.video_projector.frame_merge == merge
    assert not model.image_projector.pool_first
