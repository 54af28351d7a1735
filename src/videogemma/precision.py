"""Devices and dtypes: which ones a run or a load picks by default, and names for them.

The rule, once for training and inference:

- device: CUDA when available, else the CPU;
- dtype: bfloat16 where the hardware computes it natively (CUDA devices that support bf16; CPUs with
  AVX512-BF16 or AMX-BF16), else float32. fp16 is only ever used when asked for (Gemma overflows in fp16).

`VIDEOGEMMA_CPU_BF16` (`auto` | `0` | `1`) overrides the CPU detection, so that a test suite or a benchmark
behaves the same on every CPU (the tests pin `0`).

Training keeps what it trains in fp32 (LoRA and the projectors: master weights) and builds the frozen base in
the run's dtype (`model.dtype`, `auto` = the dtype of the training precision). VideoMamba's SSM parameters
(A_log, D, Δ bias) stay fp32 in every dtype (`modeling.videomamba.KEEP_IN_FP32`).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Names a config or the command line gives a dtype (torch's attribute names), and "auto".
AUTO = "auto"
DTYPE_NAMES = ("float32", "bfloat16", "float16")
DTYPE_CHOICES = (AUTO, *DTYPE_NAMES)
# Training precision (TrainingArguments' flags) ↔ the dtype its autocast computes in.
PRECISION_CHOICES = (AUTO, "bf16", "fp16", "fp32")
PRECISION_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
CPU_BF16_ENV = "VIDEOGEMMA_CPU_BF16"
# CPU features with native bf16 arithmetic (torch.cpu.get_capabilities keys, /proc/cpuinfo flags; "bf16" is
# the Arm feature).
NATIVE_BF16_CPU_FEATURES = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (or what `VIDEOGEMMA_CPU_BF16` says)."""
    setting = os.environ.get(CPU_BF16_ENV, AUTO).strip().lower()
    if setting in ("0", "1"):
        return setting == "1"
    if setting != AUTO:
        raise ValueError(f"{CPU_BF16_ENV}={setting!r}: expected auto, 0 or 1")
    return _detect_cpu_bf16()


@functools.cache
def _detect_cpu_bf16() -> bool:
    found = _torch_cpu_capabilities()
    if found is not None:
        return any(bool(found.get(feature)) for feature in NATIVE_BF16_CPU_FEATURES)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return bool(set(line.split(":", 1)[1].split()) & set(NATIVE_BF16_CPU_FEATURES))
    except OSError:
        pass
    return False


@functools.cache
def cpu_has_bf16_tiles() -> bool:
    """Whether this CPU multiplies bf16 matrices on AMX tiles (torch's GEMM and flash-attention kernels use them)."""
    found = _torch_cpu_capabilities()
    return found is not None and bool(found.get("amx_bf16"))


def _torch_cpu_capabilities() -> dict | None:
    """torch's CPU feature flags (`torch.cpu.get_capabilities`), or None where this torch has no such call."""
    import torch

    capabilities = getattr(torch.cpu, "get_capabilities", None)
    return None if capabilities is None else capabilities()


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: torch.device | str | None) -> torch.device:
    """`None` / "auto" → the default device; anything else as `torch.device` reads it."""
    import torch

    if device is None or device == AUTO:
        return default_device()
    return torch.device(device)


def has_native_bf16(device: torch.device | str) -> bool:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def auto_dtype_name(device: torch.device | str) -> str:
    """The default dtype on `device`: bfloat16 where it is native, else float32."""
    return "bfloat16" if has_native_bf16(device) else "float32"


def dtype_from_name(name: str | torch.dtype) -> torch.dtype:
    import torch

    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPE_CHOICES)}")
    return getattr(torch, name)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device | str) -> torch.dtype:
    """`None` / "auto" → the default dtype on `device`; a name or a torch dtype as given."""
    if dtype is None or dtype == AUTO:
        return dtype_from_name(auto_dtype_name(device))
    return dtype_from_name(dtype)


def training_device() -> torch.device:
    """Where the Trainer puts the model: CUDA when available (`use_cpu` otherwise)."""
    return default_device()


def resolve_precision(precision: str) -> str:
    """ "auto" → bf16 where the training device computes it natively, else fp32; others as given."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISION_CHOICES)}")
    if precision == AUTO:
        return "bf16" if has_native_bf16(training_device()) else "fp32"
    return precision


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Floating tensors created inside are `dtype` (a model built here needs no fp32 copy first)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def describe(device: torch.device, dtype: torch.dtype, picked: bool, **more: Any) -> str:
    """One line saying what a load chose, e.g. `videogemma: model on cuda in bfloat16 (auto: native bf16 on
    cuda), attention sdpa`; `picked`: the device and dtype were chosen by the defaults."""
    import torch

    reason = ""
    if picked:
        native = "native bf16" if has_native_bf16(device) else "no native bf16"
        reason = f" (auto: {native} on {torch.device(device).type})"
    extra = "".join(f", {key} {value}" for key, value in more.items() if value is not None)
    return f"videogemma: model on {device} in {dtype_name(dtype)}{reason}{extra}"
