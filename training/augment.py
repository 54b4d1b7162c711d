"""Training augmentation of four-view studies (seed 000, section 3.1): small seeded transforms.

Each transform is a callable class: options in ``__init__``, the work in ``__call__``, and all its
randomness from its own ``numpy.random.Generator`` (seeded in ``__init__``, re-seeded with
:meth:`Randomizable.set_random_state`). The training data set re-seeds the pipeline for every
sample from ``(seed, epoch, sample index)`` (:func:`sample_seed`), so an augmented sample does not
depend on the number of DataLoader workers, the order they run in, the number of processes of a
distributed run, or whether the run was interrupted and resumed.

A transform takes and returns a :class:`FourViewSample`: the four views in
:data:`engine.study.STANDARD_VIEWS` order (``R-CC, L-CC, R-MLO, L-MLO``), already through
:mod:`engine.preprocess` (so right breasts are flipped: every breast faces the same way), the
``missing`` mask and the per-breast targets in side order ``(R, L)``.

The paper's list: random affine (rotation +-10 degrees, translation +-5 %, scale 0.95-1.05) and a
horizontal flip with probability 0.5.

**What a horizontal flip means here.** The input already has every breast facing the same way
(the right views are mirrored by the preprocessing, as in the paper). Flipping one view's pixels
would make that breast face the other way, a layout the model never sees at inference and one in
which "right" and "left" images become indistinguishable by orientation. What a horizontal flip of
a *whole* examination produces is the mirror-image woman: her right breast looks like a left
breast and vice versa. Run through the same preprocessing, the mirrored right CC becomes a left CC
whose model input is exactly the original right CC's model input. So in model space the flip of
the study is a swap of the sides: ``R-CC <-> L-CC``, ``R-MLO <-> L-MLO``, with the missing mask and
the per-breast labels swapped too (:class:`RandomHorizontalFlip`, ``mode="mirror-study"``, the
default). It keeps the four-view semantics (each head still reads its own breast), and teaches the
fusion and the heads that left and right are symmetric. ``mode="views"`` flips each view's pixels
instead (the literal reading of the paper's per-image flip), for experiments.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "FourViewSample",
    "Randomizable",
    "RandomAffine",
    "RandomHorizontalFlip",
    "Compose",
    "sample_seed",
    "build_augment",
    "SIDE_SWAP",
]

logger = logging.getLogger(__name__)

#: View permutation of a mirrored study in STANDARD_VIEWS order (R-CC, L-CC, R-MLO, L-MLO).
SIDE_SWAP: tuple[int, ...] = (1, 0, 3, 2)


@dataclass
class FourViewSample:
    """One study as the transforms see it.

    Attributes:
        images: float32 ``(4, H, W)`` in ``[0, 1]``, STANDARD_VIEWS order, zeros where missing.
        missing: bool ``(4,)``.
        targets: Per task (``"malignancy"``, ``"birads"``) an int64 ``(2,)`` array of class
            indices for the sides ``(R, L)``; -1 = unknown.
    """

    images: np.ndarray
    missing: np.ndarray
    targets: dict[str, np.ndarray]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one sample in one epoch (independent streams per triple)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1)[0])


class Randomizable:
    """Base of the random transforms: a private generator, re-seedable.

    Args:
        seed: Initial seed.
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def set_random_state(self, seed: int) -> Randomizable:
        """Re-seed the generator; returns self."""
        self.rng = np.random.default_rng(seed)
        return self


