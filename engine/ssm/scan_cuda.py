"""mamba-ssm's CUDA selective scan, imported lazily (optional dependency, CUDA machines only).

``mamba_ssm`` is imported once, inside :func:`cuda_backend_status`, catching every ``Exception``:
its import can fail on a missing package, a CUDA/driver mismatch or a triton error, and none of
those may break the CPU path. The reason is kept and reported in one line.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from engine.errors import ModelError

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["cuda_backend_status", "selective_scan_cuda"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = "install the optional extra on a CUDA machine: pip install 'mammo-viewer[cuda]'"

_lock = threading.Lock()
_state: dict[str, Any] = {}


def _load() -> tuple[Any, str]:
    """Import ``selective_scan_fn`` once; returns ``(function or None, reason)``."""
    with _lock:
        if "fn" not in _state:
            fn = None
            try:
                import torch

                if not torch.cuda.is_available():
                    reason = "no CUDA device: torch.cuda.is_available() is False"
                else:
                    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

                    fn = selective_scan_fn
                    reason = "mamba_ssm selective_scan_fn available"
            except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
                first_line = (str(exc).splitlines() or [""])[0]
                reason = (
                    f"mamba_ssm failed to import ({type(exc).__name__}: {first_line}); "
                    f"{_INSTALL_HINT}"
                )
            if fn is None:
                logger.info("CUDA selective scan unavailable: %s", reason)
            _state["fn"] = fn
            _state["reason"] = reason
        return _state["fn"], _state["reason"]


def cuda_backend_status() -> tuple[bool, str]:
    """Whether mamba-ssm's CUDA selective scan can be used here, and why (not).

    The first call tries the import (only when a CUDA device is present); later calls are free.

    Returns:
        ``(ok, reason)``: ``reason`` is one human line (the import error and what to install).
    """
    fn, reason = _load()
    return fn is not None, reason


def selective_scan_cuda(
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
    """Selective scan with mamba-ssm's fused CUDA kernel (``selective_scan_fn``).

    Same arguments and layout as :func:`engine.ssm.scan_ref.selective_scan_ref`; all tensors on one
    CUDA device. ``A``, ``D`` and ``delta_bias`` are passed in float32 (the kernel's weight dtype).

    Returns:
        ``(batch, dim, L)`` in ``u``'s dtype.

    Raises:
        ModelError: mamba-ssm is not usable here (the message says why and what to install).
        ValueError: Shapes that do not fit the layout, or tensors not on CUDA.
    """
    import torch

    from engine.ssm.scan_ref import check_scan_args

    check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    fn, reason = _load()
    if fn is None:
        raise ModelError(f"selective scan backend 'cuda' unavailable: {reason}")
    if not u.is_cuda:
        raise ValueError(
            f"selective scan backend 'cuda' needs CUDA tensors (got device {u.device})"
        )

    def _f32(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.float()

    # The kernel wants u, delta, z, B and C in one input dtype with the time axis contiguous.
    def _last_contig(t: Tensor | None) -> Tensor | None:
        if t is None:
            return None
        t = t.to(u.dtype)
        return t if t.stride(-1) == 1 else t.contiguous()

    with torch.autocast(device_type="cuda", enabled=False):
        return fn(
            _last_contig(u),
            _last_contig(delta),
            A.float(),
            _last_contig(B),
            _last_contig(C),
            _f32(D),
            z=_last_contig(z),
            delta_bias=_f32(delta_bias),
            delta_softplus=delta_softplus,
            return_last_state=False,
        )
