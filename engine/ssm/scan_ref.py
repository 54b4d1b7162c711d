"""Pure-PyTorch selective scan (Mamba's S6 recurrence): the reference backend, CPU and GPU.

The selective scan is the core of VMamba's SS2D (seed 000, 2.1.2, eqs. 5-6; SPEC 5). For every batch
element ``b``, channel ``d`` and state index ``n``::

    delta_t = softplus(delta_raw_t + delta_bias)            (softplus only if delta_softplus)
    h_t     = exp(delta_t * A[d, n]) * h_{t-1} + delta_t * B_t[n] * u_t      (h_{-1} = 0)
    y_t     = sum_n C_t[n] * h_t[n]  +  D[d] * u_t
    out_t   = y_t * silu(z_t)                                (only if z is given)

(Mamba's zero-order-hold discretisation with the simplified ``B-bar = delta * B``, as in
``mamba_ssm.ops.selective_scan_interface.selective_scan_ref``.)

Argument layout (same as mamba-ssm's ``selective_scan_fn``):

- ``u``, ``delta``: ``(batch, dim, L)``; ``z``: ``(batch, dim, L)`` or None.
- ``A``: ``(dim, N)`` real (negative for a stable scan).
- ``B``, ``C``: ``(batch, N, L)``, or ``(batch, groups, N, L)`` with ``dim % groups == 0``; channel
  ``d`` reads group ``d // (dim // groups)``.
- ``D``, ``delta_bias``: ``(dim,)`` or None.
- Returns ``(batch, dim, L)`` in ``u``'s dtype; computed in float32 (float64 when ``u`` is float64),
  with autocast disabled inside.

Two implementations with that signature, held equal by ``tests/engine/test_scan.py``:

- :func:`selective_scan_ref_loop`: the plain per-step loop under autograd, the simplest correct
  version (the reference the fast path is tested against, and the benchmark's baseline).
- :func:`selective_scan_ref`: the fast path. It works time-major (``(L, batch, dim)``: every step
  is one contiguous slab; :func:`selective_scan_ref_time_major` takes that layout directly, and
  SS2D builds its token sequences that way). Time is cut into chunks of 16-128 steps; for each
  chunk, ``softplus(delta + bias)``, the decays ``exp(delta * A)`` and the inputs ``delta * B * u``
  are computed by a few vectorised ops into small work buffers reused chunk after chunk (they stay
  in cache; allocating fresh full-size ``(L, batch, dim, N)`` tensors page-faults and costs more
  than the arithmetic), and only the recurrence ``h_t = dA_t * h_{t-1} + dBu_t`` is stepped, one
  in-place ``addcmul_`` per step. The readout ``y_t = C_t . h_t`` is one batched matrix product per
  chunk (states laid out ``(N, dim)``, channels innermost). A custom
  :class:`torch.autograd.Function` saves only the state entering each chunk and recomputes the
  chunk in the backward pass, which steps the adjoint recurrence
  ``g_t = C_t dy_t + dA_{t+1} g_{t+1}`` the same way and forms every gradient with vectorised ops
  per chunk (as mamba-ssm's CUDA kernel recomputes on chip).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "selective_scan_ref",
    "selective_scan_ref_time_major",
    "selective_scan_ref_loop",
    "check_scan_args",
]

logger = logging.getLogger(__name__)

#: Elements (batch * dim * N) of one chunk's work buffers the fast path aims for; the chunk length
#: is this divided by the per-step size, clamped to [_MIN_CHUNK, _MAX_CHUNK] steps.
_CHUNK_ELEMENTS = 1 << 20
_MIN_CHUNK = 16
_MAX_CHUNK = 128
#: The per-step recurrence is cut into slabs of at most this many elements: torch runs smaller
#: element-wise ops on the calling thread (its grain size), so the ~L sequential steps never open
#: an OpenMP parallel region each (which costs more than it saves at this size, and stalls badly
#: when the machine is busy).
_SERIAL_STEP_ELEMENTS = 32768


def check_scan_args(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Validate selective-scan arguments (mamba-ssm layout, see the module docstring).

    Args:
        u: ``(batch, dim, L)``.
        delta: ``(batch, dim, L)``.
        A: ``(dim, N)``, real.
        B: ``(batch, N, L)`` or ``(batch, groups, N, L)``.
        C: same layout as ``B``.
        D: ``(dim,)`` or None.
        z: ``(batch, dim, L)`` or None.
        delta_bias: ``(dim,)`` or None.

    Returns:
        ``B`` and ``C`` as 4-D ``(batch, groups, N, L)`` views.

    Raises:
        ValueError: A shape or dtype that does not fit the layout.
    """
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, dim, L), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(
            f"selective_scan: delta shape {tuple(delta.shape)} differs from u shape"
            f" {tuple(u.shape)}"
        )
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: A must be (dim={dim}, N), got shape {tuple(A.shape)}")
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported (real A only)")
    n_state = A.shape[1]
    out = []
    for name, mat in (("B", B), ("C", C)):
        if mat.dim() == 3:
            mat = mat.unsqueeze(1)
        if mat.dim() != 4 or mat.shape[0] != batch or mat.shape[2:] != (n_state, length):
            raise ValueError(
                f"selective_scan: {name} must be (batch={batch}, [groups,] N={n_state},"
                f" L={length}),"
                f" got shape {tuple(mat.shape)}"
            )
        if dim % mat.shape[1] != 0:
            raise ValueError(
                f"selective_scan: dim={dim} is not a multiple of {name}'s groups={mat.shape[1]}"
            )
        out.append(mat)
    if out[0].shape[1] != out[1].shape[1]:
        raise ValueError("selective_scan: B and C have different numbers of groups")
    for name, vec in (("D", D), ("delta_bias", delta_bias)):
        if vec is not None and tuple(vec.shape) != (dim,):
            raise ValueError(
                f"selective_scan: {name} must be (dim={dim},), got shape {tuple(vec.shape)}"
            )
    if z is not None and z.shape != u.shape:
        raise ValueError(
            f"selective_scan: z shape {tuple(z.shape)} differs from u shape {tuple(u.shape)}"
        )
    return out[0], out[1]


