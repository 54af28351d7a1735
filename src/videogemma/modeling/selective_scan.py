"""Mamba's selective scan (S6), with one entry point and four interchangeable backends.

For every batch b, channel d and state index k, with Δ = softplus(delta + delta_bias):

    s[t] = exp(Δ[t] · A[d, k]) · s[t-1] + Δ[t] · B[b, k, t] · u[t]        (s[-1] = 0, state in fp32)
    y[t] = Σ_k C[b, k, t] · s[t] + D[d] · u[t]

Backends (all differentiable, all equal to "reference" within fp32 rounding):

- "reference": the equations above as a plain PyTorch loop over time. Slow; the ground truth for tests.
- "cpu": numba kernels, one pass over time per block of 32 channels (the SIMD lanes), and a hand-written
  backward that recomputes the states from checkpoints every 64 steps (memory O(L · d_state) per thread
  instead of O(batch · d_inner · L · d_state)). Channel blocks are split over torch's thread count. The
  default on CPU.
- "chunked": pure PyTorch for GPUs without `mamba_ssm`. The sequence is cut into chunks of about √L steps;
  a short loop runs inside all chunks at once, a second short loop carries the state across chunks using
  the cumulative log-decays within each chunk. About 2√L small steps instead of L; autograd does the
  backward.
- "mamba_ssm": the CUDA kernels of the `mamba_ssm` package (`selective_scan_fn`), when it is installed.

"auto" picks mamba_ssm on CUDA when importable, chunked on CUDA otherwise, and the numba kernels on CPU.
Tensor layout is `mamba_ssm`'s: u, delta (batch, d_inner, L); A (d_inner, d_state); B, C (batch, d_state, L);
D, delta_bias (d_inner,).
"""

from __future__ import annotations

import importlib.util
import math
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numba
import numpy as np
import torch
import torch.nn.functional as F
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

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
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        return selective_scan_fn(
            u, delta, A, B, C, D, z=None, delta_bias=delta_bias, delta_softplus=delta_softplus
        )

    # Δ, the D skip term and the dtype casts are cheap elementwise work: autograd handles them for every
    # backend, so the backends below only implement the recurrence itself.
    compute_dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    delta = delta.to(compute_dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute_dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    u_c, A_c, B_c, C_c = (t.to(compute_dtype) for t in (u, A, B, C))
    if backend == "reference":
        y = _scan_reference(u_c, delta, A_c, B_c, C_c)
    elif backend == "cpu":
        y = _NumbaScan.apply(u_c, delta, A_c, B_c, C_c)
    else:
        y = _scan_chunked(u_c, delta, A_c, B_c, C_c)
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
        raise ValueError("scan backend 'mamba_ssm' requested but the mamba_ssm package is not installed")
    if backend == "mamba_ssm" and device.type != "cuda":
        raise ValueError(f"scan backend 'mamba_ssm' needs CUDA tensors, got {device}")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"scan backend 'cpu' (numba) needs CPU tensors, got {device}")
    return backend


def mamba_ssm_available() -> bool:
    return importlib.util.find_spec("mamba_ssm") is not None


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


# ---- reference ------------------------------------------------------------------------------------------


def _scan_reference(u, delta, A, B, C):
    """The recurrence, one time step at a time (Δ already includes bias and softplus; no D term)."""
    batch, d_inner, _ = u.shape
    # time-major (L, b, d, n), so that every step reads contiguous memory
    decay = torch.exp(delta.permute(2, 0, 1)[..., None] * A)
    drive = (delta * u).permute(2, 0, 1)[..., None] * B.permute(2, 0, 1)[:, :, None]
    C = C.permute(2, 0, 1)[:, :, None]  # (L, b, 1, n)
    state = u.new_zeros(batch, d_inner, A.shape[1])
    ys = []
    # unbind, not decay[t]: autograd then gathers the per-step gradients once instead of once per step
    for decay_t, drive_t, C_t in zip(decay.unbind(0), drive.unbind(0), C.unbind(0)):
        state = decay_t * state + drive_t
        ys.append((state * C_t).sum(-1))
    return torch.stack(ys, dim=-1)


