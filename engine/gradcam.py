"""In-house, hook-based Grad-CAM for the four-view models, mapped back to the original pixels.

Grad-CAM (Selvaraju et al. 2017; seed 002 section 3 uses it on the last residual block of each
branch; SPEC section 5): for a target logit ``y`` (one head, one class) and a view's last spatial
feature map ``A`` ``(C, h, w)``::

    w_k  = mean over (i, j) of dy / dA_k[i, j]
    cam  = ReLU(sum_k w_k A_k)                      (h, w)

The feature maps are the outputs of ``model.cam_layers()[view]`` (one module per view,
channels-first ``(B, C, h, w)``; channels-last maps are permuted when asked). :class:`CamHooks`
registers forward hooks on them inside a context manager and always removes them, even when the
forward or backward raises. While the hooks are on, every parameter's ``requires_grad`` is switched
off (and restored on exit) and each hook hands the rest of the network a detached copy of its map
that requires grad: the encoder runs with no autograd graph, at inference cost, and the backward
pass only goes through the fusion and the heads. Gradients are taken with
``torch.autograd.grad`` w.r.t. those maps only; nothing accumulates in ``.grad``.

Normalisation (:func:`normalise_shared`): a target's maps are divided by their common maximum over
the views that were explained by that target, per study. A shared scale is what a reader should
see: a view with weak evidence stays dim next to a view with strong evidence, instead of every view
being stretched to a bright maximum. With the default target (malignancy of each view's own
breast) the two breasts are explained by two different logits, so each breast has its own scale;
the raw maxima are kept (``scales``) so a caller can compare them. The amount of evidence is the
probability itself; the heatmap says where it comes from.

Mapping to the original grid is done by :class:`engine.preprocess.Geometry` (bilinear resize to the
crop box, flip undone for right breasts, zero outside the box). Bilinear interpolation never
exceeds the values it interpolates, so the original-grid maps stay in ``[0, 1]``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import torch
from torch import nn

from engine.errors import ModelError

__all__ = ["CamHooks", "CamRun", "grad_cam", "normalise_shared"]

logger = logging.getLogger(__name__)


class CamHooks:
    """Context manager that captures each view's feature map as a grad-requiring leaf.

    Args:
        model: The model (its parameters are frozen while inside the context when ``freeze``).
        layers: ``{view: module}``, e.g. ``model.cam_layers()``; one distinct module per view,
            each called at most once per forward.
        freeze: Switch ``requires_grad`` off for every parameter while inside (restored on exit).

    Attributes:
        maps: ``{view: tensor}`` filled by the forward pass: the leaf tensors to differentiate
            against, ``(B, C, h, w)`` (as the layer returned them).
    """

    def __init__(
        self, model: nn.Module, layers: Mapping[str, nn.Module], *, freeze: bool = True
    ) -> None:
        seen: dict[int, str] = {}
        for view, module in layers.items():
            if not isinstance(module, nn.Module):
                raise ModelError(f"cam_layers()[{view!r}] is not a torch module")
            if id(module) in seen:
                raise ModelError(
                    f"cam_layers() gives the same module for {seen[id(module)]} and {view}; "
                    "each view needs its own layer"
                )
            seen[id(module)] = view
        self.model = model
        self.layers = dict(layers)
        self.freeze = freeze
        self.maps: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._saved: list[tuple[nn.Parameter, bool]] = []

    def _hook(self, view: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            if not isinstance(output, torch.Tensor):
                raise ModelError(f"Grad-CAM layer of {view} returned {type(output).__name__}")
            if view in self.maps:
                raise ModelError(f"Grad-CAM layer of {view} ran twice in one forward pass")
            leaf = output.detach().requires_grad_(True)
            self.maps[view] = leaf
            # a non-leaf copy: the rest of the network may even work in place on it
            return leaf.clone()

        return hook

    def __enter__(self) -> CamHooks:
        try:
            if self.freeze:
                self._saved = [(p, p.requires_grad) for p in self.model.parameters()]
                for p, _ in self._saved:
                    p.requires_grad_(False)
            for view, module in self.layers.items():
                self._handles.append(module.register_forward_hook(self._hook(view)))
        except BaseException:
            self._restore()
            raise
        return self

    def _restore(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for p, flag in self._saved:
            p.requires_grad_(flag)
        self._saved.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._restore()


@dataclass(eq=False)
class CamRun:
    """What one Grad-CAM pass gives.

    Attributes:
        outputs: The model's outputs, detached, on the model's device.
        cams: ``{view: (B, h, w) float32 numpy}``, raw ``ReLU(sum_k w_k A_k)`` (not normalised).
        forward_seconds: Wall time of the forward pass (CUDA synchronised).
        backward_seconds: Wall time of the gradients and maps (CUDA synchronised).
    """

    outputs: dict[str, torch.Tensor]
    cams: dict[str, np.ndarray]
    forward_seconds: float = 0.0
    backward_seconds: float = 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    missing: torch.Tensor,
    view_targets: Mapping[str, tuple[str, int]],
    *,
    channels_last: bool = False,
) -> CamRun:
    """One forward pass with Grad-CAM hooks, then one gradient per distinct target.

    Args:
        model: A four-view model with ``cam_layers()`` (in eval mode).
        images: ``(B, 4, 1, H, W)`` float32, on the model's device.
        missing: ``(B, 4)`` bool.
        view_targets: ``{view: (head, class_index)}``: which logit explains which view, e.g.
            ``{"R-CC": ("malignancy_R", 1), "L-CC": ("malignancy_L", 1), ...}``. Views left out
            get no map.
        channels_last: The CAM layers return ``(B, h, w, C)`` maps.

    Returns:
        The outputs and the raw maps of the views that ran (missing views included: callers drop
        them).

    Raises:
        ModelError: No ``cam_layers``, a layer that does not fire, or an unknown head/class.
    """
    if not hasattr(model, "cam_layers"):
        raise ModelError(f"{type(model).__name__} has no cam_layers(): Grad-CAM unavailable")
    layers = model.cam_layers()
    unknown = sorted(set(view_targets) - set(layers))
    if unknown:
        raise ModelError(f"cam_layers() has no layer for {', '.join(unknown)}")
    groups: dict[tuple[str, int], list[str]] = {}
    for view, target in view_targets.items():
        groups.setdefault((str(target[0]), int(target[1])), []).append(view)

    cams: dict[str, np.ndarray] = {}
    with CamHooks(model, {v: layers[v] for v in view_targets}) as hooks, torch.enable_grad():
        _sync(images.device)
        t0 = time.perf_counter()
        outputs = model(images, missing)
        _sync(images.device)
        t1 = time.perf_counter()
        for (head, index), views in groups.items():
            if head not in outputs:
                heads = ", ".join(k for k in outputs if k != "attention")
                raise ModelError(f"model has no head {head!r} (heads: {heads})")
            logits = outputs[head]
            if not 0 <= index < logits.shape[1]:
                raise ModelError(f"head {head!r} has {logits.shape[1]} classes, not {index + 1}")
            acts = [hooks.maps[v] for v in views if v in hooks.maps]
            fired = [v for v in views if v in hooks.maps]
            if len(fired) < len(views):
                silent = ", ".join(v for v in views if v not in hooks.maps)
                raise ModelError(f"Grad-CAM layer(s) of {silent} did not run in the forward pass")
            grads = torch.autograd.grad(
                logits[:, index].sum(), acts, retain_graph=True, allow_unused=True
            )
            for view, a, g in zip(fired, acts, grads):
                a = a.detach()
                g = torch.zeros_like(a) if g is None else g
                if channels_last:
                    a, g = a.permute(0, 3, 1, 2), g.permute(0, 3, 1, 2)
                if a.ndim != 4:
                    raise ModelError(f"Grad-CAM map of {view} must be (B, C, h, w), got {tuple(a.shape)}")
                weights = g.float().mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
                cam = torch.relu((weights * a.float()).sum(dim=1))  # (B, h, w)
                cams[view] = cam.cpu().numpy().astype(np.float32, copy=False)
        outputs = {k: v.detach() for k, v in outputs.items()}
        t2 = time.perf_counter()  # the .cpu() copies above synchronised
    return CamRun(outputs=outputs, cams=cams, forward_seconds=t1 - t0, backward_seconds=t2 - t1)


def normalise_shared(
    cams: Mapping[str, np.ndarray], groups: Mapping[str, str]
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Scale one study's maps to ``[0, 1]`` with one maximum per target (module docstring).

    Args:
        cams: ``{view: (h, w)}`` raw non-negative maps of the present views.
        groups: ``{view: target name}``; views sharing a name share a scale.

    Returns:
        ``(normalised maps, {target name: raw maximum})``; a target whose maps are all zero keeps
        zero maps (scale 0).
    """
    scales: dict[str, float] = {}
    for view, cam in cams.items():
        name = groups[view]
        scales[name] = max(scales.get(name, 0.0), float(np.max(cam)) if cam.size else 0.0)
    out: dict[str, np.ndarray] = {}
    for view, cam in cams.items():
        s = scales[groups[view]]
        out[view] = (cam / s).astype(np.float32) if s > 0 else np.zeros_like(cam, np.float32)
    return out, scales
