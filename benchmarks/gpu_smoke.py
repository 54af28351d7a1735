"""A prepared check of the GPU paths: under 8 minutes on one GPU, random weights at real shapes, no downloads.

    python benchmarks/gpu_smoke.py --out gpu_smoke.json      # on a GPU machine
    python benchmarks/gpu_smoke.py --cpu --out smoke.json    # what a CPU can run, at tiny shapes

One PASS / FAIL / SKIP line per part, and a JSON of every figure (`--out`):

  scan     the selective-scan backends on CUDA at VideoMamba-M's shape (batch 1, d_inner 1152, d_state 16,
           L 1569): the auto choice, chunked and (when its kernels load) mamba_ssm against the reference,
           forward and gradients; the numba backend refused on CUDA
  train    the tiny preset trained a few bf16 steps on synthetic clips (finite losses; base bf16, LoRA and
           projectors saved in fp32)
  greedy   that run's batched greedy answers equal the one-by-one answers (fp32: must be equal; bf16: the
           share that agrees is reported)
  memory   peak memory of one training step per batch size, bf16 vs fp32 base, at E2B dims (30 layers,
           `benchmarks/memory.py`), with the analytic estimate beside it
  zero3    a training run through DeepSpeed ZeRO-3 on one process, every parameter partitioned
  decode   prefill time (2402 visual + 40 text tokens) and greedy decode tokens/s at E2B dims, bf16

With `--cpu` the CUDA-only parts are skipped and the others run at tiny shapes (scan at d_inner 64, L 300).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

BENCHMARKS = Path(__file__).resolve().parent
PROJECT = BENCHMARKS.parent
sys.path.insert(0, str(BENCHMARKS))
# Scan agreement with the reference in fp32: |a - b| ≤ SCAN_TOLERANCE × max |b| (the tests' bound).
SCAN_TOLERANCE = 1e-4
DECODE_TOKENS = 64
MEMORY_BATCH_SIZES = (1, 2, 4, 8)


class Skip(Exception):
    """A part that cannot run here (the reason is printed)."""


# ---- parts --------------------------------------------------------------------------------------------------


def part_scan(device: torch.device, work: Path) -> dict[str, Any]:
    from videogemma.modeling.selective_scan import mamba_ssm_available, resolve_backend

    cuda = device.type == "cuda"
    d_inner, d_state, length = (1152, 16, 1569) if cuda else (64, 8, 300)
    inputs = _scan_inputs(d_inner, d_state, length, device)
    reference_y, reference_grads, reference_s = _scan_with_grads(inputs, "reference")
    expected_auto = ("mamba_ssm" if mamba_ssm_available() else "chunked") if cuda else "cpu"
    figures: dict[str, Any] = {
        "shape": [1, d_inner, d_state, length],
        "auto": resolve_backend("auto", device),
    }
    figures["reference_s"] = reference_s
    candidates = [
        "chunked",
        *(["mamba_ssm"] if cuda and mamba_ssm_available() else []),
        *([] if cuda else ["cpu"]),
    ]
    failures = []
    if figures["auto"] != expected_auto:
        failures.append(f"auto chose {figures['auto']}, expected {expected_auto}")
    for backend in candidates:
        y, grads, seconds = _scan_with_grads(inputs, backend)
        errors = {"y": _scaled_error(y, reference_y)}
        errors.update({f"grad_{k}": _scaled_error(v, reference_grads[k]) for k, v in grads.items()})
        worst = max(errors.values())
        figures[backend] = {"seconds_forward_backward": seconds, "max_scaled_error": worst}
        if worst > SCAN_TOLERANCE:
            failures.append(f"{backend} differs from the reference by {worst:.2e}")
    try:
        resolve_backend("cpu", torch.device("cuda"))
        failures.append("the numba backend was accepted for CUDA tensors")
    except ValueError as error:
        figures["numba_on_cuda"] = f"refused: {error}"
    if failures:
        raise AssertionError("; ".join(failures))
    return figures


def _scan_inputs(d_inner: int, d_state: int, length: int, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = dict(
        u=torch.randn(1, d_inner, length, generator=generator),
        delta=torch.randn(1, d_inner, length, generator=generator) - 2.0,
        A=-torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1),
        B=torch.randn(1, d_state, length, generator=generator),
        C=torch.randn(1, d_state, length, generator=generator),
        D=torch.ones(d_inner),
        delta_bias=0.1 * torch.randn(d_inner, generator=generator),
    )
    return {name: tensor.to(device) for name, tensor in inputs.items()}


def _scan_with_grads(inputs: dict[str, torch.Tensor], backend: str) -> tuple[Any, dict[str, Any], float]:
    from videogemma.modeling.selective_scan import selective_scan

    leaves = {name: tensor.clone().requires_grad_() for name, tensor in inputs.items()}
    start = time.perf_counter()
    y = selective_scan(**leaves, backend=backend)
    weights = torch.linspace(-1.0, 2.0, y.numel(), device=y.device).reshape(y.shape)
    (y * weights).sum().backward()
    _synchronize()
    return y.detach(), {name: t.grad for name, t in leaves.items()}, time.perf_counter() - start


def _scaled_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max().clamp(min=1.0))


def part_train(device: torch.device, work: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    from videogemma.train.run import run_training
    from videogemma.train.train_config import load_train_config

    dataset = _synthetic_dataset(work)
    config_path = _tiny_config(work, dataset, "train", precision="bf16", max_steps=4)
    start = time.perf_counter()
    run_dir = run_training(load_train_config(config_path))
    seconds = time.perf_counter() - start
    losses = [e["loss"] for e in _jsonl(run_dir / "metrics.jsonl") if "loss" in e]
    saved = {
        name: tensor.dtype
        for name, tensor in load_file(run_dir / "adapter" / "adapter_model.safetensors").items()
    }
    projectors = {t.dtype for t in load_file(run_dir / "projectors.safetensors").values()}
    import yaml

    base_dtype = yaml.safe_load((run_dir / "train_config.yaml").read_text())["model"]["dtype"]
    figures = {"losses": losses, "seconds": seconds, "base_dtype": base_dtype, "run_dir": str(run_dir)}
    if not losses or not all(torch.isfinite(torch.tensor(losses))):
        raise AssertionError(f"non-finite or missing losses {losses}")
    if set(saved.values()) != {torch.float32} or projectors != {torch.float32} or base_dtype != "bfloat16":
        raise AssertionError(
            f"dtypes: base {base_dtype}, adapter {set(saved.values())}, projectors {projectors}"
        )
    return figures


def part_greedy(device: torch.device, work: Path) -> dict[str, Any]:
    from videogemma.inference.batch import list_samples
    from videogemma.inference.generate import GenerationSettings, generate_answers
    from videogemma.loading import load_run

    run_dir = work / "train"
    if not (run_dir / "adapter").is_dir():
        raise Skip("needs the `train` part's run")
    samples = [s for s in list_samples(work / "data" / "qved_test.json") if s.error is None][:4]
    figures: dict[str, Any] = {"samples": len(samples)}
    for dtype in (torch.float32, torch.bfloat16):
        model, processor = load_run(run_dir, dtype, device)
        settings = GenerationSettings(max_new_tokens=16)
        encoded = [
            processor.process_sample(s.video, s.conversation, add_generation_prompt=True) for s in samples
        ]
        batch = processor.collate(encoded, padding_side="left", return_labels=False)
        batched = [a.text for a in generate_answers(model, processor, batch, settings)]
        single = [
            generate_answers(model, processor, processor.collate([e], padding_side="left", return_labels=False),
                             settings)[0].text
            for e in encoded
        ]  # fmt: skip
        figures[str(dtype)] = {"agree": sum(a == b for a, b in zip(batched, single)), "of": len(samples)}
        if dtype == torch.float32 and batched != single:
            raise AssertionError(f"fp32 batched {batched} != one-by-one {single}")
    return figures


def part_memory(device: torch.device, work: Path) -> dict[str, Any]:
    if device.type != "cuda":
        raise Skip("E2B dims need a GPU here; benchmarks/memory.py measures reduced layer counts on a CPU")
    import memory

    figures: dict[str, Any] = {}
    for precision in ("bf16", "fp32-base"):
        shapes = [
            memory.Shape(layers=memory.E2B_LAYERS, batch=b, precision=precision) for b in MEMORY_BATCH_SIZES
        ]
        for row in memory.measure_batches(shapes):
            figures[f"{precision} batch {row['batch']}"] = row
    slower = [b for b in MEMORY_BATCH_SIZES
              if figures[f"bf16 batch {b}"].get("peak_gib", 1e9) >= figures[f"fp32-base batch {b}"].get("peak_gib", 0)]  # fmt: skip
    failed = [key for key, row in figures.items() if "error" in row and row["precision"] == "bf16"]
    if failed or slower:
        raise AssertionError(f"bf16 steps failed: {failed}; bf16 not below the fp32 base at batches {slower}")
    return figures


def part_zero3(device: torch.device, work: Path) -> dict[str, Any]:
    if not _deepspeed_available():
        raise Skip("DeepSpeed is not installed (pip install -e '.[deepspeed]')")
    dataset = _synthetic_dataset(work)
    zero3 = json.loads((PROJECT / "src" / "videogemma" / "configs" / "deepspeed" / "zero3.json").read_text())
    zero3["zero_optimization"].update(stage3_param_persistence_threshold=0, stage3_max_live_parameters=0,
                                      stage3_max_reuse_distance=0, stage3_prefetch_bucket_size=0)  # fmt: skip
    (work / "zero3.json").write_text(json.dumps(zero3))
    precision = "bf16" if device.type == "cuda" else "fp32"
    # On a CPU, DeepSpeed runs through the gloo set-up of `train.run`, which wants two processes.
    processes = 1 if device.type == "cuda" else 2
    config_path = _tiny_config(work, dataset, "zero3", precision=precision, max_steps=2, deepspeed=str(work / "zero3.json"),
                               per_device_train_batch_size=1, effective_batch_size=processes)  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
               "29571", "-m", "videogemma.cli", "train", "--config", str(config_path)]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_env())
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise AssertionError(result.stderr[-2000:])
    run_dir = work / "zero3"
    losses = [e["loss"] for e in _jsonl(run_dir / "metrics.jsonl") if "loss" in e]
    if not losses or not all(torch.isfinite(torch.tensor(losses))):
        raise AssertionError(f"losses {losses}")
    return {"processes": processes, "precision": precision, "losses": losses, "seconds": seconds}


def part_decode(device: torch.device, work: Path) -> dict[str, Any]:
    from videogemma.config import VideoGemmaConfig
    from videogemma.modeling.modeling_videogemma import VideoGemmaForConditionalGeneration
    from videogemma.precision import default_dtype, resolve_dtype

    preset = "e2b" if device.type == "cuda" else "tiny"
    dtype = torch.bfloat16 if device.type == "cuda" else resolve_dtype("auto", device)
    config = VideoGemmaConfig.from_preset(preset)
    start = time.perf_counter()
    with torch.device(device), default_dtype(dtype):  # random weights: built where they run
        model = VideoGemmaForConditionalGeneration(config).eval()
    build_s = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(3, config.text_config.vocab_size_per_layer_input, (1, 40), generator=generator)
    ids = torch.cat(
        [text[:, :4], torch.full((1, config.num_visual_tokens), config.image_token_id), text[:, 4:]], 1
    )
    ids = ids.to(device)
    visual = torch.randn(1, config.num_visual_tokens, config.hidden_size, device=device, dtype=dtype)
    with torch.inference_mode():
        model(ids, visual_tokens=visual, use_cache=True)  # warm-up (kernels, allocator)
        _synchronize()
        start = time.perf_counter()
        model(ids, visual_tokens=visual, use_cache=True)
        _synchronize()
        prefill_s = time.perf_counter() - start
        start = time.perf_counter()
        out = model.generate(ids, visual_tokens=visual, max_new_tokens=DECODE_TOKENS, min_new_tokens=DECODE_TOKENS,
                             do_sample=False)  # fmt: skip
        _synchronize()
        total_s = time.perf_counter() - start
    new_tokens = out.shape[1] - ids.shape[1]
    decode_s = max(total_s - prefill_s, 1e-9)
    return {"preset": preset, "dtype": str(dtype), "prompt_tokens": ids.shape[1], "build_s": build_s,
            "prefill_s": prefill_s, "new_tokens": new_tokens, "decode_tokens_per_s": (new_tokens - 1) / decode_s}  # fmt: skip


PARTS: dict[str, Callable[[torch.device, Path], dict[str, Any]]] = {
    "scan": part_scan,
    "train": part_train,
    "greedy": part_greedy,
    "memory": part_memory,
    "zero3": part_zero3,
    "decode": part_decode,
}


# ---- helpers ------------------------------------------------------------------------------------------------


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _deepspeed_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(PROJECT / "src"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def _synthetic_dataset(work: Path) -> Path:
    root = work / "data"
    if not (root / "qved_train.json").is_file():
        from videogemma.datasets.qved.prepare import prepare_splits
        from videogemma.datasets.synthetic.generate import generate_dataset

        generate_dataset(root, per_variant=1, seed=0, size=32, num_frames=8, fps=8.0, progress=False)
        prepare_splits(root)
    return root


def _tiny_config(work: Path, dataset: Path, name: str, **changes: Any) -> Path:
    import yaml

    config = {
        "stage": "finetune",
        "output_dir": str(work / name),
        "model": {"preset": "tiny"},
        "data": {"train_file": str(dataset / "qved_train.json"), "val_file": str(dataset / "qved_val.json")},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "learning_rate": 1e-3,
        "projector_learning_rate": 5e-4,
        "per_device_train_batch_size": 2,
        "effective_batch_size": 2,
        "eval_steps": 2,
        "gradient_checkpointing": True,
        "feature_cache_dir": str(work / f"{name}_cache"),
        "plots": False,
        **changes,
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU at tiny shapes; CUDA parts skip")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--out", type=Path, default=None, help="JSON of the figures")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="parts not started by then are skipped")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device here: run with --cpu for the CPU-runnable parts", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_smoke_"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"device": _device_name(device), "torch": torch.__version__, "parts": {}}
    failed = False
    began = time.perf_counter()
    for name in args.parts:
        start = time.perf_counter()
        try:
            if start - began > args.budget_s:
                raise Skip(f"the {args.budget_s:.0f} s budget was spent before this part")
            figures, status = PARTS[name](device, work), "PASS"
        except Skip as reason:
            figures, status = {"reason": str(reason)}, "SKIP"
        except Exception as error:  # a failing part is reported, the others still run
            figures, status = (
                {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()},
                "FAIL",
            )
            failed = True
        figures["part_seconds"] = time.perf_counter() - start
        report["parts"][name] = {"status": status, **figures}
        print(
            f"{status} {name} ({figures['part_seconds']:.0f} s): {_summary(name, status, figures)}",
            flush=True,
        )
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 1 if failed else 0


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"


def _summary(name: str, status: str, figures: dict[str, Any]) -> str:
    if status != "PASS":
        return str(figures.get("reason") or figures.get("error", "")).splitlines()[0][:300]
    if name == "scan":
        return ", ".join(
            f"{k} {v['max_scaled_error']:.1e}" for k, v in figures.items() if isinstance(v, dict)
        ) + (f"; auto {figures['auto']}")
    if name == "train":
        return f"losses {[round(x, 3) for x in figures['losses']]}, base {figures['base_dtype']}"
    if name == "greedy":
        return ", ".join(
            f"{k}: {v['agree']}/{v['of']} equal" for k, v in figures.items() if isinstance(v, dict)
        )
    if name == "memory":
        return "; ".join(
            f"{k} {v.get('peak_gib', float('nan')):.1f} GiB"
            for k, v in figures.items()
            if isinstance(v, dict)
        )
    if name == "zero3":
        return f"{figures['processes']} process(es), {figures['precision']}, losses {figures['losses']}"
    if name == "decode":
        return (f"{figures['preset']} {figures['dtype']}: prefill {figures['prompt_tokens']} tokens in "
                f"{figures['prefill_s'] * 1000:.0f} ms, decode {figures['decode_tokens_per_s']:.1f} tokens/s")  # fmt: skip
    return ""


if __name__ == "__main__":
    sys.exit(main())
