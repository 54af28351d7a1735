"""Where the time of answering one video goes, for the `tiny` preset and (optionally) the E2B dimensions.

    python benchmarks/inference.py                       # tiny only (seconds)
    python benchmarks/inference.py --e2b                 # + E2B dimensions, random weights (minutes, ~10 GB)
    python benchmarks/inference.py --e2b --new-tokens 4 --out bench_inference.json
    python benchmarks/inference.py --batch [--batch-data SPLIT.json --batch-model RUN_DIR]

Per preset, in a fresh process (so that peak memory is the preset's own), on one video:
decode, preprocessing, CLIP, keyframe selection, VideoMamba, projectors, LM prefill, generation, tokens per
second of the decode steps, time to first token (the sum of the stages up to the prefill) and peak RSS.
Weights are random (the time does not depend on their values); bf16 where the CPU has native bf16
(AVX512-BF16 / AMX), else fp32.

Beside it, in the same process: the prefill of the same language model on the visual tokens Gemma-3n's own
vision path would use for the same frames (256 per frame: 16 × 256 = 4096 for E2B) against ours
(16 × 144 + 2 × 49 = 2402), as a ratio.

With `--batch`: batch inference over the same samples at batch size 1 without decoding workers, batch size
8 without, and batch size 8 with one worker decoding ahead of the model; videos per second, the speed-up
over the first, and whether the greedy answers are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REAL_CLIP = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real_clip_00000340.mp4"
GEMMA3N_VISION_TOKENS_PER_FRAME = 256  # MobileNet-V5 soft tokens per image in Gemma-3n


def peak_rss_gib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class StageTimer:
    """Wall time of a module's forward calls, through forward hooks (the model's own code runs untouched)."""

    def __init__(self, module: Any) -> None:
        self.seconds = 0.0
        self._start = 0.0
        self._handles = [
            module.register_forward_pre_hook(self._before),
            module.register_forward_hook(self._after),
        ]

    def _before(self, *_: Any) -> None:
        self._start = time.perf_counter()

    def _after(self, *_: Any) -> None:
        self.seconds += time.perf_counter() - self._start

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def prompt_ids(config: Any, num_visual_tokens: int) -> Any:
    """A real chat-template prompt (tiny tokenizer's text) with `num_visual_tokens` placeholders, its special
    tokens mapped by name to the ids of `config`'s vocabulary (Gemma-3n's for E2B)."""
    import torch

    from videogemma.config import (
        GEMMA3N_BOS_ID,
        GEMMA3N_END_OF_IMAGE_ID,
        GEMMA3N_END_OF_TURN_ID,
        GEMMA3N_START_OF_IMAGE_ID,
        GEMMA3N_START_OF_TURN_ID,
    )
    from videogemma.constants import DEFAULT_PROMPT, START_OF_TURN
    from videogemma.processing.processor import VideoGemmaProcessor

    processor = VideoGemmaProcessor.from_preset("tiny", num_visual_tokens=num_visual_tokens, max_length=None)
    ids = processor.encode_conversation([{"from": "human", "value": DEFAULT_PROMPT}])["input_ids"]
    tokenizer = processor.tokenizer
    gemma_ids = {
        "<bos>": GEMMA3N_BOS_ID,
        START_OF_TURN: GEMMA3N_START_OF_TURN_ID,
        "<end_of_turn>": GEMMA3N_END_OF_TURN_ID,
        "<start_of_image>": GEMMA3N_START_OF_IMAGE_ID,
        "<end_of_image>": GEMMA3N_END_OF_IMAGE_ID,
    }
    if config.image_token_id != processor.image_token_id:  # not the tiny vocabulary: remap the special ids
        mapping = {tokenizer.convert_tokens_to_ids(name): new for name, new in gemma_ids.items()}
        mapping[processor.image_token_id] = config.image_token_id
        ids = torch.tensor([mapping.get(int(i), int(i)) for i in ids])
    return ids[None]


def build_model(preset: str, dtype: Any) -> Any:
    import torch

    from videogemma.config import VideoGemmaConfig
    from videogemma.modeling.modeling_videogemma import VideoGemmaForConditionalGeneration

    torch.manual_seed(0)
    config = VideoGemmaConfig.from_preset(preset)
    # Built directly in the target dtype: E2B in fp32 first would need twice the memory.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = VideoGemmaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def load_saved(model_dir: Path, dtype: Any, per_layer_on_disk: bool, compile_prefill: bool = False) -> Any:
    """A model written by `write_checkpoint`, loaded as `videogemma.load` would (quantised ones as saved)."""
    from videogemma.loading import ModelSource, build_model, prepare_decoder
    from videogemma.modeling.compiled_prefill import compile_prefill as compile_layers

    model = build_model(ModelSource(pretrained=str(model_dir)), 0, dtype, per_layer_on_disk=per_layer_on_disk)
    prepare_decoder(model, None)
    if compile_prefill:
        compile_layers(model.language_model)
    return model.eval()


def measure(
    preset: str,
    video: Path,
    new_tokens: int,
    repeats: int,
    compare_gemma_vision: bool,
    threads: int | None = None,
    model_dir: Path | None = None,
    per_layer_on_disk: bool = False,
    compile_prefill: bool = False,
    paired_blocks: int = 0,
) -> dict[str, Any]:
    import torch

    # The tiny preset's matrices are too small to split between threads (a second one only adds
    # synchronisation); E2B's use every core.
    torch.set_num_threads(threads or (1 if preset == "tiny" else os.cpu_count() or 1))

    from videogemma.inference.timing import GenerationTimer
    from videogemma.modeling.quantization import quantized_method
    from videogemma.precision import cpu_has_native_bf16
    from videogemma.processing.processor import VideoGemmaProcessor

    dtype = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    start = time.perf_counter()
    if model_dir is None:
        model = build_model(preset, dtype)
    else:
        model = load_saved(model_dir, dtype, per_layer_on_disk, compile_prefill)
    config = model.config
    build_seconds = time.perf_counter() - start
    rss_after_build = peak_rss_gib()
    # The preset's frame geometry, with the tiny tokenizer (E2B's is not available offline).
    processor = VideoGemmaProcessor.from_preset(
        "tiny",
        num_frames=config.num_frames,
        clip_image_size=config.vision_config.image_size,
        videomamba_image_size=config.videomamba_config.image_size,
        num_visual_tokens=config.num_visual_tokens,
        max_length=None,
    )
    input_ids = prompt_ids(config, config.num_visual_tokens)
    attention_mask = torch.ones_like(input_ids)
    first_prompt = compile_first_prompt(model, input_ids) if compile_prefill else None

    runs = []
    for _ in range(repeats):
        timings: dict[str, float] = {}
        t = time.perf_counter()
        frames = processor.load_frames(video)
        timings["decode"] = time.perf_counter() - t
        t = time.perf_counter()
        clip_pixels, videomamba_pixels = processor.preprocess_video(frames)
        clip_pixels, videomamba_pixels = clip_pixels[None].to(dtype), videomamba_pixels[None].to(dtype)
        timings["preprocess"] = time.perf_counter() - t

        clip_timer, videomamba_timer = StageTimer(model.clip), StageTimer(model.videomamba)
        with torch.inference_mode():
            t = time.perf_counter()
            features = model.extract_video_features(clip_pixels, videomamba_pixels)
            encoders = time.perf_counter() - t
            t = time.perf_counter()
            visual_tokens = model.project_video_features(features)
            timings["projectors"] = time.perf_counter() - t
            timer = GenerationTimer()
            model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                visual_tokens=visual_tokens,
                max_new_tokens=new_tokens,
                # All `new_tokens` steps, whatever the random weights pick: no end-of-text token. Not
                # `min_new_tokens`, whose two processors scan the vocabulary each step (1.2 ms at E2B), work a
                # user's answer never does.
                eos_token_id=None,
                do_sample=False,
                streamer=timer,
            )
        clip_timer.remove()
        videomamba_timer.remove()
        timings["clip"] = clip_timer.seconds
        timings["videomamba"] = videomamba_timer.seconds
        timings["keyframes"] = encoders - clip_timer.seconds - videomamba_timer.seconds
        timings["prefill"] = timer.time_to_first_token
        timings["generation"] = timer.step_times[-1] - timer.step_times[1]
        decode_steps = len(timer.step_times) - 2
        timings["tokens_per_second"] = decode_steps / timings["generation"] if decode_steps else float("nan")
        timings["time_to_first_token"] = sum(
            timings[k]
            for k in ("decode", "preprocess", "clip", "keyframes", "videomamba", "projectors", "prefill")
        )
        runs.append(timings)
    # Each stage's median over the runs: on a shared host one run's stages vary by tens of percent, and the
    # median also leaves out a first run's warm-up (numba compiling the scan kernel, allocators settling).
    result: dict[str, Any] = {
        "preset": preset,
        "dtype": str(dtype).removeprefix("torch."),
        "decoder": quantized_method(model) or str(dtype).removeprefix("torch."),
        "prefill_mode": "compiled" if compile_prefill else "eager",
        "first_prefill_seconds": first_prompt,
        "per_layer_embeddings": "disk" if per_layer_on_disk else "memory",
        "decode_bytes_per_step": decode_bytes_per_step(model),
        "prefill_flops": prefill_flops(model, int(input_ids.shape[1])),
        "threads": torch.get_num_threads(),
        "prompt_tokens": int(input_ids.shape[1]),
        "visual_tokens": config.num_visual_tokens,
        "new_tokens": new_tokens,
        "build_seconds": build_seconds,
        "rss_after_build_gib": rss_after_build,
        **{key: statistics.median(run[key] for run in runs) for key in runs[0]},
        "runs": len(runs),
    }
    if compare_gemma_vision:
        result.update(compare_prefill(model, config, dtype))
    result["peak_rss_gib"] = peak_rss_gib()  # before the paired measurement's copy buffers
    if paired_blocks:
        prompt = {"input_ids": input_ids, "attention_mask": attention_mask, "visual_tokens": visual_tokens}
        paired = paired_decode(model, prompt, paired_blocks, new_tokens, result["decode_bytes_per_step"])
        result["paired"] = paired
        result["paired_tokens_per_second"] = paired["tokens_per_second"]
        result["paired_copy_gb_per_s"] = paired["copy_gb_per_s"]
        result["paired_vs_bound"] = paired["bound_over_measured"]
    return result


def compile_first_prompt(model: Any, input_ids: Any) -> float:
    """Seconds of a first prefill of a compiled model (the compile included) on a prompt as long as the
    measured one: a compiled model is measured as a user's second and later prompts run."""
    import torch

    visual = torch.zeros(1, model.config.num_visual_tokens, model.config.hidden_size, dtype=model.dtype)
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), visual_tokens=visual,
            max_new_tokens=1, do_sample=False,
        )  # fmt: skip
    return time.perf_counter() - start


