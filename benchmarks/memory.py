"""Peak memory of one training step at the QVED recipe's shapes, measured and estimated, per batch size and
precision.

    python benchmarks/memory.py                                    # CPU defaults: 5 decoder layers (minutes)
    python benchmarks/memory.py --layers 30 --batch-sizes 1 2 4 8  # the whole E2B decoder (a GPU)
    python benchmarks/memory.py --estimate-only --layers 30 --batch-sizes 1 2 4 8 16   # the analytic table only

Each configuration (batch size × base dtype) runs in a fresh process: the `e2b` preset with random weights
(the text decoder cut to `--layers` layers, everything else at E2B size: CLIP ViT-B/16, VideoMamba-M, the
262k vocabulary and the per-layer embeddings of those layers), LoRA r 64 on the decoder's q, k, v, o, gate,
up, down + both projectors (stage `finetune`, the parameters as `train.stages` prepares them), gradient
checkpointing (non-reentrant), and one forward + backward + AdamW step under the training autocast (bf16),
on `--text-tokens` text tokens + 2402 visual tokens per sample, `--answer-tokens` of them supervised. The
projectors read the frozen encoders' features (a feature-cache hit; `--encode` runs the encoders on pixels,
a miss). Measured: CUDA's peak allocated memory on a GPU; on a CPU the peak RSS of the process above what it
held before the model was built (`resource.getrusage`).

Beside each measurement: the analytic estimate (`estimate`) for the same shapes, and for the whole decoder
(30 layers), which is what the README's GPU table uses. Prints a table and writes `--out` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

E2B_LAYERS = 30
GIB = 2**30
# (base dtype, autocast): the recipe's bf16 base, and the fp32 base it used to be built in (under the same
# bf16 autocast, where the decoder's residual stream stays fp32).
PRECISIONS = {
    "bf16": ("bfloat16", "bfloat16"),
    "fp32-base": ("float32", "bfloat16"),
    "fp32": ("float32", None),
}


@dataclass
class Shape:
    layers: int = 5
    batch: int = 1
    text_tokens: int = 150
    answer_tokens: int = 24
    lora_r: int = 64
    precision: str = "bf16"
    encode: bool = False


# ---- the model at E2B size with fewer decoder layers --------------------------------------------------------


def text_overrides(layers: int) -> dict[str, Any]:
    """Gemma-3n-E2B's text config cut to `layers` layers, keeping its pattern: every 5th layer global, the
    last third sharing KV (when a global layer precedes it), activation sparsity on the first third."""
    from videogemma.config import e2b_text_config

    full = e2b_text_config()
    types = full.layer_types[:layers]
    shared = layers * full.num_kv_shared_layers // E2B_LAYERS
    while shared and "full_attention" not in types[: layers - shared]:
        shared -= 1  # a shared layer reuses the last non-shared layer of its type
    sparse = layers * 10 // E2B_LAYERS
    return dict(
        num_hidden_layers=layers,
        layer_types=types,
        intermediate_size=[full.intermediate_size[0]] * layers,
        num_kv_shared_layers=shared,
        activation_sparsity_pattern=[0.95] * sparse + [0.0] * (layers - sparse),
    )


def build(shape: Shape) -> Any:
    """The model as `train.stages` prepares it for `finetune`, gradient checkpointing on. On a CPU through
    `build_model` (a preset is built on the CPU); on a GPU the random weights are drawn on the GPU directly,
    which takes seconds instead of minutes (the values do not matter here)."""
    import torch

    from videogemma.loading import ModelSource, build_model, preset_config
    from videogemma.modeling.modeling_videogemma import VideoGemmaForConditionalGeneration
    from videogemma.precision import default_dtype, dtype_from_name
    from videogemma.train.stages import STAGE_TRAINED_MODULES, prepare_model_for_stage
    from videogemma.train.train_config import TrainConfig

    dtype = dtype_from_name(PRECISIONS[shape.precision][0])
    source = ModelSource(preset="e2b", overrides={"text_config": text_overrides(shape.layers)})
    config = TrainConfig(stage="finetune", model=source)
    config.lora.r, config.lora.alpha = shape.lora_r, 2 * shape.lora_r
    trained = STAGE_TRAINED_MODULES["finetune"]
    if torch.cuda.is_available():
        with torch.device("cuda"), default_dtype(dtype):
            model = VideoGemmaForConditionalGeneration(preset_config("e2b", source.overrides))
        for name in trained:
            getattr(model, name).float()
    else:
        model = build_model(source, 0, dtype, "cpu", trained)
    model = prepare_model_for_stage(model, config)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model.train()


def batch_inputs(model: Any, shape: Shape) -> dict[str, Any]:
    """`batch` prompts of 2402 placeholders + text, the last `answer_tokens` supervised; the video as the
    encoders' features (random, at their real shapes) or, with `encode`, as pixels."""
    import torch

    from videogemma.modeling.modeling_videogemma import VideoFeatures

    config = model.get_base_model().config
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    visual, batch = config.num_visual_tokens, shape.batch
    text = torch.randint(
        3, config.text_config.vocab_size_per_layer_input, (batch, shape.text_tokens), generator=generator
    )
    ids = torch.cat([text[:, :4], torch.full((batch, visual), config.image_token_id), text[:, 4:]], dim=1)
    labels = torch.full_like(ids, -100)
    labels[:, -shape.answer_tokens :] = ids[:, -shape.answer_tokens :]
    inputs: dict[str, Any] = {"input_ids": ids.to(device), "labels": labels.to(device),
                              "attention_mask": torch.ones_like(ids).to(device)}  # fmt: skip
    frames, clip_size = config.num_frames, config.vision_config.image_size
    vm_size = config.videomamba_config.image_size
    if shape.encode:
        inputs["clip_pixel_values"] = torch.randn(batch, frames, 3, clip_size, clip_size, device=device)
        inputs["videomamba_pixel_values"] = torch.randn(batch, frames, 3, vm_size, vm_size, device=device)
    else:
        keyframes, patches = config.num_keyframes, config.videomamba_config.grid_size**2
        inputs["video_features"] = VideoFeatures(
            torch.randn(batch, frames, config.clip_grid**2, config.vision_config.hidden_size, device=device),
            torch.randn(batch, keyframes * patches, config.videomamba_config.embed_dim, device=device),
            torch.arange(keyframes, device=device).repeat(batch, 1),
        )
    return inputs


