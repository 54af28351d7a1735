"""`videogemma.load` from the three pretrained components (tiny-sized stand-ins saved in their real layouts)."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionModel, Gemma3nForCausalLM

import videogemma
from videogemma.config import VideoGemmaConfig
from videogemma.errors import ModelLoadError
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
    # On the CPU the per-layer embedding table stays in the safetensors file; its rows are the same.
    table = lm.state_dict().pop("model.embed_tokens_per_layer.weight")
    disk = model.language_model.model.embed_tokens_per_layer
    assert torch.equal(disk.rows(torch.arange(table.shape[0])), table)
    for name, tensor in lm.state_dict().items():
        if name != "model.embed_tokens_per_layer.weight":
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


# ---- one loading room below training and inference -----------------------------------------------------------

_INFERENCE_WITHOUT_TRAINING = """
import sys
import videogemma.inference.batch, videogemma.inference.generate, videogemma.inference.commands
import videogemma.coach.commands, videogemma.coach.session, videogemma.coach.console
import videogemma.evaluation.coach_report, videogemma.evaluation.coach_metrics
import videogemma
model, processor = videogemma.load("tiny")
assert model.config.num_frames == 8
print(sorted(name for name in sys.modules if name.startswith("videogemma.train")))
"""


def test_inference_and_load_never_import_training():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _INFERENCE_WITHOUT_TRAINING], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_e2b_without_a_tokenizer_fails_before_building_anything(monkeypatch):
    from videogemma.modeling import modeling_videogemma

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built before the missing tokenizer was reported")

    monkeypatch.setattr(modeling_videogemma.VideoGemmaForConditionalGeneration, "__init__", no_build)
    with pytest.raises(ModelLoadError, match="tokenizer=DIR"):
        videogemma.load("e2b")
    with pytest.raises(ModelLoadError, match="missing-tokenizer does not exist"):
        videogemma.load("e2b", tokenizer="missing-tokenizer")


def test_a_preset_takes_a_tokenizer_directory(tmp_path):
    build_tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    model, processor = videogemma.load("tiny", tokenizer=tmp_path / "tokenizer")
    assert processor.image_token_id == model.config.image_token_id
    assert processor.tokenizer.get_vocab() == build_tiny_tokenizer().get_vocab()


def test_unknown_overrides_are_errors():
    with pytest.raises(ModelLoadError, match="'num_frame' is not a VideoGemmaConfig field"):
        videogemma.load("tiny", num_frame=16)
    with pytest.raises(ModelLoadError, match="videomamba_config has no field"):
        videogemma.load("tiny", videomamba_config={"embed_dimension": 64})


def test_sixteen_frames_on_tiny_reach_videomamba(real_clip):
    model, processor = videogemma.load("tiny", num_frames=16)
    assert model.config.videomamba_config.num_frames == 8 and processor.num_frames == 16
    assert model.videomamba.temporal_pos_embedding.shape[1] == 8
    result = answer(model, processor, real_clip, settings=GenerationSettings(max_new_tokens=2))
    assert 1 <= result.generated_tokens <= 2


def test_videomamba_trained_on_other_frames_is_resampled(components, caplog):
    root, *_ = components
    with caplog.at_level("WARNING", logger="videogemma.modeling.checkpoints"):
        model, _ = videogemma.load(
            lm=root / "gemma-3n", clip=root / "clip", videomamba=root / "videomamba.pth",
            **{**TINY_OVERRIDES, "num_frames": 16},
        )  # fmt: skip
    assert model.videomamba.temporal_pos_embedding.shape[1] == 8  # the checkpoint's 4, resampled
    assert "trained on 4 frames, the model reads 8 keyframes" in caplog.text


def test_a_run_whose_processor_disagrees_with_its_model_names_the_field(tmp_path):
    from videogemma.loading import check_processor_matches
    from videogemma.processing.processor import VideoGemmaProcessor

    config = VideoGemmaConfig.from_preset("tiny")
    processor = VideoGemmaProcessor.from_preset("tiny", num_frames=16)
    with pytest.raises(ModelLoadError, match=r"num_frames \(processor 16, model 8\)"):
        check_processor_matches(processor, config, tmp_path / "processor")


def test_loading_errors_name_the_folder(tmp_path):
    with pytest.raises(ModelLoadError, match=f"{tmp_path.name}: not a preset"):
        videogemma.load(tmp_path)
    (tmp_path / "train_config.yaml").write_text("stage: finetune\n")
    with pytest.raises(ModelLoadError, match=r"train_config\.yaml: not a training run's configuration"):
        videogemma.load(tmp_path)


def test_load_rejects_unknown_sources(tmp_path):
    with pytest.raises(ModelLoadError, match="not-there"):
        videogemma.load(tmp_path / "not-there")
    with pytest.raises(ValueError, match="missing"):
        videogemma.load(lm=tmp_path)


def test_hub_ids_are_accepted_for_the_lm_clip_and_tokenizer(tmp_path, monkeypatch):
    from videogemma.hub import is_hub_id
    from videogemma.loading import ModelSource, build_processor

    assert is_hub_id("google/gemma-3n-E2B-it") and is_hub_id("openai/clip-vit-base-patch16")
    assert not any(is_hub_id(name) for name in ("./google/gemma", "/abs/path", "a/b/c", "gemma", "~/x"))
    (tmp_path / "videomamba.pth").write_bytes(b"")
    source = ModelSource(
        lm="google/gemma-3n-E2B-it",
        clip="openai/clip-vit-base-patch16",
        videomamba=str(tmp_path / "videomamba.pth"),
    )
    source.check_paths()  # no network is touched to check a name
    with pytest.raises(ModelLoadError, match=r"videomamba: .*missing\.pth does not exist"):
        ModelSource(lm=source.lm, clip=source.clip, videomamba=str(tmp_path / "missing.pth")).check_paths()

    calls = []

    def from_pretrained(name, **kwargs):
        calls.append((str(name), kwargs["local_files_only"]))
        return build_tiny_tokenizer()

    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", from_pretrained)
    build_processor(source, TINY)  # a Hub LM brings its tokenizer along (downloaded when a network exists)
    local = tmp_path / "gemma"
    local.mkdir()
    build_processor(ModelSource(lm=str(local), clip=source.clip, videomamba=source.videomamba), TINY)
    assert calls == [("google/gemma-3n-E2B-it", False), (str(local), True)]


# ---- untrained projectors: tracked in the config, warned about (once) when such a model answers ----------------


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Forget which untrained-projector warnings this process has already shown."""
    from videogemma.modeling import modeling_videogemma

    monkeypatch.setattr(modeling_videogemma, "_warned_untrained", set())


