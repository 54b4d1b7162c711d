"""Public dataset adapters (SPEC section 7): one sample interface, one adapter per dataset.

Usage::

    from training.datasets import open_dataset, patient_split, patient_kfold

    ds = open_dataset("mias", "../shared/realdata/mias")
    samples = ds.samples()                       # list[StudySample]
    train, val = patient_split(samples, (0.8, 0.2), seed=0)
    folds = patient_kfold(samples, k=5, seed=0)  # [(train, held_out), ...]

See :mod:`training.datasets.base` for :class:`StudySample` / :class:`BreastLabels` and each
adapter module for the layout it reads and how the dataset maps to the interface.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.datasets.base import (
    PATHOLOGIES,
    SIDES,
    UNKNOWN_SIDE,
    BreastLabels,
    DatasetAdapter,
    DatasetError,
    DatasetLabelError,
    DatasetLayoutError,
    Lesion,
    SampleImage,
    StudySample,
    worst_pathology,
)
from training.datasets.busi import BUSI
from training.datasets.cbis_ddsm import CBISDDSM
from training.datasets.cdd_cesm import CDDCESM
from training.datasets.cmmd import CMMD, TompeiCMMD
from training.datasets.manifest import Manifest
from training.datasets.mias import MIAS
from training.datasets.phantom import Phantom
from training.datasets.splits import (
    check_disjoint,
    kfold_assignment,
    official_split,
    patient_kfold,
    patient_split,
    split_units,
)
from training.datasets.vindr import VinDrMammo

__all__ = [
    "ADAPTERS",
    "open_dataset",
    "PATHOLOGIES",
    "SIDES",
    "UNKNOWN_SIDE",
    "BreastLabels",
    "Lesion",
    "SampleImage",
    "StudySample",
    "DatasetAdapter",
    "DatasetError",
    "DatasetLayoutError",
    "DatasetLabelError",
    "worst_pathology",
    "CMMD",
    "TompeiCMMD",
    "VinDrMammo",
    "CBISDDSM",
    "CDDCESM",
    "MIAS",
    "BUSI",
    "Manifest",
    "Phantom",
    "patient_split",
    "patient_kfold",
    "kfold_assignment",
    "split_units",
    "official_split",
    "check_disjoint",
]

#: Adapter classes by name (the ``data.dataset`` value of a training config).
ADAPTERS: dict[str, type[DatasetAdapter]] = {
    cls.name: cls for cls in (CMMD, TompeiCMMD, VinDrMammo, CBISDDSM, CDDCESM, MIAS, BUSI, Manifest, Phantom)
}


def open_dataset(name: str, root: str | Path | None, **options: Any) -> DatasetAdapter:
    """Open a dataset by adapter name.

    Args:
        name: One of :data:`ADAPTERS` (``"cmmd"``, ``"tompei-cmmd"``, ``"vindr"``, ``"cbis-ddsm"``,
            ``"cdd-cesm"``, ``"mias"``, ``"busi"``, ``"manifest"``, ``"phantom"``).
        root: The dataset folder (``None`` only for a generated phantom).
        **options: Adapter keyword options (e.g. ``studies=50, seed=1`` for the phantom).

    Raises:
        ValueError: Unknown name.
        DatasetError: The folder is not in the adapter's layout.
    """
    try:
        cls = ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(ADAPTERS))}") from None
    return cls(root, **options)  # type: ignore[arg-type]
