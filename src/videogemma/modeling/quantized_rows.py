"""A decode step's few rows times an int8, int4 or bf16 weight (and a prefill's int4 dequantisation) on x86
CPUs with AVX-512: C kernels of our own (`quantized_rows.c`), compiled with the system's C compiler at first use
and loaded through ctypes. The same library holds the decode step's attention over the cache (its two halves,
called from `decode_attention.py`, which says why), Gemma-3n's RMSNorm (`row_norms.py`), AltUp for one
position (`altup_predict.py`) and the element-wise work between a decoder layer's products in its decode step
(`decode_layer.py`).

Why by hand: a decode step reads every decoder weight once, so it is as fast as the weights are read. Torch's
weight-only kernels (`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`) read one row of the E2B decoder's
2,048-wide weights at 13-15 GB/s on this CPU, which reads at ~28; torchao's x86 CPU kernels are not in its
wheel, and inductor's code for the same product ran at 1-9 GB/s (docs/ONDEVICE.md). The kernels here stream
each weight row once with software prefetch (measured: 28 GB/s int8), sum in fp32 and read the scales in the
model's dtype, so a layer keeps its weights as saved (int4: in row order, not the torch kernel's).

Where they cannot run (not x86-64 with AVX-512, no C compiler, a failed build, `VIDEOGEMMA_ROW_KERNELS=0`),
`kernels()` is None and the layers use torch's kernels (and `torch.mv`). The build (~1 s) is cached per source,
compiler and CPU under `$XDG_CACHE_HOME/videogemma` (or ~/.cache/videogemma).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_suffix(".c")
C_COMPILERS = ("cc", "gcc", "clang")
# -march=native: the host's own instruction set (the build is cached per CPU); OpenMP: the same libgomp as
# torch's (already loaded by then), so one thread pool.
COMPILE_FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared")
LINK_FLAGS = ("-lm",)  # tanhf (AltUp's router)
ROW_KERNELS_ENV = "VIDEOGEMMA_ROW_KERNELS"
# The dtypes every kernel reads and writes (a flag picks bf16 or fp32).
KERNEL_DTYPES = (torch.bfloat16, torch.float32)
# The kernels' step along the input: int8 rows go 128 values at a time, int4 groups are 128 values (the C file's
# INT4_GROUP).
INPUT_STEP = 128

logger = logging.getLogger(__name__)


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "videogemma"


def _cpu_description() -> str:
    """What the build depends on besides its source: the CPU's flags (Linux) or its name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(compiler: str) -> Path:
    """The shared library for this source, compiler and CPU: built once (atomically), then reused."""
    key = hashlib.sha256(
        "\0".join([SOURCE.read_text(), compiler, *COMPILE_FLAGS, *LINK_FLAGS, _cpu_description()]).encode()
    ).hexdigest()[:16]
    library = _cache_dir() / f"quantized_rows-{key}.so"
    if library.is_file():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        built = Path(scratch) / library.name
        subprocess.run(
            [compiler, *COMPILE_FLAGS, str(SOURCE), "-o", str(built), *LINK_FLAGS],
            check=True,
            capture_output=True,
            text=True,
        )
        os.replace(built, library)
    for stale in library.parent.glob("quantized_rows-*.so"):  # earlier sources' builds
        if stale != library:
            stale.unlink(missing_ok=True)
    return library