def measure_batches(shapes: list[Shape]) -> list[dict[str, Any]]:
    """One training step per shape (same layers and precision, several batch sizes) on one model built once;
    each step's peak is counted from its own start. A step that runs out of memory is recorded as such."""
    import torch

    cuda = torch.cuda.is_available()
    before = _held_bytes(cuda)
    start = time.perf_counter()
    model = build(shapes[0])
    build_s = time.perf_counter() - start
    held = _held_bytes(cuda) - before  # the model as it stays (building a preset has transients, see README)
    rows = []
    for shape in shapes:
        row = {**asdict(shape), "held_after_build_gib": held / GIB, "build_s": build_s}
        row.update(_estimates(shape))
        try:
            row.update(_one_step(model, shape, cuda, before, held))
        except torch.OutOfMemoryError as error:
            row["error"] = f"out of memory: {str(error).splitlines()[0]}"
        rows.append(row)
        if cuda:
            torch.cuda.empty_cache()
    return rows


def measure(shape: Shape) -> dict[str, Any]:
    return measure_batches([shape])[0]


def _one_step(model: Any, shape: Shape, cuda: bool, before: int, held: int) -> dict[str, Any]:
    import torch

    inputs = batch_inputs(model, shape)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-4)
    _, autocast = PRECISIONS[shape.precision]
    reset = _reset_peak(cuda)
    start = time.perf_counter()
    with torch.autocast("cuda" if cuda else "cpu", dtype=getattr(torch, autocast or "float32"),
                        enabled=autocast is not None):  # fmt: skip
        loss = model(**inputs).loss
    loss.backward()
    optimizer.step()
    if cuda:
        torch.cuda.synchronize()
    peak = _peak_bytes(cuda) - before
    optimizer.zero_grad(set_to_none=True)
    del optimizer  # its moments: the next batch size starts from the model alone
    return {
        "peak_gib": peak / GIB,
        "step_above_model_gib": (peak - held) / GIB,
        "peak_covers": "the step" if reset else "the build and the step",
        "loss": float(loss),
        "step_s": time.perf_counter() - start,
        "device": "cuda" if cuda else "cpu",
        "measure": "CUDA max allocated" if cuda else "peak RSS (VmHWM) above the process before building",
    }


