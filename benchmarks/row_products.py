"""One-row products (a decode step's) on the CPU, side by side in one run, beside the bandwidth of a 1 GiB
copy measured in the same run: `F.linear` against a `RowVectorLinear` (our bf16 row kernel,
`modeling/quantized_rows.c`, and `torch.mv`, which it uses where ours cannot run) in bf16 and fp32; torch's
int8 / int4 weight-only kernels against our row kernels, and for int8 the paired view torch's kernel decodes
with where ours cannot run (`int8_one_row_product`).

    python benchmarks/row_products.py                          # E2B decoder shapes, 4 dtypes (~3 min)
    python benchmarks/row_products.py --e2b-dir /tmp/e2b/ck    # + whole decode steps of a saved E2B model
    python benchmarks/row_products.py --pages --e2b-dir /tmp/e2b/ck   # only: 4 KiB against 2 MiB pages

1. Each shape of the E2B decoder's linear layers with random weights, enough copies of it (≥ 256 MiB) that
   they are read from memory, not cache: GB/s of weights read by each product (int8 / int4: bytes of the
   quantised weight), and the ratio.
2. With --e2b-dir (the bf16 folder `benchmarks/inference.py --quantize bfloat16 --checkpoint-dir DIR` writes
   as DIR/bfloat16): one model, greedy decode steps timed with F.linear, torch.mv and our bf16 row kernel in
   rotating order (same process, same prompt), medians, and the bandwidth bound of a step (bytes of weights
   it reads ÷ the copy's GB/s).
3. With --pages (and --e2b-dir): for each of DIR/bfloat16, int8, int4 that exists, one model, greedy decode
   steps with the linear layers' weights on 4 KiB pages (a copy from the allocator) and on the 2 MiB pages
   loading puts them on (`modeling/memory_pages.py`), alternating rounds, medians, and the bandwidth bound.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from videogemma.config import VideoGemmaConfig
from videogemma.modeling import quantized_rows
from videogemma.modeling.memory_pages import huge_pages_available, layer_tensors
from videogemma.modeling.quantization import QuantizedLinear, int8_one_row_product
from videogemma.modeling.row_products import RowVectorLinear, use_row_vector_products

HERE = Path(__file__).resolve().parent
READ_AT_LEAST = 256 * 2**20  # bytes of weights per timed pass: well past the caches


def _inference_benchmark() -> Any:
    """benchmarks/inference.py (its timing, bounds, saved-model loading and prompt), imported by path."""
    spec = importlib.util.spec_from_file_location("inference_benchmark", HERE / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _inference_benchmark()
median_seconds = BENCH.median_seconds


def e2b_shapes() -> dict[str, tuple[int, int]]:
    """(out, in) of the E2B decoder's linear layers, by role."""
    text = VideoGemmaConfig.from_preset("e2b").text_config
    hidden, heads, kv_heads, head_dim = (
        text.hidden_size,
        text.num_attention_heads,
        text.num_key_value_heads,
        text.head_dim,
    )
    intermediate = (
        text.intermediate_size[0] if isinstance(text.intermediate_size, list) else text.intermediate_size
    )
    return {
        "q / o proj": (heads * head_dim, hidden),
        "k / v proj": (kv_heads * head_dim, hidden),
        "gate / up proj": (intermediate, hidden),
        "down proj": (hidden, intermediate),
        "per-layer gate": (text.hidden_size_per_layer_input, hidden),
        "per-layer proj": (hidden, text.hidden_size_per_layer_input),
        "LM head": (text.vocab_size, hidden),
    }


