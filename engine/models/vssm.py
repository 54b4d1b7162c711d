"""Visual state-space (VSSM) building blocks: VMamba's SS2D and MedMamba's conv|SS2D block.

Seed 000, 2.1.2-2.1.3: the hybrid CNN-VSSM model feeds early ResNet-18 features into VSSM stages
built from MedMamba-style blocks (channel split: conv branch | SS2D branch, concat, channel shuffle,
residual) whose SS2D is VMamba's 2-D selective scan (four scan orders, per-direction dt/B/C
projections, cross-merge). SPEC 5.1.

Layout: feature maps are **channels-last** ``(B, H, W, C)`` float tensors inside this module (the
layout of VMamba and MedMamba: LayerNorm and Linear act on the last axis). Only
:class:`PatchEmbed` takes a channels-first image. Grad-CAM on a VSSM map permutes it to
``(B, C, H, W)`` itself. Public surface (stable; the four-view model imports it):

============================  ========================  ===================================
module                        input                     output
============================  ========================  ===================================
``SS2D(dim, ...)``            ``(B, H, W, dim)``        ``(B, H, W, dim)``
``VSSBlock(dim, ...)``        ``(B, H, W, dim)``        ``(B, H, W, dim)`` (residual)
``PatchEmbed(in_chans, e)``   ``(B, in_chans, H, W)``   ``(B, H // p, W // p, e)``
``PatchMerging(dim)``         ``(B, H, W, dim)``        ``(B, ceil(H/2), ceil(W/2), 2 * dim)``
``VSSStage(dim, depth, ds)``  ``(B, H, W, dim)``        ``(B, H', W', stage.out_dim)``
============================  ========================  ===================================

``VSSStage`` runs ``depth`` blocks at ``dim`` channels, then (``downsample=True``) one
:class:`PatchMerging`, as MedMamba's ``VSSLayer``: ``out_dim = 2 * dim``, ``H' = ceil(H / 2)``.

Cost: SS2D's selective scan works on ``B * 4 * d_inner * H * W * d_state`` elements
(``d_inner = ssm_ratio * dim``); lowering ``d_state`` or ``ssm_ratio`` cuts it proportionally.
Every module is configured by plain constructor arguments; importing this file builds nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from engine.ssm import check_backend, selective_scan_time_major

__all__ = [
    "SCAN_DIRECTIONS",
    "DropPath",
    "PatchEmbed",
    "PatchMerging",
    "SS2D",
    "VSSBlock",
    "VSSStage",
    "channel_shuffle",
]

logger = logging.getLogger(__name__)

#: The four scan orders of SS2D, in the order of its direction axis ``K``.
SCAN_DIRECTIONS: tuple[str, ...] = (
    "row-major",
    "column-major",
    "row-major reversed",
    "column-major reversed",
)


def _trunc_normal_linear(layer: nn.Linear) -> None:
    nn.init.trunc_normal_(layer.weight, std=0.02)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training.

    Args:
        p: Probability of dropping a sample's branch; kept branches are scaled by ``1 / (1 - p)``.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath: p must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        """Any shape ``(B, ...)`` -> same shape and dtype."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SS2D(nn.Module):
    """VMamba's 2-D selective scan block (SS2D), channels-last.

    ``x -> in_proj -> (x, z)``; ``x -> depthwise conv -> SiLU -> four-direction selective scan ->
    cross-merge -> LayerNorm``; times ``SiLU(z)``; ``-> out_proj -> dropout``.

    The four scan orders (:data:`SCAN_DIRECTIONS`) are laid out time-major as one batch of
    ``K * d_inner`` channels and scanned in a single :func:`engine.ssm.selective_scan_time_major`
    call with ``K`` groups (direction ``k``'s channels read its own ``B_k``, ``C_k``). Direction
    ``k`` has its own ``x_proj`` (to ``dt_rank + 2 * d_state``), ``dt_proj`` (rank -> ``d_inner``,
    with bias), ``A_log`` and ``D``. ``A_logs`` and ``Ds`` are float32 parameters; the projections
    to dt/B/C and the scan run in float32 with autocast disabled (cheap next to the scan, and dt
    enters an exponential).

    Args:
        dim: Channels ``C`` in and out.
        d_state: State size ``N`` per channel.
        ssm_ratio: ``d_inner = int(ssm_ratio * dim)`` (Mamba's ``expand``).
        dt_rank: Rank of the dt projection; None -> ``ceil(dim / 16)``.
        d_conv: Depthwise convolution kernel size (odd).
        conv_bias: Bias in the depthwise convolution.
        bias: Bias in ``in_proj`` and ``out_proj``.
        dt_min: Smallest initial step size (softplus(dt bias) is log-uniform in [dt_min, dt_max]).
        dt_max: Largest initial step size.
        dt_init_floor: Lower clamp of the initial step sizes.
        dropout: Dropout after ``out_proj``.
        scan_backend: ``"auto"``, ``"ref"`` or ``"cuda"`` (see :mod:`engine.ssm`).

    Shapes:
        ``forward``: ``(B, H, W, dim)`` -> ``(B, H, W, dim)``, input dtype (float32, or the
        autocast dtype for the projections).
    """

    K = 4

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        dt_rank: int | None = None,
        d_conv: int = 3,
        conv_bias: bool = True,
        bias: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dropout: float = 0.0,
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        if dim <= 0 or d_state <= 0:
            raise ValueError(f"SS2D: dim and d_state must be positive, got {dim}, {d_state}")
        if d_conv % 2 != 1:
            raise ValueError(f"SS2D: d_conv must be odd, got {d_conv}")
        self.dim = dim
        self.d_state = d_state
        self.d_inner = int(ssm_ratio * dim)
        if self.d_inner <= 0:
            raise ValueError(f"SS2D: ssm_ratio={ssm_ratio} gives no inner channels")
        self.dt_rank = math.ceil(dim / 16) if dt_rank is None else int(dt_rank)
        self.scan_backend = check_backend(scan_backend)
        k, di, n, r = self.K, self.d_inner, d_state, self.dt_rank

        self.in_proj = nn.Linear(dim, 2 * di, bias=bias)
        self.conv2d = nn.Conv2d(
            di, di, kernel_size=d_conv, padding=(d_conv - 1) // 2, groups=di, bias=conv_bias
        )
        # Per direction: x -> (dt_rank + 2N) projection, dt_rank -> d_inner projection with bias.
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * n, di))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, di, r))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, di))
        # S4D-real initialisation A = -(1..N); kept as log, float32, no weight decay.
        self.A_logs = nn.Parameter(torch.empty(k * di, n, dtype=torch.float32))
        self.Ds = nn.Parameter(torch.empty(k * di, dtype=torch.float32))
        self.A_logs._no_weight_decay = True  # type: ignore[attr-defined]
        self.Ds._no_weight_decay = True  # type: ignore[attr-defined]
        self.out_norm = nn.LayerNorm(di)
        self.out_proj = nn.Linear(di, dim, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0.0 else nn.Identity()
        self._dt_range = (dt_min, dt_max, dt_init_floor)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise as VMamba/Mamba do (dt bias = softplus^-1 of log-uniform step sizes)."""
        dt_min, dt_max, floor = self._dt_range
        _trunc_normal_linear(self.in_proj)
        _trunc_normal_linear(self.out_proj)
        self.conv2d.reset_parameters()
        bound = self.d_inner**-0.5
        nn.init.uniform_(self.x_proj_weight, -bound, bound)
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_projs_weight, -std, std)
        dt = torch.exp(
            torch.rand(self.K, self.d_inner) * (math.log(dt_max) - math.log(dt_min))
            + math.log(dt_min)
        ).clamp(min=floor)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32)
        self.A_logs.copy_(torch.log(a).expand_as(self.A_logs))
        self.Ds.fill_(1.0)
        self.out_norm.reset_parameters()

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, d_inner={self.d_inner}, d_state={self.d_state}, "
            f"dt_rank={self.dt_rank}, scan_backend={self.scan_backend!r}"
        )

    @staticmethod
    def scan_sequences(x: Tensor) -> Tensor:
        """Flatten a map into the four scan orders, time-major.

        Args:
            x: ``(B, D, H, W)`` (any memory format; channels-last is read without a transpose).

        Returns:
            ``(H * W, B, 4, D)``: step ``l`` of direction ``k`` (:data:`SCAN_DIRECTIONS`) for every
            batch element. Row-major visits pixel ``(h, w)`` at ``l = h * W + w``, column-major at
            ``l = w * H + h``; the reversed orders at ``H * W - 1 - l``.
        """
        b, d, h, w = x.shape
        length = h * w
        xc = x.permute(2, 3, 0, 1)  # (H, W, B, D)
        xs = x.new_empty((length, b, 4, d))
        xs[:, :, 0].view(h, w, b, d).copy_(xc)
        xs[:, :, 1].view(w, h, b, d).copy_(xc.transpose(0, 1))
        xs[:, :, 2:].copy_(xs[:, :, :2].flip(0))
        return xs

    @staticmethod
    def cross_merge(ys: Tensor, height: int, width: int) -> Tensor:
        """Sum the four directions' outputs at their pixels (inverse of :meth:`scan_sequences`).

        Args:
            ys: ``(H * W, B, 4, D)`` time-major, in the four scan orders.
            height: ``H``.
            width: ``W``.

        Returns:
            ``(B, H, W, D)`` channels-last, contiguous.
        """
        _, b, _, d = ys.shape
        y = ys[:, :, :2] + ys[:, :, 2:].flip(0)  # back to forward row / column order
        row = y[:, :, 0].view(height, width, b, d).permute(2, 0, 1, 3)
        col = y[:, :, 1].view(width, height, b, d).permute(2, 1, 0, 3)
        return row.contiguous() + col

    def scan2d(self, x: Tensor) -> Tensor:
        """Four-direction selective scan and cross-merge (SS2D core, before ``out_norm``).

        Args:
            x: ``(B, d_inner, H, W)`` (after the depthwise conv and SiLU).

        Returns:
            ``(B, H, W, d_inner)`` float32 (float64 for float64 input): at each pixel, the sum over
            the four directions of the scan output ``y = C . h + D x``.
        """
        b, di, h, w = x.shape
        k, n, r = self.K, self.d_state, self.dt_rank
        length = h * w
        if x.dtype != torch.float64:
            x = x.float()  # float32 (float64 only when asked, e.g. gradcheck)
        # Projections and scan in full precision even under autocast (they are cheap next to
        # the scan, and dt enters an exponential).
        with torch.autocast(device_type=x.device.type, enabled=False):
            xs = self.scan_sequences(x)  # (L, B, K, Di)
            # Per-direction projections as K batched GEMMs over all L * B tokens.
            tokens = xs.view(length * b, k, di).transpose(0, 1)  # (K, L*B, Di)
            x_dbl = torch.bmm(tokens, self.x_proj_weight.to(x.dtype).transpose(1, 2))
            x_dbl = x_dbl.transpose(0, 1)  # (L*B, K, R + 2N)
            # dt for all directions in one GEMM, straight into the time-major layout: the K
            # rank-R projections as one block-diagonal (K*R, K*Di) weight (tiny; K x the FLOPs
            # of K separate products but no transpose of the full-size result).
            dt_w = torch.block_diag(*self.dt_projs_weight.to(x.dtype).transpose(1, 2).unbind(0))
            dts = torch.mm(x_dbl[:, :, :r].reshape(length * b, k * r), dt_w)  # (L*B, K*Di)
            x_dbl = x_dbl.view(length, b, k, r + 2 * n)
            ys = selective_scan_time_major(
                xs.view(length, b, k * di),
                dts.view(length, b, k * di),
                -torch.exp(self.A_logs.to(x.dtype)),
                x_dbl[..., r : r + n],
                x_dbl[..., r + n :],
                self.Ds.to(x.dtype),
                delta_bias=self.dt_projs_bias.to(x.dtype).reshape(-1),
                delta_softplus=True,
                backend=self.scan_backend,
            )
            return self.cross_merge(ys.view(length, b, k, di), h, w)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, dim)`` -> ``(B, H, W, dim)`` channels-last."""
        xz = self.in_proj(x)
        xi, z = xz.chunk(2, dim=-1)
        xi = F.silu(self.conv2d(xi.permute(0, 3, 1, 2)))  # (B, Di, H, W)
        y = self.out_norm(self.scan2d(xi)) * F.silu(z)
        return self.dropout(self.out_proj(y))


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet channel shuffle on the last axis.

    Args:
        x: ``(..., C)`` with ``C % groups == 0``.
        groups: Number of groups.

    Returns:
        Same shape; channel ``j * groups + g`` takes input channel ``g * (C // groups) + j``.
    """
    c = x.shape[-1]
    return x.unflatten(-1, (groups, c // groups)).transpose(-1, -2).flatten(-2)


class VSSBlock(nn.Module):
    """MedMamba's hybrid conv|SS2D block (``SS_Conv_SSM``), channels-last, with residual.

    The channels are split in two halves: the first goes through a conv branch
    (BN, 3x3 conv, BN, ReLU, 3x3 conv, BN, ReLU, 1x1 conv, ReLU), the second through
    ``LayerNorm -> SS2D -> DropPath``; the halves are concatenated ``[conv, ssm]``, shuffled with
    two groups (so channels alternate conv, ssm, conv, ...) and added to the input.

    Args:
        dim: Channels ``C`` (even).
        drop_path: Stochastic-depth probability of the SS2D branch.
        d_state: SS2D state size.
        ssm_ratio: SS2D inner expansion.
        dt_rank: SS2D dt rank; None -> ``ceil(dim / 2 / 16)``.
        d_conv: SS2D depthwise kernel size.
        attn_drop: Dropout at the end of SS2D.
        norm_eps: LayerNorm epsilon.
        scan_backend: Selective-scan backend (see :mod:`engine.ssm`).

    Shapes:
        ``forward``: ``(B, H, W, dim)`` -> ``(B, H, W, dim)``.
    """

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        dt_rank: int | None = None,
        d_conv: int = 3,
        attn_drop: float = 0.0,
        norm_eps: float = 1e-6,
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"VSSBlock: dim must be even, got {dim}")
        half = dim // 2
        self.dim = dim
        self.norm = nn.LayerNorm(half, eps=norm_eps)
        self.ss2d = SS2D(
            half,
            d_state=d_state,
            ssm_ratio=ssm_ratio,
            dt_rank=dt_rank,
            d_conv=d_conv,
            dropout=attn_drop,
            scan_backend=scan_backend,
        )
        self.drop_path = DropPath(drop_path)
        self.conv_branch = nn.Sequential(
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, kernel_size=3, padding=1),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, kernel_size=3, padding=1),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, kernel_size=1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, dim)`` -> ``(B, H, W, dim)`` channels-last."""
        left, right = x.chunk(2, dim=-1)
        ssm = self.drop_path(self.ss2d(self.norm(right)))
        conv = self.conv_branch(left.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        # concat [conv, ssm] then shuffle with 2 groups == interleave conv/ssm channel by channel.
        mixed = torch.stack((conv, ssm.to(conv.dtype)), dim=-1).flatten(-2)
        return mixed + x


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding (VMamba/MedMamba stem): strided conv, then LayerNorm.

    Args:
        in_chans: Image channels.
        embed_dim: Output channels ``E``.
        patch_size: Patch side ``p`` (conv kernel and stride).
        norm: Apply LayerNorm over ``E``.

    Shapes:
        ``forward``: ``(B, in_chans, H, W)`` channels-first -> ``(B, H // p, W // p, E)``
        channels-last (a trailing partial patch is dropped).
    """

    def __init__(
        self, in_chans: int = 1, embed_dim: int = 96, patch_size: int = 4, norm: bool = True
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W)`` -> ``(B, H // p, W // p, embed_dim)``."""
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """Swin/VMamba 2x2 patch merging: halve H and W, double the channels.

    Each output pixel concatenates the 2x2 block ``[x(0,0), x(1,0), x(0,1), x(1,1)]``
    (``(row, col)`` offsets), then LayerNorm(4C) and a bias-free Linear(4C -> out_dim). Odd sizes
    are zero-padded at the bottom/right first.

    Args:
        dim: Input channels ``C``.
        out_dim: Output channels; None -> ``2 * dim``.

    Shapes:
        ``forward``: ``(B, H, W, C)`` -> ``(B, ceil(H / 2), ceil(W / 2), out_dim)``.
    """

    def __init__(self, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.out_dim = 2 * dim if out_dim is None else out_dim
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False)
        _trunc_normal_linear(self.reduction)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, C)`` -> ``(B, ceil(H/2), ceil(W/2), out_dim)``."""
        _, h, w, _ = x.shape
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat(
            (x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]), dim=-1
        )
        return self.reduction(self.norm(x))


class VSSStage(nn.Module):
    """One VSSM stage: ``depth`` :class:`VSSBlock` at ``dim`` channels, then optional merging.

    Args:
        dim: Channels ``C`` of the blocks (even).
        depth: Number of blocks (>= 1).
        downsample: Append a :class:`PatchMerging` (``C -> 2C``, ``H, W -> ceil(H/2), ceil(W/2)``).
        drop_path: Stochastic depth, one value for all blocks or one per block.
        d_state: SS2D state size.
        ssm_ratio: SS2D inner expansion.
        dt_rank: SS2D dt rank (None: ``ceil(dim / 2 / 16)``).
        d_conv: SS2D depthwise kernel size.
        attn_drop: Dropout at the end of each SS2D.
        scan_backend: Selective-scan backend (see :mod:`engine.ssm`).
        use_checkpoint: Recompute each block in the backward pass while training (saves memory).

    Attributes:
        out_dim: Channels of the output (``2 * dim`` with ``downsample``, else ``dim``).

    Shapes:
        ``forward``: ``(B, H, W, dim)`` -> ``(B, H', W', out_dim)`` channels-last.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        downsample: bool = False,
        drop_path: float | Sequence[float] = 0.0,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        dt_rank: int | None = None,
        d_conv: int = 3,
        attn_drop: float = 0.0,
        scan_backend: str = "auto",
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"VSSStage: depth must be >= 1, got {depth}")
        rates = (
            [float(drop_path)] * depth if isinstance(drop_path, (int, float)) else list(drop_path)
        )
        if len(rates) != depth:
            raise ValueError(f"VSSStage: {len(rates)} drop_path rates for depth {depth}")
        self.dim = dim
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            VSSBlock(
                dim,
                drop_path=rate,
                d_state=d_state,
                ssm_ratio=ssm_ratio,
                dt_rank=dt_rank,
                d_conv=d_conv,
                attn_drop=attn_drop,
                scan_backend=scan_backend,
            )
            for rate in rates
        )
        self.downsample = PatchMerging(dim) if downsample else None
        self.out_dim = self.downsample.out_dim if self.downsample is not None else dim

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, dim)`` -> ``(B, H', W', out_dim)`` channels-last."""
        for block in self.blocks:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x
