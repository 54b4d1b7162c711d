"""The four-view, multi-task mammography framework of seed 000 (sections 2, 2.2, 3.1, 4).

One study = four views in :data:`engine.study.STANDARD_VIEWS` order (``R-CC, L-CC, R-MLO, L-MLO``).
Per view an encoder (:mod:`engine.models.hybrid`) gives a feature map, global average pooling gives
the view vector ``v_i`` (dimension ``D``), gated attention fusion weighs and concatenates the four
vectors, and four heads (malignancy and BI-RADS, for each breast) read the fused vector::

    images (B, 4, 1, H, W) --encoder(s)--> maps --tap--> pool --> v (B, 4, D)
    alpha = softmax(mask(MLP(concat(v))))            (B, 4), exactly 0 at missing views
    fused = concat(alpha_i * v_i)                    (B, 4 * D)
    logits = Linear(Dropout(0.5)(fused))             per head

Everything about the architecture is in :class:`FourViewConfig`; :func:`build_fourview` is the
only constructor. Nothing is built at import.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn

from engine.errors import ModelError
from engine.models.hybrid import HybridEncoder, ResNetEncoder, VSSMEncoder
from engine.study import STANDARD_VIEWS

__all__ = [
    "ENCODERS",
    "SHARINGS",
    "TASKS",
    "FourViewConfig",
    "GatedAttentionFusion",
    "FourViewModel",
    "build_fourview",
    "head_names",
]

logger = logging.getLogger(__name__)

ENCODERS: tuple[str, ...] = ("hybrid", "resnet18", "resnet50", "vssm")
SHARINGS: tuple[str, ...] = ("shared", "view_specific")
TASKS: tuple[str, ...] = ("malignancy", "birads")
_SIDES: tuple[str, ...] = ("R", "L")
#: Which views each encoder of a view-specific model sees (indices into STANDARD_VIEWS).
_VIEW_GROUPS = {
    "shared": ((0, 1, 2, 3),),
    "view_specific": ((0, 1), (2, 3)),  # (R-CC, L-CC) and (R-MLO, L-MLO)
}


@dataclass(frozen=True)
class FourViewConfig:
    """Complete description of a four-view model (goes into the model card).

    The defaults are the proposed hybrid CNN-VSSM, shared encoder, both tasks, all five BI-RADS
    classes, 512x512 input.

    Attributes:
        encoder: ``"hybrid"`` (ResNet-18 early layers + VSSM stages), ``"resnet18"``,
            ``"resnet50"`` (whole backbones) or ``"vssm"`` (pure VSSM).
        sharing: ``"shared"`` (one encoder for all four views) or ``"view_specific"`` (one encoder
            for the CC views, one for the MLO views; seed 000, Fig. 3c).
        cut_stage: Hybrid only: ResNet-18 stages kept before the VSSM (1-3). The default 2 keeps
            ``conv1, bn1, layer1, layer2``: output stride 8, 128 channels.
        vssm_depths: VSSM blocks per stage (hybrid and pure VSSM). Every stage starts with a
            2x patch merging (the pure VSSM's first stage starts at the patch embedding instead).
        vssm_dims: Channels per VSSM stage, same length as ``vssm_depths``.
        patch_size: Pure VSSM only: patch embedding stride.
        d_state: SSM state size N of SS2D.
        ssm_ratio: SS2D inner expansion (d_inner = ssm_ratio x channels of its branch).
        drop_path: Stochastic depth rate of the last VSSM block (linearly increasing from 0).
        feature_dim: ``D``, the view vector's size; None = the encoder's output channels (no
            projection), an int adds ``Linear(C, D)`` after pooling.
        fusion_hidden: Hidden width of the fusion MLP (two layers, ReLU; seed 000, 2.2).
        dropout: Dropout before each head (seed 000, 4.3: 0.5).
        tasks: Heads to build: ``("malignancy", "birads")`` (multi-task) or one of them.
        birads_classes: The BI-RADS categories the BI-RADS heads score, in order:
            ``(1, 5)``, ``(1, 3, 5)`` or ``(1, 2, 3, 4, 5)`` (the paper's three experiments).
        in_size: Square input side in pixels that preprocessing produces (multiple of 32).
        pretrained_path: Local ImageNet ResNet weights (``.pth``/``.safetensors``, torchvision key
            names) loaded into the ResNet part at build time; None = random init. Not allowed
            for the pure VSSM.

    Why the hybrid looks like this (the choices seed 000 leaves open):
        - Cut after ``layer2`` (default): the CNN keeps the two stages where local texture and
          calcification-scale detail live (stride 4 and 8, as the paper's "early layers"), and
          the VSSM replaces ``layer3``/``layer4`` at the same resolutions and widths
          (stride 16 -> 256 ch, stride 32 -> 512 ch). So ``D = 512`` as for the ResNet-18
          baseline: fusion and heads are identical across the two, and the comparison isolates
          the encoder.
        - Two VSSM blocks, one per stage, ``vssm_depths=(1, 1)``: half the four blocks of the
          pure VSSM (paper 4.2: "half the number of VSSM layers used in the pure models").
        - A patch merging before each VSSM stage: straight after ``layer2`` a 512 input is
          64x64 = 4096 tokens per view; the selective scan cost is linear in tokens times state
          size, and at 4096 tokens two blocks would take most of the CPU budget (0.6 s per study,
          2 threads). Merging to 32x32 (1024 tokens) and 16x16 (256 tokens) keeps the scan cheap
          while the four scan orders still see the whole breast at every position.
        - ``d_state=16`` (MedMamba's default) and ``ssm_ratio=1`` (MedMamba: 2). The scan cost is
          proportional to ``d_inner * d_state`` and dominates the VSSM stages on CPU; halving the
          SS2D inner width cuts the whole four-view forward by about 20 % (bench/bench_models.py),
          and VMamba's own later versions also run with ``ssm_ratio=1`` (and ``d_state`` down to
          1). This keeps one study at 512 x 512 well inside 0.6 s on two CPU threads,
          preprocessing included; ``ssm_ratio=2`` restores MedMamba's block exactly.
        - Pure VSSM: patch 4 embedding to 64 ch, then four stages of one block each
          (64, 128, 256, 512 ch at stride 4, 8, 16, 32): the paper's best "four successive VSSM
          blocks", with the same output width and stride as the hybrid and ResNet-18.
        - Fusion MLP hidden width 256 (the paper does not give it): 4 x 512 -> 256 -> 4, small
          next to the encoders. The views are concatenated in STANDARD_VIEWS order (the paper
          lists L-CC, L-MLO, R-CC, R-MLO; an order is only a permutation of the MLP's inputs).
        - ``drop_path=0``: the paper regularises with weight decay, head dropout and gradient
          clipping only.
    """

    encoder: str = "hybrid"
    sharing: str = "shared"
    cut_stage: int = 2
    vssm_depths: tuple[int, ...] = (1, 1)
    vssm_dims: tuple[int, ...] = (256, 512)
    patch_size: int = 4
    d_state: int = 16
    ssm_ratio: float = 1.0
    drop_path: float = 0.0
    feature_dim: int | None = None
    fusion_hidden: int = 256
    dropout: float = 0.5
    tasks: tuple[str, ...] = ("malignancy", "birads")
    birads_classes: tuple[int, ...] = (1, 2, 3, 4, 5)
    in_size: int = 512
    pretrained_path: str | None = None

    family: ClassVar[str] = "fourview"

    def __post_init__(self) -> None:
        # Accept lists (from JSON) but store tuples so the config stays hashable and frozen.
        for name in ("vssm_depths", "vssm_dims", "tasks", "birads_classes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.pretrained_path is not None:
            object.__setattr__(self, "pretrained_path", str(self.pretrained_path))
        self._validate()

    def _validate(self) -> None:
        def bad(msg: str) -> ModelError:
            return ModelError(f"fourview config: {msg}")

        if self.encoder not in ENCODERS:
            raise bad(f"encoder {self.encoder!r} not in {ENCODERS}")
        if self.sharing not in SHARINGS:
            raise bad(f"sharing {self.sharing!r} not in {SHARINGS}")
        if not self.tasks or any(t not in TASKS for t in self.tasks) or len(
            set(self.tasks)
        ) != len(self.tasks):
            raise bad(f"tasks must be a non-empty subset of {TASKS}, got {self.tasks}")
        b = self.birads_classes
        if len(b) < 2 or list(b) != sorted(set(b)) or not set(b) <= {1, 2, 3, 4, 5}:
            raise bad(f"birads_classes must be increasing BI-RADS categories 1-5, got {b}")
        if self.in_size < 32 or self.in_size % 32:
            raise bad(f"in_size must be a positive multiple of 32, got {self.in_size}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.drop_path < 1.0:
            raise bad("dropout and drop_path must be in [0, 1)")
        if self.fusion_hidden < 1 or (self.feature_dim is not None and self.feature_dim < 1):
            raise bad("fusion_hidden and feature_dim must be positive")
        if self.encoder in ("hybrid", "vssm"):
            if len(self.vssm_depths) != len(self.vssm_dims) or not self.vssm_depths:
                raise bad("vssm_depths and vssm_dims must be non-empty and of equal length")
            if any(d < 1 for d in self.vssm_depths) or any(c < 2 or c % 2 for c in self.vssm_dims):
                raise bad("vssm depths must be >= 1 and dims even")
            if self.d_state < 1 or self.ssm_ratio <= 0:
                raise bad("d_state and ssm_ratio must be positive")
        if self.encoder == "hybrid":
            if not 1 <= self.cut_stage <= 3:
                raise bad(f"cut_stage must be 1..3, got {self.cut_stage}")
            stride = 2 ** (self.cut_stage + 1 + len(self.vssm_depths))
        elif self.encoder == "vssm":
            if self.patch_size not in (2, 4, 8):
                raise bad(f"patch_size must be 2, 4 or 8, got {self.patch_size}")
            if self.pretrained_path is not None:
                raise bad("pretrained_path applies to ResNet-based encoders, not the pure VSSM")
            stride = self.patch_size * 2 ** (len(self.vssm_depths) - 1)
        else:
            stride = 32
        if stride > self.in_size:
            raise bad(f"encoder output stride {stride} exceeds in_size {self.in_size}")

    @property
    def n_birads(self) -> int:
        """K, the number of BI-RADS classes."""
        return len(self.birads_classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples as lists) with ``"family": "fourview"``."""
        out: dict[str, Any] = {"family": self.family}
        for key, value in asdict(self).items():
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FourViewConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ModelError: Another family, unknown keys, or invalid values.
        """
        d = dict(d)
        family = d.pop("family", cls.family)
        if family != cls.family:
            raise ModelError(f"fourview config: family {family!r} is not {cls.family!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelError(f"fourview config: unknown keys {unknown}")
        try:
            return cls(**d)
        except TypeError as exc:
            raise ModelError(f"fourview config: {exc}") from exc


def head_names(config: FourViewConfig) -> tuple[str, ...]:
    """Output keys of the heads, e.g. ``("malignancy_R", "malignancy_L", "birads_R", ...)``."""
    return tuple(f"{task}_{side}" for task in config.tasks for side in _SIDES)


class GatedAttentionFusion(nn.Module):
    """Gated view attention (seed 000, eq. 8-10), with masking of missing views.

    ``alpha = softmax(MLP(concat(v_1..v_4)))``, the MLP being ``Linear(4D, hidden) -> ReLU ->
    Linear(hidden, 4)``. The logits of missing views are set to ``-inf`` before the softmax, so
    their alpha is exactly 0 and the present views' alphas sum to 1 (the paper feeds zero images
    instead; masking keeps an absent view from taking any weight). Missing views' vectors are
    zeroed before the MLP and in the fused output.

    Args:
        dim: D, the size of each view vector.
        hidden: Hidden width of the MLP.
        n_views: Number of views (4).
    """

    def __init__(self, dim: int, hidden: int, n_views: int = 4) -> None:
        super().__init__()
        self.n_views = n_views
        self.mlp = nn.Sequential(
            nn.Linear(n_views * dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_views)
        )

    def forward(
        self, v: torch.Tensor, missing: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse view vectors.

        Args:
            v: ``(B, n_views, D)`` float32 view vectors.
            missing: ``(B, n_views)`` bool, True where the view is absent. At least one view per
                row must be present.

        Returns:
            ``fused`` ``(B, n_views * D)`` float32 and ``alpha`` ``(B, n_views)`` float32.

        Raises:
            ValueError: A row with every view missing.
        """
        if missing.all(dim=1).any():
            raise ValueError("fusion: a study with all four views missing cannot be scored")
        present = (~missing).to(v.dtype).unsqueeze(-1)
        v = v * present
        logits = self.mlp(v.flatten(1))
        alpha = torch.softmax(logits.masked_fill(missing, float("-inf")), dim=1)
        fused = (alpha.unsqueeze(-1) * v).flatten(1)
        return fused, alpha


class FourViewModel(nn.Module):
    """Four-view, multi-task classifier: encoder(s), gated attention fusion, quad heads.

    Build with :func:`build_fourview` (or ``engine.models.registry.create_model``).

    Args:
        config: The architecture.

    Attributes:
        config: The architecture.
        encoders: One encoder (shared) or two (view-specific: CC, then MLO).
        taps: ``nn.Identity`` per view key, applied to that view's last feature map
            ``(B, C, h, w)`` channels-first; see :meth:`cam_layers`.
        fusion: :class:`GatedAttentionFusion`.
        heads: ``Linear(4 * D, 2)`` per ``malignancy_{R,L}``, ``Linear(4 * D, K)`` per
            ``birads_{R,L}``.

    Missing views are not encoded: each encoder runs on the present views of its group only
    (BatchNorm never sees a blank in training, and inference skips absent views); their feature
    maps and vectors are zeros and their attention is exactly 0.
    """

    def __init__(self, config: FourViewConfig) -> None:
        super().__init__()
        self.config = config
        self.view_groups = _VIEW_GROUPS[config.sharing]
        self.encoders = nn.ModuleList(_build_encoder(config) for _ in self.view_groups)
        channels = self.encoders[0].out_channels
        dim = config.feature_dim or channels
        self.feature_dim = dim
        if config.feature_dim is None:
            self.projections = nn.ModuleList(nn.Identity() for _ in self.view_groups)
        else:
            self.projections = nn.ModuleList(
                nn.Linear(channels, dim) for _ in self.view_groups
            )
        self.taps = nn.ModuleDict({key: nn.Identity() for key in STANDARD_VIEWS})
        self.fusion = GatedAttentionFusion(dim, config.fusion_hidden, n_views=4)
        self.dropout = nn.Dropout(config.dropout)
        n_out = {"malignancy": 2, "birads": config.n_birads}
        self.heads = nn.ModuleDict(
            {name: nn.Linear(4 * dim, n_out[name.rsplit("_", 1)[0]]) for name in head_names(config)}
        )

    def cam_layers(self) -> dict[str, nn.Module]:
        """Grad-CAM target per view: ``{"R-CC": tap, "L-CC": tap, "R-MLO": tap, "L-MLO": tap}``.

        Each tap is an ``nn.Identity`` whose forward output is that view's last spatial feature
        map, ``(B, C, h, w)`` float32 channels-first (VSSM maps already permuted from
        channels-last), on the gradient path to every logit. Rows where the view is missing are
        zeros. A forward hook on a tap may return ``output.detach().requires_grad_()`` to get
        gradients w.r.t. the map without back-propagating through the encoder.
        """
        return {key: self.taps[key] for key in STANDARD_VIEWS}

    def _encode(self, images: torch.Tensor, present: torch.Tensor) -> list[torch.Tensor]:
        """Per-view feature maps, in STANDARD_VIEWS order, each ``(B, C, h, w)``."""
        b, _, _, h, w = images.shape
        maps: list[torch.Tensor | None] = [None] * 4
        for encoder, group in zip(self.encoders, self.view_groups):
            g = len(group)
            x = images[:, list(group)].reshape(b * g, 1, h, w)
            keep = present[:, list(group)].reshape(b * g)
            if bool(keep.all()):
                feats = encoder(x)
            elif not bool(keep.any()):
                # none of this encoder's views in the batch: run it on the blanks anyway so every
                # parameter still gets a (zero) gradient, as distributed training expects
                feats = encoder(x) * 0.0
            else:
                # encode only the views that exist: faster, and BatchNorm never sees blanks
                idx = keep.nonzero().squeeze(1)
                part = encoder(x.index_select(0, idx))
                feats = part.new_zeros((b * g, *part.shape[1:])).index_copy(0, idx, part)
            feats = feats.reshape(b, g, *feats.shape[1:])
            for j, view in enumerate(group):
                maps[view] = feats[:, j]
        return maps  # type: ignore[return-value]

    def forward(self, images: torch.Tensor, missing: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score a batch of four-view studies.

        Args:
            images: ``(B, 4, 1, H, W)`` float32 in ``[0, 1]``, views in
                :data:`engine.study.STANDARD_VIEWS` order, right-breast views already flipped
                horizontally, zeros where a view is missing. The model itself replicates the
                gray channel to RGB and applies the ImageNet mean/std (ResNet-based encoders).
            missing: ``(B, 4)`` bool, True where the view is absent.

        Returns:
            ``"malignancy_R"``, ``"malignancy_L"``: logits ``(B, 2)`` (0 = normal or benign,
            1 = malignant); ``"birads_R"``, ``"birads_L"``: logits ``(B, K)`` over
            ``config.birads_classes``; ``"attention"``: alpha ``(B, 4)`` in STANDARD_VIEWS order.
            A single-task model returns its task's two heads and ``"attention"``. float32.

        Raises:
            ValueError: Wrong shapes, or a study with all four views missing.
        """
        if images.ndim != 5 or images.shape[1:3] != (4, 1):
            raise ValueError(f"fourview: images must be (B, 4, 1, H, W), got {tuple(images.shape)}")
        if missing.shape != images.shape[:2]:
            raise ValueError(
                f"fourview: missing must be (B, 4) bool, got {tuple(missing.shape)}"
            )
        missing = missing.to(device=images.device, dtype=torch.bool)
        if missing.all(dim=1).any():
            raise ValueError("fourview: a study with all four views missing cannot be scored")
        maps = self._encode(images, ~missing)
        vectors = []
        for view, key in enumerate(STANDARD_VIEWS):
            fmap = self.taps[key](maps[view])
            group = 0 if len(self.view_groups) == 1 else (0 if view < 2 else 1)
            vectors.append(self.projections[group](fmap.mean(dim=(2, 3))))
        v = torch.stack(vectors, dim=1)
        fused, alpha = self.fusion(v, missing)
        fused = self.dropout(fused)
        out = {name: head(fused) for name, head in self.heads.items()}
        out["attention"] = alpha
        return out

    def load_pretrained(self, path: str | None = None) -> None:
        """Load local ImageNet ResNet weights into every encoder's ResNet part.

        Args:
            path: The file; defaults to ``config.pretrained_path``.

        Raises:
            ModelError: No ResNet part, or the file is unreadable.
            WeightsMismatchError: The file is not a matching ResNet checkpoint.
        """
        path = path or self.config.pretrained_path
        if path is None:
            raise ModelError("fourview: no pretrained_path to load")
        for encoder in self.encoders:
            if not hasattr(encoder, "load_pretrained"):
                raise ModelError(f"{encoder.__class__.__name__}: has no ResNet part to pretrain")
            encoder.load_pretrained(path)


def _build_encoder(config: FourViewConfig) -> nn.Module:
    if config.encoder == "resnet18":
        return ResNetEncoder(18)
    if config.encoder == "resnet50":
        return ResNetEncoder(50)
    if config.encoder == "hybrid":
        return HybridEncoder(
            cut_stage=config.cut_stage,
            depths=config.vssm_depths,
            dims=config.vssm_dims,
            d_state=config.d_state,
            ssm_ratio=config.ssm_ratio,
            drop_path=config.drop_path,
        )
    return VSSMEncoder(
        patch_size=config.patch_size,
        depths=config.vssm_depths,
        dims=config.vssm_dims,
        d_state=config.d_state,
        ssm_ratio=config.ssm_ratio,
        drop_path=config.drop_path,
    )


def build_fourview(config: FourViewConfig, *, pretrained: bool = True) -> FourViewModel:
    """Build a CPU :class:`FourViewModel`.

    Args:
        config: The architecture.
        pretrained: Load ``config.pretrained_path`` when set. Pass False when full model weights
            are loaded afterwards (the Engine does), so the ImageNet file need not exist.

    Raises:
        ModelError: Invalid config or unreadable pretrained file.
        WeightsMismatchError: The pretrained file does not match the ResNet.
    """
    model = FourViewModel(config)
    if pretrained and config.pretrained_path is not None:
        model.load_pretrained(config.pretrained_path)
    return model
