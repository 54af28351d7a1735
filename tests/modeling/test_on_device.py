"""On-device inference: the per-layer embedding table left on disk (logits equal the loaded model's exactly)
and weight-only int8 / int4 quantisation of the decoder (kernels against the dequantised reference, saved
quantised models loading as they were saved)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import videogemma
from videogemma.errors import ModelLoadError
from videogemma.modeling import quantized_rows
from videogemma.modeling.disk_embedding import DiskEmbedding
from videogemma.modeling.integrity import ModelWeightsError
from videogemma.modeling.quantization import (
    QUANTIZATION_FILE,
    QuantizedLinear,
    pack_int4,
    prepare_for_inference,
    quantize_language_model,
    unpack_int4,
)


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits


IDS = torch.tensor([[2, 105, 7, 7, 300, 1000, 5, 106, 9, 1031, 0, 42]])


@pytest.fixture
def torch_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding through torch's weight-only kernels, as where our row kernels cannot run."""
    monkeypatch.setattr(quantized_rows, "kernels", lambda: None)


def test_per_layer_table_on_disk_gives_exactly_the_loaded_models_logits(saved_tiny: Path) -> None:
    loaded, _ = videogemma.load(saved_tiny, dtype="bfloat16", per_layer_on_disk=False, quiet=True)
    on_disk, _ = videogemma.load(saved_tiny, dtype="bfloat16", quiet=True)  # auto: on disk on the CPU
    table = on_disk.language_model.model.embed_tokens_per_layer
    assert isinstance(table, DiskEmbedding)
    assert not any("embed_tokens_per_layer" in name for name, _ in on_disk.named_parameters())
    assert torch.equal(_logits(on_disk, IDS), _logits(loaded, IDS))
    # Also converted to another dtype than the file's, and on a batch with repeated ids.
    loaded32, _ = videogemma.load(saved_tiny, dtype="float32", per_layer_on_disk=False, quiet=True)
    disk32, _ = videogemma.load(saved_tiny, dtype="float32", per_layer_on_disk=True, quiet=True)
    batch = torch.cat([IDS, IDS.flip(1)])
    assert torch.equal(_logits(disk32, batch), _logits(loaded32, batch))


def test_a_model_with_its_table_on_disk_saves_the_table_too(saved_tiny: Path, tmp_path: Path) -> None:
    """save_pretrained of a model whose table stays on disk writes the table (read from the file), and the
    copy loads as the original did; the state dict's entry is a view of the file, not a copy in memory."""
    on_disk, processor = videogemma.load(saved_tiny, dtype="bfloat16", quiet=True)
    entry = on_disk.state_dict()["language_model.model.embed_tokens_per_layer.weight"]
    assert entry.shape == (on_disk.config.text_config.vocab_size_per_layer_input, entry.shape[1])
    on_disk.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, _ = videogemma.load(saved_tiny, dtype="bfloat16", per_layer_on_disk=False, quiet=True)
    copy, _ = videogemma.load(tmp_path, dtype="bfloat16", per_layer_on_disk=False, quiet=True)
    want = loaded.language_model.model.embed_tokens_per_layer.weight
    assert torch.equal(copy.language_model.model.embed_tokens_per_layer.weight, want)
    assert torch.equal(_logits(copy, IDS), _logits(loaded, IDS))


def test_per_layer_table_on_disk_is_refused_where_there_is_no_file(saved_tiny: Path) -> None:
    with pytest.raises(ModelLoadError, match="no weights file"):
        videogemma.load("tiny", per_layer_on_disk=True, quiet=True)
    module = videogemma.load(saved_tiny, per_layer_on_disk=False, quiet=True)[0]
    table = module.language_model.model.embed_tokens_per_layer
    with pytest.raises(ModelWeightsError, match="holds no tensor"):
        DiskEmbedding.replacing(table, saved_tiny / "model.safetensors", "no.such.tensor", torch.float32)
    with pytest.raises(ModelWeightsError, match="shape"):
        key = "language_model.model.embed_tokens.weight"  # another table: another shape
        DiskEmbedding.replacing(table, saved_tiny / "model.safetensors", key, torch.float32)


