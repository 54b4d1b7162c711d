"""Augmentation (seed 000, 3.1): seeded, per-view affine, and the side-swapping horizontal flip."""

from __future__ import annotations

import numpy as np
import pytest

from training.augment import (
    Compose,
    FourViewSample,
    RandomAffine,
    RandomHorizontalFlip,
    build_augment,
    sample_seed,
)
from training.config import AugmentSection


def _sample() -> FourViewSample:
    rng = np.random.default_rng(0)
    images = rng.random((4, 32, 32)).astype(np.float32)
    images[3] = 0.0
    missing = np.array([False, False, False, True])
    return FourViewSample(images, missing, {"malignancy": np.array([1, 0]), "birads": np.array([4, -1])})


def test_mirror_study_flip_swaps_sides_views_and_labels():
    s = _sample()
    out = RandomHorizontalFlip(p=1.0)(s)
    # STANDARD_VIEWS = R-CC, L-CC, R-MLO, L-MLO: a mirrored woman's right breast is a left breast
    np.testing.assert_array_equal(out.images[0], s.images[1])
    np.testing.assert_array_equal(out.images[1], s.images[0])
    np.testing.assert_array_equal(out.images[2], s.images[3])
    np.testing.assert_array_equal(out.images[3], s.images[2])
    assert out.missing.tolist() == [False, False, True, False]
    assert out.targets["malignancy"].tolist() == [0, 1] and out.targets["birads"].tolist() == [-1, 4]
    # the input is not modified, and p=0 is the identity
    assert s.missing.tolist() == [False, False, False, True]
    assert RandomHorizontalFlip(p=0.0)(s) is s
    views = RandomHorizontalFlip(p=1.0, mode="views")(s)
    np.testing.assert_array_equal(views.images[0], s.images[0][:, ::-1])
    assert views.targets["malignancy"].tolist() == [1, 0]
    with pytest.raises(ValueError):
        RandomHorizontalFlip(mode="vertical")


def test_affine_identity_and_ranges():
    s = _sample()
    same = RandomAffine(0.0, 0.0, (1.0, 1.0))(s)
    np.testing.assert_allclose(same.images, s.images, atol=1e-6)
    # a pure shift by a whole number of pixels moves the image
    t = RandomAffine(0.0, 0.25, (1.0, 1.0), seed=3)
    mats = t.matrices((32, 32), 200)
    assert np.abs(mats[:, :, 2]).max() <= 0.25 * 32 + 1e-9
    r = RandomAffine(10.0, 0.0, (0.95, 1.05), seed=1).matrices((32, 32), 500)
    scale = np.sqrt(np.abs(np.linalg.det(r[:, :, :2])))
    angle = np.degrees(np.arctan2(r[:, 0, 1], r[:, 0, 0]))
    assert 0.95 <= scale.min() and scale.max() <= 1.05
    assert np.abs(angle).max() <= 10.0 + 1e-9 and np.abs(angle).max() > 9.0
    out = RandomAffine(10.0, 0.05, (0.95, 1.05), seed=2)(s)
    assert out.images.dtype == np.float32 and out.images.shape == s.images.shape
    assert not np.allclose(out.images[0], s.images[0])
    assert float(np.abs(out.images[3]).max()) == 0.0  # missing view stays blank
    assert 0.0 <= out.images.min() and out.images.max() <= 1.0


def test_pipeline_is_a_function_of_the_seed():
    pipe = build_augment(AugmentSection())
    assert isinstance(pipe, Compose) and len(pipe) == 2
    s = _sample()
    a = pipe.set_random_state(sample_seed(0, 3, 7))(s)
    pipe.set_random_state(sample_seed(0, 3, 8))(s)  # something else in between
    b = pipe.set_random_state(sample_seed(0, 3, 7))(s)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.missing.tolist() == b.missing.tolist()
    c = pipe.set_random_state(sample_seed(0, 4, 7))(s)
    assert not np.array_equal(a.images, c.images)
    assert sample_seed(0, 1, 2) != sample_seed(0, 2, 1)
    assert build_augment(AugmentSection(enabled=False)) is None
    only_flip = build_augment(AugmentSection(rotation_deg=0.0, translate=0.0, scale=(1.0, 1.0)))
    assert len(only_flip) == 1 and isinstance(only_flip.transforms[0], RandomHorizontalFlip)
    # about half of the studies are mirrored
    flips = sum(
        only_flip.set_random_state(sample_seed(1, 0, i))(s).missing[2] for i in range(400)
    )
    assert 150 < flips < 250
