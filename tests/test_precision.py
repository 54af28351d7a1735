"""Precision end to end: the default device and dtype, a frozen base built directly in bf16 from bf16 component
checkpoints (every parameter's dtype and requires_grad per stage, no fp32 copy on the way), and the bf16 loss
against an fp32 build of the same checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import CLIPVisionModel, Gemma3nForCausalLM

import videogemma
from videogemma import precision
from videogemma.config import VideoGemmaConfig
from videogemma.loading import ModelSource
from videogemma.modeling.videomamba import VideoMamba, keeps_fp32
from videogemma.processing.tokenizer import build_tiny_tokenizer
from videogemma.train.run import build_training_model
from videogemma.train.stages import prepare_model_for_stage
from videogemma.train.train_config import TrainConfig, TrainConfigError, load_train_config

TINY = VideoGemmaConfig.from_preset("tiny")
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
# bf16 loss of the same checkpoints (bf16 base under bf16 autocast) against the fp32 build without autocast:
# bf16 keeps 8 mantissa bits (relative rounding 2^-9 ≈ 0.2 % per operation); measured 0.04 % on the tiny
# model (6.9707 against 6.9680), bounded at 1 %.
LOSS_RTOL = 1e-2


@pytest.fixture(scope="module")
def bf16_components(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny Gemma-3n, CLIP and VideoMamba checkpoints written in bf16, as the real ones are distributed."""
    root = tmp_path_factory.mktemp("bf16_components")
    torch.manual_seed(0)
    Gemma3nForCausalLM(TINY.text_config).to(torch.bfloat16).save_pretrained(root / "gemma-3n")
    build_tiny_tokenizer().save_pretrained(root / "gemma-3n")
    CLIPVisionModel(TINY.vision_config).to(torch.bfloat16).save_pretrained(root / "clip")
    state = {k: v.to(torch.bfloat16) for k, v in VideoMamba(TINY.videomamba_config).state_dict().items()}
    torch.save({"model": state}, root / "videomamba.pth")
    return root


def _source(root: Path, dtype: str = "auto") -> ModelSource:
    return ModelSource(
        lm=str(root / "gemma-3n"),
        clip=str(root / "clip"),
        videomamba=str(root / "videomamba.pth"),
        overrides=dict(TINY_OVERRIDES),
        dtype=dtype,
    )


def _config(root: Path, stage: str, precision_: str = "bf16", dtype: str = "auto") -> TrainConfig:
    config = TrainConfig(stage=stage, model=_source(root, dtype), precision=precision_)
    config.lora.r, config.lora.alpha, config.lora.dropout = 4, 8, 0.0
    return config


# ---- defaults ------------------------------------------------------------------------------------------------


def test_cpu_default_is_fp32_unless_it_has_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(precision.CPU_BF16_ENV, "0")
    assert precision.resolve_device(None) == torch.device("cpu")
    assert precision.resolve_dtype(None, "cpu") == torch.float32
    assert precision.resolve_precision("auto") == "fp32"
    monkeypatch.setenv(precision.CPU_BF16_ENV, "1")
    assert precision.resolve_dtype("auto", "cpu") == torch.bfloat16
    assert precision.resolve_precision("auto") == "bf16"
    assert precision.resolve_dtype("float16", "cpu") == torch.float16  # asked for: as given
    monkeypatch.setenv(precision.CPU_BF16_ENV, "maybe")
    with pytest.raises(ValueError, match="VIDEOGEMMA_CPU_BF16"):
        precision.cpu_has_native_bf16()


def test_cpu_detection_reads_the_cpu_features(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(precision.CPU_BF16_ENV, "auto")
    for features, native in (
        ({"avx512_bf16": True}, True),
        ({"amx_bf16": True}, True),
        ({"avx2": True}, False),
    ):
        precision._detect_cpu_bf16.cache_clear()
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda features=features: features)
        assert precision.cpu_has_native_bf16() is native
    precision._detect_cpu_bf16.cache_clear()


def test_cuda_with_bf16_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert precision.resolve_device(None) == torch.device("cuda")
    assert precision.resolve_dtype(None, "cuda") == torch.bfloat16
    assert precision.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # e.g. a V100: fp32, never fp16
    assert precision.resolve_dtype(None, "cuda") == torch.float32


