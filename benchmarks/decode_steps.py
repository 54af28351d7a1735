"""Whole E2B decode steps with the decode step's own operators on and off, side by side in one process.

"Ours" is what `videogemma.load` gives a CPU decode step: each decoder layer's step in a few calls
(`modeling/decode_layer.py`), the attention over the cache in two C passes (`modeling/decode_attention.py`),
RMSNorm in one C pass (`row_norms.py`), AltUp's prediction and correction in one C call each (`altup_predict.py`)
and the Gaussian top-k's quantile computed once (`sparse_activation.py`). "Operators" is the same without the
layer's step: the library's decoder layer calling those operators. "Library" is each of them switched back to
what it falls back to (transformers' SDPA, the norm module's operations, the broadcast prediction and the
library's correction, the library's top-k); the row kernels, pages and cache stay as loaded. The variants
alternate, order rotated each round, on the benchmark's prompt (by default 2,443 tokens of which 2,402 visual);
each figure is the median of the per-token intervals of one answer, and the table the median over the rounds,
beside the bound of a 1 GiB copy measured in the same run.

    python benchmarks/decode_steps.py --e2b-dir DIR                   # DIR/bfloat16, int8, int4 that exist
    python benchmarks/decode_steps.py --e2b-dir DIR --methods int8 --rounds 5 --visual-tokens 64

DIR is the folder `benchmarks/inference.py --quantize ... --checkpoint-dir DIR` writes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers.models.gemma3n.modeling_gemma3n import Gemma3nRMSNorm

# benchmarks/inference.py (its saved-model loading, prompt and bounds): run as a script, this folder is on sys.path.
import inference as BENCH
from videogemma.modeling import altup_predict, decode_attention
from videogemma.modeling.row_norms import RowRMSNorm


class StepClock:
    """A generation streamer that notes when each token arrives."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, _: Any) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass

    def median_step_ms(self) -> float:
        # times[0] is the prompt, times[1] the first token (the prefill): the decode steps come after.
        steps = [later - earlier for earlier, later in zip(self.times[1:], self.times[2:], strict=False)]
        return statistics.median(steps) * 1e3


def switches(model: Any) -> dict[str, Callable[[], None]]:
    """Callables that put the model's decode step on the library's operators, on ours under the library's layer,
    or on ours with the layer's own step."""
    norms = [m for m in model.language_model.modules() if isinstance(m, Gemma3nRMSNorm)]
    layers = model.language_model.model.layers
    wrappers = [
        (
            layer,
            layer.forward,
            layer.altup,
            layer.altup.correct,
            layer.mlp,
            layer.mlp.__dict__.get("_gaussian_topk"),
        )
        for layer in layers
    ]
    takes, one_call = decode_attention.takes, altup_predict._one_call_takes

    def use(operators: bool, layer_step: bool) -> None:
        decode_attention.takes = takes if operators else (lambda *_: False)
        altup_predict._one_call_takes = one_call if operators else (lambda *_: False)
        for norm in norms:
            norm.__class__ = RowRMSNorm if operators else Gemma3nRMSNorm
        for layer, step, altup, correct, mlp, top_k in wrappers:
            layer.forward = step if layer_step else step.otherwise
            altup.correct = correct if operators else correct.library
            if top_k is not None:
                mlp._gaussian_topk = top_k if operators else top_k.library

    return {
        "library": lambda: use(False, False),
        "operators": lambda: use(True, False),
        "ours": lambda: use(True, True),
    }


def alternate(model_dir: Path, rounds: int, new_tokens: int, visual_tokens: int | None) -> dict[str, Any]:
    model = BENCH.load_saved(model_dir, torch.bfloat16, per_layer_on_disk=True)
    config = model.config
    visual_tokens = visual_tokens or config.num_visual_tokens
    ids = BENCH.prompt_ids(config, visual_tokens)
    visual = torch.randn(
        1,
        visual_tokens,
        config.hidden_size,
        dtype=torch.bfloat16,
        generator=torch.Generator().manual_seed(0),
    )
    prompt = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "visual_tokens": visual}
    variants = switches(model)
    names = list(variants)
    steps: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for round_index in range(rounds):
            for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
                variants[name]()
                clock = StepClock()
                model.generate(
                    **prompt,
                    max_new_tokens=new_tokens + 1,
                    eos_token_id=None,
                    do_sample=False,
                    streamer=clock,
                )
                steps[name].append(clock.median_step_ms())
                print(f"  {model_dir.name:<8} {name:<9} {steps[name][-1]:6.1f} ms a step", flush=True)
    result = {f"{name}_ms": statistics.median(times) for name, times in steps.items()}
    result["decode_bytes_per_step"] = BENCH.decode_bytes_per_step(model)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--e2b-dir", type=Path, required=True, help="the folder of saved E2B models")
    parser.add_argument("--methods", default="bfloat16,int8,int4", help="which of its models, in order")
    parser.add_argument("--rounds", type=int, default=3, help="answers per variant, alternating")
    parser.add_argument("--new-tokens", type=int, default=16, help="decode steps per answer")
    parser.add_argument(
        "--visual-tokens", type=int, default=None, help="visual tokens in the prompt (default: the model's)"
    )
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    folders = {method: args.e2b_dir / method for method in methods}
    present = {method: folder for method, folder in folders.items() if (folder / "config.json").is_file()}
    if not present:
        parser.error(f"{args.e2b_dir}: no saved model in {', '.join(methods)} (write them with inference.py)")
    results = {
        method: alternate(folder, args.rounds, args.new_tokens, args.visual_tokens)
        for method, folder in present.items()
    }
    copy = BENCH.measure_bounds(64, None)["copy_gb_per_s"]
    print(f"\n1 GiB copy {copy:.1f} GB/s (read + written), measured after the steps")
    print(
        f"{'decoder':<10}{'library ms':>12}{'operators ms':>14}{'ours ms':>10}{'speed-up':>10}{'step gain':>11}"
        f"{'bound ms':>10}{'ours / bound':>14}"
    )
    for method, result in results.items():
        bound = result["decode_bytes_per_step"] / (copy * 1e9) * 1e3
        library, operators, ours = result["library_ms"], result["operators_ms"], result["ours_ms"]
        print(
            f"{method:<10}{library:>12.1f}{operators:>14.1f}{ours:>10.1f}{library / ours:>9.2f}×"
            f"{operators / ours:>10.2f}×{bound:>10.1f}{ours / bound:>13.2f}×"
        )


if __name__ == "__main__":
    main()
