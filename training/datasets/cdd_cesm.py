"""CDD-CESM (Categorized Digital Database for Contrast-Enhanced Spectral Mammography, TCIA).

Layout (``root``, or its single subfolder that holds the image folders)::

    Low energy images of CDD-CESM/P<id>_<L|R>_DM_<CC|MLO>.jpg
    Subtracted images of CDD-CESM/P<id>_<L|R>_CM_<CC|MLO>.jpg
    Radiology manual annotations.xlsx      (or Radiology-manual-annotations.xlsx, or a CSV
                                            export of its sheet "all" with the same stem)
    Radiology_hand_drawn_segmentations_v2.csv   (optional; VIA export)

The annotation sheet has one row per image: ``Image_name`` (no ``.jpg``), ``Patient_ID``,
``Side``, ``Type`` (DM/CESM), ``Age``, ``Breast density (ACR)``, ``BIRADS``, ``Findings``,
``View``, ``Tags``, ``Machine``, ``Pathology Classification/ Follow up``. Names carry stray
spaces (file names and ``#filename`` values such as ``"P1_L_CM_MLO .jpg"``): they are compared
with all white space removed, case-insensitively.

Mapping: one sample per patient (``study_id = patient_id = "P<id>"``). Every image is an extra
``SampleImage(kind="CESM")`` with ``cesm_kind`` ``"low_energy"`` (DM) or ``"recombined"`` (CM),
so ``sample.cesm[("L-CC", "low_energy")]`` works. The low-energy image is equivalent to a
standard full-field digital mammogram, so by default (``low_energy_as_mammograms=True``) the DM
images also fill the four standard slots for the mammography models.

Per breast (``Patient_ID``, ``Side``): pathology = the worst over its rows (Normal / Benign /
Malignant); BI-RADS = the highest value, ``$``-joined values split (``"4$2"`` -> 4); density
from the DM rows (the CESM rows hold ``_``); age; findings = the union of the ``$``-split
``Findings`` in lower case (``"none"`` for a normal breast without findings). Segmentation
regions become :class:`Lesion` objects on their image: polygon / polyline (``all_points_x/y``),
circle (centre, radius), ellipse (centre and the bounding box of the rotated ellipse), point
(centre), rect (box); empty shapes (``{}``) are skipped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections import defaultdict
from pathlib import Path

from training.datasets.base import (
    SIDES,
    BreastLabels,
    DatasetAdapter,
    DatasetLabelError,
    Lesion,
    SampleImage,
    StudySample,
    find_table,
    normalise_density,
    parse_age,
    parse_birads,
    read_table,
    worst_pathology,
)

__all__ = ["CDDCESM", "LOW_ENERGY_DIR", "SUBTRACTED_DIR", "region_lesion"]

logger = logging.getLogger(__name__)

LOW_ENERGY_DIR = "Low energy images of CDD-CESM"
SUBTRACTED_DIR = "Subtracted images of CDD-CESM"
_ANNOTATION_STEMS = ("Radiology manual annotations", "Radiology-manual-annotations", "Radiology_manual_annotations")
_SEGMENTATION_CSV = "Radiology_hand_drawn_segmentations_v2.csv"
_NAME = re.compile(r"^P(?P<pid>\d+)_(?P<side>[LR])_(?P<kind>DM|CM)_(?P<view>CC|MLO)$", re.IGNORECASE)
_KIND = {"DM": "low_energy", "CM": "recombined"}


def _key(name: str) -> str:
    """Comparison key of an image name: no white space, no ``.jpg``, upper case."""
    n = re.sub(r"\s+", "", name)
    n = re.sub(r"\.(jpe?g|png)$", "", n, flags=re.IGNORECASE)
    return n.upper()


def _col(header: list[str], *prefixes: str) -> int | None:
    norm = [re.sub(r"[^a-z0-9]", "", h.lower()) for h in header]
    for p in prefixes:
        for i, h in enumerate(norm):
            if h.startswith(p):
                return i
    return None


def region_lesion(shape: dict, image: Path | None, view: str | None) -> Lesion | None:
    """A :class:`Lesion` from a VIA ``region_shape_attributes`` dict (None for ``{}``).

    Raises:
        ValueError: A shape with missing or non-numeric fields, or an unknown shape name.
    """
    if not shape:
        return None
    name = str(shape.get("name", "")).lower()
    if name in ("polygon", "polyline"):
        xs, ys = shape["all_points_x"], shape["all_points_y"]
        if len(xs) != len(ys) or not xs:
            raise ValueError("polygon with unequal or empty point lists")
        return Lesion(image=image, view=view, polygon=tuple((float(x), float(y)) for x, y in zip(xs, ys)))
    if name == "circle":
        return Lesion(image=image, view=view, centre=(float(shape["cx"]), float(shape["cy"])), radius=float(shape["r"]))
    if name == "ellipse":
        cx, cy, rx, ry = (float(shape[k]) for k in ("cx", "cy", "rx", "ry"))
        t = float(shape.get("theta", 0.0) or 0.0)
        hw = math.hypot(rx * math.cos(t), ry * math.sin(t))
        hh = math.hypot(rx * math.sin(t), ry * math.cos(t))
        return Lesion(image=image, view=view, centre=(cx, cy), box=(cx - hw, cy - hh, cx + hw, cy + hh))
    if name == "point":
        return Lesion(image=image, view=view, centre=(float(shape["cx"]), float(shape["cy"])))
    if name == "rect":
        x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
        return Lesion(image=image, view=view, box=(x, y, x + w, y + h))
    raise ValueError(f"unknown region shape {name!r}")


class CDDCESM(DatasetAdapter):
    """CDD-CESM: 326 patients, 2,006 low-energy and recombined JPEGs.

    Args:
        root: The dataset folder (see the module docstring).
        low_energy_as_mammograms: Also put the low-energy (DM) images in the standard slots.
    """

    name = "cdd-cesm"
    citation = (
        "Khaled R, Helal M, Alfarghaly O, et al. Categorized contrast enhanced mammography dataset "
        "for diagnostic and artificial intelligence research. Scientific Data 9, 122 (2022); "
        "The Cancer Imaging Archive (2021), doi:10.7937/29kw-ae92"
    )
    licence = "CC BY 4.0 (TCIA)"
    url = "https://doi.org/10.7937/29kw-ae92"

    def __init__(self, root: str | Path, *, low_energy_as_mammograms: bool = True) -> None:
        super().__init__(root)
        self.low_energy_as_mammograms = low_energy_as_mammograms

    def _base(self) -> Path:
        if (self.root / LOW_ENERGY_DIR).is_dir():
            return self.root
        nested = [p for p in self.root.iterdir() if p.is_dir() and (p / LOW_ENERGY_DIR).is_dir()]
        if len(nested) == 1:
            return nested[0]
        raise self._error(self.root / LOW_ENERGY_DIR, "image folder not found")

    def _files(self, base: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for folder in (LOW_ENERGY_DIR, SUBTRACTED_DIR):
            d = self._require(base / folder, "image folder")
            for p in d.iterdir():
                if p.is_file() and p.suffix.strip().lower() in (".jpg", ".jpeg", ".png"):
                    out.setdefault(_key(p.name), p)
        return out

    def _table(self, base: Path) -> Path:
        for folder in (base, self.root):
            found = find_table(folder, _ANNOTATION_STEMS)
            if found is not None:
                return found
        raise self._error(
            base / f"{_ANNOTATION_STEMS[0]}.xlsx", "annotation spreadsheet not found (.xlsx or CSV export)"
        )

    def _load(self) -> list[StudySample]:
        base = self._base()
        files = self._files(base)
        table = self._table(base)
        sheet = "all" if table.suffix.lower() == ".xlsx" else None
        header, rows = read_table(table, sheet=sheet, root=self.root)
        cols = {
            "image": _col(header, "imagename"),
            "patient": _col(header, "patientid"),
            "side": _col(header, "side"),
            "type": _col(header, "type"),
            "age": _col(header, "age"),
            "density": _col(header, "breastdensity"),
            "birads": _col(header, "birads"),
            "findings": _col(header, "findings"),
            "pathology": _col(header, "pathology"),
        }
        missing = [k for k, v in cols.items() if v is None]
        if missing:
            raise self._error(table, f"missing columns {missing}")

        per_breast: dict[tuple[str, str], list[dict]] = defaultdict(list)
        images: dict[str, dict[str, Path]] = defaultdict(dict)
        extras: dict[str, list[SampleImage]] = defaultdict(list)
        image_info: dict[str, tuple[str, str, str, str]] = {}  # key -> (pid, side, view key, pathology)
        for n, r in enumerate(rows, start=2):
            name = r[cols["image"]]
            m = _NAME.match(_key(name))
            if m is None:
                raise self._error(
                    table, f"row {n}: image name not in the P<id>_<side>_<DM|CM>_<view> form", DatasetLabelError
                )
            pid = f"P{int(m.group('pid'))}"
            side = m.group("side").upper()
            view = m.group("view").upper()
            kind = m.group("kind").upper()
            path = files.get(_key(name))
            if path is None:
                folder = LOW_ENERGY_DIR if kind == "DM" else SUBTRACTED_DIR
                raise self._error(base / folder / f"{name.strip()}.jpg", "image listed in the spreadsheet not found")
            sheet_pid = r[cols["patient"]].strip()
            sheet_pid = sheet_pid.removesuffix(".0")
            if sheet_pid.isdigit() and int(sheet_pid) != int(m.group("pid")):
                raise self._error(table, f"row {n}: Patient_ID disagrees with the image name", DatasetLabelError)
            sheet_side = r[cols["side"]].strip().upper()
            if sheet_side and sheet_side != side:
                raise self._error(table, f"row {n}: Side disagrees with the image name", DatasetLabelError)
            path_text = r[cols["pathology"]].strip().lower()
            pathology = path_text if path_text in ("normal", "benign", "malignant") else None
            if path_text and pathology is None:
                raise self._error(table, f"row {n}: unknown pathology", DatasetLabelError)
            try:
                birads = parse_birads(r[cols["birads"]])
                density = normalise_density(r[cols["density"]]) if kind == "DM" else None
                age = parse_age(r[cols["age"]])
            except ValueError as exc:
                raise self._error(table, f"row {n}: {exc}", DatasetLabelError) from None
            findings = [f.strip().lower() for f in r[cols["findings"]].split("$") if f.strip() and f.strip() != "_"]
            per_breast[(pid, side)].append(
                {"pathology": pathology, "birads": birads, "density": density, "age": age, "findings": findings}
            )
            key = f"{side}-{view}"
            image_info[_key(name)] = (pid, side, key, pathology or "")
            extras[pid].append(SampleImage(path, kind="CESM", side=side, view=view, cesm_kind=_KIND[kind]))
            if kind == "DM" and self.low_energy_as_mammograms:
                images[pid].setdefault(key, path)

        lesions = self._segmentations(base, files, image_info)
        samples = []
        pids = sorted({pid for pid, _ in per_breast}, key=lambda p: int(p[1:]))
        for pid in pids:
            labels = {}
            for side in SIDES:
                rows_b = per_breast.get((pid, side))
                if not rows_b:
                    continue
                pathology = worst_pathology(x["pathology"] for x in rows_b)
                birads = max((x["birads"] for x in rows_b if x["birads"] is not None), default=None)
                densities = sorted({x["density"] for x in rows_b if x["density"]})
                if len(densities) > 1:
                    logger.warning("cdd-cesm: a breast with two densities; taking the higher")
                ages = [x["age"] for x in rows_b if x["age"] is not None]
                kinds = sorted({f for x in rows_b for f in x["findings"]})
                if not kinds and pathology == "normal":
                    kinds = ["none"]
                labels[side] = BreastLabels(
                    pathology=pathology,
                    birads=birads,
                    density=densities[-1] if densities else None,
                    age=ages[0] if ages else None,
                    finding=";".join(kinds) if kinds else None,
                    lesions=tuple(lesions.get((pid, side), ())),
                )
            samples.append(
                StudySample(
                    dataset=self.name,
                    study_id=pid,
                    patient_id=pid,
                    images=dict(images.get(pid, {})),
                    labels=labels,
                    extras=tuple(extras[pid]),
                )
            )
        return samples

    def _segmentations(
        self, base: Path, files: dict[str, Path], image_info: dict[str, tuple[str, str, str, str]]
    ) -> dict[tuple[str, str], list[Lesion]]:
        table = base / _SEGMENTATION_CSV
        if not table.is_file():
            table = self.root / _SEGMENTATION_CSV
        if not table.is_file():
            logger.info("cdd-cesm: no %s; lesions will be empty", _SEGMENTATION_CSV)
            return {}
        header, rows = read_table(table, root=self.root)
        fcol = _col(header, "filename")
        scol = _col(header, "regionshapeattributes")
        if fcol is None or scol is None:
            raise self._error(table, "missing columns '#filename' / 'region_shape_attributes'")
        out: dict[tuple[str, str], list[Lesion]] = defaultdict(list)
        unknown = 0
        for n, r in enumerate(rows, start=2):
            key = _key(r[fcol])
            info = image_info.get(key)
            if info is None:
                unknown += 1
                continue
            pid, side, view_key, pathology = info
            try:
                shape = json.loads(r[scol] or "{}")
                lesion = region_lesion(shape, files.get(key), view_key)
            except (ValueError, KeyError, TypeError) as exc:
                raise self._error(table, f"row {n}: bad region shape ({exc})", DatasetLabelError) from None
            if lesion is None:
                continue
            if pathology in ("benign", "malignant"):
                lesion = dataclasses.replace(lesion, pathology=pathology)
            out[(pid, side)].append(lesion)
        if unknown:
            logger.warning("cdd-cesm: %d segmentation rows name images not in the spreadsheet", unknown)
        return out
