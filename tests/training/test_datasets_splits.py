"""Patient-level splits and k-fold cross-validation: no patient or group on two sides."""

from __future__ import annotations

from collections import Counter

import pytest

from training.datasets.base import BreastLabels, StudySample
from training.datasets.splits import (
    check_disjoint,
    kfold_assignment,
    official_split,
    patient_kfold,
    patient_split,
    split_units,
)


def _samples(n_patients: int = 60, seed: int = 0) -> list[StudySample]:
    """Patients with 1-3 studies each; worst pathology cycles normal/normal/benign/malignant."""
    out = []
    for p in range(n_patients):
        pathology = ("normal", "normal", "benign", "malignant")[p % 4]
        for s in range(1 + (p * 7 + seed) % 3):
            out.append(
                StudySample(
                    dataset="toy",
                    study_id=f"p{p}-s{s}",
                    patient_id=f"p{p}",
                    labels={"L": BreastLabels(pathology=pathology), "R": BreastLabels(pathology="normal")},
                )
            )
    return out


def _patients(part):
    return {s.patient_id for s in part}


def test_patient_split_sizes_disjoint_and_complete():
    samples = _samples()
    train, val, test = patient_split(samples, (0.7, 0.15, 0.15), seed=3)
    assert len(train) + len(val) + len(test) == len(samples)
    assert {s.study_id for s in train + val + test} == {s.study_id for s in samples}
    check_disjoint([train, val, test])
    # fractions are fractions of patients: 60 -> 42 / 9 / 9
    assert [len(_patients(x)) for x in (train, val, test)] == [42, 9, 9]
    # stratified: 15 malignant patients -> 10.5 / 2.25 / 2.25, integers within one of that
    mal = [sum(1 for p in _patients(x) if int(p[1:]) % 4 == 3) for x in (train, val, test)]
    assert sum(mal) == 15 and abs(mal[0] - 10.5) <= 1 and abs(mal[1] - 2.25) <= 1 and abs(mal[2] - 2.25) <= 1


def test_patient_split_is_deterministic_and_seed_dependent():
    samples = _samples()
    a = patient_split(samples, (0.8, 0.2), seed=1)
    b = patient_split(samples, (0.8, 0.2), seed=1)
    c = patient_split(samples, (0.8, 0.2), seed=2)
    assert [s.study_id for s in a[1]] == [s.study_id for s in b[1]]
    assert [s.study_id for s in a[1]] != [s.study_id for s in c[1]]
    assert len(_patients(a[0])) == 48 and len(_patients(a[1])) == 12


def test_bad_fractions():
    with pytest.raises(ValueError, match="sum to 1"):
        patient_split(_samples(), (0.8, 0.3))
    with pytest.raises(ValueError, match="sum to 1"):
        patient_split(_samples(), (1.2, -0.2))


def test_kfold_covers_each_sample_once_and_balances():
    samples = _samples()
    folds = patient_kfold(samples, k=5, seed=0)
    assert len(folds) == 5
    held = Counter(s.study_id for _, test in folds for s in test)
    assert set(held) == {s.study_id for s in samples} and set(held.values()) == {1}
    for train, test in folds:
        check_disjoint([train, test])
        assert len(train) + len(test) == len(samples)
        assert len(_patients(test)) == 12  # 60 patients / 5
        # each stratum spread evenly: 15 malignant patients -> 3 per fold
        assert sum(1 for p in _patients(test) if int(p[1:]) % 4 == 3) == 3


def test_kfold_keeps_groups_across_patients_together():
    samples = _samples(40)
    # link patients 0-1-2 through a chain of group keys, and 10 with 11
    groups = {"p0-s0": "g1", "p1-s0": "g1", "p2-s0": "g2", "p1-s1": "g2", "p10-s0": "g3", "p11-s0": "g3"}
    fold = kfold_assignment(samples, k=4, seed=5, groups=groups)
    by_patient = {}
    for s, f in zip(samples, fold):
        by_patient.setdefault(s.patient_id, set()).add(f)
    assert all(len(v) == 1 for v in by_patient.values())
    assert by_patient["p0"] == by_patient["p1"] == by_patient["p2"]
    assert by_patient["p10"] == by_patient["p11"]
    parts = [[s for s, f in zip(samples, fold) if f == j] for j in range(4)]
    check_disjoint(parts, groups=groups)


def test_group_id_field_is_honoured_and_leaks_are_caught():
    samples = [
        StudySample("busi", f"img{i}", f"img{i}", labels={"U": BreastLabels(pathology="benign")},
                    group_id="dup" if i in (0, 5, 9) else None)
        for i in range(12)
    ]  # fmt: skip
    units = split_units(samples)
    assert [0, 5, 9] in units and len(units) == 10
    for train, test in patient_kfold(samples, k=3, seed=0):
        check_disjoint([train, test])
    with pytest.raises(ValueError, match="leak"):
        check_disjoint([[samples[0]], [samples[5]]])
    with pytest.raises(ValueError, match="folds"):
        patient_kfold(samples, k=11)


def test_official_split():
    a = StudySample("v", "s1", "s1", split="training")
    b = StudySample("v", "s2", "s2", split="test")
    c = StudySample("v", "s3", "s3")
    assert official_split([a, b, c]) == {"training": [a], "test": [b], None: [c]}