def time_shape(out_features: int, in_features: int, dtype: torch.dtype, runs: int) -> dict[str, float]:
    """Seconds for one row through F.linear ("library"), a `RowVectorLinear` ("row": our bf16 kernel where it
    runs, else torch.mv) and, for bf16 with our kernel, torch.mv ("fallback"), over enough copies of the layer
    to read `READ_AT_LEAST` bytes; and those bytes."""
    linear_bytes = out_features * in_features * dtype.itemsize
    copies = max(1, READ_AT_LEAST // linear_bytes)
    linears = [nn.Linear(in_features, out_features, bias=False).to(dtype) for _ in range(copies)]
    x = torch.randn(1, 1, in_features, dtype=dtype)
    times = {"bytes": copies * linear_bytes}
    with torch.inference_mode():
        times["library"] = median_seconds(lambda: [F.linear(x, m.weight) for m in linears], runs)
        use_row_vector_products(nn.ModuleList(linears))  # the same weights, now one-row products
        times["row"] = median_seconds(lambda: [m(x) for m in linears], runs)
        if dtype == torch.bfloat16 and quantized_rows.kernels() is not None:
            with torch_kernels_only():
                times["fallback"] = median_seconds(lambda: [m(x) for m in linears], runs)
    return times


@contextmanager
def torch_kernels_only() -> Iterator[None]:
    """Layers built and run inside through torch's kernels (int8 / int4) and torch.mv (bf16), as where our
    row kernels cannot run."""
    ours = quantized_rows.kernels
    quantized_rows.kernels = lambda: None
    try:
        yield
    finally:
        quantized_rows.kernels = ours


def time_quantized_shape(out_features: int, in_features: int, bits: int, runs: int) -> dict[str, float]:
    """Seconds for one bf16 row through a quantised layer of this shape, over enough copies to read
    `READ_AT_LEAST` bytes: torch's kernel called directly ("library"), the layer on our row kernels ("row"), and
    for int8 torch's kernel over the paired view ("fallback", the layer's without ours); and the bytes read."""
    linear_bytes = out_features * in_features * bits // 8
    copies = max(1, READ_AT_LEAST // linear_bytes)
    dense = nn.Linear(in_features, out_features, bias=False).to(torch.bfloat16)
    layers = [QuantizedLinear.from_linear(dense, bits) for _ in range(copies)]
    x = torch.randn(1, in_features, dtype=torch.bfloat16)
    times = {"bytes": copies * linear_bytes}
    with torch.inference_mode():
        if quantized_rows.kernels() is not None:
            times["row"] = median_seconds(lambda: [m(x) for m in layers], runs)
        with torch_kernels_only():
            if bits == 8:
                times["fallback"] = median_seconds(
                    lambda: [int8_one_row_product(x, m.qweight, m.scales) for m in layers], runs
                )
                times["library"] = median_seconds(
                    lambda: [torch._weight_int8pack_mm(x, m.qweight, m.scales) for m in layers], runs
                )
            else:
                for m in layers:
                    m.prepare()  # torch's kernel order
                times["library"] = median_seconds(lambda: [m(x) for m in layers], runs)
    return times


def shape_rows(dtype: torch.dtype | str, runs: int) -> list[dict[str, Any]]:
    """One row per E2B shape: `dtype` through F.linear and `torch.mv`, or "int8" / "int4" through torch's
    kernel and ours (and int8's paired view)."""
    rows = []
    for role, (out_features, in_features) in e2b_shapes().items():
        if dtype in ("int8", "int4"):
            times = time_quantized_shape(out_features, in_features, int(dtype[3:]), runs)
        else:
            times = time_shape(out_features, in_features, dtype, runs)
        gb_per_s = {k: times["bytes"] / v / 1e9 for k, v in times.items() if k != "bytes"}
        rows.append(
            {
                "dtype": str(dtype).removeprefix("torch."),
                "role": role,
                "shape": f"{out_features} × {in_features}",
                **{f"{k}_gb_per_s": v for k, v in gb_per_s.items()},
                "speedup": times["library"] / times["row"] if "row" in times else None,
            }
        )
    return rows


def _decode_prompt(config: Any) -> dict[str, Any]:
    ids = BENCH.prompt_ids(config, 64)
    visual = torch.randn(
        1, 64, config.hidden_size, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(0)
    )
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "visual_tokens": visual,
        "do_sample": False,
    }


def _rotating_steps(model: Any, variants: dict[str, Any], rounds: int, new_tokens: int) -> dict[str, float]:
    """Median ms per greedy decode step of `model` under each variant (`name: callable that sets it up and
    returns a context to run in`), the variants' order rotating each round."""
    prompt = _decode_prompt(model.config)

    def step_ms(name: str) -> float:
        with variants[name]():
            first = median_seconds(lambda: model.generate(**prompt, max_new_tokens=1, min_new_tokens=1), 1)
            start = time.perf_counter()
            model.generate(**prompt, max_new_tokens=new_tokens + 1, min_new_tokens=new_tokens + 1)
            return (time.perf_counter() - start - first) / new_tokens * 1e3

    names = list(variants)
    steps: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        model.generate(**prompt, max_new_tokens=2, min_new_tokens=2)
        for round_index in range(rounds):
            for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
                steps[name].append(step_ms(name))
                print(f"  {name:<9} {steps[name][-1]:6.1f} ms a step", flush=True)
    return {f"{name}_ms": statistics.median(times) for name, times in steps.items()}


def decode_steps(model_dir: Path, rounds: int, new_tokens: int) -> dict[str, Any]:
    """Median ms per greedy decode step of one E2B bf16 model through F.linear, torch.mv and (where it runs)
    our bf16 row kernel, in rotating order."""
    model = BENCH.load_saved(model_dir, torch.bfloat16, per_layer_on_disk=True)
    linears = [m for m in model.language_model.modules() if isinstance(m, RowVectorLinear)]

    def through(product: str) -> Any:
        def setup() -> Any:
            for module in linears:
                module.__class__ = nn.Linear if product == "F.linear" else RowVectorLinear
            return torch_kernels_only() if product == "torch.mv" else nullcontext()

        return setup

    products = ["F.linear", "torch.mv"] + (["ours"] if quantized_rows.kernels() is not None else [])
    steps = _rotating_steps(model, {name: through(name) for name in products}, rounds, new_tokens)
    return {"decode_bytes_per_step": BENCH.decode_bytes_per_step(model), **steps}


def page_steps(model_dir: Path, rounds: int, new_tokens: int) -> dict[str, Any]:
    """Median ms per greedy decode step of one saved E2B model with its linear layers' weights on 4 KiB pages
    (copies from torch's allocator) and on the 2 MiB pages loading put them on, alternating."""
    model = BENCH.load_saved(model_dir, torch.bfloat16, per_layer_on_disk=True)
    placed = layer_tensors(model.language_model, (nn.Linear, QuantizedLinear))
    on_huge = [tensor.detach() for _, _, tensor in placed]
    on_small = [tensor.clone() for tensor in on_huge]

    def use(tensors: list[torch.Tensor]) -> Any:
        def setup() -> Any:
            for (owner, name, tensor), data in zip(placed, tensors, strict=True):
                if isinstance(tensor, nn.Parameter):
                    tensor.data = data
                else:
                    owner._buffers[name] = data
            return nullcontext()

        return setup

    steps = _rotating_steps(model, {"4 KiB": use(on_small), "2 MiB": use(on_huge)}, rounds, new_tokens)
    return {"decode_bytes_per_step": BENCH.decode_bytes_per_step(model), **steps}


def _cell(value: float | None, spec: str, width: int) -> str:
    return f"{'-' if value is None else format(value, spec):>{width}}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--e2b-dir", type=Path, help="folder holding bfloat16/ (benchmarks/inference.py's)")
    parser.add_argument("--runs", type=int, default=5, help="timed passes per shape (median)")
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternating rounds of decode steps (--e2b-dir)"
    )
    parser.add_argument("--new-tokens", type=int, default=24, help="decode steps timed per round")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument(
        "--pages", action="store_true", help="only decode steps on 4 KiB against 2 MiB pages (--e2b-dir)"
    )
    args = parser.parse_args()
    if args.pages and not args.e2b_dir:
        parser.error("--pages needs --e2b-dir")
    if args.threads:
        torch.set_num_threads(args.threads)
    bandwidth = BENCH.measure_bounds(tokens=2443, threads=args.threads)["copy_gb_per_s"]
    print(f"threads {torch.get_num_threads()}; 1 GiB copy {bandwidth:.1f} GB/s (read + written)")
    if args.pages:
        if not huge_pages_available():
            raise SystemExit("no 2 MiB pages here (not Linux, transparent huge pages off, or turned off)")
        for precision in ("bfloat16", "int8", "int4"):
            if (args.e2b_dir / precision).is_dir():
                print_steps(
                    f"E2B {precision}",
                    page_steps(args.e2b_dir / precision, args.rounds, args.new_tokens),
                    bandwidth,
                )
        return
    print(
        "library: F.linear (bf16, fp32), torch's int8 / int4 kernel; row: a layer's decode forward (our row"
    )
    print("kernels for bf16 / int8 / int4, torch.mv for fp32); fallback: that forward without our kernels")
    print("(bf16: torch.mv; int8: torch's kernel over the paired view)")
    print(
        f"{'dtype':<9}{'layer':<16}{'shape':>16}{'library GB/s':>14}{'row GB/s':>10}{'speed-up':>10}"
        f"{'fallback GB/s':>15}"
    )
    for dtype in (torch.bfloat16, torch.float32, "int8", "int4"):
        for row in shape_rows(dtype, args.runs):
            print(
                f"{row['dtype']:<9}{row['role']:<16}{row['shape']:>16}{row['library_gb_per_s']:>14.1f}"
                f"{_cell(row.get('row_gb_per_s'), '.1f', 10)}{_cell(row['speedup'], '.2f', 9)}"
                f"{'×' if row['speedup'] else ' '}{_cell(row.get('fallback_gb_per_s'), '.1f', 15)}"
            )
    if args.e2b_dir:
        print_steps(
            "E2B bf16", decode_steps(args.e2b_dir / "bfloat16", args.rounds, args.new_tokens), bandwidth
        )


def print_steps(what: str, result: dict[str, Any], bandwidth: float) -> None:
    bound_ms = result["decode_bytes_per_step"] / (bandwidth * 1e9) * 1e3
    print(
        f"{what} decode step, bandwidth bound {bound_ms:.1f} ms "
        f"({result['decode_bytes_per_step'] / 1e9:.2f} GB a step):"
    )
    for key, ms in result.items():
        if key.endswith("_ms"):
            print(f"  {key.removesuffix('_ms'):<9} {ms:6.1f} ms ({ms / bound_ms:.2f}× the bound)")


if __name__ == "__main__":
    main()
