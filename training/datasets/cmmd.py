"""CMMD (The Chinese Mammography Database, TCIA) and TOMPEI-CMMD (its re-annotation).

CMMD layout (``root`` holds the ``CMMD`` folder, or is it)::

    CMMD/<PatientID>/<study dir>/<series dir>/1-1.dcm ...   2 or 4 images per patient
    CMMD_clinicaldata_revision.xlsx                          or a CSV export of it (same stem)

The clinical table has one row per *labelled breast*: ``ID1, LeftRight, Age, number,
abnormality, classification, subtype``. Images are identified from their headers only:
ImageLaterality and the View Code Sequence (CMMD leaves ViewPosition empty), read with the
engine's rules; the side is never taken from the file order. ``patient_id = study_id`` = the top
folder name (= ``ID1``; one study per patient).

CMMD labels: ``classification`` Benign/Malignant -> pathology; ``abnormality`` -> finding
(``both`` -> ``calcification;mass``); ``Age`` (a patient attribute, so both breasts get it);
``subtype`` in ``attributes``. An imaged breast without a row (the other breast of the D2
patients) has ``pathology=None``: CMMD does not say it is normal (TOMPEI calls most of them
Normal, some Benign or excluded); ``unlabelled_as_normal=True`` opts into the common "normal"
reading. No BI-RADS or density in CMMD.

TOMPEI-CMMD (DOI 10.7937/wezw-bh22) adds, for the same images:

- ``TOMPEI-CMMD_clinical_data_v01_20250121.xlsx`` (sheet ``Imaging Diagnosis Details Sheet``,
  two header rows, read by position: 0 ID, 1 LeftRight, 2 Age, 3 classification, 4 exclusion
  reason, 5 breast density, 21 BI-RADS), or a CSV export of that sheet (same stem);
- ``TOMPEI-CMMD_v01_20250123/{ID}_MLO_{L|R}_AnnotationFile.json``: lesion outlines on the MLO
  image (``cgPoints`` polygon in original pixels, ``label``); ``__MACOSX`` copies skipped.

TOMPEI labels replace CMMD's: classification Normal/Benign/Malignant as pathology, Invisible
(malignant, not locatable) -> malignant, Exclusion -> None with the reason in ``attributes``;
density words -> A-D; BI-RADS 1-5. TOMPEI corrects reversed sides: when all of a patient's TOMPEI
rows name one side and all of its images' DICOM tags name the other, the images (and CMMD's rows,
which followed the tags) are moved to TOMPEI's side. Seed 000 (section 3) trains on these labels.
"""

from __future__ import annotations

import json
import logging
import re
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
    find_table,
    normalise_density,
    parse_age,
    parse_birads,
    read_table,
)

__all__ = ["CMMD", "TompeiCMMD", "CMMD_CLINICAL_STEM", "TOMPEI_CLINICAL_SHEET"]

logger = logging.getLogger(__name__)

CMMD_CLINICAL_STEM = "CMMD_clinicaldata_revision"
TOMPEI_CLINICAL_SHEET = "Imaging Diagnosis Details Sheet"
_TOMPEI_CLASS = {
    "normal": "normal",
    "benign": "benign",
    "malignant": "malignant",
    "invisible": "malignant",
    "exclusion": None,
}
_TOMPEI_FINDING = {"mass": "mass", "calc": "calcification", "dist": "distortion"}
_JSON_NAME = re.compile(r"^(?P<pid>.+)_MLO_(?P<side>[LR])_AnnotationFile\.json$", re.IGNORECASE)


def _abnormality(value: str) -> str | None:
    v = value.strip().lower()
    if not v:
        return None
    if v == "both":
        return "calcification;mass"
    return v