def test_a_model_from_components_warns_once_that_its_projectors_are_untrained(
    components, real_clip, fresh_warnings, tmp_path
):
    from videogemma.modeling.modeling_videogemma import UntrainedProjectorsWarning

    root, *_ = components
    model, processor = videogemma.load(
        lm=root / "gemma-3n", clip=root / "clip", videomamba=root / "videomamba.pth", quiet=True,
        **TINY_OVERRIDES,
    )  # fmt: skip
    assert model.config.trained_projectors == []
    settings = GenerationSettings(max_new_tokens=2)
    with pytest.warns(
        UntrainedProjectorsWarning, match="image projector and video projector were never trained"
    ):
        answer(model, processor, real_clip, settings=settings)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedProjectorsWarning)
        answer(model, processor, real_clip, settings=settings)  # said once per process

    # Saved and loaded again, the model still knows.
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded, _ = videogemma.load(tmp_path, quiet=True)
    assert reloaded.config.trained_projectors == []


def test_projector_weights_record_what_was_trained(tmp_path, fresh_warnings):
    from safetensors.torch import save_file

    from videogemma.loading import load_projector_weights
    from videogemma.modeling.modeling_videogemma import UntrainedProjectorsWarning, untrained_projectors

    model, processor = videogemma.load("tiny", quiet=True)
    assert model.config.trained_projectors is None and untrained_projectors(model.config) == []  # unknown
    model.config.trained_projectors = []
    state = {f"video_projector.{k}": v.contiguous() for k, v in model.video_projector.state_dict().items()}
    noted = tmp_path / "noted.safetensors"
    save_file(state, noted, metadata={"trained_projectors": "video_projector"})
    load_projector_weights(model, noted)
    assert untrained_projectors(model.config) == ["image_projector"]
    inputs = processor(videos=[torch.zeros(8, 32, 32, 3, dtype=torch.uint8)], text=["Form?"])
    with pytest.warns(UntrainedProjectorsWarning, match="the image projector was never trained"):
        model.generate(**inputs, max_new_tokens=1)
    both = tmp_path / "both.safetensors"  # a file without the note: what it holds counts as trained
    save_file(
        {f"{p}.{k}": v.contiguous() for p in ("image_projector", "video_projector")
         for k, v in getattr(model, p).state_dict().items()},
        both,
    )  # fmt: skip
    load_projector_weights(model, both)
    assert model.config.trained_projectors == ["image_projector", "video_projector"]
