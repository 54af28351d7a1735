"""Mamba's selective scan (S6), with one entry point and four interchangeable backends.

For every batch b, channel d and state index k, with Δ = softplus(delta + delta_bias):

    s[t] = exp(Δ[t] · A[d, k]) · s[t-1] + Δ[t] · B[b, k, t] · u[t]        (s[-1] = 0, state in fp32)
    y[t] = Σ_k C[b, k, t] · s[t] + D[d] · u[t]

Backends (all differentiable, all equal to "reference" within fp32 rounding):

- "reference": the equations above as a plain PyTorch loop over time. Slow; the ground truth for tests.
- "cpu": numba kernels that take the whole op (Δ's bias and softplus, the recurrence, the D skip term) in
  the (batch, d_inner, L) layout, one pass over time per block of 32 channels (the SIMD lanes), and a
  hand-written backward that recomputes the states from checkpoints every 64 steps (memory O(L · d_state)
  per thread instead of O(batch · d_inner · L · d_state)). Channel blocks are split over torch's thread
  count. The default on CPU.
- "chunked": pure PyTorch for GPUs without `mamba_ssm`. The sequence is cut into chunks of about √L steps;
  a short loop runs inside all chunks at once, a second short loop carries the state across chunks using
  the cumulative log-decays within each chunk. About 2√L small steps instead of L; autograd does the
  backward.
- "mamba_ssm": the CUDA kernels of the `mamba_ssm` package (`selective_scan_fn`), when it is installed.

"auto" picks mamba_ssm on CUDA when its kernels load, chunked on CUDA otherwise (an installed mamba_ssm whose
compiled kernels fail to load, e.g. built for another torch or CUDA, gives a warning), and the numba kernels on
CPU.
Tensor layout is `mamba_ssm`'s: u, delta (batch, d_inner, L); A (d_inner, d_state); B, C (batch, d_state, L);
D, delta_bias (d_inner,).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import warnings

import torch
import torch.nn.functional as F

from videogemma.modeling.selective_scan.chunked import scan_chunked
from videogemma.modeling.selective_scan.reference import scan_reference

BACKENDS = ("auto", "reference", "cpu", "chunked", "mamba_ssm")


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """y = selective scan of u (see the module docstring); returns (batch, d_inner, L) in u's dtype."""
    _check_shapes(u, delta, A, B, C, D, delta_bias)
    backend = resolve_backend(backend, u.device)
    if backend == "mamba_ssm":
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # only where it is installed

        return selective_scan_fn(
            u, delta, A, B, C, D, z=None, delta_bias=delta_bias, delta_softplus=delta_softplus
        )

    compute_dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    if backend == "cpu":  # the numba kernels fuse Δ's bias and softplus and the D skip term
        zeros = u.new_zeros(u.shape[1], dtype=compute_dtype)
        D_c, bias_c = (zeros if t is None else t.to(compute_dtype) for t in (D, delta_bias))
        u_c, delta_c, A_c, B_c, C_c = (t.to(compute_dtype) for t in (u, delta, A, B, C))
        from videogemma.modeling.selective_scan.numba_cpu import NumbaScan  # compiles on first use

        y = NumbaScan.apply(u_c, delta_c, A_c, B_c, C_c, D_c, bias_c, delta_softplus)
        return y.to(u.dtype)

    # For the PyTorch backends Δ, the D skip term and the dtype casts are elementwise work for autograd;
    # the backends below only implement the recurrence itself.
    delta = delta.to(compute_dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute_dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    u_c, A_c, B_c, C_c = (t.to(compute_dtype) for t in (u, A, B, C))
    if backend == "reference":
        y = scan_reference(u_c, delta, A_c, B_c, C_c)
    else:
        y = scan_chunked(u_c, delta, A_c, B_c, C_c)
    if D is not None:
        y = y + D.to(compute_dtype)[:, None] * u_c
    return y.to(u.dtype)


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend "auto" (or an explicit choice) means for tensors on `device`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        if device.type == "cuda":
            return "mamba_ssm" if mamba_ssm_available() else "chunked"
        return "cpu" if device.type == "cpu" else "chunked"
    if backend == "mamba_ssm" and not mamba_ssm_available():
        raise ValueError(f"scan backend 'mamba_ssm' requested but {mamba_ssm_problem()}")
    if backend == "mamba_ssm" and device.type != "cuda":
        raise ValueError(f"scan backend 'mamba_ssm' needs CUDA tensors, got {device}")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"scan backend 'cpu' (numba) needs CPU tensors, got {device}")
    return backend


def mamba_ssm_available() -> bool:
    """Whether mamba_ssm's selective-scan kernels load here (not merely whether the package is installed)."""
    return mamba_ssm_problem() is None


@functools.cache
def mamba_ssm_problem() -> str | None:
    """Why the mamba_ssm backend cannot run, or None. An installed package whose kernels do not load warns
    once: "auto" then takes the chunked backend."""
    if importlib.util.find_spec("mamba_ssm") is None:
        return "the mamba_ssm package is not installed"
    try:
        importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    except Exception as error:  # ImportError, OSError (undefined symbol in the extension), RuntimeError...
        problem = f"mamba_ssm is installed but its kernels do not load ({type(error).__name__}: {error})"
        warnings.warn(f"{problem}; the selective scan uses the chunked PyTorch backend", RuntimeWarning, 2)
        return problem
    return None


def _check_shapes(u, delta, A, B, C, D, delta_bias) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, d_inner, L), got shape {tuple(u.shape)}")
    batch, d_inner, length = u.shape
    d_state = A.shape[-1]
    expected = {
        "delta": (delta, (batch, d_inner, length)),
        "A": (A, (d_inner, d_state)),
        "B": (B, (batch, d_state, length)),
        "C": (C, (batch, d_state, length)),
        "D": (D, (d_inner,)),
        "delta_bias": (delta_bias, (d_inner,)),
    }
    for name, (tensor, shape) in expected.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"selective_scan: {name} has shape {tuple(tensor.shape)}, expected {shape}")