def compare_prefill(model: Any, config: Any, dtype: Any) -> dict[str, Any]:
    """LM prefill on our visual tokens vs on Gemma-3n's own vision path's count for the same frames."""
    import torch

    def prefill_seconds(num_visual: int) -> tuple[float, int]:
        ids = prompt_ids(config, num_visual)
        visual = torch.randn(1, num_visual, config.hidden_size, dtype=dtype)
        with torch.inference_mode():
            t = time.perf_counter()
            model(input_ids=ids, attention_mask=torch.ones_like(ids), visual_tokens=visual, use_cache=True,
                  logits_to_keep=1)  # fmt: skip
            return time.perf_counter() - t, int(ids.shape[1])

    gemma_visual = config.num_frames * GEMMA3N_VISION_TOKENS_PER_FRAME
    ours, ours_length = prefill_seconds(config.num_visual_tokens)
    theirs, theirs_length = prefill_seconds(gemma_visual)
    return {
        "prefill_ours_seconds": ours,
        "prefill_ours_tokens": ours_length,
        "prefill_gemma_vision_seconds": theirs,
        "prefill_gemma_vision_tokens": theirs_length,
        "prefill_gemma_vision_visual_tokens": gemma_visual,
        "prefill_speedup": theirs / ours,
    }


def decode_bytes_per_step(model: Any) -> int:
    """Bytes of weights one decode step reads: the decoder's tensors (quantised ones as the kernel reads
    them) and the LM head, not the two embedding tables (a step looks up one row of each)."""
    from itertools import chain

    from videogemma.modeling.quantization import QuantizedLinear

    text_model = model.language_model.model
    lookups = {id(text_model.embed_tokens), id(text_model.embed_tokens_per_layer)}
    seen, total = set(), 0
    for module in model.language_model.modules():
        if id(module) in lookups:
            continue
        if isinstance(module, QuantizedLinear) and module._scales_and_zeros is not None:
            total += module.qweight.nbytes + module._scales_and_zeros.nbytes
            continue
        for tensor in chain(module.parameters(recurse=False), module.buffers(recurse=False)):
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                total += tensor.nbytes
    return total


