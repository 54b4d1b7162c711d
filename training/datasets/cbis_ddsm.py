"""CBIS-DDSM (Curated Breast Imaging Subset of DDSM, TCIA): abnormal views with ROI masks.

Layout (``root``)::

    mass_case_description_train_set.csv   mass_case_description_test_set.csv
    calc_case_description_train_set.csv    calc_case_description_test_set.csv   (any present)
    metadata.csv                           NBIA manifest (optional but preferred)
    CBIS-DDSM/<Mass|Calc>-<Training|Test>_P_00001_LEFT_CC[_<abnormality id>]/<study>/<series>/*.dcm

Case CSV columns (the mass files say ``breast_density``, the calc files ``breast density``;
names are compared lower-cased with spaces as ``_``): ``patient_id, breast_density, left or right
breast, image view, abnormality id, abnormality type, assessment, pathology, image file path,
cropped image file path, ROI mask file path``.

File resolution: the CSV paths are not trusted as file names (older downloads write
``000000.dcm``, newer ``1-1.dcm``): the Series UID in each CSV path is looked up in
``metadata.csv``'s ``File Location``; without ``metadata.csv`` the CSV path is tried under
``root`` and ``root/CBIS-DDSM``, with ``1-1.dcm``/``1-2.dcm`` for ``00000N.dcm``. Crop and mask
files are sometimes stored in swapped order: the mask is the candidate whose Rows x Columns equal
the full image's (the crop is smaller).

Mapping: one sample per ``patient_id`` (the CSV's, not the folder or DICOM PatientID, which
change per view). Per breast: pathology malignant if any abnormality is MALIGNANT, else benign
(BENIGN_WITHOUT_CALLBACK is benign); **no normal breasts** (CBIS-DDSM holds abnormal views
only); BI-RADS = highest ``assessment``; density 1-4 -> A-D; no age. Each abnormality row is a
:class:`Lesion` with its ROI mask. ``split`` is ``training``/``test`` from the CSV names (None
when a patient is in both). When the mass and calc files both list a view, the first found
(mass before calc) fills the slot and the other is an extra image.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path, PureWindowsPath

from training.datasets._dicom import read_header
from training.datasets.base import (
    BreastLabels,
    DatasetAdapter,
    DatasetLabelError,
    Lesion,
    SampleImage,
    StudySample,
    normalise_density,
    parse_birads,
    read_table,
    worst_pathology,
)

__all__ = ["CBISDDSM", "CASE_FILES"]

logger = logging.getLogger(__name__)

#: Case description files in reading order, with their split.
CASE_FILES: tuple[tuple[str, str], ...] = (
    ("mass_case_description_train_set.csv", "training"),
    ("mass_case_description_test_set.csv", "test"),
    ("calc_case_description_train_set.csv", "training"),
    ("calc_case_description_test_set.csv", "test"),
)
_SIDE = {"LEFT": "L", "RIGHT": "R"}
_PATHOLOGY = {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign"}
_NUMBERED = re.compile(r"^0*(\d+)\.dcm$", re.IGNORECASE)


def _norm(name: str) -> str:
    return re.sub(r"\s+", "_", name.strip().lower())


def _location(value: str) -> Path:
    """``.\\CBIS-DDSM\\Mass-...`` or ``./CBIS-DDSM/Mass-...`` -> relative path."""
    parts = [p for p in PureWindowsPath(value.strip()).parts if p not in (".", "")]
    return Path(*parts) if parts else Path()


class CBISDDSM(DatasetAdapter):
    """CBIS-DDSM: 3,103 full mammograms of 1,566 patients with 3,568 abnormality ROIs.

    Args:
        root: The dataset folder (see the module docstring).
        resolve_masks: Find each ROI mask file (reads crop/mask headers to tell them apart);
            False leaves ``Lesion.masks`` empty and reads no header.
    """

    name = "cbis-ddsm"
    citation = (
        "Sawyer-Lee R, Gimenez F, Hoogi A, Rubin D. Curated Breast Imaging Subset of Digital Database "
        "for Screening Mammography (CBIS-DDSM). The Cancer Imaging Archive (2016). "
        "doi:10.7937/K9/TCIA.2016.7O02S9CY; Lee RS et al., Scientific Data 4, 170177 (2017)"
    )
    licence = "CC BY 3.0 (TCIA)"
    url = "https://doi.org/10.7937/K9/TCIA.2016.7O02S9CY"

    def __init__(self, root: str | Path, *, resolve_masks: bool = True) -> None:
        super().__init__(root)
        self.resolve_masks = resolve_masks
        self._series: dict[str, Path] | None = None
        self._shape_cache: dict[Path, tuple[int | None, int | None]] = {}

    # --- files -----------------------------------------------------------------------------------

    def _series_folders(self) -> dict[str, Path]:
        if self._series is None:
            self._series = {}
            meta = self.root / "metadata.csv"
            if meta.is_file():
                header, rows = read_table(meta, root=self.root)
                cols = {_norm(h): i for i, h in enumerate(header)}
                if "series_uid" not in cols or "file_location" not in cols:
                    raise self._error(meta, "missing columns 'Series UID' / 'File Location'")
                for r in rows:
                    uid = r[cols["series_uid"]].strip()
                    if uid:
                        self._series[uid] = self.root / _location(r[cols["file_location"]])
        return self._series

    def _candidates(self, csv_path: str) -> list[Path]:
        """DICOM files that may be the one a CSV path names (its series folder's files)."""
        rel = Path(*[p for p in csv_path.strip().replace("\\", "/").split("/") if p])
        parts = rel.parts
        series = self._series_folders()
        if len(parts) >= 3 and parts[-2] in series:
            folder = series[parts[-2]]
            return sorted(folder.glob("*.dcm")) if folder.is_dir() else []
        for base in (self.root, self.root / "CBIS-DDSM"):
            p = base / rel
            if p.parent.is_dir():
                return sorted(p.parent.glob("*.dcm"))
        return []

    def _pick(self, csv_path: str, files: list[Path]) -> Path | None:
        """The file a CSV path names among its series' files (exact name, then ``1-N.dcm``)."""
        name = Path(csv_path.strip().replace("\\", "/")).name
        by_name = {f.name: f for f in files}
        if name in by_name:
            return by_name[name]
        m = _NUMBERED.match(name)
        if m and f"1-{int(m.group(1)) + 1}.dcm" in by_name:
            return by_name[f"1-{int(m.group(1)) + 1}.dcm"]
        return files[0] if len(files) == 1 else None

    def _expected(self, csv_path: str) -> Path:
        return self.root / "CBIS-DDSM" / Path(*[p for p in csv_path.strip().replace("\\", "/").split("/") if p])

    def _shape(self, path: Path) -> tuple[int | None, int | None]:
        if path not in self._shape_cache:
            h = read_header(path, self.root)
            self._shape_cache[path] = (h.rows, h.columns)
        return self._shape_cache[path]

    def _full_image(self, csv_path: str) -> Path:
        found = self._pick(csv_path, self._candidates(csv_path))
        if found is None:
            raise self._error(self._expected(csv_path), "full mammogram not found (CSV path / metadata.csv)")
        return found

    def _mask(self, mask_path: str, crop_path: str, full: Path) -> Path:
        files = list(dict.fromkeys(self._candidates(mask_path) + self._candidates(crop_path)))
        if not files:
            raise self._error(self._expected(mask_path), "ROI mask not found (CSV path / metadata.csv)")
        full_shape = self._shape(full)
        same = [f for f in files if self._shape(f) == full_shape]
        if len(same) == 1:
            return same[0]
        named = self._pick(mask_path, self._candidates(mask_path))
        if named is None:
            raise self._error(self._expected(mask_path), "cannot tell the ROI mask from the crop")
        logger.warning("cbis-ddsm: %d full-size candidates for one ROI mask; taking the CSV's file", len(same))
        return named

    # --- samples ---------------------------------------------------------------------------------

    def _load(self) -> list[StudySample]:
        present = [(self.root / f, split) for f, split in CASE_FILES if (self.root / f).is_file()]
        if not present:
            raise self._error(self.root / CASE_FILES[0][0], "no case description CSV found")
        patients: dict[str, dict] = {}
        need = (
            "patient_id", "breast_density", "left_or_right_breast", "image_view", "abnormality_type",
            "assessment", "pathology", "image_file_path", "cropped_image_file_path", "roi_mask_file_path",
        )  # fmt: skip
        for table, split in present:
            header, rows = read_table(table, root=self.root)
            cols = {_norm(h): i for i, h in enumerate(header)}
            missing = [c for c in need if c not in cols]
            if missing:
                raise self._error(table, f"missing columns {missing}")
            for n, r in enumerate(rows, start=2):
                v = {c: r[cols[c]].strip() for c in need}
                side = _SIDE.get(v["left_or_right_breast"].upper())
                view = v["image_view"].upper()
                pathology = _PATHOLOGY.get(v["pathology"].upper())
                if side is None or view not in ("CC", "MLO") or pathology is None:
                    raise self._error(table, f"row {n}: unknown side, view or pathology", DatasetLabelError)
                try:
                    birads = parse_birads(v["assessment"])
                    density = normalise_density(v["breast_density"])
                except ValueError as exc:
                    raise self._error(table, f"row {n}: {exc}", DatasetLabelError) from None
                full = self._full_image(v["image_file_path"])
                masks = ()
                if self.resolve_masks:
                    masks = (self._mask(v["roi_mask_file_path"], v["cropped_image_file_path"], full),)
                key = f"{side}-{view}"
                pt = patients.setdefault(
                    v["patient_id"], {"images": {}, "extras": {}, "rows": defaultdict(list), "split": set()}
                )
                if key not in pt["images"]:
                    pt["images"][key] = full
                elif pt["images"][key] != full and full not in pt["extras"]:
                    pt["extras"][full] = SampleImage(
                        full, kind="MG", side=side, view=view, note="same view in another subset"
                    )
                pt["split"].add(split)
                finding = "mass" if v["abnormality_type"].lower().startswith("mass") else "calcification"
                lesion = Lesion(
                    image=full, view=key, masks=masks, finding=finding, pathology=pathology, birads=birads
                )
                pt["rows"][side].append((density, lesion))
        samples = []
        for pid in sorted(patients):
            pt = patients[pid]
            labels = {}
            for side, items in sorted(pt["rows"].items()):
                lesions = tuple(les for _, les in items)
                densities = sorted({d for d, _ in items if d})
                if len(densities) > 1:
                    logger.warning("cbis-ddsm: a breast with two densities; taking the higher")
                labels[side] = BreastLabels(
                    pathology=worst_pathology(les.pathology for les in lesions),
                    birads=max((les.birads for les in lesions if les.birads is not None), default=None),
                    density=densities[-1] if densities else None,
                    finding=";".join(sorted({les.finding for les in lesions if les.finding})),
                    lesions=lesions,
                )
            samples.append(
                StudySample(
                    dataset=self.name,
                    study_id=pid,
                    patient_id=pid,
                    images=dict(pt["images"]),
                    labels=labels,
                    extras=tuple(pt["extras"].values()),
                    split=next(iter(pt["split"])) if len(pt["split"]) == 1 else None,
                )
            )
        return samples