def test_int4_values_pack_two_per_byte_and_back() -> None:
    values = torch.randint(0, 16, (32, 256), dtype=torch.uint8)
    packed = pack_int4(values)
    assert packed.shape == (32, 128) and torch.equal(unpack_int4(packed), values)


@pytest.mark.parametrize("kernels", ["ours", "torch's"])
@pytest.mark.parametrize(("bits", "tolerance"), [(8, 0.01), (4, 0.15)])
def test_quantised_linear_kernels_match_the_dequantised_weight(
    bits: int, tolerance: float, kernels: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kernels == "torch's":
        monkeypatch.setattr(quantized_rows, "kernels", lambda: None)
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 64, bias=True).to(torch.bfloat16)
    x = torch.randn(3, 5, 256, dtype=torch.bfloat16)
    quantized = QuantizedLinear.from_linear(linear, bits)
    weight = quantized.dequantized()
    # The rounding error is within half a quantisation step of each weight.
    error = (weight.float() - linear.weight.float()).abs().max()
    assert 0 < error <= tolerance
    reference = torch.nn.functional.linear(x, weight, linear.bias)
    quantized.prepare()  # int4: packed for torch's CPU kernel
    out = quantized(x)
    assert out.shape == (3, 5, 64)
    torch.testing.assert_close(out.float(), reference.float(), atol=0.06, rtol=0.02)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 2048), (1, 1, 2048)])
def test_one_int8_row_through_the_paired_view_equals_the_kernel(
    dtype: torch.dtype, shape: tuple, torch_kernels: None
) -> None:
    torch.manual_seed(0)
    layer = QuantizedLinear.from_linear(torch.nn.Linear(2048, 96, bias=True), 8).to(dtype)
    x = torch.randn(shape, dtype=dtype)
    kernel = torch._weight_int8pack_mm(x.reshape(1, -1), layer.qweight, layer.scales.to(dtype)) + layer.bias
    calls = []
    original = torch._weight_int8pack_mm

    def spy(a, w, s):
        calls.append(tuple(w.shape))
        return original(a, w, s)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "_weight_int8pack_mm", spy)
        out = layer(x)
    assert calls == [(48, 4096)]  # two rows side by side: the paired view, not the plain weight
    assert out.shape == (*shape[:-1], 96)
    # bf16: one rounding more than the kernel's (its product before the scales).
    tolerance = {"atol": 0.05, "rtol": 0.02} if dtype == torch.bfloat16 else {"atol": 1e-4, "rtol": 1e-5}
    torch.testing.assert_close(out.reshape(1, -1), kernel, **tolerance)


@pytest.mark.parametrize(("in_features", "out_features", "rows"), [(256, 96, 1), (2048, 96, 3)])
def test_narrow_int8_rows_and_several_rows_take_the_plain_kernel(
    in_features, out_features, rows, torch_kernels: None
) -> None:
    layer = QuantizedLinear.from_linear(torch.nn.Linear(in_features, out_features), 8)
    x = torch.randn(rows, in_features)
    kernel = torch._weight_int8pack_mm(x, layer.qweight, layer.scales) + layer.bias
    assert torch.equal(layer(x), kernel)


# Whole kernel blocks, a part block after, only a part; more rows than are packed at a time (INT4_PACK_ROWS).
@pytest.mark.parametrize("rows", [64, 80, 16, 144, 4096 + 80])
def test_int4_layer_in_kernel_order_dequantises_and_saves_as_before(rows: int, torch_kernels: None) -> None:
    torch.manual_seed(0)
    layer = QuantizedLinear.from_linear(torch.nn.Linear(256, rows), 4)
    plain_state = {k: v.clone() for k, v in layer.state_dict().items()}
    weight = layer.dequantized()
    layer.prepare()
    assert not torch.equal(layer.qweight, plain_state["qweight"])  # the kernel's own order
    assert torch.equal(layer.dequantized(), weight)
    saved = layer.state_dict()
    assert set(saved) == set(plain_state) and all(torch.equal(saved[k], plain_state[k]) for k in saved)
    # Many rows (a prefill) take the dequantised weight and the dtype's GEMM; few, the kernel: both agree.
    x = torch.randn(40, 256)
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, weight, layer.bias))
    torch.testing.assert_close(
        layer(x[:3]), torch.nn.functional.linear(x[:3], weight, layer.bias), atol=1e-3, rtol=1e-3
    )