def prefill_flops(model: Any, tokens: int) -> float:
    """Multiply-adds × 2 of the decoder's linear layers over `tokens` (attention's T² part left out: its
    sliding window keeps it small) plus the LM head for the one position whose logits are kept."""
    from torch import nn

    from videogemma.modeling.quantization import QuantizedLinear

    weights = sum(
        m.in_features * m.out_features
        for m in model.language_model.model.modules()
        if isinstance(m, nn.Linear | QuantizedLinear)
    )
    head = model.config.text_config.vocab_size * model.config.hidden_size
    return 2.0 * (weights * tokens + head)


def median_seconds(work: Any, runs: int) -> float:
    """The median wall time of `runs` calls of `work`, after one warm-up call."""
    work()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


COPY_BYTES = 2**30  # the bandwidth bound's copy: 1 GiB, far beyond any cache


def copy_gb_per_s(source: Any, target: Any, runs: int) -> float:
    """Bytes read + written per second by `target.copy_(source)`, the median of `runs` after a warm-up."""
    return 2 * source.nbytes / median_seconds(lambda: target.copy_(source), runs) / 1e9


class PairedClock:
    """A generation streamer that times decode steps in blocks and measures the copy bandwidth between two steps
    before and after each block: each block's median step beside what memory did in the same seconds (on a shared
    host the bandwidth swings by 2× from one minute to the next, `measure_bounds`'s samples included)."""

    def __init__(self, block_steps: int, copy_gb_per_s: Any) -> None:
        self.block_steps, self.copy_gb_per_s = block_steps, copy_gb_per_s
        self.calls, self.steps, self.blocks = 0, [], []
        self.copy_before, self.last = 0.0, 0.0

    def put(self, _: Any) -> None:
        now = time.perf_counter()
        self.calls += 1
        if self.calls > 2:  # the prompt, then the first token (the prefill), then the decode steps
            self.steps.append(now - self.last)
        if self.calls == 2 or len(self.steps) == self.block_steps:
            copy = self.copy_gb_per_s()
            if self.steps:
                step = statistics.median(self.steps)
                self.blocks.append({"step_seconds": step, "copy_gb_per_s": max(self.copy_before, copy)})
            self.copy_before, self.steps = copy, []
        self.last = time.perf_counter()

    def end(self) -> None:
        pass


