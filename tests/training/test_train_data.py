"""Training data: per-breast targets, patient split, the preprocessed tensor cache, the dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from train_fixtures import PHANTOM, phantom_cache

from engine.io.loader import load_study
from engine.preprocess import StudyPreprocessor
from training.augment import build_augment
from training.config import AugmentSection
from training.data import (
    EpochSampler,
    FourViewDataset,
    TensorCache,
    make_split,
    open_samples,
    study_targets,
)
from training.datasets import BreastLabels, StudySample

TASKS = ("malignancy", "birads")


def _study(images=("R-CC", "R-MLO", "L-CC", "L-MLO"), **labels) -> StudySample:
    return StudySample("x", "s1", "p1", images={k: Path(f"/nowhere/{k}.dcm") for k in images}, labels=labels)


def test_targets_follow_the_paper_rules():
    s = _study(R=BreastLabels("malignant", 5), L=BreastLabels("benign", 3))
    t = study_targets(s, TASKS, (1, 2, 3, 4, 5))
    assert t["malignancy"].tolist() == [1, 0] and t["birads"].tolist() == [4, 2]  # side order (R, L)
    # the {1, 5} subset: the BI-RADS 3 breast leaves both tasks ("exclude"), or only BI-RADS
    assert study_targets(s, TASKS, (1, 5))["malignancy"].tolist() == [1, -1]
    assert study_targets(s, TASKS, (1, 5))["birads"].tolist() == [1, -1]
    t = study_targets(s, TASKS, (1, 5), outside_birads="ignore-birads")
    assert t["malignancy"].tolist() == [1, 0] and t["birads"].tolist() == [1, -1]
    # a breast with no image is ignored even when labelled; unknown pathology / BI-RADS -> -1
    s = _study(images=("L-CC",), R=BreastLabels("malignant", 5), L=BreastLabels(None, None))
    t = study_targets(s, TASKS, (1, 3, 5))
    assert t["malignancy"].tolist() == [-1, -1] and t["birads"].tolist() == [-1, -1]
    s = _study(images=("R-MLO", "L-MLO"), L=BreastLabels("normal", None))
    only = study_targets(s, ("malignancy",), (1, 5))
    assert set(only) == {"malignancy"} and only["malignancy"].tolist() == [-1, 0]
    assert study_targets(s, TASKS, (1, 5))["malignancy"].tolist() == [-1, 0]
    split = make_split(
        "val",
        [s, _study(images=(), L=BreastLabels("normal", 1)), _study(R=BreastLabels("benign", 3))],
        TASKS,
        (1, 5),
    )
    assert len(split) == 1 and split.dropped == 2 and split.targets["birads"].shape == (1, 2)


@pytest.fixture(scope="module")
def phantom_samples(tmp_path_factory):
    cache = phantom_cache(tmp_path_factory)
    _, samples = open_samples("phantom", None, {**PHANTOM, "cache_dir": cache})
    return samples


def test_cache_holds_exactly_the_engine_preprocessing(phantom_samples, tmp_path):
    samples = phantom_samples[:3]
    cache = TensorCache(samples, 64, tmp_path).build()
    assert cache.complete and len(cache) == 3
    again = TensorCache(samples, 64, tmp_path)
    assert again.path == cache.path and again.complete  # same files, same preprocessing: reused
    assert TensorCache(samples, 96, tmp_path).path != cache.path
    assert TensorCache(samples, 64, tmp_path, crop=False).path != cache.path
    pre = StudyPreprocessor(64)
    for i, s in enumerate(samples):
        images, missing = cache[i]
        # what engine.Engine computes for the same study folder
        ref = pre(load_study(next(iter(s.images.values())).parent))
        assert missing.tolist() == ref.missing.tolist() == [k not in s.images for k in ("R-CC", "L-CC", "R-MLO", "L-MLO")]
        np.testing.assert_allclose(images, ref.images[:, 0], atol=1e-3, rtol=1e-3)  # float16 storage
        assert images.dtype == np.float32
    u8 = TensorCache(samples, 64, tmp_path, dtype="uint8").build()
    np.testing.assert_allclose(u8[0][0], cache[0][0], atol=0.5 / 255 + 1e-3)
    # a changed file changes the key (rebuilt, never stale)
    f = next(iter(samples[0].images.values()))
    stamp = f.stat().st_mtime_ns
    import os

    os.utime(f, ns=(stamp + 10**9, stamp + 10**9))
    try:
        assert TensorCache(samples, 64, tmp_path).path != cache.path
    finally:
        os.utime(f, ns=(stamp, stamp))


def test_dataset_items_are_deterministic_per_epoch(phantom_samples, tmp_path):
    samples = phantom_samples[:4]
    split = make_split("train", samples, TASKS, (1, 2, 3, 4, 5))
    cache = TensorCache(split.samples, 64, tmp_path).build()
    ds = FourViewDataset(cache, split.targets, build_augment(AugmentSection()), seed=3)
    a, b, c = ds[(2, 1)], ds[(2, 1)], ds[(3, 1)]
    assert a["images"].shape == (4, 1, 64, 64) and a["images"].dtype == torch.float32
    assert a["missing"].dtype == torch.bool and a["index"] == 1
    assert torch.equal(a["images"], b["images"]) and not torch.equal(a["images"], c["images"])
    plain = FourViewDataset(cache, split.targets)[1]
    np.testing.assert_array_equal(plain["images"][:, 0].numpy(), cache[1][0])
    assert plain["targets"]["birads"].tolist() == split.targets["birads"][1].tolist()
    sampler = EpochSampler(torch.utils.data.distributed.DistributedSampler(ds, num_replicas=1, rank=0, seed=3))
    sampler.set_epoch(5)
    items = list(sampler)
    assert sorted(i for _, i in items) == [0, 1, 2, 3] and {e for e, _ in items} == {5}