@pytest.mark.parametrize(("method", "lm_head"), [("int8", True), ("int4", False)])
def test_saved_quantised_model_loads_as_it_was_saved(
    saved_tiny: Path, tmp_path: Path, method, lm_head
) -> None:
    model, processor = videogemma.load(saved_tiny, dtype="bfloat16", per_layer_on_disk=False, quiet=True)
    reference = _logits(model, IDS)
    settings = quantize_language_model(model, method, lm_head=lm_head)
    assert len(settings.modules) == 35 + lm_head
    assert ("language_model.lm_head" in settings.modules) == lm_head
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    settings.save(tmp_path)
    prepare_for_inference(model)
    quantized = _logits(model, IDS)
    # A quantised decoder answers close to (not as) the bf16 one.
    assert not torch.equal(quantized, reference)
    assert (quantized.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.5

    # "exact": the layers quantised in place multiply their inputs as they are (load's default rounds an int4
    # decoder's to int8: tests/modeling/test_int8_activations.py).
    reloaded, _ = videogemma.load(tmp_path, dtype="bfloat16", int4_activations="exact", quiet=True)
    layer = reloaded.language_model.model.layers[0].mlp.up_proj
    assert isinstance(layer, QuantizedLinear) and layer.bits == int(method[3:])
    assert torch.equal(_logits(reloaded, IDS), quantized)
    with pytest.raises(ModelLoadError, match="saved quantised"):
        videogemma.load(tmp_path, quantize="int8" if method == "int4" else "int4", quiet=True)


def test_quantize_on_load_and_bad_settings(saved_tiny: Path, tmp_path: Path) -> None:
    model, _ = videogemma.load("tiny", dtype="bfloat16", quantize="int8", quiet=True)
    assert isinstance(model.language_model.model.layers[0].self_attn.q_proj, QuantizedLinear)
    with pytest.raises(ModelLoadError, match="quantize"):
        videogemma.load("tiny", quantize="int3", quiet=True)
    with pytest.raises(ModelLoadError, match="LM head"):  # the tiny vocabulary (1032) is not in tiles of 16
        videogemma.load("tiny", quantize="int4", quantize_lm_head=True, quiet=True)
    for name in ("config.json", "model.safetensors", "processor_config.json"):
        (tmp_path / name).symlink_to(saved_tiny / name)
    for extra in saved_tiny.iterdir():
        if not (tmp_path / extra.name).exists():
            (tmp_path / extra.name).symlink_to(extra)
    (tmp_path / QUANTIZATION_FILE).write_text(
        json.dumps({"method": "int4", "modules": ["language_model.nope"]})
    )
    with pytest.raises(ModelLoadError, match=r"no layer language_model\.nope"):
        videogemma.load(tmp_path, quiet=True)
    (tmp_path / QUANTIZATION_FILE).write_text("{")
    with pytest.raises(ModelLoadError, match="not a readable quantisation record"):
        videogemma.load(tmp_path, quiet=True)


def test_infer_command_takes_the_on_device_options(saved_tiny: Path, real_clip: Path, capsys) -> None:
    from videogemma import cli

    argv = ["infer", str(real_clip), "--model", str(saved_tiny), "--max-new-tokens", "2"]
    assert cli.main([*argv, "--quantize", "int4", "--per-layer-embeddings", "disk"]) == 0
    rounded = "int8" if quantized_rows.int8_activations_run() else "exact"
    assert (
        f"decoder int4, int4 decode inputs {rounded}, per-layer embeddings on disk" in capsys.readouterr().err
    )
    assert cli.main([*argv, "--quantize", "int4", "--int4-activations", "exact"]) == 0
    assert "decoder int4, int4 decode inputs exact" in capsys.readouterr().err
    assert cli.main([*argv, "--per-layer-embeddings", "memory"]) == 0
    assert "on disk" not in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's own refusal of a choice
        cli.main([*argv, "--quantize", "int3"])
