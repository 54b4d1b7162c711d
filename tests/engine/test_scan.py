"""Selective-scan backends against a direct transcription of the recurrence (SPEC 5).

The transcription below loops over batch, channel and time exactly as the equations read::

    delta_t = softplus(delta_raw_t + bias)        h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t
    y_t     = C_t . h_t + D u_t                   out_t = y_t * silu(z_t)

The torch backends (the chunked fast path and the plain loop) must reproduce it, values and
gradients; on a CUDA machine with mamba-ssm the CUDA backend must match the torch one within
mamba-ssm's own tolerances (fp32 rtol 6e-4 / atol 2e-3).
"""

from __future__ import annotations

import math

import pytest
import torch

import engine.ssm.scan_ref as scan_ref
from engine.errors import ModelError
from engine.ssm import (
    BACKENDS,
    cuda_backend_status,
    selective_scan,
    selective_scan_ref,
    selective_scan_ref_loop,
    selective_scan_time_major,
)

ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def transcribed_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The recurrence written out step by step (slow; tiny shapes only)."""
    batch, dim, length = u.shape
    n_state = A.shape[1]
    if B.dim() == 3:
        B = B.unsqueeze(1)
        C = C.unsqueeze(1)
    per_group = dim // B.shape[1]
    rows = []
    for b in range(batch):
        channels = []
        for d in range(dim):
            g = d // per_group
            h = u.new_zeros(n_state)
            ys = []
            for t in range(length):
                dt = delta[b, d, t]
                if delta_bias is not None:
                    dt = dt + delta_bias[d]
                if delta_softplus:
                    dt = torch.log1p(torch.exp(dt))
                h = torch.exp(dt * A[d]) * h + dt * B[b, g, :, t] * u[b, d, t]
                y = (C[b, g, :, t] * h).sum()
                if D is not None:
                    y = y + D[d] * u[b, d, t]
                if z is not None:
                    y = y * z[b, d, t] * torch.sigmoid(z[b, d, t])
                ys.append(y)
            channels.append(torch.stack(ys))
        rows.append(torch.stack(channels))
    return torch.stack(rows)


def make_inputs(
    batch=2,
    dim=4,
    length=13,
    n_state=3,
    groups=1,
    grouped_layout=True,
    with_d=True,
    with_z=True,
    with_bias=True,
    dtype=torch.float64,
    seed=0,
    delta_scale=1.0,
):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    bc_shape = (batch, groups, n_state, length) if grouped_layout else (batch, n_state, length)
    return {
        "u": rnd(batch, dim, length),
        "delta": rnd(batch, dim, length) * delta_scale - 1.0,
        "A": -torch.rand(dim, n_state, generator=gen, dtype=dtype) * 4.0 - 0.1,
        "B": rnd(*bc_shape),
        "C": rnd(*bc_shape),
        "D": rnd(dim) if with_d else None,
        "z": rnd(batch, dim, length) if with_z else None,
        "delta_bias": rnd(dim) * 0.5 if with_bias else None,
    }


def cast(inputs, dtype, requires_grad=False):
    out = {}
    for k, v in inputs.items():
        if v is None:
            out[k] = None
        else:
            out[k] = v.detach().to(dtype).requires_grad_(requires_grad)
    return out


def grads_of(fn, inputs, weight, softplus):
    y = fn(**inputs, delta_softplus=softplus)
    tensors = [inputs[k] for k in ARG_NAMES if inputs[k] is not None]
    return y, torch.autograd.grad(y, tensors, weight.to(y.dtype))


@pytest.fixture()
def small_chunks(monkeypatch):
    """Force chunks of 4 steps (several chunk boundaries in a short sequence) and cut each step's
    recurrence into uneven slabs of at most 7 elements."""
    monkeypatch.setattr(scan_ref, "_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(scan_ref, "_MIN_CHUNK", 4)
    monkeypatch.setattr(scan_ref, "_SERIAL_STEP_ELEMENTS", 7)


CASES = [
    pytest.param(dict(groups=1, grouped_layout=False), True, id="B3d-softplus-D-z-bias"),
    pytest.param(dict(groups=2, with_z=False), True, id="groups2-noz"),
    pytest.param(dict(groups=4, with_d=False, with_bias=False), False, id="groups4-plain"),
    pytest.param(dict(groups=1, with_z=False, with_bias=False), True, id="softplus-nobias"),
    pytest.param(dict(groups=2, n_state=1), True, id="N1-groups2"),
    pytest.param(dict(groups=1, n_state=2, with_z=False), True, id="N2"),
]


@pytest.mark.parametrize("impl", [selective_scan_ref, selective_scan_ref_loop])
@pytest.mark.parametrize("kwargs,softplus", CASES)
def test_torch_backends_match_transcription_fp32(small_chunks, impl, kwargs, softplus):
    inputs = make_inputs(**kwargs)
    weight = torch.randn(2, 4, 13, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y_ref, g_ref = grads_of(transcribed_scan, cast(inputs, torch.float64, True), weight, softplus)
    y, g = grads_of(impl, cast(inputs, torch.float32, True), weight, softplus)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(g, g_ref, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_gradcheck_fast_path_float64(small_chunks):
    inputs = cast(make_inputs(length=10, groups=2, n_state=2), torch.float64, True)
    names = [k for k in ARG_NAMES if inputs[k] is not None]

    def fn(*tensors):
        return selective_scan_ref(**dict(zip(names, tensors, strict=True)), delta_softplus=True)

    assert torch.autograd.gradcheck(fn, [inputs[k] for k in names], eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("length", [1, 37, 300])
def test_fast_path_matches_loop_across_chunk_boundaries(length):
    """Default chunking, ragged last chunk, long enough for several chunks at this size."""
    inputs = make_inputs(batch=2, dim=8, length=length, n_state=4, groups=2, seed=3)
    weight = torch.randn(2, 8, length, generator=torch.Generator().manual_seed(4))
    y_loop, g_loop = grads_of(
        selective_scan_ref_loop, cast(inputs, torch.float32, True), weight, True
    )
    y_fast, g_fast = grads_of(selective_scan_ref, cast(inputs, torch.float32, True), weight, True)
    torch.testing.assert_close(y_fast, y_loop, rtol=1e-5, atol=1e-5)
    for got, want in zip(g_fast, g_loop, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_fast_path_without_grad_equals_with_grad():
    inputs = cast(make_inputs(length=50, dim=6, groups=3), torch.float32)
    with torch.no_grad():
        y_nograd = selective_scan_ref(**inputs, delta_softplus=True)
    y_grad = selective_scan_ref(**cast(inputs, torch.float32, True), delta_softplus=True)
    torch.testing.assert_close(y_nograd, y_grad.detach(), rtol=0, atol=0)


def test_strong_decay_stays_finite(small_chunks):
    """delta * A down to about -800 per step: decays underflow to 0, nothing overflows."""
    inputs = make_inputs(length=24, delta_scale=20.0, seed=5)
    inputs["delta"] = inputs["delta"].abs() * 10.0
    weight = torch.ones(2, 4, 24, dtype=torch.float64)
    y_ref, g_ref = grads_of(transcribed_scan, cast(inputs, torch.float64, True), weight, True)
    y, g = grads_of(selective_scan_ref, cast(inputs, torch.float32, True), weight, True)
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(t).all() for t in g)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(g[2].double(), g_ref[2], rtol=1e-3, atol=1e-3)  # dA


def test_low_precision_inputs_compute_in_fp32():
    inputs = cast(make_inputs(length=20), torch.float32)
    want = selective_scan_ref(**inputs, delta_softplus=True)
    half = {
        k: (v.bfloat16() if k in ("u", "delta", "B", "C", "z") and v is not None else v)
        for k, v in inputs.items()
    }
    got = selective_scan_ref(**half, delta_softplus=True)
    assert got.dtype == torch.bfloat16
    # Only the bf16 rounding of inputs and output separates the two (no bf16 accumulation).
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = selective_scan_ref(**inputs, delta_softplus=True)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, want, rtol=1e-6, atol=1e-6)


def test_known_values_constant_input():
    """One channel, N=1, A=-1, delta=ln 2 (no softplus): h_t = h_{t-1}/2 + ln2, closed form."""
    length = 6
    u = torch.ones(1, 1, length)
    delta = torch.full((1, 1, length), math.log(2.0))
    A = -torch.ones(1, 1)
    B = torch.ones(1, 1, length)
    C = torch.full((1, 1, length), 2.0)
    D = torch.full((1,), 0.5)
    y = selective_scan(u, delta, A, B, C, D, backend="ref")
    # h_t = ln2 * (1 - 0.5^(t+1)) / 0.5 ; y_t = 2 h_t + 0.5
    t = torch.arange(length, dtype=torch.float32)
    want = 2.0 * math.log(2.0) * (1 - 0.5 ** (t + 1)) / 0.5 + 0.5
    torch.testing.assert_close(y[0, 0], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("grouped_layout", [True, False])
def test_time_major_entry_matches_mamba_layout(small_chunks, grouped_layout):
    """The time-major API SS2D uses: same numbers and gradients, inputs only transposed."""
    inputs = make_inputs(
        length=11, groups=2 if grouped_layout else 1, grouped_layout=grouped_layout
    )
    weight = torch.randn(2, 4, 11, generator=torch.Generator().manual_seed(2))
    y, g = grads_of(selective_scan_ref, cast(inputs, torch.float32, True), weight, True)
    tm = cast(inputs, torch.float32, True)
    names = [k for k in ARG_NAMES if tm[k] is not None]

    def to_time_major(name, t):
        if t is None or name in ("A", "D", "delta_bias"):
            return t
        return t.permute(t.dim() - 1, *range(t.dim() - 1))

    y_t = selective_scan_time_major(
        **{k: to_time_major(k, v) for k, v in tm.items()}, delta_softplus=True, backend="auto"
    )
    assert y_t.shape == (11, 2, 4)
    torch.testing.assert_close(y_t.permute(1, 2, 0), y, rtol=1e-6, atol=1e-6)
    g_t = torch.autograd.grad(y_t, [tm[k] for k in names], weight.permute(2, 0, 1))
    for name, got, want in zip(names, g_t, g, strict=True):
        torch.testing.assert_close(
            got, want, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}"
        )
    with pytest.raises(ValueError, match="backend"):
        selective_scan_time_major(**{k: to_time_major(k, v) for k, v in tm.items()}, backend="x")


def test_auto_backend_on_cpu_is_the_torch_reference():
    inputs = cast(make_inputs(length=9), torch.float32)
    torch.testing.assert_close(
        selective_scan(**inputs, delta_softplus=True, backend="auto"),
        selective_scan_ref(**inputs, delta_softplus=True),
        rtol=0,
        atol=0,
    )


def test_backend_is_validated():
    inputs = cast(make_inputs(length=5), torch.float32)
    assert BACKENDS == ("auto", "ref", "cuda")
    with pytest.raises(ValueError, match="backend"):
        selective_scan(**inputs, backend="torch")


def test_cuda_backend_status_is_one_line():
    ok, reason = cuda_backend_status()
    assert isinstance(ok, bool)
    assert reason and "\n" not in reason
    if not torch.cuda.is_available():
        assert not ok and "CUDA" in reason


@pytest.mark.skipif(cuda_backend_status()[0], reason="CUDA backend available here")
def test_cuda_backend_unavailable_raises_model_error_with_reason():
    inputs = cast(make_inputs(length=5), torch.float32)
    with pytest.raises(ModelError, match="unavailable") as info:
        selective_scan(**inputs, backend="cuda")
    assert cuda_backend_status()[1] in str(info.value)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda d: d.update(u=d["u"][0]), "u must be"),
        (lambda d: d.update(delta=d["delta"][:, :, :-1]), "delta shape"),
        (lambda d: d.update(A=d["A"][:-1]), "A must be"),
        (lambda d: d.update(B=d["B"][..., :-1]), "B must be"),
        (lambda d: d.update(C=torch.randn(2, 3, 3, 13)), "not a multiple"),
        (lambda d: d.update(D=torch.randn(5)), "D must be"),
        (lambda d: d.update(z=d["z"][:1]), "z shape"),
        (lambda d: d.update(A=torch.complex(d["A"], d["A"])), "complex"),
    ],
)
def test_bad_shapes_raise_value_error(change, match):
    inputs = cast(make_inputs(), torch.float32)
    change(inputs)
    for backend in ("ref", "cuda"):
        with pytest.raises(ValueError, match=match):
            selective_scan(**inputs, backend=backend)
    with pytest.raises(ValueError, match=match):
        selective_scan_ref_loop(**inputs)


requires_cuda_backend = pytest.mark.skipif(
    not cuda_backend_status()[0], reason=f"CUDA backend: {cuda_backend_status()[1]}"
)


@pytest.mark.cuda
@requires_cuda_backend
@pytest.mark.parametrize("groups,softplus", [(1, True), (2, False)])
def test_cuda_backend_matches_torch_backend(groups, softplus):
    """mamba-ssm's kernel vs our reference on the GPU, fp32 (mamba-ssm's tolerances)."""
    inputs = make_inputs(batch=2, dim=16, length=300, n_state=8, groups=groups, seed=7)
    weight = torch.randn(2, 16, 300, generator=torch.Generator().manual_seed(8)).cuda()
    cuda_in = {
        k: (None if v is None else v.float().cuda().requires_grad_()) for k, v in inputs.items()
    }
    ref_in = {
        k: (None if v is None else v.float().cuda().requires_grad_()) for k, v in inputs.items()
    }
    names = [k for k in ARG_NAMES if inputs[k] is not None]
    y_cuda = selective_scan(**cuda_in, delta_softplus=softplus, backend="cuda")
    y_ref = selective_scan(**ref_in, delta_softplus=softplus, backend="ref")
    torch.testing.assert_close(y_cuda, y_ref, rtol=6e-4, atol=2e-3)
    g_cuda = torch.autograd.grad(y_cuda, [cuda_in[k] for k in names], weight)
    g_ref = torch.autograd.grad(y_ref, [ref_in[k] for k in names], weight)
    for name, got, want in zip(names, g_cuda, g_ref, strict=True):
        torch.testing.assert_close(
            got, want, rtol=6e-4, atol=2e-3, msg=lambda m, name=name: f"{name}: {m}"
        )


@pytest.mark.cuda
@requires_cuda_backend
def test_cuda_time_major_entry_matches_torch_backend():
    inputs = make_inputs(batch=2, dim=8, length=64, n_state=4, groups=2, seed=9)
    tm = {}
    for k, v in inputs.items():
        if v is not None and k not in ("A", "D", "delta_bias"):
            v = v.permute(v.dim() - 1, *range(v.dim() - 1))
        tm[k] = None if v is None else v.float().cuda()
    y_cuda = selective_scan_time_major(**tm, delta_softplus=True, backend="cuda")
    y_ref = selective_scan_time_major(**tm, delta_softplus=True, backend="ref")
    assert y_cuda.shape == (64, 2, 8)
    torch.testing.assert_close(y_cuda, y_ref, rtol=6e-4, atol=2e-3)
