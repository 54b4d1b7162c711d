"""Patient-level train/validation/test splits and k-fold cross-validation (SPEC section 7).

The unit that is never cut is the *split unit*: all samples of one patient, merged with every
other patient that shares a group key (BUSI near-duplicate images, or any key the caller gives).
Seed 000 (section 3) splits TOMPEI-CMMD 80/20 at patient level; seed 002 rotates 10 folds so that
each patient is validated exactly once; the task asks for 5-fold cross-validation of mini-MIAS by
woman. All three are :func:`patient_split` / :func:`patient_kfold`.

Stratification: each unit gets a stratum, by default its worst known pathology (malignant >
benign > normal), else its highest BI-RADS, else ``"unknown"``. Integer quotas per stratum and
split are drawn with the largest-remainder method so that the split sizes match the fractions
over the whole data set and each stratum is spread in the same proportions as closely as integers
allow. Units are weighed by their number of patients (so fractions are fractions of patients).

Everything is a deterministic function of the samples, the fractions and the seed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np

from training.datasets.base import StudySample, pathology_rank

__all__ = [
    "GroupKeys",
    "split_units",
    "unit_stratum",
    "patient_split",
    "patient_kfold",
    "kfold_assignment",
    "official_split",
    "check_disjoint",
]

logger = logging.getLogger(__name__)

#: Extra grouping: ``{study_id: group key}`` or a function of the sample (None = no group).
GroupKeys = Mapping[str, Hashable] | Callable[[StudySample], Hashable | None]
Stratifier = Callable[[Sequence[StudySample]], Hashable]


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _group_key(sample: StudySample, groups: GroupKeys | None) -> Hashable | None:
    if groups is None:
        return None
    if callable(groups):
        return groups(sample)
    return groups.get(sample.study_id)


def split_units(samples: Sequence[StudySample], groups: GroupKeys | None = None) -> list[list[int]]:
    """Indices of ``samples`` grouped into split units.

    Two samples are in one unit when they share a patient id, a ``group_id`` (set by the adapter),
    or a key from ``groups``, directly or through a chain of such links.

    Args:
        samples: The samples.
        groups: Optional extra group keys.

    Returns:
        Units as lists of sample indices, in order of their first sample.
    """
    uf = _UnionFind(len(samples))
    first: dict[tuple[str, Hashable], int] = {}
    for i, s in enumerate(samples):
        keys = [("patient", s.patient_id)]
        if s.group_id is not None:
            keys.append(("group", s.group_id))
        extra = _group_key(s, groups)
        if extra is not None:
            keys.append(("extra", extra))
        for key in keys:
            j = first.setdefault(key, i)
            uf.union(i, j)
    units: dict[int, list[int]] = defaultdict(list)
    for i in range(len(samples)):
        units[uf.find(i)].append(i)
    return sorted(units.values(), key=lambda u: u[0])


def unit_stratum(samples: Sequence[StudySample]) -> Hashable:
    """Default stratum of a unit: worst pathology, else highest BI-RADS, else ``"unknown"``."""
    worst = max((pathology_rank(lab.pathology) for s in samples for lab in s.labels.values()), default=-1)
    if worst >= 0:
        return ("normal", "benign", "malignant")[worst]
    birads = [lab.birads for s in samples for lab in s.labels.values() if lab.birads is not None]
    if birads:
        return f"birads-{max(birads)}"
    return "unknown"


def _largest_remainder(raw: np.ndarray, total: int, priority: np.ndarray) -> np.ndarray:
    """Integers summing to ``total`` close to ``raw`` (ties broken by ``priority``, lower first)."""
    q = np.floor(raw + 1e-9).astype(np.int64)
    left = int(total - q.sum())
    if left > 0:
        order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - q[i]), priority[i]))
        for i in order[:left]:
            q[i] += 1
    return q


def _assign(
    weights: list[int],
    strata: list[Hashable],
    fractions: np.ndarray,
    rng: np.random.Generator,
) -> list[int]:
    """Split index of every unit (see the module docstring)."""
    n_split = len(fractions)
    total = int(sum(weights))
    priority = rng.permutation(n_split)
    target = _largest_remainder(total * fractions, total, priority)

    by_stratum: dict[Hashable, list[int]] = defaultdict(list)
    for u, s in enumerate(strata):
        by_stratum[s].append(u)
    keys = sorted(by_stratum, key=lambda k: (str(type(k)), str(k)))

    quota: dict[Hashable, np.ndarray] = {}
    frac_part: dict[Hashable, np.ndarray] = {}
    remaining: dict[Hashable, int] = {}
    for k in keys:
        w = sum(weights[u] for u in by_stratum[k])
        raw = w * fractions
        quota[k] = np.floor(raw + 1e-9).astype(np.int64)
        frac_part[k] = raw - quota[k]
        remaining[k] = int(w - quota[k].sum())
    need = target - sum(quota.values())
    tiebreak = rng.random((len(keys), n_split))
    cells = sorted(
        ((frac_part[k][i], tiebreak[a, i], a, i) for a, k in enumerate(keys) for i in range(n_split)),
        reverse=True,
    )
    for _, _, a, i in cells:
        k = keys[a]
        if remaining[k] > 0 and need[i] > 0:
            quota[k][i] += 1
            remaining[k] -= 1
            need[i] -= 1
    for k in keys:  # infeasible leftovers (rare): give them where the global need is largest
        while remaining[k] > 0:
            i = int(np.argmax(need))
            quota[k][i] += 1
            need[i] -= 1
            remaining[k] -= 1

    out = [0] * len(weights)
    got = np.zeros(n_split, dtype=np.int64)
    for k in keys:
        units = [by_stratum[k][j] for j in rng.permutation(len(by_stratum[k]))]
        units.sort(key=lambda u: -weights[u])  # stable: heavy units first, random order otherwise
        have = np.zeros(n_split, dtype=np.int64)
        for u in units:
            room = quota[k] - have
            glob = target - got
            i = max(range(n_split), key=lambda j: (room[j], glob[j], -priority[j]))
            out[u] = i
            have[i] += weights[u]
            got[i] += weights[u]
    return out


def _prepare(
    samples: Sequence[StudySample],
    groups: GroupKeys | None,
    stratify: bool | Stratifier,
) -> tuple[list[list[int]], list[int], list[Hashable]]:
    units = split_units(samples, groups)
    weights = [len({samples[i].patient_id for i in u}) for u in units]
    if stratify is False:
        strata: list[Hashable] = ["all"] * len(units)
    else:
        fn = unit_stratum if stratify is True else stratify
        strata = [fn([samples[i] for i in u]) for u in units]
    return units, weights, strata


def patient_split(
    samples: Sequence[StudySample],
    fractions: Sequence[float] = (0.8, 0.2),
    seed: int = 0,
    *,
    groups: GroupKeys | None = None,
    stratify: bool | Stratifier = True,
) -> tuple[list[StudySample], ...]:
    """Split samples into parts of the given patient fractions, no unit cut (e.g. train/val/test).

    Args:
        samples: The samples.
        fractions: One fraction per part, summing to 1 (``(0.8, 0.2)``, ``(0.7, 0.15, 0.15)``).
        seed: Random seed.
        groups: Extra group keys kept within one part (see :func:`split_units`).
        stratify: True (worst label, :func:`unit_stratum`), False, or a function of a unit's
            samples returning its stratum.

    Returns:
        One list per fraction, each in the input order.

    Raises:
        ValueError: Fractions negative or not summing to 1.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or len(f) < 1 or np.any(f < 0) or abs(f.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    units, weights, strata = _prepare(samples, groups, stratify)
    part = _assign(weights, strata, f, np.random.default_rng(seed))
    chosen = [0] * len(samples)
    for u, p in zip(units, part):
        for i in u:
            chosen[i] = p
    return tuple([s for s, c in zip(samples, chosen) if c == p] for p in range(len(f)))


def kfold_assignment(
    samples: Sequence[StudySample],
    k: int = 5,
    seed: int = 0,
    *,
    groups: GroupKeys | None = None,
    stratify: bool | Stratifier = True,
) -> list[int]:
    """The fold (0..k-1) of every sample: units whole, fold sizes and strata balanced.

    Raises:
        ValueError: ``k < 2`` or more folds than split units.
    """
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    units, weights, strata = _prepare(samples, groups, stratify)
    if k > len(units):
        raise ValueError(f"{k} folds but only {len(units)} patients (split units)")
    part = _assign(weights, strata, np.full(k, 1.0 / k), np.random.default_rng(seed))
    fold = [0] * len(samples)
    for u, p in zip(units, part):
        for i in u:
            fold[i] = p
    return fold


def patient_kfold(
    samples: Sequence[StudySample],
    k: int = 5,
    seed: int = 0,
    *,
    groups: GroupKeys | None = None,
    stratify: bool | Stratifier = True,
) -> list[tuple[list[StudySample], list[StudySample]]]:
    """k-fold cross-validation at patient level: every sample is in exactly one held-out fold.

    Args:
        samples: The samples.
        k: Number of folds.
        seed: Random seed.
        groups: Extra group keys kept within one fold (e.g. BUSI near-duplicates; the BUSI adapter
            already sets ``group_id``).
        stratify: As :func:`patient_split`.

    Returns:
        ``k`` pairs ``(train, held_out)``, each list in the input order.
    """
    fold = kfold_assignment(samples, k, seed, groups=groups, stratify=stratify)
    return [
        ([s for s, f in zip(samples, fold) if f != j], [s for s, f in zip(samples, fold) if f == j])
        for j in range(k)
    ]


def official_split(samples: Sequence[StudySample]) -> dict[str | None, list[StudySample]]:
    """Samples by the dataset's own split (VinDr-Mammo, CBIS-DDSM); None for samples without one."""
    out: dict[str | None, list[StudySample]] = defaultdict(list)
    for s in samples:
        out[s.split].append(s)
    return dict(out)


def check_disjoint(parts: Sequence[Sequence[StudySample]], groups: GroupKeys | None = None) -> None:
    """Raise ValueError if a patient or group occurs in two parts (a leak)."""
    owner: dict[tuple[str, Hashable], int] = {}
    for p, part in enumerate(parts):
        for s in part:
            keys = [("patient", s.patient_id)]
            if s.group_id is not None:
                keys.append(("group", s.group_id))
            extra = _group_key(s, groups)
            if extra is not None:
                keys.append(("extra", extra))
            for key in keys:
                if owner.setdefault(key, p) != p:
                    raise ValueError(f"{key[0]} found in parts {owner[key]} and {p} (leak)")
