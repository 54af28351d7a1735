"""Saved models that are not what they claim: `from_pretrained` refuses them, naming the file and the tensor,
instead of filling in random weights (Hugging Face's default) or answering with NaN ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from videogemma.config import VideoGemmaConfig
from videogemma.modeling.integrity import ModelWeightsError, check_torch_archive, safetensors_header
from videogemma.modeling.modeling_videogemma import VideoGemmaForConditionalGeneration

Q_BIAS = "clip.vision_model.encoder.layers.0.self_attn.q_proj.bias"
PROJECTOR_BIAS = "video_projector.mlp.0.bias"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("saved")
    VideoGemmaForConditionalGeneration(VideoGemmaConfig.from_preset("tiny")).save_pretrained(folder)
    return folder


@pytest.fixture
def copy_of(saved, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    return folder


def _edit(folder: Path, change) -> Path:
    path = folder / "model.safetensors"
    state = load_file(path)
    change(state)
    save_file(state, path, metadata={"format": "pt"})
    return path


def _drop(state):
    del state[PROJECTOR_BIAS]


def _shrink(state):
    state[Q_BIAS] = state[Q_BIAS][:-1].clone()


def _add(state):
    state["extra.weight"] = torch.zeros(3)


def _nan(state):
    state[Q_BIAS] = state[Q_BIAS].clone()
    state[Q_BIAS][5] = float("nan")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_drop, f"missing tensor {PROJECTOR_BIAS}"),
        (_shrink, f"tensor {Q_BIAS} has shape [63] where the model needs [64]"),
        (_add, "tensor extra.weight not in the model"),
        (_nan, f"tensor {Q_BIAS} holds 1 NaN or infinite values"),
    ],
)
def test_a_missing_mis_shaped_unknown_or_non_finite_tensor_is_an_error(copy_of, change, message):
    path = _edit(copy_of, change)
    with pytest.raises(ModelWeightsError) as caught:
        VideoGemmaForConditionalGeneration.from_pretrained(copy_of)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw[: len(raw) // 2], "lies past the end of the file (truncated?)"),
        (lambda raw: raw[:5], "no valid header"),
        (lambda raw: b"\x10" + raw[1:], "corrupt safetensors file"),
        (lambda raw: raw + b"\x00" * 7, "7 stray bytes at the end"),
    ],
)
def test_a_corrupt_weights_file_is_a_one_line_error_naming_it(copy_of, damage, message):
    path = copy_of / "model.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ModelWeightsError) as caught:
        VideoGemmaForConditionalGeneration.from_pretrained(copy_of)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_an_intact_model_loads_and_its_header_lists_every_tensor(saved):
    model = VideoGemmaForConditionalGeneration.from_pretrained(saved)
    header = safetensors_header(saved / "model.safetensors")
    assert header[Q_BIAS] == (64,) and set(header) <= set(model.state_dict())


def test_a_damaged_torch_archive_is_named(tmp_path):
    path = tmp_path / "optimizer.pt"
    torch.save({"state": torch.arange(1000.0)}, path)
    check_torch_archive(path)
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 8] = b"\xff" * 8  # bytes of the tensor data: only the CRC shows it
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelWeightsError, match=r"optimizer\.pt: corrupt torch file"):
        check_torch_archive(path)
