"""VideoMamba-M forward on CPU: the whole encoder against the same encoder with the scan made free.

One 8-frame 224-pixel clip, random weights, eval, no grad, fp32. "identity" replaces the selective scan
(the recurrence, Δ's softplus and the D skip) by `y = u`; everything else (patch embed, projections, convs,
norms, gating) stays. The ratio says how much the scan costs on top of the dense work.
Target: full / identity ≤ 2×.

    python benchmarks/videomamba.py [--repeats 3] [--quick] [--threads 2] [--backend auto]

`--quick` runs 4 of the 32 blocks (same shapes, same per-block ratio) once. The two variants alternate
(so that machine load hits both alike); the best times are shown.
"""

from __future__ import annotations

import argparse
import os
import time
from unittest import mock

import torch

from videogemma.config import VideoMambaConfig
from videogemma.modeling import videomamba as videomamba_module
from videogemma.modeling.videomamba import VideoMamba

TARGET_RATIO = 2.0


def identity_scan(u: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return u


def time_forward(model: VideoMamba, frames: torch.Tensor, identity: bool) -> float:
    with (
        torch.no_grad(),
        mock.patch.object(
            videomamba_module,
            "selective_scan",
            identity_scan if identity else videomamba_module.selective_scan,
        ),
    ):
        start = time.perf_counter()
        model(frames)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 blocks instead of 32, two repeats")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="auto", help="selective-scan backend (default: auto)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    depth, repeats = (4, 2) if args.quick else (32, args.repeats)
    config = VideoMambaConfig(depth=depth, scan_backend=args.backend)
    torch.manual_seed(0)
    model = VideoMamba(config).eval()
    frames = torch.randn(1, config.num_frames, 3, config.image_size, config.image_size)
    tokens = 1 + config.num_frames * config.grid_size**2
    print(
        f"VideoMamba-M ({depth} blocks), 1 clip of {config.num_frames} frames at {config.image_size} px "
        f"({tokens} tokens), fp32, eval, no grad, {args.threads} threads, scan backend {args.backend!r}"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min)")
    time_forward(model, frames, identity=False)  # warm-up (numba cache load)
    time_forward(model, frames, identity=True)

    seconds: dict[str, list[float]] = {"full": [], "identity": []}
    for _ in range(repeats):
        seconds["full"].append(time_forward(model, frames, identity=False))
        seconds["identity"].append(time_forward(model, frames, identity=True))
    full, identity = (min(seconds[k]) for k in ("full", "identity"))
    scans = 2 * depth
    print(f"\n{'variant':<10} {'seconds':>9}")
    print(f"{'full':<10} {full:9.2f}")
    print(f"{'identity':<10} {identity:9.2f}")
    print(
        f"scan share: {full - identity:.2f} s for {scans} scans = {1e3 * (full - identity) / scans:.1f} ms per scan"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")
    ratio = full / identity
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"target full / identity ≤ {TARGET_RATIO:.0f}×: {ratio:.2f}× {verdict}")


if __name__ == "__main__":
    main()
