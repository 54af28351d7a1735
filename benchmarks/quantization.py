"""What weight-only quantisation of the decoder costs in answers, measured, side by side in one run.

1. The trained `tiny` model (a `full` run of the demo config on the synthetic dataset; trained here within
   --minutes unless --run names one): greedy answers on the synthetic test split in float32 (as trained),
   bfloat16, int8 and int4 (decoder weights), int4 both with its decode steps' inputs as they are and rounded
   to int8 (`--int4-activations`): exercise identification, exact label and the share of answers word for
   word the float32 model's. Answers are decoded TINY_BATCH at a time, so that each step runs the row kernels.
2. E2B dimensions (--e2b-dir: the models `benchmarks/inference.py --quantize` writes, one folder per
   precision): over a fixed prompt set (seeded random token ids, text only), each quantised decoder's
   next-token distribution against bf16's: top-1 agreement and KL(bf16 ‖ quantised), mean over positions,
   over whole prompts (the prefill's products) and over decode steps (the row kernels'; int4 both ways).
   Random weights: what it measures is the numerical error of the layers, not a trained model's answers.

    python benchmarks/quantization.py --out runs/quantization [--run RUN_DIR] [--minutes 4]
    python benchmarks/quantization.py --out runs/quantization --run RUN_DIR --e2b-dir /tmp/e2b_models
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import yaml

HERE = Path(__file__).resolve().parent
# (name, quantisation, int4 activations): int4 both ways its decode steps can multiply (`--int4-activations`).
TINY_PRECISIONS = (
    ("float32", None, "exact"),
    ("bfloat16", None, "exact"),
    ("int8", "int8", "exact"),
    ("int4", "int4", "exact"),
    ("int4, int8 inputs", "int4", "int8"),
)
# Answers decoded 8 at a time: under DEQUANTIZE_FROM_ROWS (16), so each step runs the row kernels, as one
# user's answer does (16 rows would dequantise the weights and take the GEMM: the same for every int4 choice).
TINY_BATCH = 8
E2B_PROMPTS, E2B_PROMPT_TOKENS = 8, 48
# The decode-path comparison: each prompt's first tokens as one prefill, the rest fed one at a time.
E2B_PREFILL_TOKENS = 16
E2B_DECODE_VARIANTS = (
    ("int8", "int8", "exact"),
    ("int4", "int4", "exact"),
    ("int4, int8 inputs", "int4", "int8"),
)


def _learning() -> Any:
    """benchmarks/learning.py (its dataset, training and greedy evaluation), imported by path."""
    spec = importlib.util.spec_from_file_location("learning", HERE / "learning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_tiny(out: Path, minutes: float, per_variant: int) -> tuple[Path, Path]:
    """A `full` run of the demo config on a synthetic dataset; (run directory, test split)."""
    learning = _learning()
    data = learning.make_dataset(out / "data", per_variant, 64, 36, seed=0)
    config = yaml.safe_load((learning.SHIPPED_CONFIGS / "demo_tiny.yaml").read_text())
    config.update(
        output_dir=str(out / "run"),
        max_train_minutes=minutes,
        max_steps=1350,
        eval_steps=450,
        feature_cache_dir=str(out / "feature_cache"),
    )
    config["data"] = {
        **config.get("data", {}),
        "train_file": str(data / "qved_train.json"),
        "val_file": str(data / "qved_val.json"),
    }
    run_dir, seconds = learning.train(config, out / "full.yaml")
    print(f"trained {run_dir} in {seconds / 60:.1f} min")
    return run_dir, data / "qved_test.json"


@torch.inference_mode()
def greedy_answers(
    model: Any, processor: Any, split_file: Path, batch_size: int = TINY_BATCH
) -> list[tuple[str, str]]:
    """(ground truth, greedy answer) for every record of a split."""
    from videogemma.inference.generate import GenerationSettings, generate_answers
    from videogemma.processing.chat_template import normalize_conversation

    records = json.loads(split_file.read_text())
    pairs = []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        turns = [normalize_conversation(r["conversations"]) for r in batch]
        videos = [str(split_file.parent / r["video"]) for r in batch]
        inputs = processor(videos=videos, text=[t[0].text for t in turns], padding_side="left")
        answers = generate_answers(model, processor, inputs, GenerationSettings(max_new_tokens=64))
        pairs += [(t[1].text.strip(), a.text.strip()) for t, a in zip(turns, answers)]
    return pairs


def tiny_quality(run_dir: Path, test_split: Path) -> list[dict[str, Any]]:
    """Each precision's answers on the test split: exercise identification, exact label, and how many
    answers are word for word those of the model as trained (float32)."""
    import videogemma
    from videogemma.evaluation.metrics import exercise_name

    rows, reference = [], None
    for name, method, activations in TINY_PRECISIONS:
        dtype = "float32" if name == "float32" else "bfloat16"
        model, processor = videogemma.load(
            run_dir, dtype=dtype, quantize=method, int4_activations=activations, quiet=True
        )
        start = time.perf_counter()
        pairs = greedy_answers(model, processor, test_split)
        answers = [answer for _, answer in pairs]
        reference = reference or answers
        rows.append(
            {
                "precision": name,
                "samples": len(pairs),
                "exercise_identification": sum(exercise_name(a) == exercise_name(t) for t, a in pairs)
                / len(pairs),
                "exact_label": sum(a == t for t, a in pairs) / len(pairs),
                "same_answer_as_float32": sum(a == r for a, r in zip(answers, reference)) / len(pairs),
                "seconds": time.perf_counter() - start,
            }
        )
        print(f"tiny {name}: {rows[-1]}", flush=True)
    return rows


@torch.inference_mode()
def _log_probs(model_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    """Next-token log-probabilities (prompts, positions, vocab) of a model written by inference.py."""
    from videogemma.loading import ModelSource, build_model, prepare_decoder

    model = build_model(ModelSource(pretrained=str(model_dir)), 0, torch.bfloat16, per_layer_on_disk=True)
    prepare_decoder(model, None)
    model.eval()
    rows = [model(input_ids=prompt[None]).logits[0].float().log_softmax(-1) for prompt in ids]
    return torch.stack(rows)


@torch.inference_mode()
def _decode_log_probs(model_dir: Path, ids: torch.Tensor, int4_activations: str) -> torch.Tensor:
    """Next-token log-probabilities (prompts, decoded positions, vocab) with each prompt's tokens after the first
    E2B_PREFILL_TOKENS fed one at a time through the cache: the decode steps' own products (row kernels)."""
    from videogemma.loading import ModelSource, build_model, prepare_decoder
    from videogemma.modeling.growing_cache import GrowingCache

    model = build_model(ModelSource(pretrained=str(model_dir)), 0, torch.bfloat16, per_layer_on_disk=True)
    prepare_decoder(model, None, int4_activations=int4_activations)
    model.eval()
    rows = []
    for prompt in ids:
        cache = GrowingCache(config=model.config.text_config)
        model(input_ids=prompt[None, :E2B_PREFILL_TOKENS], cache=cache, use_cache=True, logits_to_keep=1)
        steps = []
        for position in range(E2B_PREFILL_TOKENS, len(prompt)):
            out = model(
                input_ids=prompt[None, position : position + 1],
                cache=cache,
                use_cache=True,
                cache_position=torch.tensor([position]),
            )
            steps.append(out.logits[0, -1].float().log_softmax(-1))
        rows.append(torch.stack(steps))
    return torch.stack(rows)