def paired_decode(
    model: Any, prompt: dict[str, Any], blocks: int, block_steps: int, bytes_per_step: int
) -> dict:
    """Decode steps and copy bandwidth measured in turn within one answer: per block of `block_steps` steps, the
    measured step over the bound one (the bytes a step reads at the better of the two bracketing copies'
    bandwidths), as `decode_vs_bound` (bound tokens/s over measured); the median over the blocks."""
    import torch

    source = torch.ones(COPY_BYTES, dtype=torch.uint8)
    target = torch.empty_like(source)
    clock = PairedClock(block_steps, lambda: copy_gb_per_s(source, target, 2))
    with torch.inference_mode():
        model.generate(**prompt, max_new_tokens=blocks * block_steps + 1, eos_token_id=None, do_sample=False,
                       streamer=clock)  # fmt: skip
    for block in clock.blocks:
        block["bound_over_measured"] = block["step_seconds"] / (
            bytes_per_step / (block["copy_gb_per_s"] * 1e9)
        )
    return {
        "blocks": clock.blocks,
        "bound_over_measured": statistics.median(block["bound_over_measured"] for block in clock.blocks),
        "tokens_per_second": 1 / statistics.median(block["step_seconds"] for block in clock.blocks),
        "copy_gb_per_s": statistics.median(block["copy_gb_per_s"] for block in clock.blocks),
    }


