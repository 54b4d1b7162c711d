"""BUSI: Breast Ultrasound Images Dataset (Al-Dhabyani et al., Data in Brief 28 (2020) 104863).

Layouts read:

- ``labels.csv`` (``file, class, mask_files`` with ``;``-separated mask files, paths relative to
  the root) and optionally ``near_duplicates_unverified.csv`` (``file_a, file_b`` pairs): the
  ``../shared/realdata/busi`` copy; or
- the published ``Dataset_BUSI_with_GT/{benign,malignant,normal}/`` folders (the root may be that
  folder or its parent): ``"benign (N).png"`` with masks ``"benign (N)_mask.png"``,
  ``"_mask_1.png"``, ``"_mask_2.png"``.

Mapping to the sample interface:

- One sample per image, ``study_id`` = the file stem (``"benign (2)"``); the image is an extra
  ``SampleImage(kind="US", side=None)``; labels under ``"U"`` (BUSI gives no side).
- **No patient ids** in BUSI: each image is its own ``patient_id``. Near-duplicate images (rescaled
  or shifted copies, some across classes) are linked into connected groups from
  ``near_duplicates_unverified.csv``; ``group_id`` names the group, so :mod:`splits` keeps a whole
  group in one fold.
- Pathology from the class folder; ``finding`` is ``"none"`` for normal images, else None (BUSI
  does not type the finding). One :class:`Lesion` per abnormal image with all its mask files
  (their union is the lesion); normal images' all-zero masks are not lesions. No BI-RADS,
  density, age or pixel spacing.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path

from training.datasets.base import (
    UNKNOWN_SIDE,
    BreastLabels,
    DatasetAdapter,
    DatasetLabelError,
    Lesion,
    SampleImage,
    StudySample,
    read_table,
)

__all__ = ["BUSI", "near_duplicate_groups"]

logger = logging.getLogger(__name__)

_CLASSES = ("benign", "malignant", "normal")
_MASK = re.compile(r"^(?P<stem>.+)_mask(?:_\d+)?$")


def near_duplicate_groups(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Connected groups of near-duplicate pairs.

    Args:
        pairs: ``(file_a, file_b)`` pairs.

    Returns:
        ``{file: group key}`` for every file in a pair; the key is the group's smallest file name.
    """
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        parent.setdefault(a, a)
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {f: find(f) for f in list(parent)}


class BUSI(DatasetAdapter):
    """BUSI breast ultrasound: 780 images (the shared development copy holds 591).

    Args:
        root: Folder with ``labels.csv`` or the class folders (or ``Dataset_BUSI_with_GT/``).
    """

    name = "busi"
    citation = (
        "Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. "
        "Data in Brief 28 (2020) 104863. doi:10.1016/j.dib.2019.104863"
    )
    licence = "Published with an open-access (CC BY) Data in Brief article; cite the paper"
    url = "https://doi.org/10.1016/j.dib.2019.104863"

    def _base(self) -> Path:
        if (self.root / "labels.csv").is_file() or any((self.root / c).is_dir() for c in _CLASSES):
            return self.root
        nested = self.root / "Dataset_BUSI_with_GT"
        if nested.is_dir():
            return nested
        raise self._error(self.root / "labels.csv", "neither labels.csv nor benign/malignant/normal folders found")

    def _entries(self, base: Path) -> list[tuple[str, str, list[str]]]:
        """``(relative image path, class, [relative mask paths])``."""
        table = base / "labels.csv"
        if table.is_file():
            header, rows = read_table(table, root=self.root)
            for col in ("file", "class", "mask_files"):
                if col not in header:
                    raise self._error(table, f"missing column {col!r}")
            fi, ci, mi = header.index("file"), header.index("class"), header.index("mask_files")
            out = []
            for n, r in enumerate(rows, start=2):
                cls = r[ci].strip().lower()
                if cls not in _CLASSES:
                    raise self._error(table, f"row {n}: unknown class {r[ci]!r}", DatasetLabelError)
                masks = [m.strip() for m in r[mi].split(";") if m.strip()]
                out.append((r[fi].strip(), cls, masks))
            return out
        out = []
        for cls in _CLASSES:
            folder = base / cls
            if not folder.is_dir():
                raise self._error(folder, "class folder not found")
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
            masks: dict[str, list[str]] = defaultdict(list)
            images = []
            for p in files:
                m = _MASK.match(p.stem)
                if m:
                    masks[m.group("stem")].append(f"{cls}/{p.name}")
                else:
                    images.append(p)
            for p in images:
                out.append((f"{cls}/{p.name}", cls, sorted(masks.get(p.stem, []))))
        return out

    def _groups(self, base: Path) -> dict[str, str]:
        table = base / "near_duplicates_unverified.csv"
        if not table.is_file():
            logger.info("busi: no near_duplicates_unverified.csv; near-duplicates are not grouped")
            return {}
        header, rows = read_table(table, root=self.root)
        for col in ("file_a", "file_b"):
            if col not in header:
                raise self._error(table, f"missing column {col!r}")
        a, b = header.index("file_a"), header.index("file_b")
        return near_duplicate_groups([(r[a].strip(), r[b].strip()) for r in rows])

    def _load(self) -> list[StudySample]:
        base = self._base()
        groups = self._groups(base)
        samples = []
        seen: set[str] = set()
        entries = self._entries(base)
        for rel, cls, masks in entries:
            image = self._require(base / rel, "image")
            stem = Path(rel).stem
            if stem in seen:
                raise self._error(image, "two images with the same name", DatasetLabelError)
            seen.add(stem)
            mask_paths = tuple(self._require(base / m, "mask") for m in masks)
            lesions = ()
            if cls != "normal":
                lesions = (Lesion(image=image, masks=mask_paths, pathology=cls),)
            group = groups.get(rel)
            samples.append(
                StudySample(
                    dataset=self.name,
                    study_id=stem,
                    patient_id=stem,
                    labels={
                        UNKNOWN_SIDE: BreastLabels(
                            pathology=cls,
                            finding="none" if cls == "normal" else None,
                            lesions=lesions,
                            attributes={"n_masks": str(len(mask_paths))},
                        )
                    },
                    extras=(SampleImage(image, kind="US", side=None),),
                    group_id=f"busi-dup:{Path(group).stem}" if group is not None else None,
                )
            )
        listed = {rel for rel, _, _ in entries}
        unknown = [f for f in groups if f not in listed]
        if unknown:
            logger.info("busi: %d near-duplicate entries name images not in this copy", len(unknown))
        return samples
