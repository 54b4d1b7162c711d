"""Selective-scan backends (the core of SS2D; seed 000, 2.1.2; SPEC 5).

``selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *,
backend="auto")`` computes Mamba's S6 recurrence with mamba-ssm's argument layout:

- ``u``, ``delta``, ``z``: ``(batch, dim, L)``; ``A``: ``(dim, N)``;
- ``B``, ``C``: ``(batch, N, L)`` or ``(batch, groups, N, L)``; ``D``, ``delta_bias``: ``(dim,)``;
- returns ``(batch, dim, L)`` in ``u``'s dtype.

Backends (one validated argument):

- ``"ref"``: pure PyTorch (:mod:`engine.ssm.scan_ref`), any device, with autograd; fast on CPU.
- ``"cuda"``: mamba-ssm's fused ``selective_scan_fn`` (:mod:`engine.ssm.scan_cuda`); raises
  :class:`~engine.errors.ModelError` with the reason when mamba-ssm is not usable.
- ``"auto"``: ``"cuda"`` when the tensors are on CUDA and mamba-ssm imports, else ``"ref"``.

:func:`selective_scan_time_major` is the same with time-major tensors (``(L, batch, dim)`` and
``(L, batch, [groups,] N)``), the layout SS2D builds its token sequences in; the torch backend
scans it without transposes. :func:`cuda_backend_status` says ``(ok, reason)`` for the CUDA
backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.ssm.scan_cuda import cuda_backend_status, selective_scan_cuda
from engine.ssm.scan_ref import (
    selective_scan_ref,
    selective_scan_ref_loop,
    selective_scan_ref_time_major,
)

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "BACKENDS",
    "check_backend",
    "cuda_backend_status",
    "selective_scan",
    "selective_scan_cuda",
    "selective_scan_ref",
    "selective_scan_ref_loop",
    "selective_scan_ref_time_major",
    "selective_scan_time_major",
]

#: Accepted values of the ``backend`` argument.
BACKENDS: tuple[str, ...] = ("auto", "ref", "cuda")


def check_backend(backend: str) -> str:
    """Validate a backend name.

    Args:
        backend: One of :data:`BACKENDS`.

    Returns:
        ``backend`` unchanged.

    Raises:
        ValueError: Any other value.
    """
    if backend not in BACKENDS:
        raise ValueError(f"selective scan backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    *,
    backend: str = "auto",
) -> Tensor:
    """Selective scan ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``; ``y_t = C_t h_t + D u_t``.

    Args:
        u: ``(batch, dim, L)`` input.
        delta: ``(batch, dim, L)`` raw step sizes (``delta_bias`` added, then softplus if asked).
        A: ``(dim, N)`` real state matrix (diagonal per channel).
        B: ``(batch, N, L)`` or ``(batch, groups, N, L)`` input projections.
        C: same layout as ``B``: output projections.
        D: ``(dim,)`` skip weights or None.
        z: ``(batch, dim, L)`` gate (output times ``silu(z)``) or None.
        delta_bias: ``(dim,)`` or None.
        delta_softplus: Apply softplus to ``delta + delta_bias``.
        backend: ``"auto"``, ``"ref"`` or ``"cuda"`` (see the module docstring).

    Returns:
        ``(batch, dim, L)`` in ``u``'s dtype (computed in float32 or better).

    Raises:
        ValueError: Unknown backend, or shapes that do not fit the layout.
        ModelError: ``backend="cuda"`` where mamba-ssm is not usable.
    """
    check_backend(backend)
    use_cuda = backend == "cuda" or (backend == "auto" and u.is_cuda and cuda_backend_status()[0])
    if use_cuda:
        return selective_scan_cuda(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def selective_scan_time_major(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    *,
    backend: str = "auto",
) -> Tensor:
    """:func:`selective_scan` on time-major tensors.

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
        backend: ``"auto"``, ``"ref"`` or ``"cuda"``.

    Returns:
        ``(L, batch, dim)`` in ``u``'s dtype.

    Raises:
        ValueError: Unknown backend, or shapes that do not fit the layout.
        ModelError: ``backend="cuda"`` where mamba-ssm is not usable.
    """
    check_backend(backend)
    use_cuda = backend == "cuda" or (backend == "auto" and u.is_cuda and cuda_backend_status()[0])
    if not use_cuda:
        return selective_scan_ref_time_major(u, delta, A, B, C, D, z, delta_bias, delta_softplus)

    def to_bdl(t: Tensor | None) -> Tensor | None:
        if t is None:
            return None
        return t.permute(*range(1, t.dim()), 0).contiguous()

    y = selective_scan_cuda(
        to_bdl(u),
        to_bdl(delta),
        A,
        to_bdl(B),
        to_bdl(C),
        D,
        to_bdl(z),
        delta_bias,
        delta_softplus,
    )
    return y.permute(2, 0, 1)