def measure_bounds(tokens: int, threads: int | None) -> dict[str, Any]:
    """This CPU's bf16 GEMM throughput at the decoder's MLP shape (tokens × 2048 → 8192) and the bandwidth
    of a 1 GiB copy (bytes read + written per second), medians of a few runs."""
    import torch
    import torch.nn.functional as F

    from videogemma.config import VideoGemmaConfig

    torch.set_num_threads(threads or os.cpu_count() or 1)
    text = VideoGemmaConfig.from_preset("e2b").text_config
    hidden = text.hidden_size
    intermediate = (
        text.intermediate_size[0] if isinstance(text.intermediate_size, list) else text.intermediate_size
    )

    with torch.inference_mode():
        x = torch.randn(tokens, hidden, dtype=torch.bfloat16)
        w = torch.randn(intermediate, hidden, dtype=torch.bfloat16)
        gemm = median_seconds(lambda: F.linear(x, w), 3)
        source = torch.ones(COPY_BYTES, dtype=torch.uint8)
        target = torch.empty_like(source)
        copy = copy_gb_per_s(source, target, 5)
    return {
        "gemm_shape": [tokens, hidden, intermediate],
        "gemm_gflops": 2 * tokens * hidden * intermediate / gemm / 1e9,
        "copy_gb_per_s": copy,
    }


