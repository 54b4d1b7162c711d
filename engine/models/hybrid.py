"""Per-view image encoders of the four-view framework (seed 000, sections 2.1.1-2.1.3).

Three encoders, one contract. Each takes one batch of single views and returns its last spatial
feature map, channels-FIRST, which the four-view model taps for Grad-CAM and pools into the view
vector ``v``:

- :class:`ResNetEncoder`: a whole ResNet-18 or ResNet-50 backbone (the CNN baselines, 2.1.1).
- :class:`HybridEncoder`: the early layers of a ResNet-18 (stem + ``layer1`` + ``layer2`` by
  default, cut configurable) followed by VSSM stages of MedMamba-style blocks (the proposed
  model, 2.1.3).
- :class:`VSSMEncoder`: patch embedding followed by VSSM stages only (the pure-VSSM baseline,
  2.1.2).

Input of every encoder: ``(N, 1, H, W)`` float32 in ``[0, 1]`` (grayscale, dense tissue bright).
Each encoder normalises its own input:

- ResNet-based encoders replicate the gray channel to three and apply the ImageNet mean/std
  (:data:`engine.models.resnet.IMAGENET_MEAN` / ``IMAGENET_STD``), as the pretrained layers expect
  (seed 000, 4.2: "each grayscale mammography image was replicated across three channels").
- The pure VSSM, never pretrained, takes the single channel normalised with the gray equivalents
  of those statistics (mean 0.449, std 0.226).

The normalisation constants are non-persistent buffers: they are not in the state dict.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from engine.errors import ModelError
from engine.models import vssm
from engine.models.resnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ResNet,
    ResNetConfig,
    load_pretrained,
)

__all__ = [
    "GRAY_MEAN",
    "GRAY_STD",
    "GrayToImageNet",
    "ResNetEncoder",
    "HybridEncoder",
    "VSSMEncoder",
]

logger = logging.getLogger(__name__)

#: Gray-level statistics used by the pure VSSM (the mean of the ImageNet RGB statistics).
GRAY_MEAN: float = sum(IMAGENET_MEAN) / 3.0
GRAY_STD: float = sum(IMAGENET_STD) / 3.0


class GrayToImageNet(nn.Module):
    """Replicate a gray channel to RGB and apply the ImageNet mean/std.

    The output is laid out channels-last in memory (same shape): oneDNN's convolutions run about
    1.4x faster on CPU in that layout, and it leaves the state dict untouched.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)`` in ``[0, 1]`` -> ``(N, 3, H, W)`` normalised, float32."""
        out = (x - self.mean) / self.std
        return out.contiguous(memory_format=torch.channels_last)


class ResNetEncoder(nn.Module):
    """A whole ResNet backbone (no classifier) as a per-view encoder.

    Args:
        depth: 18 or 50.

    Attributes:
        resnet: The backbone with torchvision's key names (``resnet.conv1``, ``resnet.layer4``...).
        out_channels: 512 (ResNet-18) or 2048 (ResNet-50).
        out_stride: 32.
    """

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.norm_in = GrayToImageNet()
        self.resnet = ResNet(ResNetConfig(depth=depth, stages=4, num_classes=0))
        self.out_channels = self.resnet.out_channels
        self.out_stride = self.resnet.config.out_stride

    def load_pretrained(self, path: str | Path) -> None:
        """Load local ImageNet ResNet weights (``strict=True``; ``fc`` is dropped)."""
        load_pretrained(self.resnet, path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode single views.

        Args:
            x: ``(N, 1, H, W)`` float32 in ``[0, 1]``.

        Returns:
            ``(N, out_channels, ceil(H/32), ceil(W/32))`` float32, channels-first.
        """
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"encoder: expected (N, 1, H, W) images, got {tuple(x.shape)}")
        return self.resnet.forward_features(self.norm_in(x))


