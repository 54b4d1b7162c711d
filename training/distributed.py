"""Multi-process training on PyTorch's own distributed engine (torchrun + DistributedDataParallel).

``torchrun --nproc_per_node=N -m training CONFIG.toml ...`` starts N copies of the trainer with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set; :func:`init_distributed` joins the process group
(NCCL on CUDA, gloo on CPU) and pins each process to ``cuda:LOCAL_RANK``. Multi-node runs are the
same command with ``--nnodes`` and a rendezvous endpoint (torchrun's documentation).

The run is arranged so that N processes with batch ``b`` compute what one process with batch
``N * b`` computes:

- the sampler shards one permutation per epoch (``DistributedSampler``; one process uses the same
  sampler with one replica);
- the loss normalises by the class-weight sum of the *global* batch (:mod:`training.losses`);
- BatchNorm uses the statistics of the global batch: ``nn.SyncBatchNorm`` on CUDA, and on CPU
  (gloo; PyTorch's SyncBatchNorm is GPU-only) :class:`GlobalBatchNorm2d`, which all-reduces the
  per-channel sums with autograd support;
- augmentation is seeded per sample, dropout per process.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "init_distributed",
    "shutdown",
    "barrier",
    "all_reduce_sum",
    "all_gather_objects",
    "GlobalBatchNorm2d",
    "convert_sync_batchnorm",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands.

    Attributes:
        rank: Global rank (0 = the process that writes files).
        local_rank: Rank on this node (selects the GPU).
        world_size: Number of processes.
        backend: ``"nccl"``, ``"gloo"``, or ``""`` when not distributed.
        owns_group: True when :func:`init_distributed` created the process group.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str = ""
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0


def init_distributed(device_type: str, timeout_minutes: float = 120.0) -> DistInfo:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1), else a single process.

    Args:
        device_type: ``"cuda"`` (NCCL) or ``"cpu"`` (gloo).
        timeout_minutes: Collective timeout; generous, because rank 0 alone builds the tensor
            cache while the others wait.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistInfo(rank, local_rank, dist.get_world_size(), dist.get_backend(), False)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=_dt.timedelta(minutes=timeout_minutes))
    logger.info("distributed: rank %d of %d (%s)", rank, world, backend)
    return DistInfo(rank, local_rank, world, backend, True)


def shutdown(info: DistInfo) -> None:
    """Leave the process group if this module created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op for one process)."""
    if info.enabled:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes in place (no gradient); returns it."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every process's ``obj`` in rank order (``[obj]`` for one process)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes with a gradient: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = grad.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


def _differentiable_sum(t: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(t)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batch of every process (CPU / gloo).

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm2d``. In training mode with an
    initialised process group it computes the mean and the biased variance over all processes
    (two all-reduces with autograd: the mean, then the centred sum of squares), normalises with
    them and updates the running statistics with the unbiased variance, as ``nn.BatchNorm2d``
    does for one large batch. Otherwise it is ``nn.BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        n_local = x.numel() // c
        stats = torch.cat([x.sum(dim=(0, 2, 3)), x.new_tensor([float(n_local)])])
        stats = _differentiable_sum(stats)
        n = stats[c]
        mean = stats[:c] / n
        centred = x - mean.view(1, c, 1, 1)
        var = _differentiable_sum((centred * centred).sum(dim=(0, 2, 3))) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * (n / (n - 1).clamp(min=1.0))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y


def convert_sync_batchnorm(model: nn.Module, device_type: str) -> nn.Module:
    """Replace every ``BatchNorm2d`` by a synchronised one (state dict unchanged).

    Args:
        model: The model (modified in place for CPU, returned for both).
        device_type: ``"cuda"`` (``nn.SyncBatchNorm``) or ``"cpu"`` (:class:`GlobalBatchNorm2d`).
    """
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in list(model.named_children()):
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            tensors = list(child.state_dict().values())
            if tensors:
                new.to(tensors[0].device)
            setattr(model, name, new)
        else:
            convert_sync_batchnorm(child, device_type)
    return model