class CMMD(DatasetAdapter):
    """The Chinese Mammography Database (1,775 patients, 3,728 images).

    Args:
        root: Folder holding ``CMMD/`` and the clinical table (or the ``CMMD`` folder with the
            table beside it or inside it).
        unlabelled_as_normal: Give imaged breasts without a clinical row ``pathology="normal"``
            instead of None.
    """

    name = "cmmd"
    citation = (
        "Cui C, Li L, Cai H, et al. The Chinese Mammography Database (CMMD): An online mammography "
        "database with biopsy confirmed types for machine diagnosis of breast. The Cancer Imaging "
        "Archive (2021). doi:10.7937/tcia.eqde-4b16"
    )
    licence = "CC BY 4.0 (TCIA)"
    url = "https://doi.org/10.7937/tcia.eqde-4b16"

    def __init__(self, root: str | Path, *, unlabelled_as_normal: bool = False) -> None:
        super().__init__(root)
        self.unlabelled_as_normal = unlabelled_as_normal

    # --- files -----------------------------------------------------------------------------------

    def _image_dir(self) -> Path:
        for cand in (self.root / "CMMD", self.root):
            if cand.is_dir() and any(p.is_dir() and re.match(r"^D\d-\d+$", p.name) for p in cand.iterdir()):
                return cand
        raise self._error(self.root / "CMMD", "image folder (CMMD/<PatientID>/...) not found")

    def _images(self) -> dict[str, list[tuple[Path, str | None, str | None, tuple[str, ...], float | None]]]:
        """``{patient: [(path, side, view, modifiers, age), ...]}`` from the DICOM headers."""
        base = self._image_dir()
        out: dict[str, list] = {}
        for pdir in sorted(p for p in base.iterdir() if p.is_dir() and re.match(r"^D\d-\d+$", p.name)):
            files = sorted(p for p in pdir.rglob("*.dcm") if p.is_file())
            if not files:
                raise self._error(pdir, "patient folder without .dcm files")
            entries = []
            for f in files:
                h = read_header(f, self.root)
                entries.append((f, h.side, h.view, h.modifiers, h.age))
            out[pdir.name] = entries
        if not out:
            raise self._error(base, "no patient folders")
        return out

    def _clinical(self, required: bool = True) -> dict[tuple[str, str], dict[str, str]]:
        """``{(patient, side): row}`` of the CMMD clinical table."""
        table = find_table(self.root, [CMMD_CLINICAL_STEM]) or find_table(self._image_dir(), [CMMD_CLINICAL_STEM])
        if table is None:
            if required:
                raise self._error(
                    self.root / f"{CMMD_CLINICAL_STEM}.xlsx", "clinical table not found (.xlsx or its .csv export)"
                )
            return {}
        header, rows = read_table(table, root=self.root)
        need = ("ID1", "LeftRight", "Age", "abnormality", "classification", "subtype")
        missing = [c for c in need if c not in header]
        if missing:
            raise self._error(table, f"missing columns {missing}")
        idx = {c: header.index(c) for c in need}
        out: dict[tuple[str, str], dict[str, str]] = {}
        for n, r in enumerate(rows, start=2):
            row = {c: r[i].strip() for c, i in idx.items()}
            side = row["LeftRight"].upper()
            if side not in SIDES:
                raise self._error(table, f"row {n}: LeftRight must be L or R", DatasetLabelError)
            if row["classification"].lower() not in ("benign", "malignant"):
                raise self._error(table, f"row {n}: unknown classification", DatasetLabelError)
            key = (row["ID1"], side)
            if key in out:
                raise self._error(table, f"row {n}: second row for the same breast", DatasetLabelError)
            out[key] = row
        return out

    # --- samples ---------------------------------------------------------------------------------

    def _place(
        self, entries: list[tuple[Path, str | None, str | None, tuple[str, ...], float | None]], swap: bool
    ) -> tuple[dict[str, Path], list[SampleImage]]:
        images: dict[str, Path] = {}
        extras: list[SampleImage] = []
        for path, side, view, modifiers, _ in entries:
            if swap and side in SIDES:
                side = "R" if side == "L" else "L"
            key = f"{side}-{view}" if side in SIDES and view in ("CC", "MLO") else None
            if key is None or modifiers:
                note = "view modifiers" if modifiers else "side or view unknown / non-standard"
                extras.append(SampleImage(path, kind="MG", side=side, view=view, note=note))
            elif key in images:
                extras.append(SampleImage(path, kind="MG", side=side, view=view, note="duplicate view"))
            else:
                images[key] = path
        return images, extras

    def _cmmd_labels(
        self, pid: str, sides: set[str], clinical: dict[tuple[str, str], dict[str, str]], age_dicom: float | None
    ) -> dict[str, BreastLabels]:
        rows = {s: clinical[(pid, s)] for s in SIDES if (pid, s) in clinical}
        age = next((parse_age(r["Age"]) for r in rows.values() if r["Age"]), None) or age_dicom
        labels = {}
        for side in sorted(sides | set(rows)):
            row = rows.get(side)
            if row is None:
                labels[side] = BreastLabels(
                    pathology="normal" if self.unlabelled_as_normal else None,
                    age=age,
                    finding="none" if self.unlabelled_as_normal else None,
                    attributes={"cmmd_row": "no"},
                )
                continue
            attrs = {"cmmd_row": "yes", "cmmd_classification": row["classification"]}
            if row["subtype"]:
                attrs["subtype"] = row["subtype"]
            labels[side] = BreastLabels(
                pathology=row["classification"].lower(),
                age=age,
                finding=_abnormality(row["abnormality"]),
                attributes=attrs,
            )
        return labels

    def _load(self) -> list[StudySample]:
        images = self._images()
        clinical = self._clinical()
        unknown = {pid for pid, _ in clinical} - set(images)
        if unknown:
            logger.warning("cmmd: %d patients of the clinical table have no images", len(unknown))
        samples = []
        for pid, entries in images.items():
            views, extras = self._place(entries, swap=False)
            sides = {k[0] for k in views}
            age_dicom = next((e[4] for e in entries if e[4] is not None), None)
            samples.append(
                StudySample(
                    dataset=self.name,
                    study_id=pid,
                    patient_id=pid,
                    images=views,
                    labels=self._cmmd_labels(pid, sides, clinical, age_dicom),
                    extras=tuple(extras),
                )
            )
        return samples