def best_bounds(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The highest GEMM and copy rates among bound samples (what the machine can do: noise only slows it)."""
    return {
        "gemm_shape": samples[0]["gemm_shape"],
        "gemm_gflops": max(sample["gemm_gflops"] for sample in samples),
        "copy_gb_per_s": max(sample["copy_gb_per_s"] for sample in samples),
        "samples": samples,
    }


def write_checkpoint(folder: Path, method: str, lm_head: bool) -> None:
    """The random E2B model (seed 0, bf16 where native) saved to `folder`, its decoder quantised to `method`
    unless it is the dtype's name."""
    import torch

    from videogemma.modeling.quantization import quantize_language_model
    from videogemma.precision import cpu_has_native_bf16, dtype_name

    dtype = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    unquantized = folder.parent / dtype_name(dtype)
    if folder != unquantized and (unquantized / "config.json").is_file():
        # The same weights, read back faster than they are drawn again.
        model = load_saved(unquantized, dtype, per_layer_on_disk=False)
    else:
        model = build_model("e2b", dtype)
    settings = None
    if method in ("int8", "int4"):
        settings = quantize_language_model(model, method, lm_head=lm_head)
    model.save_pretrained(folder, max_shard_size="2GB")
    if settings is not None:
        settings.save(folder)


def add_bounds(result: dict[str, Any], bounds: dict[str, Any]) -> None:
    """The decode and prefill bounds of one measured configuration, and how far from them it ran."""
    result["decode_gb_per_step"] = result["decode_bytes_per_step"] / 1e9
    result["decode_bound_tokens_per_second"] = bounds["copy_gb_per_s"] * 1e9 / result["decode_bytes_per_step"]
    result["decode_vs_bound"] = result["decode_bound_tokens_per_second"] / result["tokens_per_second"]
    result["prefill_bound_seconds"] = result["prefill_flops"] / (bounds["gemm_gflops"] * 1e9)
    result["prefill_vs_bound"] = result["prefill"] / result["prefill_bound_seconds"]


STAGES = ("decode", "preprocess", "clip", "keyframes", "videomamba", "projectors", "prefill", "generation")


def format_results(results: list[dict[str, Any]]) -> str:
    names = [r.get("label", r["preset"]) for r in results]
    lines = [f"{'':<28}" + "".join(f"{n:>14}" for n in names)]

    def row(label: str, key: str, fmt: str) -> None:
        values = [r.get(key) for r in results]
        cells = "".join(f"{'-':>14}" if v is None else f"{format(v, fmt):>14}" for v in values)
        lines.append(f"{label:<28}{cells}")

    row("dtype", "dtype", "s")
    row("decoder weights", "decoder", "s")
    row("per-layer embeddings", "per_layer_embeddings", "s")
    row("prefill", "prefill_mode", "s")
    row("threads", "threads", "d")
    row("prompt tokens (visual)", "prompt_tokens", "d")
    row("visual tokens", "visual_tokens", "d")
    for stage in STAGES:
        row(f"{stage} (s)", stage, ".3f")
    row("new tokens", "new_tokens", "d")
    row("runs (stage medians)", "runs", "d")
    row("decode tokens/s", "tokens_per_second", ".2f")
    row("time to first token (s)", "time_to_first_token", ".3f")
    row("first prefill, compile (s)", "first_prefill_seconds", ".3f")
    row("model build (s)", "build_seconds", ".1f")
    row("peak RSS (GiB)", "peak_rss_gib", ".2f")
    row("weights read / step (GB)", "decode_gb_per_step", ".3f")
    row("decode bound (tokens/s)", "decode_bound_tokens_per_second", ".2f")
    row("  bound / measured", "decode_vs_bound", ".2f")
    row("paired: decode tokens/s", "paired_tokens_per_second", ".2f")
    row("  copy, same seconds (GB/s)", "paired_copy_gb_per_s", ".1f")
    row("  bound / measured", "paired_vs_bound", ".2f")
    row("prefill bound (s)", "prefill_bound_seconds", ".3f")
    row("  measured / bound", "prefill_vs_bound", ".2f")
    row("prefill, ours (s)", "prefill_ours_seconds", ".3f")
    row("  tokens", "prefill_ours_tokens", "d")
    row("prefill, Gemma vision (s)", "prefill_gemma_vision_seconds", ".3f")
    row("  tokens", "prefill_gemma_vision_tokens", "d")
    row("Gemma vision / ours", "prefill_speedup", ".2f")
    return "\n".join(lines)


BATCH_CONFIGS = ((1, 0), (8, 0), (8, 1))  # (batch size, decoding workers)


def batch_throughput(data: Path | None, model_name: str, new_tokens: int) -> list[dict[str, Any]]:
    """`run_batch_inference` on the same samples with each (batch size, workers), side by side.

    Without `data`, a small synthetic dataset (36 clips) is generated in a temporary folder.
    """
    import tempfile

    import torch

    import videogemma
    from videogemma.datasets.synthetic.generate import generate_dataset
    from videogemma.inference.batch import list_samples, run_batch_inference
    from videogemma.inference.generate import GenerationSettings
    from videogemma.inference.records import read_records

    torch.set_num_threads(1)  # the tiny model on one core; the decoding worker takes the other
    model, processor = videogemma.load(model_name)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        if data is None:
            data = Path(folder) / "clips"
            generate_dataset(data, per_variant=2, progress=False)
        samples = list_samples(data)
        predictions = None
        for batch_size, workers in BATCH_CONFIGS:
            out = Path(folder) / f"predictions_{batch_size}_{workers}.jsonl"
            stats = run_batch_inference(
                model, processor, samples, out, batch_size=batch_size, num_workers=workers,
                settings=GenerationSettings(max_new_tokens=new_tokens), show_progress=False,
            )  # fmt: skip
            texts = [record.prediction for record in read_records(out)]
            predictions = predictions or texts
            rows.append(
                {
                    "batch_size": batch_size,
                    "workers": workers,
                    "videos": stats["records"],
                    "wall_time_s": stats["wall_time_s"],
                    "videos_per_second": stats["videos_per_second"],
                    "speedup": stats["videos_per_second"] / rows[0]["videos_per_second"] if rows else 1.0,
                    "same_predictions_as_batch_1": texts == predictions,
                }
            )
    return rows


def format_batch(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'batch':>6}{'workers':>9}{'videos':>8}{'wall (s)':>10}{'videos/s':>10}{'speedup':>9}  same answers"
    ]
    for r in rows:
        lines.append(
            f"{r['batch_size']:>6}{r['workers']:>9}{r['videos']:>8}{r['wall_time_s']:>10.1f}"
            f"{r['videos_per_second']:>10.2f}{r['speedup']:>9.2f}  {r['same_predictions_as_batch_1']}"
        )
    return "\n".join(lines)


