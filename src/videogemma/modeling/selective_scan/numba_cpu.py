"""The selective scan on CPU: numba kernels for the whole op (forward and a hand-written backward).

See the package docstring for the equations; this module's comments say how the kernels are laid out.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

# ---- numba (CPU) ----------------------------------------------------------------------------------------
#
# The kernels take the whole op, not only the recurrence: Δ's bias and softplus, the D·u skip term and their
# gradients are fused in, and they read and write mamba_ssm's (batch, d_inner, L) layout directly: no
# separate PyTorch passes over memory for that elementwise work, no copies into another layout, and
# nothing extra kept for autograd.
#
# Work goes in tiles of CHANNEL_BLOCK neighbouring channels × SEGMENT steps. A tile is loaded row by row
# (each channel contiguous along L; the softplus vectorises there) into small time-major buffers, so that
# the recurrence's innermost loop runs over independent channels: SIMD lanes, no reduction across lanes,
# no reassociated sums, and no aliasing checks against the big arrays. The exponential of the decay is the
# costliest operation of the inner loop; libm's exp does not vectorise, so float32 uses a Cephes-style expf (Cody-Waite reduction,
# degree-6 polynomial, relative error ≈ 2e-7, i.e. 1-2 ulp) and the softplus a Cephes-style logf, both
# arithmetic only; float64 keeps libm. The only fast-math flag is "contract" (fused multiply-add): no
# reassociation, no NaN/inf assumptions; it makes the kernels ~1.4× faster. error_model="numpy" lets a
# float division give inf/nan as in NumPy instead of raising ZeroDivisionError: the check's branch kept the
# softplus loop from vectorising (10× slower, as slow as the whole recurrence).

CHANNEL_BLOCK = 32  # channels per tile: the SIMD lanes of the inner loops (2-4 vector registers)
SEGMENT = 64  # steps per tile; the forward stores the state every SEGMENT steps, the backward recomputes


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


def _log1p_unit(x):  # pragma: no cover - replaced by the overload below inside numba
    return math.log1p(x)


def _log1p32(x):  # pragma: no cover - compiled through the overload below
    """log(1 + x) for 0 ≤ x ≤ 1 (all softplus needs): Cephes logf of w = 1 + x ∈ [1, 2], then x / (w - 1)
    puts back what rounding 1 + x lost (Goldberg's log1p), so tiny x keep full relative precision."""
    w = np.float32(1.0) + x
    upper = w > np.float32(1.41421356)  # Cephes reduces the mantissa to [√½, √2)
    exponent = np.float32(1.0) if upper else np.float32(0.0)
    f = (w * np.float32(0.5) if upper else w) - np.float32(1.0)
    z = f * f
    p = np.float32(7.0376836292e-2)
    p = p * f - np.float32(1.1514610310e-1)
    p = p * f + np.float32(1.1676998740e-1)
    p = p * f - np.float32(1.2420140846e-1)
    p = p * f + np.float32(1.4249322787e-1)
    p = p * f - np.float32(1.6668057665e-1)
    p = p * f + np.float32(2.0000714765e-1)
    p = p * f - np.float32(2.4999993993e-1)
    p = p * f + np.float32(3.3333331174e-1)
    p = p * f * z + exponent * np.float32(-2.12194440e-4) - np.float32(0.5) * z
    log_w = f + p + exponent * np.float32(0.693359375)
    return x if w == np.float32(1.0) else log_w * (x / (w - np.float32(1.0)))


@overload(_log1p_unit)
def _log1p_unit_overload(x):
    if x == types.float32:
        return _log1p32
    return lambda x: math.log1p(x)  # float64: libm's log1p


@numba.njit(inline="always", fastmath={"contract"}, error_model="numpy")
def _load_tile(source, b, d0, width, start, steps, tile):  # pragma: no cover - compiled
    """tile[i, j] = source[b, d0 + j, start + i]: a (channels, L) tile into a time-major buffer."""
    for j in range(width):
        for i in range(steps):
            tile[i, j] = source[b, d0 + j, start + i]


@numba.njit(inline="always", fastmath={"contract"}, error_model="numpy")
def _load_delta_tile(
    delta, delta_bias, apply_softplus, b, d0, width, start, steps, dt_tile, slope_tile
):  # pragma: no cover
    """Δ = softplus(delta + bias) into a time-major tile, and dΔ/d(delta) (the sigmoid) into slope_tile.

    softplus(x) = max(x, 0) + log1p(e^-|x|) and sigmoid(x) from the same e^-|x|: neither can overflow.
    """
    zero = dt_tile.dtype.type(0)
    one = dt_tile.dtype.type(1)
    rows = np.empty((2, SEGMENT), dtype=dt_tile.dtype)  # one channel's Δ and slope, contiguous in time
    for j in range(width):
        bias = delta_bias[d0 + j]
        if apply_softplus:
            for i in range(steps):  # along L: this loop vectorises (the transposing copy below cannot)
                x = delta[b, d0 + j, start + i] + bias
                e = _decay_exp(-abs(x))
                r = one / (one + e)
                rows[0, i] = max(x, zero) + _log1p_unit(e)
                rows[1, i] = r if x >= zero else e * r
        else:
            for i in range(steps):
                rows[0, i] = delta[b, d0 + j, start + i] + bias
                rows[1, i] = one
        for i in range(steps):
            dt_tile[i, j] = rows[0, i]
            slope_tile[i, j] = rows[1, i]


@numba.njit(cache=True, fastmath={"contract"}, error_model="numpy", nogil=True)
def _numba_scan_forward(
    u, delta, delta_bias, apply_softplus, A, B_t, C_t, D, y, checkpoints, d_begin, d_end
):  # pragma: no cover - compiled
    """y = scan + D·u for channels d_begin..d_end. u, delta, y (b, d, L); A (d, n); B_t, C_t (b, L, n).

    Also stores the state entering every segment in checkpoints (b, L/SEGMENT, n, d), from which the
    backward recomputes the states in between.
    """
    batch, _, length = u.shape
    d_state = A.shape[1]
    zero = u.dtype.type(0)
    state = np.zeros((d_state, CHANNEL_BLOCK), dtype=u.dtype)
    A_block = np.zeros((d_state, CHANNEL_BLOCK), dtype=u.dtype)
    # lanes past d_end stay zero: they compute on zeros and are never written out
    dt_tile = np.zeros((SEGMENT, CHANNEL_BLOCK), dtype=u.dtype)
    slope_tile = np.zeros((SEGMENT, CHANNEL_BLOCK), dtype=u.dtype)
    u_tile = np.zeros((SEGMENT, CHANNEL_BLOCK), dtype=u.dtype)
    y_tile = np.zeros((SEGMENT, CHANNEL_BLOCK), dtype=u.dtype)
    dt_u_step = np.zeros(CHANNEL_BLOCK, dtype=u.dtype)
    y_step = np.zeros(CHANNEL_BLOCK, dtype=u.dtype)
    for b in range(batch):
        for d0 in range(d_begin, d_end, CHANNEL_BLOCK):
            width = min(CHANNEL_BLOCK, d_end - d0)
            state[:] = zero
            A_block[:] = zero
            A_block[:, :width] = A[d0 : d0 + width].T
            dt_tile[:] = zero
            u_tile[:] = zero
            for start in range(0, length, SEGMENT):
                steps = min(SEGMENT, length - start)
                checkpoints[b, start // SEGMENT, :, d0 : d0 + width] = state[:, :width]
                _load_delta_tile(
                    delta, delta_bias, apply_softplus, b, d0, width, start, steps, dt_tile, slope_tile
                )
                _load_tile(u, b, d0, width, start, steps, u_tile)
                for i in range(steps):
                    for j in range(CHANNEL_BLOCK):
                        dt_u_step[j] = dt_tile[i, j] * u_tile[i, j]
                        y_step[j] = zero
                    for k in range(d_state):
                        b_k = B_t[b, start + i, k]
                        c_k = C_t[b, start + i, k]
                        for j in range(CHANNEL_BLOCK):
                            s = _decay_exp(dt_tile[i, j] * A_block[k, j]) * state[k, j] + dt_u_step[j] * b_k
                            state[k, j] = s
                            y_step[j] += s * c_k
                    y_tile[i] = y_step
                for j in range(width):
                    skip = D[d0 + j]
                    for i in range(steps):
                        y[b, d0 + j, start + i] = y_tile[i, j] + skip * u_tile[i, j]


@numba.njit(cache=True, fastmath={"contract"}, error_model="numpy", nogil=True)
def _numba_scan_backward(
    u,
    delta,
    delta_bias,
    apply_softplus,
    A,
    B_t,
    C_t,
    D,
    checkpoints,
    grad_y,
    grad_u,
    grad_delta,
    grad_delta_bias,
    grad_A,
    grad_B_t,
    grad_C_t,
    grad_D,
    d_begin,
    d_end,
):  # pragma: no cover - compiled
    """Gradients for channels d_begin..d_end (layouts as in the forward; grad_delta_bias, grad_A and grad_D
    start at 0 and are only touched in these channels; grad_B_t, grad_C_t are this thread's partial sums).

    Segment by segment from the end, and within a segment tile by tile: the tile's states and decays are
    recomputed from the forward's checkpoint, then the adjoint runs back through them. dB and dC sum over
    channels: they collect per SIMD lane over all tiles of the segment and are reduced once per segment.
    Memory O(SEGMENT · d_state · CHANNEL_BLOCK + d_inner · d_state), all of it cache-resident.
    """
    batch, _, length = u.shape
    d_state = A.shape[1]
    zero = u.dtype.type(0)
    num_segments = checkpoints.shape[1]
    num_blocks = (d_end - d_begin + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK
    states = np.zeros((SEGMENT + 1, d_state, CHANNEL_BLOCK), dtype=u.dtype)  # [0]: state entering segment
    decays = np.zeros((SEGMENT, d_state, CHANNEL_BLOCK), dtype=u.dtype)
    lanes_B = np.zeros((SEGMENT, d_state, CHANNEL_BLOCK), dtype=u.dtype)
    lanes_C = np.zeros((SEGMENT, d_state, CHANNEL_BLOCK), dtype=u.dtype)
    A_blocks = np.zeros((num_blocks, d_state, CHANNEL_BLOCK), dtype=u.dtype)
    D_blocks = np.zeros((num_blocks, CHANNEL_BLOCK), dtype=u.dtype)
    grad_A_blocks = np.zeros((num_blocks, d_state, CHANNEL_BLOCK), dtype=u.dtype)
    grad_states = np.zeros((num_blocks, d_state, CHANNEL_BLOCK), dtype=u.dtype)  # dLoss/ds from later steps
    dt_tile = np.zeros((SEGMENT, CHANNEL_BLOCK), dtype=u.dtype)
    slope_tile = np.zeros((SEGMENT, CHANNEL_BLOCK), dtype=u.dtype)
    u_tile = np.zeros((SEGMENT, CHANNEL_BLOCK), dtype=u.dtype)
    gy_tile = np.zeros((SEGMENT, CHANNEL_BLOCK), dtype=u.dtype)
    grad_u_tile = np.zeros((SEGMENT, CHANNEL_BLOCK), dtype=u.dtype)
    grad_dt_tile = np.zeros((SEGMENT, CHANNEL_BLOCK), dtype=u.dtype)
    acc_u = np.zeros(CHANNEL_BLOCK, dtype=u.dtype)
    acc_dt = np.zeros(CHANNEL_BLOCK, dtype=u.dtype)
    for block in range(num_blocks):
        d0 = d_begin + block * CHANNEL_BLOCK
        width = min(CHANNEL_BLOCK, d_end - d0)
        A_blocks[block, :, :width] = A[d0 : d0 + width].T
        D_blocks[block, :width] = D[d0 : d0 + width]
    for b in range(batch):
        grad_states[:] = zero
        for segment in range(num_segments - 1, -1, -1):
            start = segment * SEGMENT
            steps = min(SEGMENT, length - start)
            lanes_B[:] = zero
            lanes_C[:] = zero
            for block in range(num_blocks):
                d0 = d_begin + block * CHANNEL_BLOCK
                width = min(CHANNEL_BLOCK, d_end - d0)
                if width < CHANNEL_BLOCK:  # lanes past d_end compute on zeros: zero states, zero gradients
                    dt_tile[:] = zero
                    u_tile[:] = zero
                    gy_tile[:] = zero
                _load_delta_tile(
                    delta, delta_bias, apply_softplus, b, d0, width, start, steps, dt_tile, slope_tile
                )
                _load_tile(u, b, d0, width, start, steps, u_tile)
                _load_tile(grad_y, b, d0, width, start, steps, gy_tile)
                states[0] = zero
                states[0, :, :width] = checkpoints[b, segment, :, d0 : d0 + width]
                for i in range(steps):
                    for k in range(d_state):
                        b_k = B_t[b, start + i, k]
                        for j in range(CHANNEL_BLOCK):
                            dt = dt_tile[i, j]
                            decay = _decay_exp(dt * A_blocks[block, k, j])
                            decays[i, k, j] = decay
                            states[i + 1, k, j] = decay * states[i, k, j] + dt * u_tile[i, j] * b_k
                for i in range(steps - 1, -1, -1):
                    acc_u[:] = zero
                    acc_dt[:] = zero
                    for k in range(d_state):
                        b_k = B_t[b, start + i, k]
                        c_k = C_t[b, start + i, k]
                        for j in range(CHANNEL_BLOCK):
                            dt = dt_tile[i, j]
                            gy = gy_tile[i, j]
                            decay = decays[i, k, j]
                            g = grad_states[block, k, j] + gy * c_k  # dLoss/ds[t]
                            lanes_C[i, k, j] += gy * states[i + 1, k, j]
                            # through exp(Δ·A): d/dΔ = A·(.), d/dA = Δ·(.)
                            g_decay = g * states[i, k, j] * decay
                            acc_dt[j] += g_decay * A_blocks[block, k, j]
                            grad_A_blocks[block, k, j] += g_decay * dt
                            acc_u[j] += g * b_k  # Σ_k g·B: the drive Δ·u·B's gradient, shared by Δ and u
                            lanes_B[i, k, j] += g * dt * u_tile[i, j]
                            grad_states[block, k, j] = g * decay
                    for j in range(CHANNEL_BLOCK):
                        grad_u_tile[i, j] = acc_u[j] * dt_tile[i, j] + D_blocks[block, j] * gy_tile[i, j]
                        grad_dt_tile[i, j] = (acc_dt[j] + acc_u[j] * u_tile[i, j]) * slope_tile[i, j]
                for j in range(width):
                    d = d0 + j
                    sum_grad_dt = zero
                    sum_gy_u = zero
                    for i in range(steps):
                        grad_u[b, d, start + i] = grad_u_tile[i, j]
                        grad_delta[b, d, start + i] = grad_dt_tile[i, j]
                        sum_grad_dt += grad_dt_tile[i, j]
                        sum_gy_u += gy_tile[i, j] * u_tile[i, j]
                    grad_delta_bias[d] += sum_grad_dt
                    grad_D[d] += sum_gy_u
            for i in range(steps):
                for k in range(d_state):
                    total_B = zero
                    total_C = zero
                    for j in range(CHANNEL_BLOCK):
                        total_B += lanes_B[i, k, j]
                        total_C += lanes_C[i, k, j]
                    grad_B_t[b, start + i, k] = total_B
                    grad_C_t[b, start + i, k] = total_C
    for block in range(num_blocks):
        d0 = d_begin + block * CHANNEL_BLOCK
        width = min(CHANNEL_BLOCK, d_end - d0)
        grad_A[d0 : d0 + width] += grad_A_blocks[block, :, :width].T


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


class NumbaScan(torch.autograd.Function):
    """The numba kernels as one autograd op: y = scan(u, softplus(delta + delta_bias), A, B, C) + D·u.

    All tensors in the (batch, d_inner, L) layout and one dtype; D and delta_bias are always tensors
    (zeros when the caller has none).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, apply_softplus: bool):
        u, delta, A, D, delta_bias = (x.detach().contiguous() for x in (u, delta, A, D, delta_bias))
        # B and C are small (no d_inner axis): time-major copies make every step read one row
        B_t, C_t = (x.detach().transpose(1, 2).contiguous() for x in (B, C))
        batch, d_inner, length = u.shape
        y = torch.empty_like(u)
        checkpoints = u.new_empty(batch, -(-length // SEGMENT), A.shape[1], d_inner)
        arrays = [u, delta, delta_bias, apply_softplus, A, B_t, C_t, D, y, checkpoints]
        arrays = [x.numpy() if isinstance(x, torch.Tensor) else x for x in arrays]
        _run_threaded(_numba_scan_forward, _channel_ranges(d_inner), lambda i: arrays)
        ctx.apply_softplus = apply_softplus
        ctx.save_for_backward(u, delta, A, B_t, C_t, D, delta_bias, checkpoints)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        u, delta, A, B_t, C_t, D, delta_bias, checkpoints = ctx.saved_tensors
        grad_y = grad_y.detach().to(u.dtype).contiguous()
        grad_u, grad_delta = torch.empty_like(u), torch.empty_like(u)
        grad_A, grad_D, grad_delta_bias = torch.zeros_like(A), torch.zeros_like(D), torch.zeros_like(D)
        ranges = _channel_ranges(u.shape[1])
        # dB and dC sum over channels: one partial sum per thread, added up below
        grad_B_t = B_t.new_empty(len(ranges), *B_t.shape)
        grad_C_t = C_t.new_empty(len(ranges), *C_t.shape)
        shared = [u, delta, delta_bias, ctx.apply_softplus, A, B_t, C_t, D, checkpoints, grad_y]
        shared = [x.numpy() if isinstance(x, torch.Tensor) else x for x in shared]
        outputs = [x.numpy() for x in (grad_u, grad_delta, grad_delta_bias, grad_A)]
        _run_threaded(
            _numba_scan_backward,
            ranges,
            lambda i: [*shared, *outputs, grad_B_t[i].numpy(), grad_C_t[i].numpy(), grad_D.numpy()],
        )
        return (
            grad_u,
            grad_delta,
            grad_A,
            grad_B_t.sum(0).transpose(1, 2),
            grad_C_t.sum(0).transpose(1, 2),
            grad_D,
            grad_delta_bias,
            None,
        )