def _bind(library: ctypes.CDLL) -> ctypes.CDLL:
    pointer, size, flag = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    library.int8_rows.argtypes = [pointer, pointer, flag, pointer, flag, pointer, size, size, size, flag]
    library.int4_rows.argtypes = [
        pointer,
        pointer,
        pointer,
        flag,
        pointer,
        flag,
        pointer,
        size,
        size,
        size,
        flag,
        flag,
    ]
    library.int8_activations_built.argtypes = []
    library.bf16_row.argtypes = [pointer, pointer, pointer, size, size, flag]
    library.int4_dequantize.argtypes = [pointer, pointer, pointer, flag, pointer, flag, size, size, flag]
    library.int8_dequantize.argtypes = [pointer, pointer, flag, pointer, size, size, flag]
    # The decode attention's two halves (decode_attention.py): pointers, dtype flag, 5 sizes, 2 strides, (scale).
    shapes = [size] * 7
    library.attention_logits.argtypes = [pointer, pointer, pointer, flag, *shapes, ctypes.c_float, flag]
    library.attention_values.argtypes = [pointer, pointer, pointer, flag, *shapes, flag]
    library.rms_norm.argtypes = [pointer, pointer, pointer, flag, size, size, ctypes.c_float, flag]
    # AltUp (altup_predict.py): two inputs, the active stream, norm weight, eps, input scale, router, coefficient
    # weight, output, dtype flag, streams, rows, width.
    real = ctypes.c_float
    altup = [pointer, flag, pointer, real, real, pointer, pointer, pointer, flag, flag, size, size, flag]
    library.altup_predict.argtypes = altup
    library.altup_correct.argtypes = [pointer, *altup]
    # A decode step's element-wise work between its products (decode_layer.py): one thread, no status but
    # attention_heads'.
    library.attention_heads.argtypes = [*[pointer] * 7, flag, size, size, size, real]
    library.attention_residual.argtypes = [*[pointer] * 9, flag, size, real]
    library.gated_activation.argtypes = [pointer, pointer, pointer, flag, size, real, flag]
    library.norm_add.argtypes = [pointer, pointer, pointer, pointer, flag, size, size, real]
    library.scaled_row.argtypes = [pointer, pointer, pointer, flag, size]
    # A prompt's rows (gated_mlp.py, prompt_layer.py): split between the threads.
    library.gated_activation_rows.argtypes = [pointer, pointer, pointer, flag, size, size, real, flag, flag]
    library.attention_residual_rows.argtypes = [*[pointer] * 9, flag, size, size, real, flag]
    library.norm_add_rows.argtypes = [pointer, pointer, pointer, pointer, flag, size, size, size, real, flag]
    library.scaled_rows.argtypes = [pointer, pointer, pointer, flag, size, size, flag]
    library.attention_heads.restype = ctypes.c_int
    for name in ("attention_residual", "gated_activation", "norm_add", "scaled_row"):
        getattr(library, name).restype = None
    functions = (
        "rms_norm",
        "altup_predict",
        "altup_correct",
        "int8_rows",
        "int4_rows",
        "int8_activations_built",
        "bf16_row",
        "int4_dequantize",
        "int8_dequantize",
        "attention_logits",
        "attention_values",
        "gated_activation_rows",
        "attention_residual_rows",
        "norm_add_rows",
        "scaled_rows",
    )
    for name in functions:
        getattr(library, name).restype = ctypes.c_int
    return library


@functools.cache
def kernels() -> ctypes.CDLL | None:
    """The compiled kernels, or None where they cannot run here (the reason is logged once)."""
    if os.environ.get(ROW_KERNELS_ENV, "1").strip() == "0":
        return None
    if (
        platform.machine().lower() not in ("x86_64", "amd64")
        or torch.backends.cpu.get_cpu_capability() != "AVX512"
    ):
        logger.info("row kernels: no AVX-512 here; torch's kernels decode")
        return None
    compiler = os.environ.get("CC") or next((c for c in C_COMPILERS if shutil.which(c)), None)
    if compiler is None:
        logger.info("row kernels: no C compiler (cc, gcc, clang or $CC); torch's kernels decode")
        return None
    try:
        return _bind(ctypes.CDLL(str(_build(compiler))))
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or error
        logger.warning("row kernels did not build (%s); torch's kernels decode", detail)
        return None


def _bf16_flag(tensor: torch.Tensor, what: str) -> int:
    """1 for bf16, 0 for fp32: the two dtypes the kernels read (contiguous)."""
    if tensor.dtype not in KERNEL_DTYPES or not tensor.is_contiguous():
        raise ValueError(f"the row kernels read contiguous bf16 or fp32 {what}, not {tensor.dtype}")
    return int(tensor.dtype == torch.bfloat16)


def _check_weight(qweight: torch.Tensor, dtype: torch.dtype, in_features: int) -> None:
    """What the kernels assume of a weight (they read raw memory): its dtype, one block, whole 128-wide steps."""
    if qweight.dtype != dtype or not qweight.is_contiguous() or in_features % INPUT_STEP:
        raise ValueError(
            f"the row kernels read a contiguous {dtype} weight over a multiple of {INPUT_STEP} inputs, not "
            f"{qweight.dtype} {tuple(qweight.shape)}"
        )


def _rows_flag(x: torch.Tensor, in_features: int) -> int:
    """`_bf16_flag` of the input rows, checked to be (rows, in_features)."""
    if x.dim() != 2 or x.shape[1] != in_features:
        raise ValueError(f"the row kernels take (rows, {in_features}) input rows, not {tuple(x.shape)}")
    return _bf16_flag(x, "input rows")