# ---- chunked (pure PyTorch, for GPUs) --------------------------------------------------------------------


def _scan_chunked(u, delta, A, B, C, chunk_size: int | None = None):
    """Chunked scan: a loop inside all chunks at once, then a loop across chunks (≈2√L steps in all)."""
    batch, d_inner, length = u.shape
    chunk = chunk_size or max(1, math.isqrt(length - 1) + 1)
    pad = (-length) % chunk
    if pad:  # Δ = 0 and u = 0 leave the state unchanged; the padded outputs are cut off below
        u, delta, B, C = (F.pad(t, (0, pad)) for t in (u, delta, B, C))
    num_chunks = (length + pad) // chunk

    def by_step(x):  # (b, channels, L) -> (chunk, b, channels, num_chunks, 1): step-in-chunk outermost
        return x.view(x.shape[0], x.shape[1], num_chunks, chunk).permute(3, 0, 1, 2)[..., None]

    # (chunk, b, d, num_chunks, n): log-decay and input of every step
    log_decay = by_step(delta) * A[:, None, :]
    drive = by_step(delta * u) * by_step(B).permute(0, 1, 4, 3, 2)
    # 1) states within every chunk, each started from zero, all chunks in parallel
    decay = torch.exp(log_decay)
    state = u.new_zeros(batch, d_inner, num_chunks, A.shape[1])
    local = []
    for decay_i, drive_i in zip(decay.unbind(0), drive.unbind(0)):
        state = decay_i * state + drive_i
        local.append(state)
    local_states = torch.stack(local)
    # 2) the state entering each chunk: carry the last state across chunks with the chunk's total decay
    cumulative_decay = torch.exp(torch.cumsum(log_decay, dim=0))  # from the chunk's start to each step
    carry = u.new_zeros(batch, d_inner, A.shape[1])
    incoming = []
    for chunk_decay, chunk_end in zip(cumulative_decay[-1].unbind(2), local_states[-1].unbind(2)):
        incoming.append(carry)
        carry = chunk_decay * carry + chunk_end
    states = local_states + cumulative_decay * torch.stack(incoming, dim=2)
    # 3) contract with C and put time back in order
    y = (states * by_step(C).permute(0, 1, 4, 3, 2)).sum(-1)  # (chunk, b, d, num_chunks)
    return y.permute(1, 2, 3, 0).reshape(batch, d_inner, num_chunks * chunk)[..., :length]


# ---- numba (CPU) ----------------------------------------------------------------------------------------
#
# Layout for the kernels: time-major (batch, L, channels), so that a block of CHANNEL_BLOCK neighbouring
# channels is contiguous and the innermost loop runs over independent channels (SIMD lanes, no reduction
# across lanes, so it vectorises without reassociating sums). The exponential of the decay is the hot spot;
# libm's exp does not vectorise, so float32 uses a Cephes-style expf (Cody-Waite reduction, degree-6
# polynomial, relative error ≈ 2e-7, i.e. 1-2 ulp) built from arithmetic only; float64 keeps math.exp.
# The only fast-math flag is "contract" (fused multiply-add): no reassociation, no NaN/inf assumptions;
# it makes the kernels ~1.4× faster.

CHANNEL_BLOCK = 32  # channels per block: the SIMD lanes of the inner loops (2-4 vector registers)
SEGMENT = 64  # the forward stores the state every SEGMENT steps; the backward recomputes the steps between


@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret an int32 as the float32 with the same bits (how 2**k is built in _exp32)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


def _decay_exp(x):  # pragma: no cover - replaced by the overload below inside numba
    return math.exp(x)