def run_worker(arguments: list[str], what: str) -> dict[str, Any]:
    """This script in a fresh process (its own peak memory); the JSON it prints on its RESULT line."""
    completed = subprocess.run(
        [sys.executable, __file__, *arguments], capture_output=True, text=True, check=False
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode or not lines:
        sys.stderr.write(completed.stderr[-4000:])
        raise SystemExit(f"the {what} measurement failed (exit {completed.returncode})")
    return json.loads(lines[-1].removeprefix("RESULT "))


def on_device_results(args: argparse.Namespace) -> list[dict[str, Any]]:
    """E2B saved to disk once per precision, then each loaded and measured in its own process, beside the
    CPU's GEMM and bandwidth bounds measured in the same run."""
    import tempfile

    methods = [m.strip() for m in args.quantize.split(",") if m.strip()]
    root = args.checkpoint_dir or Path(tempfile.mkdtemp(prefix="videogemma_e2b_"))
    common = ["--video", str(args.video), "--new-tokens", str(args.new_tokens), "--no-compare"]
    common += ["--repeats", str(args.e2b_repeats), "--paired-blocks", str(args.paired_blocks)]
    common += ["--threads", str(args.threads)] if args.threads else []
    results = []
    for method in methods:
        folder = root / method
        if not (folder / "config.json").is_file():
            print(f"writing the random E2B model ({method}) to {folder} ...", file=sys.stderr, flush=True)
            extra = ["--quantize-lm-head"] if args.quantize_lm_head else []
            run_worker(["--write-checkpoint", str(folder), "--method", method, *extra], f"{method} writing")
    modes = ["eager", "compiled"] if args.compile_prefill else ["eager"]
    threads = ["--threads", str(args.threads)] if args.threads else []
    samples = []
    for method in methods:
        for mode in modes:
            label = f"e2b {method}" + (" c" if mode == "compiled" else "")
            print(f"measuring {label} ({args.per_layer_embeddings}) ...", file=sys.stderr, flush=True)
            extra = ["--compile-prefill"] if mode == "compiled" else []
            result = run_worker(
                ["--worker", "e2b", "--model-dir", str(root / method),
                 "--per-layer-embeddings", args.per_layer_embeddings, *common, *extra],
                label,
            )  # fmt: skip
            result["label"] = label
            results.append(result)
            # The bounds after each configuration, the best kept: on a shared host one sample can land in a
            # slow minute (a GEMM bound 40 % low was seen), which would flatter every ratio.
            samples.append(run_worker(["--bounds", str(result["prompt_tokens"]), *threads], "bounds"))
    bounds = best_bounds(samples)
    for result in results:
        add_bounds(result, bounds)
        result["bounds"] = bounds
    gemm, copy = ([sample[key] for sample in samples] for key in ("gemm_gflops", "copy_gb_per_s"))
    print(
        f"bounds, the best of {len(samples)} samples (one after each configuration): bf16 GEMM "
        f"{bounds['gemm_shape']} {bounds['gemm_gflops']:.0f} GFLOP/s (samples {min(gemm):.0f}-{max(gemm):.0f}), "
        f"1 GiB copy {bounds['copy_gb_per_s']:.1f} GB/s read + written (samples {min(copy):.1f}-{max(copy):.1f}); "
        f"load {os.getloadavg()[0]:.2f}",
        file=sys.stderr,
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--video", type=Path, default=REAL_CLIP, help="the video to answer (default: real clip)"
    )
    parser.add_argument("--e2b", action="store_true", help="also the E2B dimensions (minutes, ~10 GB RAM)")
    parser.add_argument(
        "--quantize",
        default=None,
        help="with --e2b: precisions of the decoder side by side, e.g. bfloat16,int8,int4; each is saved to "
        "disk once (--checkpoint-dir) and loaded from there, as a user loads an exported model",
    )
    parser.add_argument("--quantize-lm-head", action="store_true", help="quantise the LM head too")
    parser.add_argument(
        "--per-layer-embeddings",
        choices=("memory", "disk"),
        default="disk",
        help="with --quantize: the per-layer table memory-mapped (disk) or loaded (memory)",
    )
    parser.add_argument(
        "--compile-prefill",
        action="store_true",
        help="with --quantize: each precision also with the prefill compiled (column 'c'), side by side",
    )
    parser.add_argument(
        "--checkpoint-dir", type=Path, default=None, help="where --quantize writes (and reuses) the models"
    )
    parser.add_argument(
        "--paired-blocks",
        type=int,
        default=4,
        help="with --quantize: after the runs, one more answer of this many blocks of --new-tokens steps, the copy "
        "bandwidth measured between blocks: the decode bound from the same seconds (0: skip)",
    )
    parser.add_argument("--new-tokens", type=int, default=8, help="tokens generated per answer")
    parser.add_argument(
        "--tiny-repeats", type=int, default=3, help="tiny runs (each stage's median reported)"
    )
    parser.add_argument(
        "--e2b-repeats", type=int, default=1, help="runs per E2B configuration (each stage's median reported)"
    )
    parser.add_argument("--no-compare", action="store_true", help="skip the Gemma-vision prefill comparison")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: tiny 1, e2b all cores)"
    )
    parser.add_argument(
        "--batch",
        action="store_true",
        help="also batch-inference throughput by batch size and decoding workers",
    )
    parser.add_argument(
        "--batch-data", type=Path, default=None, help="split file or video folder for --batch"
    )
    parser.add_argument("--batch-model", default="tiny", help="model for --batch (preset, saved model, run)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    # Internal: one measurement in this process, printed as JSON.
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--write-checkpoint", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--method", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bounds", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.write_checkpoint:
        write_checkpoint(args.write_checkpoint, args.method, args.quantize_lm_head)
        print("RESULT {}")
        return
    if args.bounds:
        print("RESULT " + json.dumps(measure_bounds(args.bounds, args.threads)))
        return
    if args.worker:
        result = measure(
            args.worker, args.video, args.new_tokens, args.repeats, not args.no_compare, threads=args.threads,
            model_dir=args.model_dir, per_layer_on_disk=args.per_layer_embeddings == "disk",
            compile_prefill=args.compile_prefill, paired_blocks=args.paired_blocks,
        )  # fmt: skip
        print("RESULT " + json.dumps(result))
        return

    results = []
    # E2B runs once unless asked: a run is minutes of prefill; its first-call overheads are small next to it.
    jobs = [("tiny", args.tiny_repeats)] + (
        [("e2b", args.e2b_repeats)] if args.e2b and not args.quantize else []
    )
    for preset, repeats in jobs:
        print(f"measuring {preset} ...", file=sys.stderr, flush=True)
        command = ["--worker", preset, "--video", str(args.video), "--new-tokens", str(args.new_tokens),
                   "--repeats", str(repeats), "--per-layer-embeddings", "memory", "--paired-blocks", "0"]  # fmt: skip
        if args.no_compare:
            command.append("--no-compare")
        if args.threads:
            command += ["--threads", str(args.threads)]
        results.append(run_worker(command, preset))
    if args.e2b and args.quantize:
        results += on_device_results(args)
    print(format_results(results))
    output: dict[str, Any] = {"per_video": results}
    if args.batch:
        print("measuring batch inference ...", file=sys.stderr, flush=True)
        output["batch"] = batch_throughput(args.batch_data, args.batch_model, max(args.new_tokens, 32))
        print(format_batch(output["batch"]))
    if args.out:
        args.out.write_text(json.dumps(output, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