class HybridEncoder(nn.Module):
    """ResNet-18 early layers, then VSSM stages (seed 000, 2.1.3 and Fig. 3a).

    ``conv1 .. layer{cut_stage}`` of a ResNet-18 turn pixels into a mid-level map (stride
    ``2 ** (cut_stage + 1)``); each VSSM stage then halves the resolution with a patch merging and
    runs ``depths[i]`` MedMamba-style blocks; a final LayerNorm closes the encoder.

    Args:
        cut_stage: ResNet-18 stages kept (1-3).
        depths: VSSM blocks per stage.
        dims: Channels per VSSM stage.
        d_state: SS2D state size.
        ssm_ratio: SS2D inner expansion.
        drop_path: Stochastic depth of the last block (linear ramp from 0).

    Attributes:
        resnet: The ResNet-18 trunk, torchvision key names (``resnet.conv1``, ``resnet.layer2``).
        out_channels: ``dims[-1]``.
        out_stride: ``2 ** (cut_stage + 1 + len(depths))``.
    """

    def __init__(
        self,
        cut_stage: int,
        depths: tuple[int, ...],
        dims: tuple[int, ...],
        d_state: int,
        ssm_ratio: float,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm_in = GrayToImageNet()
        self.resnet = ResNet(ResNetConfig(depth=18, stages=cut_stage, num_classes=0))
        self.stages = _vssm_stages(
            self.resnet.out_channels, depths, dims, d_state, ssm_ratio, drop_path, merge_first=True
        )
        self.norm_out = nn.LayerNorm(dims[-1])
        self.out_channels = dims[-1]
        self.out_stride = self.resnet.config.out_stride * 2 ** len(depths)

    def load_pretrained(self, path: str | Path) -> None:
        """Load local ImageNet ResNet-18 weights into the trunk (cut stages and ``fc`` dropped)."""
        load_pretrained(self.resnet, path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode single views.

        Args:
            x: ``(N, 1, H, W)`` float32 in ``[0, 1]``.

        Returns:
            ``(N, out_channels, H / out_stride, W / out_stride)`` float32, channels-first (a
            permuted view of the channels-last VSSM map).
        """
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"encoder: expected (N, 1, H, W) images, got {tuple(x.shape)}")
        feats = self.resnet.forward_features(self.norm_in(x))  # (N, C, h, w), channels_last memory
        tokens = feats.permute(0, 2, 3, 1)  # (N, h, w, C)
        for stage in self.stages:
            tokens = stage(tokens)
        return self.norm_out(tokens).permute(0, 3, 1, 2)


class VSSMEncoder(nn.Module):
    """Pure VSSM: patch embedding, then VSSM stages (seed 000, 2.1.2; MedMamba-style blocks).

    Args:
        patch_size: Patch embedding stride (4 as in VMamba/MedMamba).
        depths: VSSM blocks per stage; stages after the first start with a patch merging.
        dims: Channels per stage (``dims[0]`` is the embedding width).
        d_state: SS2D state size.
        ssm_ratio: SS2D inner expansion.
        drop_path: Stochastic depth of the last block (linear ramp from 0).

    Attributes:
        out_channels: ``dims[-1]``.
        out_stride: ``patch_size * 2 ** (len(depths) - 1)``.
    """

    def __init__(
        self,
        patch_size: int,
        depths: tuple[int, ...],
        dims: tuple[int, ...],
        d_state: int,
        ssm_ratio: float,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(GRAY_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(GRAY_STD), persistent=False)
        self.patch_embed = vssm.PatchEmbed(in_chans=1, embed_dim=dims[0], patch_size=patch_size)
        self.stages = _vssm_stages(
            dims[0], depths, dims, d_state, ssm_ratio, drop_path, merge_first=False
        )
        self.norm_out = nn.LayerNorm(dims[-1])
        self.out_channels = dims[-1]
        self.out_stride = patch_size * 2 ** (len(depths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode single views.

        Args:
            x: ``(N, 1, H, W)`` float32 in ``[0, 1]``.

        Returns:
            ``(N, out_channels, H / out_stride, W / out_stride)`` float32, channels-first.
        """
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"encoder: expected (N, 1, H, W) images, got {tuple(x.shape)}")
        tokens = self.patch_embed((x - self.mean) / self.std)  # (N, h, w, C)
        for stage in self.stages:
            tokens = stage(tokens)
        return self.norm_out(tokens).permute(0, 3, 1, 2)


def _vssm_stages(
    in_channels: int,
    depths: tuple[int, ...],
    dims: tuple[int, ...],
    d_state: int,
    ssm_ratio: float,
    drop_path: float,
    merge_first: bool,
) -> nn.ModuleList:
    """VSSM stages on channels-last maps; stage i = [PatchMerging] + depths[i] blocks."""
    total = sum(depths)
    rates = [drop_path * i / max(total - 1, 1) for i in range(total)]
    stages = nn.ModuleList()
    channels, start = in_channels, 0
    for i, (depth, dim) in enumerate(zip(depths, dims)):
        layers: list[nn.Module] = []
        if i > 0 or merge_first:
            layers.append(vssm.PatchMerging(channels, dim))
        elif channels != dim:
            raise ModelError(f"vssm: first stage width {dim} != embedding width {channels}")
        layers.append(
            vssm.VSSStage(
                dim, depth, d_state=d_state, ssm_ratio=ssm_ratio,
                drop_path=rates[start : start + depth],
            )
        )
        stages.append(nn.Sequential(*layers))
        channels, start = dim, start + depth
    return stages