def _exp32(x):  # pragma: no cover - compiled through the overload above
    x = min(max(x, np.float32(-87.33654)), np.float32(88.72283))
    k = np.floor(x * np.float32(1.442695) + np.float32(0.5))
    r = x - k * np.float32(0.693359375) - k * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    return p * _float32_from_bits((np.int32(k) + np.int32(127)) << np.int32(23))


@overload(_decay_exp)
def _decay_exp_overload(x):
    if x == types.float32:
        return _exp32
    return lambda x: math.exp(x)  # float64: libm's exp


@numba.njit(cache=True, fastmath={"contract"}, parallel=False, nogil=True)
def _numba_scan_forward(u, delta, A_t, B, C, y, checkpoints, d_begin, d_end):  # pragma: no cover
    """y[b, t, d] = Σ_k C[b, t, k] s[t, d, k] for channels d_begin..d_end; u, delta, y (b, L, d); A_t (n, d);
    B, C (b, L, n). Also stores the state entering every SEGMENT-th step in checkpoints (b, L/SEGMENT, n, d),
    from which the backward recomputes the rest.

    The innermost loops read and write only small local buffers of one channel block, so that LLVM can
    vectorise them without aliasing checks against the big arrays.
    """
    batch, length, _ = u.shape
    d_state = A_t.shape[0]
    zero = u.dtype.type(0)
    state = np.zeros((d_state, CHANNEL_BLOCK), dtype=u.dtype)
    A_block = np.zeros((d_state, CHANNEL_BLOCK), dtype=u.dtype)
    dt_step = np.zeros(CHANNEL_BLOCK, dtype=u.dtype)
    dt_u_step = np.zeros(CHANNEL_BLOCK, dtype=u.dtype)
    y_step = np.zeros(CHANNEL_BLOCK, dtype=u.dtype)
    for b in range(batch):
        for d0 in range(d_begin, d_end, CHANNEL_BLOCK):
            width = min(CHANNEL_BLOCK, d_end - d0)
            state[:] = zero
            dt_step[:] = zero  # lanes past d_end compute on zeros and are never written out
            dt_u_step[:] = zero
            A_block[:] = zero
            A_block[:, :width] = A_t[:, d0 : d0 + width]
            for t in range(length):
                if t % SEGMENT == 0:
                    checkpoints[b, t // SEGMENT, :, d0 : d0 + width] = state[:, :width]
                for j in range(width):
                    dt_step[j] = delta[b, t, d0 + j]
                    dt_u_step[j] = delta[b, t, d0 + j] * u[b, t, d0 + j]
                y_step[:] = zero
                for k in range(d_state):
                    b_k = B[b, t, k]
                    c_k = C[b, t, k]
                    for j in range(CHANNEL_BLOCK):
                        s = _decay_exp(dt_step[j] * A_block[k, j]) * state[k, j] + dt_u_step[j] * b_k
                        state[k, j] = s
                        y_step[j] += s * c_k
                for j in range(width):
                    y[b, t, d0 + j] = y_step[j]


@numba.njit(cache=True, fastmath={"contract"}, parallel=False, nogil=True)
def _numba_scan_backward(
    u, delta, A_t, B, C, checkpoints, grad_y, grad_u, grad_delta, grad_A_t, grad_B, grad_C, d_begin, d_end
):  # pragma: no cover - compiled
    """Gradients of the scan for channels d_begin..d_end (layouts as in the forward; grad_A_t starts at 0).

    Segment by segment from the end, and within a segment block by block: the segment's states and decays
    are recomputed from the forward's checkpoint, then the adjoint runs back through them. dB and dC sum
    over channels: they collect per SIMD lane over all blocks of the segment and are reduced once per
    segment. Memory O(SEGMENT · d_state · CHANNEL_BLOCK + d_inner · d_state), all of it cache-resident.
    """
    batch, length, _ = u.shape
    d_state = A_t.shape[0]
    zero = u.dtype.type(0)
    num_segments = checkpoints.shape[1]
    num_blocks = (d_end - d_begin + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK
    states = np.zeros((SEGMENT + 1, d_state, CHANNEL_BLOCK), dtype=u.dtype)  # [0]: state entering segment
    decays = np.zeros((SEGMENT, d_state, CHANNEL_BLOCK), dtype=u.dtype)
    lanes_B = np.zeros((SEGMENT, d_state, CHANNEL_BLOCK), dtype=u.dtype)
    lanes_C = np.zeros((SEGMENT, d_state, CHANNEL_BLOCK), dtype=u.dtype)
    A_blocks = np.zeros((num_blocks, d_state, CHANNEL_BLOCK), dtype=u.dtype)
    grad_A_blocks = np.zeros((num_blocks, d_state, CHANNEL_BLOCK), dtype=u.dtype)
    grad_states = np.zeros((num_blocks, d_state, CHANNEL_BLOCK), dtype=u.dtype)  # dLoss/ds from later steps
    dt_step = np.zeros(CHANNEL_BLOCK, dtype=u.dtype)
    u_step = np.zeros(CHANNEL_BLOCK, dtype=u.dtype)
    gy_step = np.zeros(CHANNEL_BLOCK, dtype=u.dtype)
    acc_u = np.zeros(CHANNEL_BLOCK, dtype=u.dtype)
    acc_dt = np.zeros(CHANNEL_BLOCK, dtype=u.dtype)
    for block in range(num_blocks):
        d0 = d_begin + block * CHANNEL_BLOCK
        width = min(CHANNEL_BLOCK, d_end - d0)
        A_blocks[block, :, :width] = A_t[:, d0 : d0 + width]
    for b in range(batch):
        grad_states[:] = zero
        for segment in range(num_segments - 1, -1, -1):
            start = segment * SEGMENT
            stop = min(start + SEGMENT, length)
            lanes_B[:] = zero
            lanes_C[:] = zero
            for block in range(num_blocks):
                d0 = d_begin + block * CHANNEL_BLOCK
                width = min(CHANNEL_BLOCK, d_end - d0)
                dt_step[:] = zero  # lanes past d_end compute on zeros: zero states, zero gradients
                u_step[:] = zero
                gy_step[:] = zero
                states[0] = zero
                states[0, :, :width] = checkpoints[b, segment, :, d0 : d0 + width]
                for t in range(start, stop):
                    i = t - start
                    for j in range(width):
                        dt_step[j] = delta[b, t, d0 + j]
                        u_step[j] = u[b, t, d0 + j]
                    for k in range(d_state):
                        b_k = B[b, t, k]
                        for j in range(CHANNEL_BLOCK):
                            decay = _decay_exp(dt_step[j] * A_blocks[block, k, j])
                            decays[i, k, j] = decay
                            states[i + 1, k, j] = decay * states[i, k, j] + dt_step[j] * u_step[j] * b_k
                for t in range(stop - 1, start - 1, -1):
                    i = t - start
                    for j in range(width):
                        dt_step[j] = delta[b, t, d0 + j]
                        u_step[j] = u[b, t, d0 + j]
                        gy_step[j] = grad_y[b, t, d0 + j]
                    acc_u[:] = zero
                    acc_dt[:] = zero
                    for k in range(d_state):
                        b_k = B[b, t, k]
                        c_k = C[b, t, k]
                        for j in range(CHANNEL_BLOCK):
                            dt = dt_step[j]
                            decay = decays[i, k, j]
                            g = grad_states[block, k, j] + gy_step[j] * c_k  # dLoss/ds[t]
                            lanes_C[i, k, j] += gy_step[j] * states[i + 1, k, j]
                            # through exp(Δ·A): d/dΔ = A·(.), d/dA = Δ·(.)
                            g_decay = g * states[i, k, j] * decay
                            acc_dt[j] += g_decay * A_blocks[block, k, j] + g * u_step[j] * b_k
                            grad_A_blocks[block, k, j] += g_decay * dt
                            acc_u[j] += g * b_k
                            lanes_B[i, k, j] += g * dt * u_step[j]
                            grad_states[block, k, j] = g * decay
                    for j in range(width):
                        grad_u[b, t, d0 + j] = acc_u[j] * dt_step[j]
                        grad_delta[b, t, d0 + j] = acc_dt[j]
            for t in range(start, stop):
                for k in range(d_state):
                    total_B = zero
                    total_C = zero
                    for j in range(CHANNEL_BLOCK):
                        total_B += lanes_B[t - start, k, j]
                        total_C += lanes_C[t - start, k, j]
                    grad_B[b, t, k] = total_B
                    grad_C[b, t, k] = total_C
    for block in range(num_blocks):
        d0 = d_begin + block * CHANNEL_BLOCK
        width = min(CHANNEL_BLOCK, d_end - d0)
        grad_A_t[:, d0 : d0 + width] += grad_A_blocks[block, :, :width]


def _channel_ranges(d_inner: int) -> list[tuple[int, int]]:
    """Split the channels, in whole blocks, over torch's thread count (the kernels release the GIL)."""
    blocks = -(-d_inner // CHANNEL_BLOCK)
    workers = max(1, min(torch.get_num_threads(), blocks))
    bounds = [CHANNEL_BLOCK * (blocks * i // workers) for i in range(workers + 1)]
    return [(begin, min(end, d_inner)) for begin, end in pairwise(bounds)]


def _run_threaded(kernel, ranges: list[tuple[int, int]], args_for) -> None:
    if len(ranges) == 1:
        kernel(*args_for(0), *ranges[0])
        return
    with ThreadPoolExecutor(len(ranges)) as pool:
        for future in [pool.submit(kernel, *args_for(i), *r) for i, r in enumerate(ranges)]:
            future.result()


class _NumbaScan(torch.autograd.Function):
    """The numba kernels as an autograd op on (u, Δ, A, B, C) in the (batch, d_inner, L) layout."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        # time-major copies for the kernels (cheap next to the scan itself)
        u_t, delta_t, B_t, C_t = (x.detach().transpose(1, 2).contiguous() for x in (u, delta, B, C))
        A_t = A.detach().t().contiguous()
        y_t = torch.empty_like(u_t)
        batch, length, d_inner = u_t.shape
        checkpoints = u_t.new_empty(batch, -(-length // SEGMENT), A_t.shape[0], d_inner)
        arrays = [x.numpy() for x in (u_t, delta_t, A_t, B_t, C_t, y_t, checkpoints)]
        _run_threaded(_numba_scan_forward, _channel_ranges(d_inner), lambda i: arrays)
        ctx.save_for_backward(u_t, delta_t, A_t, B_t, C_t, checkpoints)
        return y_t.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad_y):
        u_t, delta_t, A_t, B_t, C_t, checkpoints = ctx.saved_tensors
        grad_y_t = grad_y.detach().to(u_t.dtype).transpose(1, 2).contiguous()
        grad_u, grad_delta = torch.empty_like(u_t), torch.empty_like(u_t)
        grad_A_t = torch.zeros_like(A_t)
        ranges = _channel_ranges(u_t.shape[2])
        # dB and dC sum over channels: one partial sum per thread, added up below
        grad_B = B_t.new_empty(len(ranges), *B_t.shape)
        grad_C = C_t.new_empty(len(ranges), *C_t.shape)
        shared = [
            x.numpy()
            for x in (u_t, delta_t, A_t, B_t, C_t, checkpoints, grad_y_t, grad_u, grad_delta, grad_A_t)
        ]
        _run_threaded(_numba_scan_backward, ranges, lambda i: [*shared, grad_B[i].numpy(), grad_C[i].numpy()])
        return (
            grad_u.transpose(1, 2),
            grad_delta.transpose(1, 2),
            grad_A_t.t(),
            grad_B.sum(0).transpose(1, 2),
            grad_C.sum(0).transpose(1, 2),
        )
