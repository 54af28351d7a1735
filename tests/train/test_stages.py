"""What each stage trains: LoRA exactly on the decoder projections, projectors trainable after PEFT wrapping,
encoders frozen (no gradients, eval mode), projector learning rate in its own optimiser group."""

from __future__ import annotations

import re

import pytest

pytest.importorskip(
    "videogemma.modeling.videomamba", reason="the VideoMamba encoder (helper 'scan') has not landed yet"
)
import torch

from videogemma.errors import ModelLoadError
from videogemma.loading import ModelSource, build_model, build_processor
from videogemma.train.stages import (
    check_trainable,
    lora_target_modules,
    parameter_groups,
    prepare_model_for_stage,
)
from videogemma.train.train_config import TrainConfig, TrainConfigError

DECODER_PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")  # fmt: skip


def _config(stage: str, **changes) -> TrainConfig:
    config = TrainConfig(
        stage=stage, model=ModelSource(preset="tiny"), projector_learning_rate=1e-4, **changes
    )
    config.lora.r, config.lora.alpha, config.lora.dropout = 4, 8, 0.0
    return config


@pytest.fixture(scope="module")
def processor():
    model = build_model(ModelSource(preset="tiny"), seed=0)
    return build_processor(ModelSource(preset="tiny"), model.config)


def _batch(processor, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    videos = [torch.randint(0, 256, (8, 32, 32, 3), generator=g, dtype=torch.uint8).numpy() for _ in range(2)]
    conversations = [
        [{"from": "human", "value": "How is my form?"}, {"from": "gpt", "value": "squats - good form"}],
        [{"from": "human", "value": "How is my form?"}, {"from": "gpt", "value": "pushups - hips sagging"}],
    ]
    return dict(processor(videos=videos, conversations=conversations, return_labels=True))


def _grads(model) -> dict[str, torch.Tensor | None]:
    return {name: p.grad for name, p in model.named_parameters()}


def test_lora_targets_are_exactly_the_decoder_projections() -> None:
    from peft.tuners.lora import LoraLayer

    model = prepare_model_for_stage(build_model(ModelSource(preset="tiny"), seed=0), _config("finetune"))
    wrapped = {
        name.removeprefix("base_model.model.")
        for name, m in model.named_modules()
        if isinstance(m, LoraLayer)
    }
    text_config = model.get_base_model().config.text_config
    layers, shared = text_config.num_hidden_layers, text_config.num_kv_shared_layers
    # KV-shared layers have no k/v projections of their own (they reuse an earlier layer's cache).
    expected = {
        f"language_model.model.layers.{i}.{p}"
        for i in range(layers)
        for p in DECODER_PROJECTIONS
        if not (i >= layers - shared and p in ("self_attn.k_proj", "self_attn.v_proj"))
    }
    assert wrapped == expected
    # The regex alone selects the same set (and nothing of AltUp, LAuReL or the per-layer projections).
    plain = build_model(ModelSource(preset="tiny"), seed=0)
    assert set(lora_target_modules(plain, _config("finetune").lora.target_regex)) == expected


def test_finetune_trains_lora_and_projectors_not_encoders_or_base(processor) -> None:
    model = prepare_model_for_stage(build_model(ModelSource(preset="tiny"), seed=0), _config("finetune"))
    model.train()
    base = model.get_base_model()
    assert not base.clip.training and not base.videomamba.training  # frozen encoders stay in eval mode
    model(**_batch(processor)).loss.backward()
    grads = _grads(model)
    trained = {n for n, g in grads.items() if g is not None and g.abs().sum() > 0}
    for projector in ("image_projector", "video_projector"):
        assert any(n.startswith(f"base_model.model.{projector}.modules_to_save.") for n in trained), projector
    assert any("lora_" in n for n in trained)
    untouched = [n for n in trained if "lora_" not in n and "modules_to_save" not in n]
    assert untouched == []
    encoders = [n for n, p in model.named_parameters() if re.search(r"\.(clip|videomamba)\.", n)]
    assert encoders and all(grads[n] is None for n in encoders)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n in encoders)


@pytest.mark.parametrize(("stage", "trained", "frozen"), [("video-proj", "video_projector", "image_projector"),
                                                          ("image-proj", "image_projector", "video_projector")])  # fmt: skip
def test_projector_stages_train_only_their_projector(
    processor, stage: str, trained: str, frozen: str
) -> None:
    model = prepare_model_for_stage(build_model(ModelSource(preset="tiny"), seed=0), _config(stage))
    model.train()
    model(**_batch(processor)).loss.backward()
    with_grad = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {trained}
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith(frozen))


def test_full_trains_everything_including_the_encoders(processor) -> None:
    model = prepare_model_for_stage(build_model(ModelSource(preset="tiny"), seed=0), _config("full"))
    model.train()
    assert model.clip.training and model.videomamba.training
    model(**_batch(processor)).loss.backward()
    with_grad = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"clip", "videomamba", "image_projector", "video_projector", "language_model"}


def test_parameter_groups_give_projectors_their_learning_rate() -> None:
    config = _config("finetune", learning_rate=2e-4, weight_decay=0.1)
    model = prepare_model_for_stage(build_model(ModelSource(preset="tiny"), seed=0), config)
    no_decay = {n for n, _ in model.named_parameters() if n.endswith("bias")}
    groups = parameter_groups(model, config, no_decay)
    assert groups[0]["lr"] == 2e-4  # the main (LoRA) group first: the Trainer logs its rate
    by_id = {id(p): g for g in groups for p in g["params"]}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            assert id(parameter) not in by_id
            continue
        group = by_id[id(parameter)]
        assert group["lr"] == (1e-4 if "_projector." in name else 2e-4), name
        assert group["weight_decay"] == (0.0 if name.endswith("bias") else 0.1), name


def test_configurations_that_cannot_train_fail_before_training() -> None:
    model = build_model(ModelSource(preset="tiny"), seed=0)
    with pytest.raises(TrainConfigError, match="matches no linear layer"):
        prepare_model_for_stage(
            model, _config("finetune", lora=type(_config("x").lora)(target_regex="nothing"))
        )
    model.requires_grad_(False)
    with pytest.raises(TrainConfigError, match="no trainable parameters"):
        check_trainable(model, "video-proj")
    with pytest.raises(ModelLoadError, match="multiple of chunk_size"):
        build_model(ModelSource(preset="tiny", overrides={"num_frames": 6}), seed=0)


@pytest.mark.parametrize("stage", ["video-proj", "image-proj", "finetune", "full"])
def test_every_trained_parameter_gets_a_gradient(processor, stage: str) -> None:
    # What lets DDP run without find_unused_parameters: CLIP's block after the selected layer and its final
    # norm, whose output is never read, are frozen in `full`; every other trained tensor takes part.
    model = prepare_model_for_stage(build_model(ModelSource(preset="tiny"), seed=0), _config(stage)).train()
    model(**_batch(processor)).loss.backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []
    if stage == "full":
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        assert frozen and all(name.startswith("clip.vision_model.") for name in frozen)


def test_a_projector_run_records_the_projector_it_trained(train_tiny) -> None:
    from safetensors import safe_open

    from videogemma.loading import load_run

    run_dir = train_tiny("video-proj", max_steps=1, data={"val_file": None})
    with safe_open(str(run_dir / "projectors.safetensors"), framework="pt") as weights:
        assert weights.metadata() == {"trained_projectors": "video_projector"}
    model, _ = load_run(run_dir)
    assert model.config.trained_projectors == ["video_projector"]  # the image projector is still untrained