def test_load_says_what_it_picked(capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = videogemma.load("tiny", attn_implementation="eager")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == "videogemma: model on cpu in float32 (auto: no native bf16 on cpu), attention eager"
    assert model.language_model.config._attn_implementation == "eager"
    videogemma.load("tiny", dtype="bfloat16", device="cpu", quiet=True)
    assert capsys.readouterr().err == ""


# ---- building in bf16 ----------------------------------------------------------------------------------------


class _Fp32Tensors(TorchDispatchMode):
    """Records the shape of every fp32 tensor an operation produces (real devices only)."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32 and not tensor.is_meta:
                self.shapes.append(tuple(tensor.shape))
        return out


def _expected_trainable(stage: str, name: str, model: torch.nn.Module) -> bool:
    if stage == "finetune":
        return "lora_" in name or ".modules_to_save." in name
    if stage == "full":
        unused = {id(p) for module in model.clip.unused_modules() for p in module.parameters()}
        return id(model.get_parameter(name)) not in unused
    return name.startswith(stage.replace("-proj", "_projector") + ".")


@pytest.mark.parametrize("stage", ["finetune", "video-proj", "image-proj", "full"])
def test_each_stage_builds_its_frozen_base_in_bf16_and_trains_in_fp32(
    bf16_components: Path, stage: str
) -> None:
    config = _config(bf16_components, stage)
    with _Fp32Tensors() as fp32:
        model = build_training_model(config)
    model = prepare_model_for_stage(model, config)
    base = model.get_base_model() if stage == "finetune" else model
    # `full` trains every weight, so its auto dtype is fp32; the others build the base in the precision's dtype.
    assert config.model.dtype == ("float32" if stage == "full" else "bfloat16")
    projectors = (
        ("image_projector", "video_projector")
        if stage == "finetune"
        else (stage.replace("-proj", "_projector"),)
    )
    for name, parameter in model.named_parameters():
        trains = _expected_trainable(stage, name, base if stage != "finetune" else model)
        assert parameter.requires_grad is trains, name
        if trains or stage == "full":
            expected = torch.float32
        elif keeps_fp32(name) or any(f"{p}." in name for p in projectors):
            expected = (
                torch.float32
            )  # the SSM parameters, and the stage's projectors (their frozen PEFT copy)
        else:
            expected = torch.bfloat16
        assert parameter.dtype == expected, (name, parameter.dtype)
    if stage != "full":
        # The biggest tensor (the embedding table, tied to the LM head) never existed in fp32, and nothing
        # produced in fp32 was larger than what is kept in fp32.
        embedding = tuple(base.language_model.model.embed_tokens.weight.shape)
        largest_kept = max(p.numel() for n, p in base.named_parameters() if p.dtype == torch.float32)
        assert embedding not in fp32.shapes
        assert max(torch.Size(shape).numel() for shape in fp32.shapes) <= largest_kept


def test_the_bf16_loss_matches_an_fp32_build(bf16_components: Path, real_clip: Path) -> None:
    losses = {}
    for dtype in ("bfloat16", "float32"):
        config = _config(bf16_components, "finetune", "bf16" if dtype == "bfloat16" else "fp32", dtype)
        torch.manual_seed(1)  # the same projector initialisation in both builds
        model = prepare_model_for_stage(build_training_model(config), config).train()
        processor = videogemma.loading.build_processor(config.model, model.config)
        conversation = [
            {"from": "human", "value": "How is my form?"},
            {"from": "gpt", "value": "squats - good"},
        ]
        sample = processor.process_sample(real_clip, conversation, record="clip")
        batch = processor.collate([sample, sample], padding_side="right", return_labels=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            loss = model(**batch).loss
        loss.backward()
        trained = [p for p in model.parameters() if p.requires_grad]
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trained)
        assert all(torch.isfinite(p.grad).all() for p in trained)
        losses[dtype] = loss.item()
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=LOSS_RTOL)


def test_model_dtype_choices_are_checked(tmp_path: Path) -> None:
    split = tmp_path / "train.json"
    split.write_text("[]")
    base = ["--data.train_file", str(split), "--model.preset", "tiny"]
    assert load_train_config(None, [*base, "--model.dtype", "bfloat16"]).model.dtype == "bfloat16"
    with pytest.raises(TrainConfigError, match="model: dtype: 'bf16' is not one of"):
        load_train_config(None, [*base, "--model.dtype", "bf16"])
    with pytest.raises(TrainConfigError, match="stage full, which trains every weight"):
        load_train_config(None, [*base, "--model.dtype", "bfloat16", "--stage", "full"])
    with pytest.raises(TrainConfigError, match="with DeepSpeed"):
        load_train_config(
            None, [*base, "--model.dtype", "bfloat16", "--precision", "fp32", "--deepspeed", "zero2"]
        )
    with pytest.raises(TrainConfigError, match="attn_implementation"):
        load_train_config(None, [*base, "--model.attn_implementation", "flash"])


def test_the_command_lines_take_dtype_and_attention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from videogemma.cli import build_parser
    from videogemma.inference.commands import load_from_args

    args = build_parser().parse_args(
        ["infer", "clip.mp4", "--dtype", "float32", "--attn-implementation", "eager"]
    )
    model, _, _ = load_from_args(args)
    assert model.dtype == torch.float32 and model.language_model.config._attn_implementation == "eager"
    assert build_parser().parse_args(["infer", "clip.mp4"]).dtype == "auto"

    split = tmp_path / "train.json"
    split.write_text("[]")
    seen = {}
    monkeypatch.setattr(
        "videogemma.train.run.run_training", lambda config, **flags: seen.setdefault("c", config)
    )
    argv = ["train", "--config", "finetune", "--model.preset", "tiny", "--model.lm", "null", "--model.clip", "null",
            "--model.videomamba", "null", "--model.projector_weights", "[]", "--data.train_file", str(split),
            "--data.val_file", "null", "--dtype", "bfloat16", "--attn-implementation", "sdpa"]  # fmt: skip
    args = build_parser().parse_args(argv)
    args.func(args)
    assert seen["c"].model.dtype == "bfloat16" and seen["c"].model.attn_implementation == "sdpa"


def test_a_saved_model_loads_in_bf16_with_its_ssm_parameters_exact(tmp_path: Path) -> None:
    model, processor = videogemma.load("tiny", dtype="float32", device="cpu", quiet=True)
    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    saved_a_log = model.videomamba.layers[0].mixer.A_log.detach().clone()
    loaded, _ = videogemma.load(tmp_path / "saved", dtype="bfloat16", device="cpu", quiet=True)
    mixer = loaded.videomamba.layers[0].mixer
    assert loaded.language_model.lm_head.weight.dtype == torch.bfloat16
    assert mixer.A_log.dtype == mixer.dt_proj.bias.dtype == torch.float32  # `_keep_in_fp32_modules_strict`
    assert torch.equal(mixer.A_log, saved_a_log)  # not rounded through bf16 on the way
    assert mixer.dt_proj.weight.dtype == torch.bfloat16
