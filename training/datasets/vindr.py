"""VinDr-Mammo (PhysioNet 1.0.0): 5,000 four-view studies with BI-RADS, density and finding boxes.

Layout (``root`` is the PhysioNet folder, or its parent when it holds exactly that folder)::

    breast-level_annotations.csv   study_id, series_id, image_id, laterality, view_position,
                                   height, width, breast_birads, breast_density, split
    finding_annotations.csv        the same plus finding_categories (a Python list literal),
                                   finding_birads, xmin, ymin, xmax, ymax (NaN/empty: no box)
    images/<study_id>/<image_id>.dicom

Mapping: one sample per ``study_id``; VinDr has no patient id, so ``patient_id = study_id``
(the dataset's own split unit). Per breast (``laterality``): BI-RADS = the number of
``"BI-RADS N"``, density = the letter of ``"DENSITY X"``; **no pathology** (None: VinDr has
BI-RADS only); age from the DICOM ``PatientAge`` of the study's first image (``read_age=False``
skips the header reads). Each finding row with a category other than "No Finding" becomes a
:class:`Lesion` with its box (x = column, y = row), categories (lower case; Mass -> mass,
Suspicious Calcification -> calcification, Architectural Distortion -> distortion) and
finding BI-RADS. ``split`` keeps the official ``training``/``test`` split.
"""

from __future__ import annotations

import ast
import logging
import math
from collections import defaultdict
from pathlib import Path

from training.datasets._dicom import read_header
from training.datasets.base import (
    SIDES,
    BreastLabels,
    DatasetAdapter,
    DatasetLabelError,
    Lesion,
    SampleImage,
    StudySample,
    normalise_density,
    parse_birads,
    read_table,
)

__all__ = ["VinDrMammo", "normalise_vindr_category"]

logger = logging.getLogger(__name__)

_BREAST_CSV = "breast-level_annotations.csv"
_FINDING_CSV = "finding_annotations.csv"
_CATEGORY = {
    "mass": "mass",
    "suspicious calcification": "calcification",
    "architectural distortion": "distortion",
}


def normalise_vindr_category(category: str) -> str:
    """``"Suspicious Calcification"`` -> ``"calcification"``; others lower case."""
    c = category.strip().lower()
    return _CATEGORY.get(c, c)


def _float(value: str) -> float | None:
    v = value.strip()
    if not v or v.lower() == "nan":
        return None
    x = float(v)
    return None if math.isnan(x) else x


