"""Every selective-scan backend equals the sequential reference, in value and in gradient."""

from __future__ import annotations

import math

import pytest
import torch

import videogemma.modeling.selective_scan as scan_module
from videogemma.modeling.selective_scan import resolve_backend, selective_scan
from videogemma.modeling.selective_scan.chunked import scan_chunked
from videogemma.modeling.selective_scan.reference import scan_reference

# fp32 tolerance of every comparison with the reference
RTOL, ATOL = 1e-4, 1e-5


def make_inputs(batch=2, d_inner=40, d_state=5, length=150, dtype=torch.float32, seed=0):
    """Random scan inputs in mamba_ssm's layout, scaled like a trained Mamba's (Δ ≈ 0.01..2, A < 0)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    return dict(
        u=randn(batch, d_inner, length),
        delta=randn(batch, d_inner, length) - 1.0,
        A=-torch.exp(randn(d_inner, d_state)),
        B=randn(batch, d_state, length),
        C=randn(batch, d_state, length),
        D=randn(d_inner),
        delta_bias=0.5 * randn(d_inner),
    )


def value_and_grads(inputs, backend, **kwargs):
    leaves = {name: t.clone().requires_grad_() for name, t in inputs.items()}
    y = selective_scan(**leaves, backend=backend, **kwargs)
    weights = torch.linspace(-1.0, 2.0, y.numel()).reshape(y.shape)  # a loss that weighs every output
    (y * weights).sum().backward()
    return y.detach(), {name: t.grad for name, t in leaves.items()}


def assert_close_scaled(actual, expected, name):
    """rtol / atol relative to the tensor's magnitude (gradients summed over L reach O(100))."""
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL * scale, msg=lambda m: f"{name}: {m}")


@pytest.fixture(scope="module")
def reference_case():
    # d_inner 40 is not a multiple of the numba channel block; L 150 spans several backward segments and
    # is not a multiple of the chunked backend's chunk length.
    inputs = make_inputs()
    return inputs, *value_and_grads(inputs, "reference")


@pytest.mark.parametrize("backend", ["cpu", "chunked"])
def test_backend_matches_reference_in_value_and_every_gradient(backend, reference_case):
    inputs, y_ref, grads_ref = reference_case
    y, grads = value_and_grads(inputs, backend)
    assert_close_scaled(y, y_ref, "y")
    assert set(grads) == {"u", "delta", "A", "B", "C", "D", "delta_bias"}
    for name, grad in grads.items():
        assert grad.abs().max() > 0, f"no gradient reaches {name}"
        assert_close_scaled(grad, grads_ref[name], f"d{name}")


@pytest.mark.parametrize("backend", ["cpu", "chunked"])
def test_backend_without_softplus_bias_or_skip(backend):
    inputs = make_inputs(batch=1, d_inner=33, length=70, seed=1)
    inputs["delta"] = inputs["delta"].abs() * 0.3  # without softplus Δ must already be positive
    inputs["D"] = None
    inputs["delta_bias"] = None
    y_ref = selective_scan(**inputs, delta_softplus=False, backend="reference")
    y = selective_scan(**inputs, delta_softplus=False, backend=backend)
    assert_close_scaled(y, y_ref, "y")


def test_reference_matches_closed_form_geometric_sum():
    """Constant Δ, A = a, B = C = u = 1: every state is Δ·(1 - r^(t+1)) / (1 - r) with r = exp(Δa)."""
    length, dt, a = 12, 0.3, -0.7
    u = torch.ones(1, 1, length, dtype=torch.float64)
    y = selective_scan(
        u,
        torch.full_like(u, dt),
        torch.full((1, 3), a, dtype=torch.float64),
        torch.ones(1, 3, length, dtype=torch.float64),
        torch.ones(1, 3, length, dtype=torch.float64),
        D=torch.tensor([0.5], dtype=torch.float64),
        delta_softplus=False,
        backend="reference",
    )
    r = math.exp(dt * a)
    expected = torch.tensor([3 * dt * (1 - r ** (t + 1)) / (1 - r) + 0.5 for t in range(length)])
    torch.testing.assert_close(y[0, 0], expected.double())


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 200])
def test_chunked_any_chunk_length(chunk_size):
    inputs = make_inputs(batch=1, d_inner=8, length=64, seed=2)
    delta = torch.nn.functional.softplus(inputs["delta"] + inputs["delta_bias"][:, None])
    args = (inputs["u"], delta, inputs["A"], inputs["B"], inputs["C"])
    expected = scan_reference(*args)
    actual = scan_chunked(*args, chunk_size=chunk_size)
    assert_close_scaled(actual, expected, f"chunk {chunk_size}")


