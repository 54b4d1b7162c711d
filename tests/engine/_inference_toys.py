"""Synthetic studies and tiny four-view models for the inference tests (not a test module).

The models honour the four-view contract of ``engine.models.registry`` (forward(images, missing)
-> dict of logits incl. ``attention``; ``cam_layers()``; a frozen config with ``to_dict()``), so the
engine can be tested without the real architectures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.study import STANDARD_VIEWS, Study, StudyImage, VoiWindow

__all__ = [
    "make_breast",
    "make_image",
    "make_study",
    "ToyConfig",
    "ToyFourView",
    "RegionConfig",
    "RegionModel",
    "build_toy",
    "toy_card",
]


def make_breast(
    shape: tuple[int, int],
    *,
    right: bool,
    dots: tuple[tuple[int, int], ...] = (),
    dot_radius: int = 2,
    inverted: bool = False,
    label: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """A 12-bit uint16 'mammogram': dark noisy air, a half-ellipse breast on the chest-wall side
    (left edge for a left breast, right edge for a right breast), a brighter dense core, bright
    dots at ``(row, col)`` and a burnt-in label in the opposite top corner."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cx = float(cols - 1) if right else 0.0
    cy = (rows - 1) / 2.0
    ry, rx = 0.42 * rows, 0.7 * cols
    r2 = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    img = 150.0 + rng.normal(0.0, 20.0, shape).astype(np.float32)
    breast = r2 <= 1.0
    img[breast] = 1400.0 + 900.0 * np.clip(1.0 - r2[breast], 0, 1) ** 0.5
    for r, c in dots:
        d = (yy - r) ** 2 + (xx - c) ** 2 <= dot_radius**2
        img[d] = 3900.0
    if label:
        lr = slice(int(0.03 * rows), int(0.08 * rows) + 1)
        lc = slice(int(0.05 * cols), int(0.15 * cols) + 1) if right else slice(
            int(0.85 * cols), int(0.95 * cols) + 1
        )
        img[lr, lc] = 4000.0
    img = np.clip(img, 0, 4095)
    if inverted:
        img = 4095 - img
    return img.astype(np.uint16)


def make_image(
    key: str, arr: np.ndarray, *, inverted: bool = False, folder: Path = Path("/tmp/study")
) -> StudyImage:
    """A :class:`StudyImage` in slot ``key`` holding ``arr`` (stored values, slope 1)."""
    lat, view = key.split("-")
    display = (arr.astype(np.float32) / max(1.0, float(arr.max())) * 255).astype(np.uint8)
    return StudyImage(
        path=folder / f"{key}.dcm",
        relpath=f"{key}.dcm",
        kind="MG",
        stored=arr,
        display=display,
        voi_presets=(VoiWindow(2048.0, 4096.0),),
        laterality=lat,
        view=view,
        photometric="MONOCHROME1" if inverted else "MONOCHROME2",
        inverted_for_display=inverted,
        bits_stored=12,
    )


def make_study(
    folder: Path,
    shape: tuple[int, int] = (160, 120),
    *,
    views: tuple[str, ...] = STANDARD_VIEWS,
    dots: dict[str, tuple[tuple[int, int], ...]] | None = None,
    inverted: tuple[str, ...] = (),
    dot_radius: int = 2,
    seed: int = 0,
) -> Study:
    """A study with the given slots filled by :func:`make_breast` images."""
    dots = dots or {}
    study = Study(path=Path(folder), study_id=Path(folder).name)
    for i, key in enumerate(views):
        arr = make_breast(
            shape,
            right=key.startswith("R"),
            dots=dots.get(key, ()),
            dot_radius=dot_radius,
            inverted=key in inverted,
            seed=seed + i,
        )
        study.views[key] = make_image(key, arr, inverted=key in inverted, folder=Path(folder))
    return study


