"""Where the encoders' time goes on the CPU at E2B dimensions: CLIP on every frame and VideoMamba on the
keyframes, random weights, eval, no grad, in each dtype given (side by side in one run), with the top
operators of torch.profiler (self CPU time).

    python benchmarks/encoder_profile.py [--dtypes float32,bfloat16] [--top 12] [--threads 2]

The wall time is the median of --repeats runs after a warm-up (numba compiles the scan kernel once).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from videogemma.config import VideoGemmaConfig
from videogemma.modeling.clip_encoder import CLIPFrameEncoder
from videogemma.modeling.videomamba import VideoMamba
from videogemma.precision import default_dtype, dtype_from_name


def build(dtype: torch.dtype) -> tuple[dict[str, torch.nn.Module], dict[str, torch.Tensor]]:
    config = VideoGemmaConfig.from_preset("e2b")
    torch.manual_seed(0)
    with default_dtype(dtype):
        encoders = {
            "clip": CLIPFrameEncoder(config.vision_config, config.clip_select_layer).eval(),
            "videomamba": VideoMamba(config.videomamba_config).eval(),
        }
    vm = config.videomamba_config
    size = config.vision_config.image_size
    inputs = {
        "clip": torch.randn(1, config.num_frames, 3, size, size),
        "videomamba": torch.randn(1, vm.num_frames, vm.in_channels, vm.image_size, vm.image_size),
    }
    return encoders, inputs


def measure(
    name: str, module: torch.nn.Module, pixels: torch.Tensor, repeats: int, top: int
) -> dict[str, Any]:
    with torch.inference_mode():
        module(pixels)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            module(pixels)
            times.append(time.perf_counter() - start)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            module(pixels)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
    return {"seconds": statistics.median(times), "table": table}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    summary = []
    for dtype_name in args.dtypes.split(","):
        encoders, inputs = build(dtype_from_name(dtype_name))
        for name, module in encoders.items():
            result = measure(name, module, inputs[name], args.repeats, args.top)
            summary.append((name, dtype_name, result["seconds"]))
            print(f"==== {name} in {dtype_name}: {result['seconds']:.3f} s (median of {args.repeats})")
            print(result["table"])
        del encoders
    print(f"load average {os.getloadavg()[0]:.2f}, threads {torch.get_num_threads()}")
    for name, dtype_name, seconds in summary:
        print(f"{name:<12}{dtype_name:<10}{seconds:8.3f} s")


if __name__ == "__main__":
    main()