def _estimates(shape: Shape, cuda: bool | None = None) -> dict[str, Any]:
    parts = estimate(shape, cuda)
    whole = estimate(Shape(**{**asdict(shape), "layers": E2B_LAYERS}), cuda)
    return {
        "estimate_gib": sum(parts.values()),
        "estimate_parts_gib": parts,
        "estimate_e2b_gib": sum(whole.values()),
    }


def _held_bytes(cuda: bool) -> int:
    """Memory held now: CUDA allocated, or the resident set on a CPU."""
    if cuda:
        import torch

        return torch.cuda.memory_allocated()
    return _status_kib("VmRSS") * 1024


def _reset_peak(cuda: bool) -> bool:
    """Start the peak from now (CUDA's counter; Linux resets VmHWM through clear_refs); False if it cannot."""
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _peak_bytes(cuda: bool) -> int:
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated()
    try:
        return _status_kib("VmHWM") * 1024
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        values = dict(line.split(":", 1) for line in handle if ":" in line)
    return int(values[field].split()[0])


# ---- the analytic estimate ----------------------------------------------------------------------------------


def parameter_counts(layers: int, lora_r: int) -> dict[str, int]:
    """Exact counts from the model built on the meta device: frozen (in the base dtype), kept in fp32 (the
    projectors and VideoMamba's SSM parameters) and LoRA."""
    import re

    import torch

    from videogemma.config import VideoGemmaConfig
    from videogemma.modeling.modeling_videogemma import VideoGemmaForConditionalGeneration
    from videogemma.modeling.videomamba import keeps_fp32
    from videogemma.train.train_config import LORA_TARGET_REGEX

    with torch.device("meta"):
        model = VideoGemmaForConditionalGeneration(
            VideoGemmaConfig.from_preset("e2b", text_config=_text_config(layers))
        )
    counts = {"frozen": 0, "fp32": 0, "lora": 0}
    for name, parameter in model.named_parameters():
        kept = keeps_fp32(name) or name.startswith(("image_projector.", "video_projector."))
        counts["fp32" if kept else "frozen"] += parameter.numel()
    pattern = re.compile(LORA_TARGET_REGEX)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and pattern.fullmatch(name):
            counts["lora"] += lora_r * (module.in_features + module.out_features)
    counts["projectors"] = sum(
        p.numel()
        for n, p in model.named_parameters()
        if n.startswith(("image_projector.", "video_projector."))
    )
    return counts


def _text_config(layers: int) -> Any:
    from videogemma.config import e2b_text_config

    config = e2b_text_config()
    for key, value in text_overrides(layers).items():
        setattr(config, key, value)
    return config