class RandomAffine(Randomizable):
    """Independent random rotation, scaling and translation of every present view.

    Each view gets its own angle ``U(-rotation_deg, rotation_deg)``, scale ``U(*scale)`` (about the
    image centre) and shift ``U(-translate, translate)`` times its width and height; bilinear
    interpolation, zeros (air after normalisation) outside. Missing views stay zero. The
    parameters of all four views are drawn every call, so the stream does not depend on which
    views are missing.

    Args:
        rotation_deg: Rotation range in degrees (seed 000: 10).
        translate: Translation range as a fraction of the side (0.05).
        scale: ``(low, high)`` scale range (0.95, 1.05).
        seed: Generator seed.
    """

    def __init__(
        self,
        rotation_deg: float = 10.0,
        translate: float = 0.05,
        scale: Sequence[float] = (0.95, 1.05),
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        self.rotation_deg = float(rotation_deg)
        self.translate = float(translate)
        self.scale = (float(scale[0]), float(scale[1]))

    def matrices(self, shape: tuple[int, int], n: int = 4) -> np.ndarray:
        """Draw ``n`` affine matrices ``(n, 2, 3)`` (output <- input, OpenCV convention)."""
        h, w = shape
        angle = self.rng.uniform(-self.rotation_deg, self.rotation_deg, n)
        scale = self.rng.uniform(self.scale[0], self.scale[1], n)
        shift = self.rng.uniform(-self.translate, self.translate, (n, 2)) * np.array([w, h])
        centre = ((w - 1) / 2.0, (h - 1) / 2.0)
        out = np.empty((n, 2, 3), dtype=np.float64)
        for i in range(n):
            m = cv2.getRotationMatrix2D(centre, float(angle[i]), float(scale[i]))
            m[:, 2] += shift[i]
            out[i] = m
        return out

    def __call__(self, sample: FourViewSample) -> FourViewSample:
        """Warp the present views (see the class docstring)."""
        images = sample.images
        h, w = images.shape[-2:]
        mats = self.matrices((h, w), images.shape[0])
        out = np.zeros_like(images)
        for i in range(images.shape[0]):
            if sample.missing[i]:
                continue
            out[i] = cv2.warpAffine(
                np.ascontiguousarray(images[i], dtype=np.float32),
                mats[i],
                (w, h),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0.0,
            )
        np.clip(out, 0.0, 1.0, out=out)
        return dataclasses.replace(sample, images=out)


class RandomHorizontalFlip(Randomizable):
    """Horizontal flip with probability ``p`` (see the module docstring for the two modes).

    Args:
        p: Probability (seed 000: 0.5).
        mode: ``"mirror-study"``: mirror the whole examination, which in the engine's layout
            swaps the sides (views, missing mask and per-breast targets); ``"views"``: flip each
            view's pixels in place.
        seed: Generator seed.
    """

    def __init__(self, p: float = 0.5, mode: str = "mirror-study", seed: int = 0) -> None:
        super().__init__(seed)
        if mode not in ("mirror-study", "views"):
            raise ValueError(f"flip mode must be 'mirror-study' or 'views', got {mode!r}")
        self.p = float(p)
        self.mode = mode

    def __call__(self, sample: FourViewSample) -> FourViewSample:
        """Flip (or not) the study."""
        if not self.rng.random() < self.p:
            return sample
        if self.mode == "views":
            return dataclasses.replace(sample, images=np.ascontiguousarray(sample.images[:, :, ::-1]))
        perm = list(SIDE_SWAP)
        return FourViewSample(
            images=np.ascontiguousarray(sample.images[perm]),
            missing=sample.missing[perm].copy(),
            targets={k: v[::-1].copy() for k, v in sample.targets.items()},
        )


class Compose(Randomizable):
    """Apply transforms in order; :meth:`set_random_state` seeds each child independently.

    Args:
        transforms: The transforms.
        seed: Seed passed on to the children.
    """

    def __init__(self, transforms: Sequence[object], seed: int = 0) -> None:
        self.transforms = list(transforms)
        super().__init__(seed)
        self.set_random_state(seed)

    def set_random_state(self, seed: int) -> Compose:
        """Re-seed every random child from one seed (``SeedSequence.spawn``)."""
        self.rng = np.random.default_rng(seed)
        children = np.random.SeedSequence(int(seed)).spawn(len(self.transforms))
        for t, child in zip(self.transforms, children):
            if isinstance(t, Randomizable):
                t.set_random_state(int(child.generate_state(1)[0]))
        return self

    def __call__(self, sample: FourViewSample) -> FourViewSample:
        for t in self.transforms:
            sample = t(sample)  # type: ignore[operator]
        return sample

    def __len__(self) -> int:
        return len(self.transforms)


def build_augment(section: object) -> Compose | None:
    """The training pipeline an :class:`training.config.AugmentSection` describes (None if off).

    Args:
        section: Anything with the ``AugmentSection`` attributes.
    """
    if not getattr(section, "enabled", False):
        return None
    transforms: list[object] = []
    rot = float(section.rotation_deg)  # type: ignore[attr-defined]
    trans = float(section.translate)  # type: ignore[attr-defined]
    scale = tuple(section.scale)  # type: ignore[attr-defined]
    if rot > 0 or trans > 0 or not math.isclose(scale[0], 1.0) or not math.isclose(scale[1], 1.0):
        transforms.append(RandomAffine(rot, trans, scale))
    if float(section.hflip_p) > 0:  # type: ignore[attr-defined]
        transforms.append(RandomHorizontalFlip(section.hflip_p, section.hflip_mode))  # type: ignore[attr-defined]
    return Compose(transforms) if transforms else None