class VinDrMammo(DatasetAdapter):
    """VinDr-Mammo.

    Args:
        root: The dataset folder (see the module docstring).
        read_age: Read ``PatientAge`` from one DICOM header per study.
    """

    name = "vindr"
    citation = (
        "Nguyen HT, Nguyen HQ, Pham HH, et al. VinDr-Mammo: A large-scale benchmark dataset for "
        "computer-aided diagnosis in full-field digital mammography. Scientific Data 10, 277 (2023). "
        "doi:10.13026/br2v-7517"
    )
    licence = "PhysioNet Restricted Health Data License 1.5.0 (credentialed access)"
    url = "https://physionet.org/content/vindr-mammo/1.0.0/"

    def __init__(self, root: str | Path, *, read_age: bool = True) -> None:
        super().__init__(root)
        self.read_age = read_age

    def _base(self) -> Path:
        if (self.root / _BREAST_CSV).is_file():
            return self.root
        nested = [p for p in self.root.iterdir() if p.is_dir() and (p / _BREAST_CSV).is_file()]
        if len(nested) == 1:
            return nested[0]
        raise self._error(self.root / _BREAST_CSV, "breast-level annotation table not found")

    def _load(self) -> list[StudySample]:
        base = self._base()
        table = base / _BREAST_CSV
        header, rows = read_table(table, root=self.root)
        need = ("study_id", "image_id", "laterality", "view_position", "breast_birads", "breast_density", "split")
        missing = [c for c in need if c not in header]
        if missing:
            raise self._error(table, f"missing columns {missing}")
        col = {c: header.index(c) for c in need}

        studies: dict[str, dict] = {}
        for n, r in enumerate(rows, start=2):
            sid = r[col["study_id"]].strip()
            side = r[col["laterality"]].strip().upper()
            view = r[col["view_position"]].strip().upper()
            if side not in SIDES:
                raise self._error(table, f"row {n}: laterality must be L or R", DatasetLabelError)
            image = base / "images" / sid / f"{r[col['image_id']].strip()}.dicom"
            self._require(image, "image")
            st = studies.setdefault(sid, {"images": {}, "extras": [], "breast": {}, "split": set()})
            key = f"{side}-{view}"
            if view in ("CC", "MLO") and key not in st["images"]:
                st["images"][key] = image
            else:
                note = "duplicate view" if view in ("CC", "MLO") else "non-standard view"
                st["extras"].append(SampleImage(image, kind="MG", side=side, view=view or None, note=note))
            try:
                birads = parse_birads(r[col["breast_birads"]])
                density = normalise_density(r[col["breast_density"]])
            except ValueError as exc:
                raise self._error(table, f"row {n}: {exc}", DatasetLabelError) from None
            prev = st["breast"].get(side)
            if prev is not None and prev != (birads, density):
                raise self._error(
                    table, f"row {n}: breast labels differ between the breast's images", DatasetLabelError
                )
            st["breast"][side] = (birads, density)
            if r[col["split"]].strip():
                st["split"].add(r[col["split"]].strip())

        lesions = self._findings(base, studies)
        samples = []
        for sid in sorted(studies):
            st = studies[sid]
            age = None
            if self.read_age:
                first = next(iter(st["images"].values()), None) or (st["extras"][0].path if st["extras"] else None)
                if first is not None:
                    age = read_header(first, self.root).age
            labels = {}
            for side, (birads, density) in sorted(st["breast"].items()):
                les = tuple(lesions.get((sid, side), ()))
                kinds = sorted({k for lesion in les for k in (lesion.finding or "").split(";") if k})
                labels[side] = BreastLabels(
                    pathology=None,
                    birads=birads,
                    density=density,
                    age=age,
                    finding=";".join(kinds) if kinds else "none",
                    lesions=les,
                )
            split = st["split"].pop() if len(st["split"]) == 1 else None
            samples.append(
                StudySample(
                    dataset=self.name,
                    study_id=sid,
                    patient_id=sid,
                    images=dict(st["images"]),
                    labels=labels,
                    extras=tuple(st["extras"]),
                    split=split,
                )
            )
        return samples

    def _findings(self, base: Path, studies: dict[str, dict]) -> dict[tuple[str, str], list[Lesion]]:
        table = base / _FINDING_CSV
        if not table.is_file():
            raise self._error(table, "finding annotation table not found")
        header, rows = read_table(table, root=self.root)
        need = ("study_id", "image_id", "laterality", "view_position", "finding_categories", "finding_birads",
                "xmin", "ymin", "xmax", "ymax")  # fmt: skip
        missing = [c for c in need if c not in header]
        if missing:
            raise self._error(table, f"missing columns {missing}")
        col = {c: header.index(c) for c in need}
        out: dict[tuple[str, str], list[Lesion]] = defaultdict(list)
        for n, r in enumerate(rows, start=2):
            try:
                cats = ast.literal_eval(r[col["finding_categories"]].strip() or "[]")
                if isinstance(cats, str):
                    cats = [cats]
                cats = [str(c) for c in cats]
            except (ValueError, SyntaxError):
                raise self._error(table, f"row {n}: finding_categories is not a list", DatasetLabelError) from None
            cats = [c for c in cats if c.strip().lower() != "no finding"]
            if not cats:
                continue
            sid = r[col["study_id"]].strip()
            side = r[col["laterality"]].strip().upper()
            view = r[col["view_position"]].strip().upper()
            image = base / "images" / sid / f"{r[col['image_id']].strip()}.dicom"
            try:
                coords = [_float(r[col[c]]) for c in ("xmin", "ymin", "xmax", "ymax")]
                birads = parse_birads(r[col["finding_birads"]])
            except ValueError as exc:
                raise self._error(table, f"row {n}: {exc}", DatasetLabelError) from None
            box = tuple(coords) if all(c is not None for c in coords) else None
            if sid not in studies:
                raise self._error(table, f"row {n}: study not in {_BREAST_CSV}", DatasetLabelError)
            out[(sid, side)].append(
                Lesion(
                    image=image,
                    view=f"{side}-{view}" if view in ("CC", "MLO") and side in SIDES else None,
                    box=box,  # type: ignore[arg-type]
                    finding=";".join(normalise_vindr_category(c) for c in cats),
                    birads=birads,
                )
            )
        return out