class TompeiCMMD(CMMD):
    """TOMPEI-CMMD: CMMD images with corrected labels, BI-RADS, density and MLO lesion outlines.

    Args:
        root: Folder holding ``CMMD/``, the TOMPEI clinical workbook (or its CSV export), the
            ``TOMPEI-CMMD_v01_*`` annotation folder and optionally CMMD's clinical table (kept in
            ``attributes``).
        include_excluded: Keep breasts TOMPEI marks "Exclusion" (pathology None) in the labels;
            when False they are dropped from ``labels`` (their images stay).
    """

    name = "tompei-cmmd"
    citation = (
        "Kashiwada Y, Takaya E, Hiroya M, Matsuda N, Yashima T, Kobayashi T, Tamiya G, Ueda T. "
        "TOMPEI-CMMD dataset (version 1). The Cancer Imaging Archive (2025). doi:10.7937/wezw-bh22"
    )
    licence = "CC BY 4.0 (TCIA)"
    url = "https://doi.org/10.7937/wezw-bh22"

    def __init__(self, root: str | Path, *, include_excluded: bool = True) -> None:
        super().__init__(root)
        self.include_excluded = include_excluded

    def _tompei_table(self) -> Path:
        for folder in [self.root, *sorted(p for p in self.root.glob("TOMPEI-CMMD*") if p.is_dir())]:
            candidates = folder.glob("TOMPEI-CMMD_clinical_data*")
            stems = sorted({p.stem for p in candidates if p.suffix.lower() in (".xlsx", ".csv")})
            if stems:
                found = find_table(folder, stems)
                if found is not None:
                    return found
        raise self._error(
            self.root / "TOMPEI-CMMD_clinical_data_v01_20250121.xlsx",
            "TOMPEI clinical table not found (.xlsx or a CSV export of its imaging sheet)",
        )

    def _tompei_rows(self) -> dict[tuple[str, str], dict[str, str]]:
        table = self._tompei_table()
        sheet = TOMPEI_CLINICAL_SHEET if table.suffix.lower() == ".xlsx" else None
        _, rows = read_table(table, sheet=sheet, header_rows=2, root=self.root)
        out: dict[tuple[str, str], dict[str, str]] = {}
        for n, r in enumerate(rows, start=3):
            if len(r) < 22:
                raise self._error(table, f"row {n}: {len(r)} columns, the imaging sheet has at least 22")
            pid, side = r[0].strip(), r[1].strip().upper()
            if not pid:
                continue
            if side not in SIDES:
                raise self._error(table, f"row {n}: LeftRight must be L or R", DatasetLabelError)
            cls = r[3].strip().lower()
            if cls not in _TOMPEI_CLASS:
                raise self._error(table, f"row {n}: unknown classification", DatasetLabelError)
            try:
                density = normalise_density(r[5])
                birads = parse_birads(r[21])
                age = parse_age(r[2])
            except ValueError as exc:
                raise self._error(table, f"row {n}: {exc}", DatasetLabelError) from None
            out[(pid, side)] = {
                "classification": r[3].strip(),
                "pathology": _TOMPEI_CLASS[cls],
                "exclusion": r[4].strip(),
                "density": density,
                "birads": birads,
                "age": age,
                "notes": r[22].strip() if len(r) > 22 else "",
            }
        if not out:
            raise self._error(table, "no data rows")
        return out

    def _annotations(self) -> dict[tuple[str, str], Path]:
        found: dict[tuple[str, str], Path] = {}
        folders = [p for p in self.root.glob("TOMPEI-CMMD*") if p.is_dir()]
        for folder in folders:
            for p in sorted(folder.rglob("*_AnnotationFile.json")):
                if "__MACOSX" in p.parts or p.name.startswith("._"):
                    continue
                m = _JSON_NAME.match(p.name)
                if m:
                    found.setdefault((m.group("pid"), m.group("side").upper()), p)
        if not folders:
            logger.warning("tompei-cmmd: no TOMPEI-CMMD_v* annotation folder; lesions will be empty")
        return found

    def _lesions(self, path: Path, image: Path | None, key: str) -> tuple[Lesion, ...]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise self._error(path, f"unreadable annotation JSON ({type(exc).__name__})", DatasetLabelError) from exc
        if isinstance(data, dict):
            data = [data]
        out = []
        for item in data:
            pts = item.get("cgPoints") if isinstance(item, dict) else None
            if not pts:
                continue
            try:
                polygon = tuple((float(p["x"]), float(p["y"])) for p in pts)
            except (KeyError, TypeError, ValueError) as exc:
                raise self._error(path, "cgPoints without numeric x/y", DatasetLabelError) from exc
            label = str(item.get("label", "")).strip().lower()
            finding = _TOMPEI_FINDING.get(label, label or None)
            out.append(Lesion(image=image, view=key, polygon=polygon, finding=finding))
        return tuple(out)

    def _load(self) -> list[StudySample]:
        images = self._images()
        tompei = self._tompei_rows()
        cmmd = self._clinical(required=False)
        notes = self._annotations()
        tompei_sides: dict[str, set[str]] = defaultdict(set)
        for pid, side in tompei:
            tompei_sides[pid].add(side)
        samples = []
        n_swapped = 0
        for pid, entries in images.items():
            tag_sides = {e[1] for e in entries if e[1] in SIDES}
            t_sides = tompei_sides.get(pid, set())
            swap = len(t_sides) == 1 and len(tag_sides) == 1 and t_sides != tag_sides
            n_swapped += swap
            views, extras = self._place(entries, swap=swap)
            cmmd_rows = {
                ("R" if s == "L" else "L") if swap else s: row for (p, s), row in cmmd.items() if p == pid
            } if cmmd else {}
            patient_age = next((tompei[(pid, s)]["age"] for s in sorted(t_sides) if tompei[(pid, s)]["age"]), None)
            if patient_age is None:
                patient_age = next((e[4] for e in entries if e[4] is not None), None)
            labels = {}
            for side in sorted({k[0] for k in views} | t_sides):
                row = tompei.get((pid, side))
                if row is None:
                    continue  # imaged but not in TOMPEI's sheet: no label
                if row["pathology"] is None and not self.include_excluded:
                    continue
                attrs = {"tompei_classification": row["classification"]}
                if row["exclusion"]:
                    attrs["exclusion_reason"] = row["exclusion"]
                if row["notes"]:
                    attrs["notes"] = row["notes"]
                crow = cmmd_rows.get(side)
                if crow is not None:
                    attrs["cmmd_classification"] = crow["classification"]
                    if crow["subtype"]:
                        attrs["subtype"] = crow["subtype"]
                key = f"{side}-MLO"
                ann = notes.get((pid, side))
                lesions = self._lesions(ann, views.get(key), key) if ann is not None else ()
                finding = None
                if row["pathology"] == "normal":
                    finding = "none"
                elif lesions:
                    finding = ";".join(sorted({les.finding for les in lesions if les.finding})) or None
                elif crow is not None:
                    finding = _abnormality(crow["abnormality"])
                labels[side] = BreastLabels(
                    pathology=row["pathology"],
                    birads=row["birads"],
                    density=row["density"],
                    age=row["age"] if row["age"] is not None else patient_age,
                    finding=finding,
                    lesions=lesions,
                    attributes=attrs,
                )
            samples.append(
                StudySample(
                    dataset=self.name,
                    study_id=pid,
                    patient_id=pid,
                    images=views,
                    labels=labels,
                    extras=tuple(extras),
                )
            )
        if n_swapped:
            logger.info("tompei-cmmd: %d patients' image sides moved to TOMPEI's side", n_swapped)
        missing = {pid for pid, _ in tompei} - set(images)
        if missing:
            logger.warning("tompei-cmmd: %d patients of the TOMPEI sheet have no images", len(missing))
        return samples