def _int4_scales_flag(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> int:
    """`_bf16_flag` of an int4 layer's scales, checked against its zeros and its weight's groups."""
    flag = _bf16_flag(scales, "scales")
    if _bf16_flag(zeros, "zeros") != flag:
        raise ValueError("int4 scales and zeros must share a dtype")
    groups = (qweight.shape[0], 2 * qweight.shape[1] // INPUT_STEP)
    if scales.shape != groups or zeros.shape != groups:
        raise ValueError(f"int4 scales of shape {tuple(scales.shape)} for a {tuple(qweight.shape)} weight")
    return flag


def run(kernel: str, *arguments: int | float) -> None:
    """One of the kernels on these arguments (pointers, flags, sizes) and torch's thread count."""
    if getattr(kernels(), kernel)(*arguments, torch.get_num_threads()) != 0:
        raise MemoryError(f"the kernel {kernel} could not allocate its working copy")


def int8_rows(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x (rows, in) · dequantised(qweight)ᵀ, summed in fp32, in x's dtype (bf16 or fp32), for an int8
    (out, in) weight with one scale a row."""
    rows, (out_features, in_features) = x.shape[0], qweight.shape
    _check_weight(qweight, torch.int8, in_features)
    if scales.shape != (out_features,):
        raise ValueError(f"int8 scales of shape {tuple(scales.shape)} for a {tuple(qweight.shape)} weight")
    out = torch.empty(rows, out_features, dtype=x.dtype)
    run(
        "int8_rows", qweight.data_ptr(), scales.data_ptr(), _bf16_flag(scales, "scales"), x.data_ptr(),
        _rows_flag(x, in_features), out.data_ptr(), rows, out_features, in_features,
    )  # fmt: skip
    return out


def int4_rows(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    int8_activations: bool = False,
) -> torch.Tensor:
    """x (rows, in) · dequantised(qweight)ᵀ, summed in fp32, in x's dtype (bf16 or fp32), for an int4 weight
    in row order (uint8 (out, in / 2), the even input in the low nibble) with (out, in / 128) scales and zeros
    of one dtype: w = (q - 8) · scale + zero. With `int8_activations` (where `int8_activations_run()`), each
    group of 128 inputs is first rounded to int8 at scale max |x| / 127 and Σ q·x̂ summed in integers; the
    zeros meet the exact group sums."""
    rows, (out_features, row_bytes) = x.shape[0], qweight.shape
    _check_weight(qweight, torch.uint8, 2 * row_bytes)
    scales_flag = _int4_scales_flag(qweight, scales, zeros)
    out = torch.empty(rows, out_features, dtype=x.dtype)
    run(
        "int4_rows", qweight.data_ptr(), scales.data_ptr(), zeros.data_ptr(), scales_flag, x.data_ptr(),
        _rows_flag(x, 2 * row_bytes), out.data_ptr(), rows, out_features, 2 * row_bytes, int(int8_activations),
    )  # fmt: skip
    return out


def int8_activations_run() -> bool:
    """Whether `int4_rows(..., int8_activations=True)` rounds its input here (the kernels run and were built
    with AVX512-VNNI); elsewhere the flag is ignored and x is multiplied as it is."""
    library = kernels()
    return library is not None and bool(library.int8_activations_built())


def bf16_row(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """One bf16 row (in,) · weightᵀ for a bf16 (out, in) weight, in % 32 == 0: (out,) in bf16, summed in fp32."""
    (out_features, in_features), x = weight.shape, x.reshape(-1)
    if x.dtype != torch.bfloat16 or weight.dtype != torch.bfloat16 or not weight.is_contiguous():
        raise ValueError(f"bf16_row reads a contiguous bf16 weight and row, not {weight.dtype}, {x.dtype}")
    if x.numel() != in_features or in_features % 32:
        raise ValueError(f"bf16_row: a row of {x.numel()} against a ({out_features}, {in_features}) weight")
    x = x.contiguous()
    out = torch.empty(out_features, dtype=torch.bfloat16)
    run("bf16_row", weight.data_ptr(), x.data_ptr(), out.data_ptr(), out_features, in_features)
    return out


def int8_dequantize(qweight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The weight an int8 layer stands for, (out, in) in the scales' dtype: q · scale, the bits of torch's
    promoted product (a prefill's dequantisation, all cores)."""
    out_features, in_features = qweight.shape
    _check_weight(qweight, torch.int8, in_features)
    if scales.shape != (out_features,) or not scales.is_contiguous():
        raise ValueError(f"int8 scales of shape {tuple(scales.shape)} for a {tuple(qweight.shape)} weight")
    out = torch.empty(out_features, in_features, dtype=scales.dtype)
    run(
        "int8_dequantize", qweight.data_ptr(), scales.data_ptr(), _bf16_flag(scales, "scales"), out.data_ptr(),
        out_features, in_features,
    )  # fmt: skip
    return out


def int4_dequantize(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """The weight an int4 layer in row order stands for, (out, in) in the scales' dtype: (q − 8) · scale + zero
    in fp32, rounded once (a prefill's dequantisation, all cores)."""
    out_features, row_bytes = qweight.shape
    _check_weight(qweight, torch.uint8, 2 * row_bytes)
    flag = _int4_scales_flag(qweight, scales, zeros)
    out = torch.empty(out_features, 2 * row_bytes, dtype=scales.dtype)
    run(
        "int4_dequantize", qweight.data_ptr(), scales.data_ptr(), zeros.data_ptr(), flag, out.data_ptr(), flag,
        out_features, 2 * row_bytes,
    )  # fmt: skip
    return out