def estimate(shape: Shape, cuda: bool | None = None) -> dict[str, float]:
    """GiB per part of one training step's peak: the backward of the first decoder layer, where every
    checkpointed layer input is still held and that layer's activations are recomputed. `cuda` (default:
    whether CUDA is available) decides whether the attention scores are materialised.

    - weights: frozen parameters in the base dtype; projectors, LoRA and VideoMamba's SSM parameters in fp32;
    - optimizer: gradients and AdamW's two moments of what trains (12 bytes a parameter) and the fused
      update's temporaries (8 more);
    - checkpointed inputs: per layer and token, AltUp's 4 streams of width 2048 and the 256-wide per-layer
      input, in the residual stream's dtype (bf16 with a bf16 base; fp32 with an fp32 base, autocast or not:
      the residual adds run outside autocast);
    - embeddings and head: the token and per-layer embeddings of every layer, the visual tokens' scatter,
      AltUp's input projections and unembedding, the supervised tokens' logits in fp32; with an fp32 base
      under autocast also the bf16 copy of the 262k × 2048 LM head that the head's backward keeps;
    - one layer recomputed: attention (q, k, v with their norms and rotations, the output), the MLP's
      8192-wide gate, up, activation, product (the first third of the layers also the fp32 statistics of their
      activation sparsity), AltUp's predictions and corrections, the norms, and each LoRA's input (its fp32
      cast, dropout mask and dropped copy), in the compute dtype; the attention scores when the attention
      materialises them (CPU SDPA with a mask: scores, masked scores and probabilities, heads × L fp32 a token;
      CUDA's memory-efficient kernel keeps none);
    - projectors: the ETPs' activations for 16 × 196 CLIP and 8 × 196 VideoMamba tokens a sample.
    """
    from videogemma.config import e2b_text_config

    text = e2b_text_config()
    cuda = _cuda() if cuda is None else cuda
    base, autocast = PRECISIONS[shape.precision]
    residual = 2 if base == "bfloat16" else 4
    compute = 2 if autocast == "bfloat16" else 4
    counts = parameter_counts(shape.layers, shape.lora_r)
    batch, layers, length = shape.batch, shape.layers, 2402 + shape.text_tokens
    hidden, per_layer, streams = text.hidden_size, text.hidden_size_per_layer_input, text.altup_num_inputs
    mlp, heads, kv = (
        text.intermediate_size[0],
        text.num_attention_heads,
        text.num_key_value_heads * text.head_dim,
    )
    attention_width = heads * text.head_dim
    tokens = batch * length
    trained = counts["lora"] + counts["projectors"]
    lm_head_copy = text.vocab_size * hidden * 2 if (base == "float32" and autocast == "bfloat16") else 0
    per_token = {
        "checkpointed inputs": layers * (streams * hidden + per_layer) * residual,
        "embeddings and head": (4 * hidden + 3 * layers * per_layer + 2 * streams * hidden) * residual,
        "one layer recomputed": (6 * attention_width + 4 * kv + 5 * mlp + 3 * streams * hidden + 10 * hidden)
        * compute
        + 3 * mlp * 4  # activation sparsity's fp32 statistics (the first layers)
        + (6 * hidden + mlp) * (4 + 1 + compute)  # LoRA inputs: fp32 cast, dropout mask, dropped copy
        + (0 if cuda else 3 * heads * length * 4),
    }
    parts = {
        "weights": counts["frozen"] * residual + (counts["fp32"] + counts["lora"]) * 4,
        "optimizer": trained * (12 + 8),
        **{name: tokens * value for name, value in per_token.items()},
        "projectors": batch * (16 + 8) * 196 * (3 * hidden * compute + 768 * 4),
    }
    parts["embeddings and head"] += batch * shape.answer_tokens * text.vocab_size * 4 * 3 + lm_head_copy
    return {key: value / GIB for key, value in parts.items()}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ---- driver -------------------------------------------------------------------------------------------------


def run_one(shape: Shape, timeout: float) -> dict[str, Any]:
    command = [sys.executable, __file__, "--one", json.dumps(asdict(shape))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout:.0f} s"}
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=5, help="decoder layers built and measured (E2B: 30)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precisions", nargs="+", choices=sorted(PRECISIONS), default=["bf16", "fp32-base"])
    parser.add_argument("--text-tokens", type=int, default=150, help="prompt + answer tokens beside the 2402")
    parser.add_argument("--answer-tokens", type=int, default=24)
    parser.add_argument(
        "--encode", action="store_true", help="run the frozen encoders on pixels (a cache miss)"
    )
    parser.add_argument(
        "--estimate-only", action="store_true", help="no measurement, the analytic table only"
    )
    parser.add_argument(
        "--estimate-for",
        choices=("here", "cuda", "cpu"),
        default="here",
        help="the attention kernels to assume",
    )
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds per measurement")
    parser.add_argument("--out", type=Path, default=None, help="JSON of every figure")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # a child process: one measurement, as JSON on the last line
        print(json.dumps(measure(Shape(**json.loads(args.one)))))
        return 0

    rows = []
    for precision in args.precisions:
        for batch in args.batch_sizes:
            shape = Shape(
                args.layers, batch, args.text_tokens, args.answer_tokens, 64, precision, args.encode
            )
            row = {
                **asdict(shape),
                **_estimates(shape, None if args.estimate_for == "here" else args.estimate_for == "cuda"),
            }
            if not args.estimate_only:
                row.update(run_one(shape, args.timeout))
            rows.append(row)
            print(_format(row), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def _format(row: dict[str, Any]) -> str:
    measured = "—" if "peak_gib" not in row else f"{row['peak_gib']:6.2f} GiB ({row['step_s']:.0f} s step)"
    if "error" in row:
        measured = f"failed: {row['error']}"
    return (
        f"{row['precision']:>9}  batch {row['batch']:>2}  {row['layers']:>2} layers  measured {measured}  "
        f"estimate {row['estimate_gib']:6.2f} GiB  (30 layers: {row['estimate_e2b_gib']:6.2f} GiB)"
    )


if __name__ == "__main__":
    sys.exit(main())