def _compute_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _prepare_delta(
    delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool, dtype: torch.dtype
) -> Tensor:
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def _finish(
    y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype_in: torch.dtype
) -> Tensor:
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype_in).contiguous()


def selective_scan_ref_loop(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """Selective scan as a plain per-step loop under autograd (simplest correct version).

    Precomputes ``exp(delta * A)`` and ``delta * B * u`` for all steps in one vectorised op each,
    then steps the recurrence over ``unbind`` slices (slicing with ``x[t]`` would make autograd
    allocate a full-size gradient per step). Arguments and result as in the module docstring.

    Args:
        u: ``(batch, dim, L)``.
        delta: ``(batch, dim, L)``, raw (before ``delta_bias`` and softplus).
        A: ``(dim, N)``.
        B: ``(batch, N, L)`` or ``(batch, groups, N, L)``.
        C: same layout as ``B``.
        D: ``(dim,)`` skip weights or None.
        z: ``(batch, dim, L)`` gate or None.
        delta_bias: ``(dim,)`` or None.
        delta_softplus: Apply softplus to ``delta + delta_bias``.

    Returns:
        ``(batch, dim, L)`` in ``u``'s dtype.
    """
    B4, C4 = check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    dtype = _compute_dtype(u)
    with torch.autocast(device_type=u.device.type, enabled=False):
        uf = u.to(dtype)
        dt = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
        repeat = u.shape[1] // B4.shape[1]
        # Time-major layout (L, batch, dim, N): each step is one contiguous slice.
        Bd = B4.to(dtype).repeat_interleave(repeat, dim=1).permute(3, 0, 1, 2)
        Cd = C4.to(dtype).repeat_interleave(repeat, dim=1).permute(3, 0, 1, 2)
        dt_t = dt.permute(2, 0, 1).unsqueeze(-1)
        deltaA = torch.exp(dt_t * A.to(dtype))
        deltaB_u = dt_t * Bd * uf.permute(2, 0, 1).unsqueeze(-1)
        h = torch.zeros(deltaA.shape[1:], dtype=dtype, device=u.device)
        ys = []
        steps = zip(deltaA.unbind(0), deltaB_u.unbind(0), Cd.unbind(0), strict=True)
        for dA_t, dBu_t, C_t in steps:
            h = dA_t * h + dBu_t
            ys.append((h * C_t).sum(-1))
        y = torch.stack(ys, dim=-1)
        return _finish(y, uf, D, z, dtype_in)


def _chunk_length(per_step: int, length: int) -> int:
    steps = max(_MIN_CHUNK, min(_MAX_CHUNK, _CHUNK_ELEMENTS // max(per_step, 1)))
    return min(steps, length)


class _Workspace:
    """Work buffers for one chunk of ``T`` steps, reused chunk after chunk (they stay in cache).

    States are laid out ``(T, batch, groups, N, dim // groups)``: channels innermost, so the readout
    ``y = C . h`` and the backward's sums over channels are batched ``(1, N) @ (N, dim_g)``
    products with long contiguous rows.
    """

    def __init__(self, u: Tensor, groups: int, n_state: int, chunk: int, backward: bool) -> None:
        _, batch, dim = u.shape
        new = u.new_empty
        state = (chunk, batch, groups, n_state, dim // groups)
        self.dt = new((chunk, batch, dim))  # softplus(delta + bias)
        self.du = new((chunk, batch, dim))  # delta * u
        self.dA = new(state)  # exp(delta * A)
        self.H = new(state)  # states h_t
        self.carry = new(state[1:])
        if backward:
            self.sig = new((chunk, batch, dim))  # softplus'
            self.G = new(state)  # dL/dh_t


def _load_chunk(
    ws: _Workspace,
    t0: int,
    t1: int,
    u: Tensor,
    delta: Tensor,
    A_gnd: Tensor,
    B: Tensor,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    h_prev: Tensor | None,
    want_sigmoid: bool,
) -> int:
    """Fill the workspace for steps ``[t0, t1)`` and run the recurrence; returns ``T``.

    Afterwards, for the chunk's steps: ``ws.dt`` = delta (after bias and softplus),
    ``ws.du`` = delta * u, ``ws.dA`` = exp(delta * A), ``ws.H`` = h_t; with ``want_sigmoid``,
    ``ws.sig`` = d softplus / d(raw delta). ``A_gnd`` is ``A`` as ``(groups, N, dim_g)``.
    """
    steps = t1 - t0
    _, batch, dim = u.shape
    groups, n_state, dim_g = A_gnd.shape
    dt = ws.dt[:steps]
    if delta_bias is not None:
        torch.add(delta[t0:t1], delta_bias, out=dt)
    else:
        dt.copy_(delta[t0:t1])
    if delta_softplus:
        if want_sigmoid:
            torch.sigmoid(dt, out=ws.sig[:steps])
        dt.copy_(F.softplus(dt))
    du = torch.mul(dt, u[t0:t1], out=ws.du[:steps])
    chan = (steps, batch, groups, 1, dim_g)
    dA = torch.mul(dt.view(chan), A_gnd, out=ws.dA[:steps]).exp_()
    H = torch.mul(du.view(chan), B[t0:t1].unsqueeze(-1), out=ws.H[:steps])
    _recurrence(H, dA, h_prev, reverse=False)
    return steps


def _recurrence(X: Tensor, dA: Tensor, x0: Tensor | None, reverse: bool) -> None:
    """Step a chunk's linear recurrence in place, slab by slab (see ``_SERIAL_STEP_ELEMENTS``).

    Forward: ``X[t] += dA[t] * X[t-1]`` with ``X[-1] = x0`` (zero when None).
    Reverse (adjoint): ``X[t] += dA[t+1] * X[t+1]`` for ``t = T-2 .. 0``.
    """
    steps = X.shape[0]
    per_step = X[0].numel()
    size = -(-per_step // max(1, -(-per_step // _SERIAL_STEP_ELEMENTS)))
    x_slabs = X.view(steps, -1).split(size, dim=1)
    a_slabs = dA.view(steps, -1).split(size, dim=1)
    x0_slabs = x0.reshape(-1).split(size) if x0 is not None else [None] * len(x_slabs)
    for x_slab, a_slab, start in zip(x_slabs, a_slabs, x0_slabs, strict=True):
        xs = x_slab.unbind(0)
        das = a_slab.unbind(0)
        if reverse:
            for t in range(steps - 2, -1, -1):
                xs[t].addcmul_(das[t + 1], xs[t + 1])
        else:
            if start is not None:
                xs[0].addcmul_(das[0], start)
            for t in range(1, steps):
                xs[t].addcmul_(das[t], xs[t - 1])


def _readout(C_c: Tensor, H: Tensor, out: Tensor) -> None:
    """``out[..., 0, :] = sum_n C_c[..., n] * H[..., n, :]`` (``y_t = C_t . h_t`` for a chunk).

    A batched ``(1, N) @ (N, dim_g)`` product; for ``N <= 2`` a product too thin for BLAS, so
    ``N`` fused multiply-adds instead.
    """
    n_state = H.shape[-2]
    if n_state > 2:
        torch.matmul(C_c.unsqueeze(-2), H, out=out)
        return
    torch.mul(H[..., 0:1, :], C_c[..., 0:1, None], out=out)
    for n in range(1, n_state):
        out.addcmul_(H[..., n : n + 1, :], C_c[..., n : n + 1, None])


def _chunked_forward(
    u: Tensor,
    delta: Tensor,
    A_gnd: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    chunk: int,
    keep_states: bool,
) -> tuple[Tensor, Tensor | None]:
    """Time-major forward; returns ``y`` ``(L, batch, dim)`` and the states entering each chunk."""
    length, batch, dim = u.shape
    groups, n_state, dim_g = A_gnd.shape
    bounds = list(range(0, length, chunk))
    ws = _Workspace(u, groups, n_state, chunk, backward=False)
    y = u.new_empty((length, batch, dim))
    # State entering each chunk (row 0 stays zero), kept for the backward pass.
    h_starts = u.new_zeros((len(bounds),) + ws.carry.shape) if keep_states else None
    h_prev = None
    for i, t0 in enumerate(bounds):
        t1 = min(t0 + chunk, length)
        steps = _load_chunk(
            ws, t0, t1, u, delta, A_gnd, B, delta_bias, delta_softplus, h_prev, False
        )
        y_c = y[t0:t1]
        _readout(C[t0:t1], ws.H[:steps], y_c.view(steps, batch, groups, 1, dim_g))
        if D is not None:
            y_c.addcmul_(u[t0:t1], D)
        if i + 1 < len(bounds):
            h_prev = h_starts[i + 1] if h_starts is not None else ws.carry
            h_prev.copy_(ws.H[steps - 1])
    return y, h_starts


def _chunked_backward(
    dy: Tensor,
    u: Tensor,
    delta: Tensor,
    A_gnd: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    h_starts: Tensor,
    chunk: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """Time-major backward: recompute each chunk from its entry state, adjoint scan backwards.

    Returns the gradients of ``u, delta, A_gnd, B, C, D, delta_bias``.
    """
    length, batch, dim = u.shape
    groups, n_state, dim_g = A_gnd.shape
    bounds = list(range(0, length, chunk))
    ws = _Workspace(u, groups, n_state, chunk, backward=True)
    g_u = torch.empty_like(u)
    g_delta = torch.empty_like(u)
    g_B = torch.empty_like(B)
    g_C = torch.empty_like(C)
    g_A = torch.zeros_like(A_gnd)
    g_D = torch.zeros_like(D) if D is not None else None
    g_bias = torch.zeros_like(delta_bias) if delta_bias is not None else None
    g_carry = None  # dL/dh_{t1-1} from the steps after the chunk
    for i in range(len(bounds) - 1, -1, -1):
        t0 = bounds[i]
        t1 = min(t0 + chunk, length)
        h_prev = h_starts[i] if i > 0 else None
        steps = _load_chunk(
            ws, t0, t1, u, delta, A_gnd, B, delta_bias, delta_softplus, h_prev, want_sigmoid=True
        )
        dt, du = ws.dt[:steps], ws.du[:steps]
        dA, H, G = ws.dA[:steps], ws.H[:steps], ws.G[:steps]
        u_c, dy_c = u[t0:t1], dy[t0:t1]
        chan = (steps, batch, groups, 1, dim_g)
        # G_t = C_t dy_t + dA_{t+1} G_{t+1}: direct term, then the adjoint recurrence.
        torch.mul(C[t0:t1].unsqueeze(-1), dy_c.view(chan), out=G)
        if g_carry is not None:
            G[-1].add_(g_carry)
        _recurrence(G, dA, None, reverse=True)
        if i > 0:
            g_carry = torch.mul(dA[0], G[0], out=ws.carry)
        # C_t[n] = sum over the group's channels of h_t[n, :] dy_t;  B_t[n]: of G_t[n, :] du_t.
        torch.matmul(H, dy_c.view(chan).transpose(-1, -2), out=g_C[t0:t1].unsqueeze(-1))
        torch.matmul(G, du.view(chan).transpose(-1, -2), out=g_B[t0:t1].unsqueeze(-1))
        # delta_t * u_t: sum_n B_t[n] G_t[n, :] (written over du, no longer needed).
        g_du = du
        torch.matmul(B[t0:t1].unsqueeze(-2), G, out=g_du.view(chan))
        # delta_t * A: G_t * h_{t-1} * dA_t (written over dA; H is scratch afterwards).
        gL = dA.mul_(G)
        gL[1:].mul_(H[:-1])
        if h_prev is not None:
            gL[0].mul_(h_prev)
        else:
            gL[0].zero_()
        g_A.add_(torch.mul(gL, dt.view(chan), out=H).sum((0, 1)))
        g_dt = g_delta[t0:t1]
        torch.sum(gL.mul_(A_gnd), dim=-2, keepdim=True, out=g_dt.view(chan))
        g_dt.addcmul_(g_du, u_c)
        # u: through delta * u and the D skip.
        g_uc = torch.mul(g_du, dt, out=g_u[t0:t1])
        if D is not None:
            g_uc.addcmul_(dy_c, D)
            g_D.add_((dy_c * u_c).sum((0, 1)))
        if delta_softplus:
            g_dt.mul_(ws.sig[:steps])
        if g_bias is not None:
            g_bias.add_(g_dt.sum((0, 1)))
    return g_u, g_delta, g_A, g_B, g_C, g_D, g_bias


class _ChunkedScan(torch.autograd.Function):
    """Time-major ``y = scan(u, delta, A, B, C) + D u``, delta = softplus(delta + bias).

    Inputs are validated, contiguous, in the compute dtype, ``A`` as ``(groups, N, dim_g)``;
    ``D`` and ``delta_bias`` may be None. Only the state entering each chunk is saved; the backward
    recomputes the rest.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, u, delta, A_gnd, B, C, D, delta_bias, delta_softplus, chunk
    ):
        y, h_starts = _chunked_forward(
            u, delta, A_gnd, B, C, D, delta_bias, delta_softplus, chunk, keep_states=True
        )
        ctx.save_for_backward(u, delta, A_gnd, B, C, D, delta_bias, h_starts)
        ctx.delta_softplus = delta_softplus
        ctx.chunk = chunk
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):  # type: ignore[override]
        u, delta, A_gnd, B, C, D, delta_bias, h_starts = ctx.saved_tensors
        grads = _chunked_backward(
            dy.contiguous(),
            u,
            delta,
            A_gnd,
            B,
            C,
            D,
            delta_bias,
            ctx.delta_softplus,
            h_starts,
            ctx.chunk,
        )
        return (*grads, None, None)


def _time_major_core(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    dtype: torch.dtype,
) -> Tensor:
    """Dispatch to the chunked scan; inputs time-major, any strides; returns ``(L, batch, dim)``."""
    length, batch, dim = u.shape
    groups, n_state = B.shape[2], B.shape[3]
    # A (dim, N) -> (groups, N, dim_g): the state layout of the work buffers (autograd-tracked).
    A_gnd = A.to(dtype).reshape(groups, dim // groups, n_state).transpose(1, 2)
    args = [
        None if t is None else t.to(dtype).contiguous()
        for t in (u, delta, A_gnd, B, C, D, delta_bias)
    ]
    if length == 0:
        return args[0].new_zeros(u.shape)
    chunk = _chunk_length(batch * dim * n_state, length)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args):
        return _ChunkedScan.apply(*args, bool(delta_softplus), chunk)
    y, _ = _chunked_forward(*args, bool(delta_softplus), chunk, keep_states=False)
    return y


def _to_time_major(x: Tensor) -> Tensor:
    """``(batch, ..., L)`` -> ``(L, batch, ...)`` contiguous, through a 2-D transpose copy."""
    flat = x.reshape(-1, x.shape[-1])
    out = x.new_empty((x.shape[-1],) + tuple(x.shape[:-1]))
    out.view(x.shape[-1], -1).copy_(flat.t())
    return out


class _TimeMajor(torch.autograd.Function):
    """:func:`_to_time_major` with its gradient (the inverse transpose), both as 2-D copies."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return _to_time_major(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return _from_time_major(g)


def _from_time_major(x: Tensor) -> Tensor:
    """``(L, batch, ...)`` -> ``(batch, ..., L)`` contiguous, through a 2-D transpose copy."""
    flat = x.reshape(x.shape[0], -1)
    out = x.new_empty(tuple(x.shape[1:]) + (x.shape[0],))
    out.view(-1, x.shape[0]).copy_(flat.t())
    return out


class _FromTimeMajor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return _from_time_major(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return _to_time_major(g)


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """Selective scan, fast pure-PyTorch path (chunked, hand-written backward).

    Same signature and numbers as :func:`selective_scan_ref_loop` (and mamba-ssm's
    ``selective_scan_fn``); see the module docstring for the recurrence and the method. The inputs
    are transposed to time-major once (:func:`selective_scan_ref_time_major` avoids that).

    Args:
        u: ``(batch, dim, L)``.
        delta: ``(batch, dim, L)``, raw (before ``delta_bias`` and softplus).
        A: ``(dim, N)``.
        B: ``(batch, N, L)`` or ``(batch, groups, N, L)``.
        C: same layout as ``B``.
        D: ``(dim,)`` skip weights or None.
        z: ``(batch, dim, L)`` gate or None.
        delta_bias: ``(dim,)`` or None.
        delta_softplus: Apply softplus to ``delta + delta_bias``.

    Returns:
        ``(batch, dim, L)`` in ``u``'s dtype.

    Raises:
        ValueError: Arguments that do not fit the layout.
    """
    B4, C4 = check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    dtype = _compute_dtype(u)
    with torch.autocast(device_type=u.device.type, enabled=False):
        u_t, delta_t, B_t, C_t = (_TimeMajor.apply(t.to(dtype)) for t in (u, delta, B4, C4))
        y_t = _time_major_core(u_t, delta_t, A, B_t, C_t, D, delta_bias, delta_softplus, dtype)
        y = _FromTimeMajor.apply(y_t)
        if z is not None:
            y = y * F.silu(z.to(dtype))
        return y.to(dtype_in)


def selective_scan_ref_time_major(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """:func:`selective_scan_ref` on time-major tensors (no transposes; what SS2D uses on CPU).

    Args:
        u: ``(L, batch, dim)``.
        delta: ``(L, batch, dim)``, raw.
        A: ``(dim, N)``.
        B: ``(L, batch, N)`` or ``(L, batch, groups, N)``.
        C: same layout as ``B``.
        D: ``(dim,)`` or None.
        z: ``(L, batch, dim)`` or None.
        delta_bias: ``(dim,)`` or None.
        delta_softplus: Apply softplus to ``delta + delta_bias``.

    Returns:
        ``(L, batch, dim)`` in ``u``'s dtype.

    Raises:
        ValueError: Arguments that do not fit the layout.
    """
    if u.dim() != 3 or B.dim() not in (3, 4) or C.dim() not in (3, 4):
        raise ValueError(
            "selective_scan (time-major): u must be (L, batch, dim) and B, C"
            " (L, batch, [groups,] N)"
        )
    # Validate through the mamba-layout checker on permuted views (no copies).
    B4, C4 = check_scan_args(
        u.permute(1, 2, 0),
        delta.permute(1, 2, 0),
        A,
        B.permute(1, 2, 0) if B.dim() == 3 else B.permute(1, 2, 3, 0),
        C.permute(1, 2, 0) if C.dim() == 3 else C.permute(1, 2, 3, 0),
        D,
        None if z is None else z.permute(1, 2, 0),
        delta_bias,
    )
    dtype_in = u.dtype
    dtype = _compute_dtype(u)
    with torch.autocast(device_type=u.device.type, enabled=False):
        y = _time_major_core(
            u,
            delta,
            A,
            B4.permute(3, 0, 1, 2),
            C4.permute(3, 0, 1, 2),
            D,
            delta_bias,
            delta_softplus,
            dtype,
        )
        if z is not None:
            y = y * F.silu(z.to(dtype))
        return y.to(dtype_in)
