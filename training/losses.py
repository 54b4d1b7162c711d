"""The multi-task loss of seed 000 (section 4.1), with unknown labels masked out.

For each task (malignancy: 2 classes; BI-RADS: ``K`` classes) and each breast side, a
class-weighted cross-entropy over the studies of the batch whose label for that side is known
(labels ``-1`` are ignored, seed 000 section 3.1)::

    CE_side = sum_i w[y_i] * nll_i / sum_i w[y_i]          (i over known labels; PyTorch's
                                                            weighted mean, CrossEntropyLoss(weight))
    L_task  = mean over the sides that have a known label of CE_side          (eq. 12, 13)
    L       = sum over tasks of weight_task * L_task       (0.5 * label + 0.5 * BI-RADS, eq. 11)

The class weights are the inverse class frequencies of the training split, pooled over both
sides: ``w_c = N / (K * n_c)`` (the "balanced" weighting: a class seen ``N / K`` times weighs 1).

Distributed training: with ``world_size`` processes each holding part of the global batch, pass
``all_reduce`` (a sum over processes); the denominators ``sum_i w[y_i]`` are then summed over
the global batch and the local loss is multiplied by ``world_size``, so that the gradient
DistributedDataParallel averages is exactly the gradient of the loss of the global batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "SIDES",
    "inverse_frequency_weights",
    "masked_weighted_ce",
    "MultiTaskLoss",
]

logger = logging.getLogger(__name__)

#: Side order of the target arrays and of the heads (``malignancy_R`` before ``malignancy_L``).
SIDES: tuple[str, ...] = ("R", "L")


def inverse_frequency_weights(labels: np.ndarray | Sequence[int], n_classes: int) -> np.ndarray:
    """Inverse-frequency class weights ``N / (K * n_c)`` over the known labels (``>= 0``).

    A class with no example gets weight 1.0 (it never appears as a target of that data; the value
    only matters for another split's loss). With no known label at all every weight is 1.0.

    Args:
        labels: Class indices, any shape; negatives (unknown) are skipped.
        n_classes: ``K``.

    Returns:
        float64 ``(K,)``.
    """
    y = np.asarray(labels, dtype=np.int64).ravel()
    y = y[y >= 0]
    if y.size and y.max() >= n_classes:
        raise ValueError(f"label {int(y.max())} out of range for {n_classes} classes")
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = np.ones(n_classes, dtype=np.float64)
    seen = counts > 0
    if y.size:
        weights[seen] = y.size / (n_classes * counts[seen])
    return weights


def masked_weighted_ce(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerator and denominator of a class-weighted cross-entropy with unknown labels ignored.

    ``num / den`` equals ``F.cross_entropy(logits, target, weight, ignore_index=-1)`` when
    ``den > 0``; keeping them apart lets a distributed run sum ``den`` over processes.

    Args:
        logits: ``(B, K)`` (any float dtype; computed in float32).
        target: ``(B,)`` int64 class indices, ``-1`` = unknown.
        weight: ``(K,)`` class weights, or None for 1.

    Returns:
        ``(num, den)``: float32 scalars; ``num`` is differentiable, both are 0 with no known label.
    """
    valid = target >= 0
    safe = target.clamp(min=0)
    nll = F.cross_entropy(logits.float(), safe, reduction="none")
    if weight is None:
        w = valid.float()
    else:
        w = weight.to(device=logits.device, dtype=torch.float32)[safe] * valid.float()
    return (w * nll).sum(), w.sum()


class MultiTaskLoss:
    """``0.5 * L_malignancy + 0.5 * L_birads`` with per-side masking (module docstring).

    Args:
        tasks: The model's tasks (``"malignancy"``, ``"birads"``).
        task_weights: Weight per task (missing tasks default to 0.5).
        class_weights: ``(K,)`` weights per task, or None for unweighted.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        task_weights: Mapping[str, float] | None = None,
        class_weights: Mapping[str, np.ndarray | torch.Tensor | None] | None = None,
    ) -> None:
        self.tasks = tuple(tasks)
        tw = dict(task_weights or {})
        self.task_weights = {t: float(tw.get(t, 0.5)) for t in self.tasks}
        self.class_weights: dict[str, torch.Tensor | None] = {}
        for t in self.tasks:
            w = (class_weights or {}).get(t)
            self.class_weights[t] = None if w is None else torch.as_tensor(np.asarray(w), dtype=torch.float32)

    def __call__(
        self,
        outputs: Mapping[str, torch.Tensor],
        targets: Mapping[str, torch.Tensor],
        *,
        all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
        world_size: int = 1,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of a batch.

        Args:
            outputs: The model's logits (``"malignancy_R"``, ``"birads_L"``, ...).
            targets: Per task an int64 ``(B, 2)`` tensor of class indices for the sides
                ``(R, L)``; -1 = unknown.
            all_reduce: Sums a tensor over processes (distributed training), or None.
            world_size: Number of processes (the local loss is scaled by it, see the module
                docstring).

        Returns:
            ``(loss, parts)``: the scalar loss to back-propagate (every head is on the graph,
            with zero gradient where no label is known) and the per-task losses as floats (with
            ``all_reduce``: this process's share; their sum over processes is the global value).
        """
        nums, dens, logits = [], [], []
        for task in self.tasks:
            for j, side in enumerate(SIDES):
                out = outputs[f"{task}_{side}"]
                num, den = masked_weighted_ce(out, targets[task][:, j].to(out.device), self._w(task, out))
                nums.append(num)
                dens.append(den)
                logits.append(out)
        den = torch.stack(dens).detach()
        if all_reduce is not None:
            den = all_reduce(den.clone())
        num = torch.stack(nums)
        per_side = num / den.clamp(min=1e-12)
        known = (den > 0).float()
        total = num.new_zeros(())
        parts: dict[str, float] = {}
        for t_i, task in enumerate(self.tasks):
            sl = slice(2 * t_i, 2 * t_i + 2)
            n_known = known[sl].sum()
            task_loss = (per_side[sl] * known[sl]).sum() / n_known.clamp(min=1.0)
            total = total + self.task_weights[task] * task_loss
            parts[task] = float(task_loss.detach())
        # keep every head on the graph even when no side has a label (DistributedDataParallel)
        total = total + 0.0 * sum(o.float().sum() for o in logits)
        if all_reduce is not None:
            total = total * world_size
        return total, parts

    def _w(self, task: str, ref: torch.Tensor) -> torch.Tensor | None:
        w = self.class_weights[task]
        if w is not None and w.device != ref.device:
            w = w.to(ref.device)
            self.class_weights[task] = w
        return w