@dataclass(frozen=True)
class ToyConfig:
    """A tiny four-view model (shared conv encoder, gated attention, quad heads)."""

    family: str = "toy"
    width: int = 8
    birads_classes: tuple[int, ...] = (1, 2, 3, 4, 5)
    tasks: tuple[str, ...] = ("malignancy", "birads")
    with_masks: bool = False
    channels_last: bool = False  # the Grad-CAM layers see (B, h, w, C) maps

    def to_dict(self) -> dict:
        d = asdict(self)
        d["birads_classes"] = list(self.birads_classes)
        d["tasks"] = list(self.tasks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ToyConfig:
        d = dict(d)
        d["birads_classes"] = tuple(d["birads_classes"])
        d["tasks"] = tuple(d["tasks"])
        return cls(**d)


class _Tap(nn.Identity):
    """Where a view's last feature map passes (the Grad-CAM layer)."""


class ToyFourView(nn.Module):
    """Contract-honouring toy: images ``(B, 4, 1, H, W)``, missing ``(B, 4)`` -> dict of logits."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.encoder = nn.Sequential(
            nn.Conv2d(1, w, 5, stride=4, padding=2),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.taps = nn.ModuleDict({k.replace("-", "_"): _Tap() for k in STANDARD_VIEWS})
        d = 2 * w
        self.gate = nn.Sequential(nn.Linear(4 * d, d), nn.ReLU(), nn.Linear(d, 4))
        self.heads = nn.ModuleDict()
        for side in ("R", "L"):
            if "malignancy" in config.tasks:
                self.heads[f"malignancy_{side}"] = nn.Linear(4 * d, 2)
            if "birads" in config.tasks:
                self.heads[f"birads_{side}"] = nn.Linear(4 * d, len(config.birads_classes))
        if config.with_masks:
            self.mask_head = nn.Conv2d(d, 1, 1)

    def cam_layers(self) -> dict[str, nn.Module]:
        return {k: self.taps[k.replace("-", "_")] for k in STANDARD_VIEWS}

    def forward(self, images: torch.Tensor, missing: torch.Tensor) -> dict[str, torch.Tensor]:
        b = images.shape[0]
        vecs, maps = [], []
        for i, key in enumerate(STANDARD_VIEWS):
            f = self.encoder(images[:, i])
            tap = self.taps[key.replace("-", "_")]
            if self.config.channels_last:
                f = tap(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            else:
                f = tap(f)
            maps.append(f)
            vecs.append(f.mean(dim=(2, 3)))
        v = torch.stack(vecs, dim=1)  # (B, 4, D)
        logits = self.gate(v.reshape(b, -1)).masked_fill(missing, float("-inf"))
        alpha = torch.softmax(logits, dim=1)
        fused = (alpha.unsqueeze(-1) * v).reshape(b, -1)
        out = {name: head(fused) for name, head in self.heads.items()}
        out["attention"] = alpha
        if self.config.with_masks:
            out["masks"] = torch.stack([self.mask_head(m)[:, 0] for m in maps], dim=1)
        return out


@dataclass(frozen=True)
class RegionConfig:
    """A model whose malignancy logit of each breast depends on one region of the model input.

    ``region = (row0, row1, col0, col1)`` in feature-map cells (the input pooled by ``pool``).
    """

    family: str = "region"
    pool: int = 4
    region: tuple[int, int, int, int] = (2, 6, 2, 6)
    birads_classes: tuple[int, ...] = (1, 5)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["region"] = list(self.region)
        d["birads_classes"] = list(self.birads_classes)
        return d


class RegionModel(nn.Module):
    """Feature map ``(B, 2, h, w)`` = [pooled image inside the region, pooled image outside].

    malignancy_X[:, 1] = sum of channel 0 over the breast's views (and channel 1 feeds class 0), so
    Grad-CAM for the malignant class must light up the region only, whatever is brighter outside.
    """

    def __init__(self, config: RegionConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = nn.Parameter(torch.ones(()))
        self.taps = nn.ModuleDict({k.replace("-", "_"): _Tap() for k in STANDARD_VIEWS})

    def cam_layers(self) -> dict[str, nn.Module]:
        return {k: self.taps[k.replace("-", "_")] for k in STANDARD_VIEWS}

    def forward(self, images: torch.Tensor, missing: torch.Tensor) -> dict[str, torch.Tensor]:
        r0, r1, c0, c1 = self.config.region
        sums: dict[str, list[torch.Tensor]] = {"R": [], "L": []}
        for i, key in enumerate(STANDARD_VIEWS):
            pooled = nn.functional.avg_pool2d(images[:, i], self.config.pool) * self.scale
            inside = torch.zeros_like(pooled)
            inside[:, :, r0:r1, c0:c1] = 1.0
            feat = self.taps[key.replace("-", "_")](
                torch.cat([pooled * inside, pooled * (1 - inside)], dim=1)
            )
            present = (~missing[:, i]).float()
            sums[key[0]].append(
                torch.stack([feat[:, 1].sum(dim=(1, 2)), feat[:, 0].sum(dim=(1, 2))], dim=1)
                * present[:, None]
            )
        present = (~missing).float()
        attention = present / present.sum(dim=1, keepdim=True).clamp_min(1.0)
        out = {"attention": attention}
        for side in ("R", "L"):
            mal = torch.stack(sums[side], dim=0).sum(dim=0)
            out[f"malignancy_{side}"] = mal
            out[f"birads_{side}"] = mal.flip(1)
        return out


def build_toy(architecture: dict) -> nn.Module:
    """Builder for cards written by these tests (stands in for the registry's create_model)."""
    family = architecture.get("family")
    if family == "toy":
        return ToyFourView(ToyConfig.from_dict(architecture))
    if family == "region":
        d = dict(architecture)
        d["region"] = tuple(d["region"])
        d["birads_classes"] = tuple(d["birads_classes"])
        return RegionModel(RegionConfig(**d))
    raise ValueError(f"unknown toy family {family!r}")


def toy_card(model: nn.Module, name: str = "toy-four-view", *, in_size: int = 64) -> dict:
    """A complete model card for a toy model (sha256 is filled in by save_model)."""
    cfg = model.config
    return {
        "name": name,
        "version": "0.0.1",
        "family": cfg.family,
        "description": "test model",
        "architecture": cfg.to_dict(),
        "input": {"size": [in_size, in_size]},
        "classes": {
            "malignancy": ["normal_or_benign", "malignant"],
            "birads": list(cfg.birads_classes),
        },
        "training": {
            "config": {"epochs": 0},
            "command": "pytest",
            "data": {"name": "none", "licence": "n/a", "citation": "n/a"},
            "date": "2025-01-01",
            "torch_version": torch.__version__,
            "where": "test",
            "seconds": 0.0,
        },
        "metrics": {},
    }