def _agreement(name: str, reference: torch.Tensor, quantized: torch.Tensor) -> dict[str, Any]:
    kl = (reference.exp() * (reference - quantized)).sum(-1)
    return {
        "precision": name,
        "positions": int(kl.numel()),
        "top1_agreement": float((reference.argmax(-1) == quantized.argmax(-1)).float().mean()),
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
    }


def e2b_agreement(e2b_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Against bf16: each quantised decoder over whole prompts (the prefill's products) and over decode steps
    (the row kernels', where int4's two activation choices differ). One model in memory at a time."""
    from videogemma.config import VideoGemmaConfig

    vocab = VideoGemmaConfig.from_preset("e2b").text_config.vocab_size
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, min(vocab, 200_000), (E2B_PROMPTS, E2B_PROMPT_TOKENS), generator=generator)
    ids[:, 0] = 2  # <bos>
    results: dict[str, list[dict[str, Any]]] = {"prefill": [], "decode": []}
    reference = _log_probs(e2b_dir / "bfloat16", ids)
    for method in ("int8", "int4"):
        if (e2b_dir / method).is_dir():
            results["prefill"].append(_agreement(method, reference, _log_probs(e2b_dir / method, ids)))
            print(f"e2b prefill {method}: {results['prefill'][-1]}", flush=True)
    reference = _decode_log_probs(e2b_dir / "bfloat16", ids, "exact")
    for name, method, activations in E2B_DECODE_VARIANTS:
        if (e2b_dir / method).is_dir():
            quantized = _decode_log_probs(e2b_dir / method, ids, activations)
            results["decode"].append(_agreement(name, reference, quantized))
            print(f"e2b decode {name}: {results['decode'][-1]}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/quantization"))
    parser.add_argument("--run", type=Path, default=None, help="a trained tiny run (default: train one)")
    parser.add_argument("--test-split", type=Path, default=None, help="with --run: its test split file")
    parser.add_argument("--minutes", type=float, default=4.0, help="training budget when no --run is given")
    parser.add_argument("--per-variant", type=int, default=60, help="synthetic clips per form variant")
    parser.add_argument(
        "--e2b-dir", type=Path, default=None, help="models written by inference.py --quantize"
    )
    parser.add_argument("--skip-tiny", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    args.out.mkdir(parents=True, exist_ok=True)
    output: dict[str, Any] = {"load": os.getloadavg()[0]}
    if not args.skip_tiny:
        if args.run is None:
            run_dir, test_split = train_tiny(args.out, args.minutes, args.per_variant)
        else:
            run_dir, test_split = args.run, args.test_split
        output["tiny"] = tiny_quality(run_dir, test_split)
    if args.e2b_dir is not None:
        output["e2b"] = e2b_agreement(args.e2b_dir)
    (args.out / "quantization.json").write_text(json.dumps(output, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
