"""The decoder layers compiled for the prefill: the same logits and answers as eager, the compile used for a
prompt and not for a decode step, and clear refusals where it cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

import videogemma
from videogemma.errors import ModelLoadError
from videogemma.modeling import compiled_prefill, quantized_rows
from videogemma.modeling.compiled_prefill import FIRST_PROMPT_NOTICE, compile_prefill, is_prefill_compiled
from videogemma.modeling.quantization import QuantizedLinear

IDS = torch.tensor([[2, 105, 7, 7, 300, 1000, 5, 106, 9, 1031, 0, 42, 17, 23, 400, 106]])


def _compiled_frames() -> int:
    return counters["stats"]["unique_graphs"]


def test_compiled_prefill_gives_the_eager_logits_and_answer() -> None:
    eager, _ = videogemma.load("tiny", dtype="float32", device="cpu", quiet=True)
    compiled, _ = videogemma.load("tiny", dtype="float32", device="cpu", quiet=True, compile_prefill=True)
    assert is_prefill_compiled(compiled.language_model) and not is_prefill_compiled(eager.language_model)
    torch._dynamo.reset()
    before = _compiled_frames()
    with torch.inference_mode():
        expected = eager(input_ids=IDS).logits
        got = compiled(input_ids=IDS).logits
        assert _compiled_frames() > before  # the prompt ran through inductor's graphs
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        # Prompts of other lengths and left-padded batches: compiled again at most for the first other
        # length and the first batch (dynamo specialises the first shape it sees), then reused.
        graphs = []
        for length, rows in ((11, 1), (8, 1), (13, 1), (12, 2), (9, 2)):
            batch = torch.cat([IDS[:, :length], IDS[:, -length:]])[:rows]
            mask = torch.ones_like(batch)
            mask[1:, :2] = 0
            torch.testing.assert_close(
                compiled(input_ids=batch, attention_mask=mask).logits,
                eager(input_ids=batch, attention_mask=mask).logits,
                rtol=1e-4,
                atol=1e-4,
            )
            graphs.append(_compiled_frames())
        assert graphs[1] == graphs[2] and graphs[3] == graphs[4]
        greedy = {"max_new_tokens": 6, "do_sample": False}
        answer = compiled.generate(input_ids=IDS, **greedy)
        assert torch.equal(answer, eager.generate(input_ids=IDS, **greedy))
        # Again, counting the first layer's calls: the prompt compiled, the five decode steps eager.
        first = compiled.language_model.model.layers[0].forward
        calls = {"compiled": 0, "eager": 0}
        for kind in calls:
            setattr(first, kind, _counting(getattr(first, kind), calls, kind))
        assert torch.equal(compiled.generate(input_ids=IDS, **greedy), answer)
        assert calls == {"compiled": 1, "eager": 5}


def _counting(function, calls: dict[str, int], kind: str):
    def counted(*args, **kwargs):
        calls[kind] += 1
        return function(*args, **kwargs)

    return counted


@pytest.mark.parametrize("order", ["row", "torch's kernel"])  # as our row kernels read it, or torch's
@pytest.mark.parametrize("rows", [128, 144])  # whole kernel blocks, and a part block after them
def test_a_compiled_int4_layer_computes_what_the_eager_one_does(
    rows: int, order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if order != "row":
        monkeypatch.setattr(quantized_rows, "kernels", lambda: None)
    torch.manual_seed(0)
    layer = QuantizedLinear.from_linear(torch.nn.Linear(256, rows).to(torch.bfloat16), 4)
    layer.prepare()
    assert (layer._scales_and_zeros is None) == (order == "row")
    x = torch.randn(40, 256, dtype=torch.bfloat16)  # a prefill's many rows: dequantised, then the GEMM
    with torch.inference_mode():
        expected = layer(x)
        torch._dynamo.reset()
        before = _compiled_frames()
        got = torch.compile(layer, dynamic=True)(x)
    assert _compiled_frames() == before + 1  # one graph: dequantising does not break it
    torch.testing.assert_close(got, expected, atol=0.02, rtol=0.02)


def test_compiling_the_prefill_is_refused_without_a_cpp_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = videogemma.load("tiny", dtype="float32", device="cpu", quiet=True)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compiled_prefill.shutil, "which", lambda name: None)
    with pytest.raises(ModelLoadError, match="needs a C\\+\\+ compiler"):
        compile_prefill(model.language_model)
    assert not is_prefill_compiled(model.language_model)  # nothing half-done
    monkeypatch.setenv("CXX", "/no/such/compiler")
    with pytest.raises(ModelLoadError, match="C\\+\\+ compiler"):
        compile_prefill(model.language_model)


def test_compiling_the_prefill_is_for_a_model_on_the_cpu() -> None:
    model, _ = videogemma.load("tiny", dtype="float32", device="cpu", quiet=True)
    with pytest.raises(ModelLoadError, match="on the CPU; this one is on meta"):
        compile_prefill(model.language_model.to("meta"))


def test_infer_command_compiles_the_prefill_when_asked(real_clip: Path, capsys) -> None:
    from videogemma import cli

    argv = ["infer", str(real_clip), "--dtype", "float32", "--max-new-tokens", "3"]
    assert cli.main([*argv, "--compile-prefill"]) == 0
    compiled = capsys.readouterr()
    assert "prefill compiled" in compiled.err
    assert compiled.err.count(FIRST_PROMPT_NOTICE) == 1  # said before the first prompt's wait, once
    assert cli.main(argv) == 0
    eager = capsys.readouterr()
    assert "prefill compiled" not in eager.err
    assert compiled.out == eager.out  # the same answer