@pytest.mark.slow
def test_cpu_backward_passes_float64_gradcheck():
    """The hand-written numba backward against finite differences (float64 kernels, tiny shapes)."""
    inputs = make_inputs(batch=2, d_inner=3, d_state=2, length=70, dtype=torch.float64, seed=3)
    names = list(inputs)

    def scan(*tensors):
        return selective_scan(**dict(zip(names, tensors)), backend="cpu")

    leaves = tuple(t.clone().requires_grad_() for t in inputs.values())
    assert torch.autograd.gradcheck(scan, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_low_precision_inputs_give_same_dtype_and_fp32_accuracy():
    inputs = {k: v.to(torch.bfloat16) for k, v in make_inputs(batch=1, d_inner=16, length=40, seed=4).items()}
    y = selective_scan(**inputs, backend="cpu")
    assert y.dtype == torch.bfloat16
    y_fp32 = selective_scan(**{k: v.float() for k, v in inputs.items()}, backend="reference")
    torch.testing.assert_close(y.float(), y_fp32, rtol=1e-2, atol=1e-2)  # one bf16 rounding of the output


def test_mis_shaped_input_is_rejected_naming_it():
    inputs = make_inputs(batch=1, d_inner=4, length=10)
    inputs["B"] = inputs["B"][:, :, :9]
    with pytest.raises(ValueError, match=r"B has shape \(1, 5, 9\), expected \(1, 5, 10\)"):
        selective_scan(**inputs)


def test_backend_choice():
    assert resolve_backend("auto", torch.device("cpu")) == "cpu"
    expected_gpu = "mamba_ssm" if scan_module.mamba_ssm_available() else "chunked"
    assert resolve_backend("auto", torch.device("cuda")) == expected_gpu
    with pytest.raises(ValueError, match="unknown selective-scan backend 'fast'"):
        resolve_backend("fast", torch.device("cpu"))
    with pytest.raises(ValueError, match=r"'cpu' \(numba\) needs CPU tensors, got cuda"):
        resolve_backend("cpu", torch.device("cuda"))
    if not scan_module.mamba_ssm_available():
        with pytest.raises(ValueError, match="mamba_ssm package is not installed"):
            selective_scan(**make_inputs(batch=1, d_inner=2, length=3), backend="mamba_ssm")


def test_mamba_ssm_whose_kernels_do_not_load_warns_and_falls_back(monkeypatch):
    """The package is there but its compiled extension fails (built for another torch / CUDA)."""
    import importlib.util
    import sys

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "mamba_ssm" else real_find_spec(name, *a),
    )
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops.selective_scan_interface", None)  # its import fails
    scan_module.mamba_ssm_problem.cache_clear()
    try:
        with pytest.warns(
            RuntimeWarning, match="mamba_ssm is installed but its kernels do not load.*chunked"
        ):
            assert resolve_backend("auto", torch.device("cuda")) == "chunked"
        with pytest.raises(
            ValueError, match="'mamba_ssm' requested but mamba_ssm is installed but its kernels"
        ):
            resolve_backend("mamba_ssm", torch.device("cuda"))
    finally:
        scan_module.mamba_ssm_problem.cache_clear()


def test_mamba_ssm_backend_passes_mamba_ssm_arguments(monkeypatch):
    """No GPU here: a stand-in `selective_scan_fn` with mamba_ssm's signature checks what it is given."""
    import sys
    import types

    calls = []

    def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, **kwargs):
        calls.append(dict(z=z, delta_softplus=delta_softplus, **kwargs))
        return selective_scan(u, delta, A, B, C, D, delta_bias, delta_softplus, backend="reference")

    interface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    interface.selective_scan_fn = selective_scan_fn
    for name in ("mamba_ssm", "mamba_ssm.ops"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, interface.__name__, interface)
    monkeypatch.setattr(scan_module, "mamba_ssm_available", lambda: True)
    with pytest.raises(ValueError, match="'mamba_ssm' needs CUDA tensors, got cpu"):
        resolve_backend("mamba_ssm", torch.device("cpu"))
    monkeypatch.setattr(scan_module, "resolve_backend", lambda backend, device: backend)  # pretend CUDA
    inputs = make_inputs(batch=1, d_inner=6, length=12, seed=5)
    y = selective_scan(**inputs, backend="mamba_ssm")
    assert calls == [dict(z=None, delta_softplus=True)]
    assert_close_scaled(y, selective_scan(**inputs, backend="reference"), "y")
