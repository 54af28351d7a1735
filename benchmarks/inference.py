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


def measure(
    preset: str,
    video: Path,
    new_tokens: int,
    repeats: int,
    compare_gemma_vision: bool,
    threads: int | None = None,
) -> dict[str, Any]:
    import torch

    # The tiny preset's matrices are too small to split between threads (a second one only adds
    # synchronisation); E2B's use every core.
    torch.set_num_threads(threads or (1 if preset == "tiny" else os.cpu_count() or 1))

    from videogemma.inference.timing import GenerationTimer
    from videogemma.precision import cpu_has_native_bf16
    from videogemma.processing.processor import VideoGemmaProcessor

    dtype = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    start = time.perf_counter()
    model = build_model(preset, dtype)
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
                min_new_tokens=new_tokens,
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
    # The last run: earlier ones warm up (numba compiles the scan kernel, allocators settle).
    result: dict[str, Any] = {
        "preset": preset,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "prompt_tokens": int(input_ids.shape[1]),
        "visual_tokens": config.num_visual_tokens,
        "new_tokens": new_tokens,
        "build_seconds": build_seconds,
        "rss_after_build_gib": rss_after_build,
        **runs[-1],
    }
    if compare_gemma_vision:
        result.update(compare_prefill(model, config, dtype))
    result["peak_rss_gib"] = peak_rss_gib()
    return result


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


STAGES = ("decode", "preprocess", "clip", "keyframes", "videomamba", "projectors", "prefill", "generation")


def format_results(results: list[dict[str, Any]]) -> str:
    names = [r["preset"] for r in results]
    lines = [f"{'':<28}" + "".join(f"{n:>14}" for n in names)]

    def row(label: str, key: str, fmt: str) -> None:
        values = [r.get(key) for r in results]
        cells = "".join(f"{'-':>14}" if v is None else f"{format(v, fmt):>14}" for v in values)
        lines.append(f"{label:<28}{cells}")

    row("dtype", "dtype", "s")
    row("threads", "threads", "d")
    row("prompt tokens (visual)", "prompt_tokens", "d")
    row("visual tokens", "visual_tokens", "d")
    for stage in STAGES:
        row(f"{stage} (s)", stage, ".3f")
    row("new tokens", "new_tokens", "d")
    row("decode tokens/s", "tokens_per_second", ".2f")
    row("time to first token (s)", "time_to_first_token", ".3f")
    row("model build (s)", "build_seconds", ".1f")
    row("peak RSS (GiB)", "peak_rss_gib", ".2f")
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--video", type=Path, default=REAL_CLIP, help="the video to answer (default: real clip)"
    )
    parser.add_argument("--e2b", action="store_true", help="also the E2B dimensions (minutes, ~10 GB RAM)")
    parser.add_argument("--new-tokens", type=int, default=8, help="tokens generated per answer")
    parser.add_argument("--tiny-repeats", type=int, default=3, help="tiny runs (the last is reported)")
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
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: measure one preset, print JSON
    parser.add_argument("--repeats", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = measure(
            args.worker, args.video, args.new_tokens, args.repeats, not args.no_compare, threads=args.threads
        )
        print("RESULT " + json.dumps(result))
        return

    results = []
    # E2B runs once: a warm-up would double minutes of prefill; its first-call overheads are small next to it.
    jobs = [("tiny", args.tiny_repeats)] + ([("e2b", 1)] if args.e2b else [])
    for preset, repeats in jobs:
        print(f"measuring {preset} ...", file=sys.stderr, flush=True)
        command = [sys.executable, __file__, "--worker", preset, "--video", str(args.video),
                   "--new-tokens", str(args.new_tokens), "--repeats", str(repeats)]  # fmt: skip
        if args.no_compare:
            command.append("--no-compare")
        if args.threads:
            command += ["--threads", str(args.threads)]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
        if completed.returncode or not lines:
            sys.stderr.write(completed.stderr[-4000:])
            raise SystemExit(f"the {preset} measurement failed (exit {completed.returncode})")
        results.append(json.loads(lines[-1].removeprefix("RESULT ")))
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
