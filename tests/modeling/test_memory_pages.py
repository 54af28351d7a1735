"""The decoder's weights on 2 MiB pages, and a mapped file's pages handed back (`modeling/memory_pages.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import videogemma
from videogemma.modeling import memory_pages
from videogemma.modeling.memory_pages import (
    HUGE_PAGE,
    HUGE_PAGES_ENV,
    MALLOC_REUSE_ENV,
    give_back_freed_memory,
    huge_pages_available,
    page_out,
    place_on_huge_pages,
    reuse_freed_memory,
)
from videogemma.modeling.quantization import QuantizedLinear

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and madvise are Linux's")
needs_huge_pages = pytest.mark.skipif(not huge_pages_available(), reason="no transparent huge pages here")


def _minor_faults() -> int:
    return int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[7])


def _resident_file_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssFile in /proc/self/status")


def _mapping_flags(address: int) -> list[str]:
    """The VmFlags of the mapping of this process that holds `address` (/proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split()[0]
        if "-" in first and ":" not in first:  # a mapping's header: start-end perms offset ...
            start, end = (int(bound, 16) for bound in first.split("-"))
            inside = start <= address < end
        elif inside and line.startswith("VmFlags:"):
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@linux_only
def test_page_out_hands_a_mapped_files_pages_back_and_keeps_their_contents(tmp_path: Path) -> None:
    # An int4 layer read from a saved model leaves its row-order bytes resident as pages of the mapped file
    # once it is packed for the kernel; page_out gives them back (the int4 model's peak memory).
    expected = torch.arange(32 * 2**20, dtype=torch.int64).to(torch.uint8).reshape(-1, 4096)
    save_file({"qweight": expected}, tmp_path / "model.safetensors")
    with safe_open(tmp_path / "model.safetensors", framework="pt") as handle:
        mapped = handle.get_tensor("qweight")
    assert int(mapped.sum()) == int(expected.sum())  # every page read: resident
    before = _resident_file_bytes()
    if not page_out(mapped):
        pytest.skip("this kernel does not take MADV_PAGEOUT")
    assert before - _resident_file_bytes() >= 16 * 2**20
    assert torch.equal(mapped, expected)  # read back from the file
    assert not page_out(torch.zeros(4, 4)[:, ::2])  # not contiguous: left alone


class _Decoder(nn.Module):
    """Linear layers as a decoder has them: a tied pair, a biased one, a quantised one, and a norm left alone."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(512, 2048, bias=False)
        self.head = nn.Linear(512, 2048, bias=False)
        self.head.weight = self.embed.weight
        self.up = nn.Linear(512, 1024)
        self.norm = nn.LayerNorm(512)
        self.quantized = QuantizedLinear.from_linear(nn.Linear(512, 1024), bits=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return torch.cat([self.head(x), self.up(x), self.quantized(x)], dim=-1)


@linux_only
@needs_huge_pages
def test_linear_weights_move_onto_advised_huge_pages_with_values_and_ties_kept(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _Decoder().eval()
    state = {key: tensor for key, tensor in model.state_dict().items() if key != "head.weight"}
    save_file(state, tmp_path / "model.safetensors")  # read back as a saved model's mapped pages
    with safe_open(tmp_path / "model.safetensors", framework="pt") as handle:
        mapped = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    model.load_state_dict(mapped, assign=True, strict=False)
    model.head.weight = model.embed.weight
    norm_weight = model.norm.weight.data_ptr()
    x = torch.randn(3, 512)
    with torch.inference_mode():
        expected = model(x)
    before = _resident_file_bytes()

    moved = place_on_huge_pages(model, (nn.Linear, QuantizedLinear))

    placed = [
        model.embed.weight,
        model.up.weight,
        model.up.bias,
        model.quantized.qweight,
        model.quantized.scales,
    ]
    assert moved >= sum(tensor.nbytes for tensor in placed)
    assert model.head.weight is model.embed.weight  # still tied
    assert model.embed.weight.data_ptr() % HUGE_PAGE == 0  # the arena starts on a 2 MiB page
    assert all("hg" in _mapping_flags(tensor.data_ptr()) for tensor in placed)  # advised MADV_HUGEPAGE
    assert model.norm.weight.data_ptr() == norm_weight  # not a linear layer: left where it was
    assert before - _resident_file_bytes() >= 4 * 2**20  # the file's pages handed back as they moved
    with torch.inference_mode():
        assert torch.equal(model(x), expected)
    assert isinstance(model.embed.weight, nn.Parameter) and model.embed.weight.requires_grad


def test_turned_off_huge_pages_leave_the_weights_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HUGE_PAGES_ENV, "0")
    model = _Decoder()
    weight = model.up.weight.data_ptr()
    assert not huge_pages_available()
    assert place_on_huge_pages(model, (nn.Linear, QuantizedLinear)) == 0
    assert model.up.weight.data_ptr() == weight


@linux_only
@needs_huge_pages
def test_a_loaded_models_decoder_weights_lie_on_huge_pages_and_answer_as_before(
    saved_tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = torch.tensor([[2, 10, 11, 12, 13]])
    model, _ = videogemma.load(saved_tiny, dtype="float32", quiet=True, quantize="int8")
    head = model.language_model.lm_head.weight
    assert "hg" in _mapping_flags(head.data_ptr())
    assert head is model.language_model.model.embed_tokens.weight
    monkeypatch.setenv(HUGE_PAGES_ENV, "0")

    def no_arena(nbytes: int) -> torch.Tensor:
        raise AssertionError("VIDEOGEMMA_HUGE_PAGES=0 still asked for 2 MiB pages")

    # Where malloc's own memory lies (and how its mappings are advised) depends on the process's history, so
    # the switch is checked where it acts: no arena is asked for.
    monkeypatch.setattr(memory_pages, "huge_page_buffer", no_arena)
    plain, _ = videogemma.load(saved_tiny, dtype="float32", quiet=True, quantize="int8")
    assert plain.language_model.lm_head.weight.data_ptr() != head.data_ptr()
    with torch.inference_mode():
        assert torch.equal(
            model.language_model(input_ids=ids).logits, plain.language_model(input_ids=ids).logits
        )


@linux_only
def test_a_freed_large_block_is_reused_without_new_page_faults() -> None:
    if not reuse_freed_memory():
        pytest.skip("not glibc, or its variables set for this process")
    size = (
        48 << 20
    )  # above glibc's own largest threshold (32 MiB): mapped afresh each time without the settings
    faults = []
    for _ in range(6):  # as prefill after prefill: the heap's free blocks settle within a few rounds
        before = _minor_faults()
        block = torch.ones(size, dtype=torch.uint8)
        faults.append(_minor_faults() - before)
        assert int(block.sum()) == size
        del block
    assert faults[-1] < (size // 4096) // 10, f"the freed blocks' pages were not reused: faults {faults}"


def _resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@linux_only
def test_the_kept_heap_goes_back_to_the_kernel_when_asked() -> None:
    if not reuse_freed_memory():
        pytest.skip("not glibc, or its variables set for this process")
    # 2 MiB blocks with a small one kept after each (as a prompt's temporaries around what a layer keeps): freed,
    # they stay resident under the kept heap until it is trimmed.
    blocks, kept = [], []
    for _ in range(64):
        blocks.append(torch.ones(2 << 20, dtype=torch.uint8))
        kept.append(torch.ones(64, dtype=torch.uint8))
    del blocks
    before = _resident_bytes()
    assert give_back_freed_memory()
    assert before - _resident_bytes() > (64 << 20), "the freed heap stayed resident"
    assert all(int(k.sum()) == 64 for k in kept)


def test_glibc_variables_or_the_switch_leave_the_allocator_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = reuse_freed_memory.__wrapped__  # (the cached call: once a process)
    monkeypatch.setenv(MALLOC_REUSE_ENV, "0")
    assert settings() is False
    monkeypatch.delenv(MALLOC_REUSE_ENV)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")  # a user asking for the least memory
    assert settings() is False


def test_a_model_loaded_for_the_cpu_is_warmed_up_and_answers_as_a_cold_one(
    saved_tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from videogemma import loading
    from videogemma.modeling import modeling_videogemma, quantized_rows

    warmed, _ = videogemma.load(saved_tiny, dtype="bfloat16", quantize="int4", quiet=True)
    if quantized_rows.kernels() is not None:  # the warm-up's decode step built every layer's plan
        assert all(layer.forward.plan is not None for layer in warmed.language_model.model.layers)
    monkeypatch.setattr(loading, "warm_up_decoder", lambda model: None)
    cold, _ = videogemma.load(saved_tiny, dtype="bfloat16", quantize="int4", quiet=True)
    assert all(layer.forward.plan is None for layer in cold.language_model.model.layers)
    trims = []
    monkeypatch.setattr(modeling_videogemma, "give_back_freed_memory", lambda: trims.append(1))
    ids = torch.randint(10, 1000, (1, 24), generator=torch.Generator().manual_seed(3))
    answers = []
    for model in (warmed, cold):
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                output_scores=True, return_dict_in_generate=True,
            )  # fmt: skip
        answers.append((out.sequences, torch.stack(out.scores)))
    assert torch.equal(answers[0][0], answers[1][0]) and torch.equal(answers[0][1], answers[1][1])
    assert trims == [1, 1]  # each answer's kept heap handed back
