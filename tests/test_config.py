import json

import pytest

from videogemma.config import VideoGemmaConfig


def test_e2b_preset_geometry():
    config = VideoGemmaConfig.from_preset("e2b")
    assert config.num_visual_tokens == 16 * 144 + 2 * 49 == 2402
    assert config.num_keyframes == config.videomamba_config.num_frames == 8
    assert config.videomamba_config.d_inner == 1152 and config.videomamba_config.dt_rank == 36
    assert config.text_config.num_hidden_layers == 30 and config.text_config.num_kv_shared_layers == 10
    assert config.eos_token_id == [1, 106]


def test_tiny_preset_keeps_gemma3n_structure():
    config = VideoGemmaConfig.from_preset("tiny")
    text = config.text_config
    assert text.hidden_size <= 128
    assert "reuse" in text.kv_sharing_modes  # KV sharing is exercised
    assert set(text.layer_types) == {"sliding_attention", "full_attention"}
    assert config.image_token_id >= text.vocab_size_per_layer_input


def test_round_trip(tmp_path):
    config = VideoGemmaConfig.from_preset("tiny")
    config.save_pretrained(tmp_path)
    loaded = VideoGemmaConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.videomamba_config.embed_dim == config.videomamba_config.embed_dim


def test_other_frame_counts_work():
    # Nothing assumes 16 / 8 / 4: 24 frames in chunks of 6 keeping 3 gives 12 VideoMamba frames.
    base = VideoGemmaConfig.from_preset("tiny")
    vm = base.videomamba_config.to_dict()
    vm["num_frames"] = 12
    config = VideoGemmaConfig.from_preset(
        "tiny", num_frames=24, chunk_size=6, keyframes_per_chunk=3, videomamba_config=vm
    )
    assert config.num_chunks == 4 and config.num_keyframes == 12
    assert config.num_visual_tokens == 24 * 4 + 4 * 4


def test_num_frames_is_the_one_frame_knob():
    # VideoMamba reads chunks × keyframes per chunk: its frame count follows, never set apart.
    assert VideoGemmaConfig.from_preset("tiny", chunk_size=2).videomamba_config.num_frames == 8
    sixteen = VideoGemmaConfig.from_preset("tiny", num_frames=16)
    assert sixteen.videomamba_config.num_frames == 8 and sixteen.num_visual_tokens == 16 * 4 + 4 * 4
    assert VideoGemmaConfig.from_preset("e2b").videomamba_config.num_frames == 8


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_frames=10), "multiple of chunk_size"),
        (dict(keyframes_per_chunk=5), "keyframes_per_chunk"),
        (dict(image_token_id=5), "image_token_id"),
        # tiny's vocabulary ends at 1032: Gemma-3n's 128-id vision block cannot start at 1024
        (dict(vision_vocab_offset=1024), r"vision vocabulary block \[vision_vocab_offset 1024"),
    ],
)
def test_invalid_geometry_is_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        VideoGemmaConfig.from_preset("tiny", **overrides)


def test_video_keyframe_merge_defaults_to_mean_and_old_configs_load(tmp_path):
    config = VideoGemmaConfig.from_preset("tiny")
    assert config.video_keyframe_merge == "mean"
    # A config saved before the field existed loads with the default.
    config.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    del saved["video_keyframe_merge"]
    path.write_text(json.dumps(saved))
    assert VideoGemmaConfig.from_pretrained(tmp_path).video_keyframe_merge == "mean"
    grid = VideoGemmaConfig.from_preset("e2b", video_keyframe_merge="grid")
    assert grid.num_visual_tokens == 2402
    grid.save_pretrained(tmp_path / "grid")
    assert VideoGemmaConfig.from_pretrained(tmp_path / "grid").video_keyframe_merge == "grid"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(video_keyframe_merge="max"), "video_keyframe_merge 'max'"),
        # tiny keeps 2 keyframes of 2×2 tokens per chunk: 8 tokens are no square grid
        (dict(video_keyframe_merge="grid"), "8 is not a square number"),
    ],
)
def test_invalid_keyframe_merge_is_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        VideoGemmaConfig.from_preset("tiny", **overrides)


def test_presets_embed_vision_vocabulary_ids_with_the_text_table():
    # Only a model built from a full Gemma-3n checkpoint holds embed_vision's vectors (and says so).
    assert VideoGemmaConfig.from_preset("tiny").vision_vocab_offset is None
    assert VideoGemmaConfig.from_preset("e2b").vision_vocab_offset is None
    config = VideoGemmaConfig.from_preset("tiny", vision_vocab_offset=1024, vision_vocab_size=2)
    assert VideoGemmaConfig.from_dict(config.to_dict()).vision_vocab_offset == 1024
