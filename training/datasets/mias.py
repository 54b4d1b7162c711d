"""mini-MIAS (Mammographic Image Analysis Society MiniMammographic Database).

Layouts read (the first that is present):

- ``labels.csv`` (``ref, tissue, abnormality_class, severity, x, y, radius``; one row per
  abnormality) with images ``png/<ref>.png`` (the ``../shared/realdata/mias`` copy), or
- the original distribution: ``Info.txt`` (``mdb001 G CIRC B 535 425 197``; header text above
  the first ``mdb`` line) with ``<ref>.pgm`` images beside it (``png/``, ``pgm/`` also searched).

Mapping to the sample interface (decided here, documented for users of the samples):

- **One sample per image** (``study_id = "mdb001"``): MIAS has one MLO film per breast.
- **Side unknown.** Info.txt note 1 says even numbers are left breasts, but the films do not
  follow it (chest wall on the right edge in every image checked, mirrored markers such as
  "R ML" on mdb002), and laterality must not be inferred from pixels. So labels sit under
  ``"U"`` and the image is an extra ``SampleImage(kind="MG", side=None, view="MLO")``; nothing is
  placed in the four standard slots.
- **Patient = the pair** ``mdb(2k-1)``, ``mdb(2k)`` (note 1: the two breasts of one woman):
  ``patient_id = "mias-pair-NNN"`` with ``NNN = k``. Splits therefore never separate the two
  films of one woman.
- Pathology: ``normal`` for NORM, else the worst severity over the image's rows (mdb144 has a
  benign and a malignant finding: malignant). Density is None: MIAS tissue types F/G/D are not
  ACR categories (kept as ``attributes["tissue"]``). No BI-RADS, no age.
- Lesions: centre ``(x, 1024 - y)`` (Info.txt note 3: bottom-left origin; every image is
  1024 x 1024) and radius in pixels; None where Info.txt gives no centre (mdb059 and the widely
  distributed calcifications). Findings: CALC calcification, CIRC/SPIC/MISC mass, ARCH
  distortion, ASYM asymmetry (the class is kept as ``attributes["classes"]``).

Reference: J Suckling et al (1994) "The Mammographic Image Analysis Society Digital Mammogram
Database", Excerpta Medica, International Congress Series 1069, pp 375-378.
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
    DatasetLayoutError,
    Lesion,
    SampleImage,
    StudySample,
    read_table,
    worst_pathology,
)

__all__ = ["MIAS", "MIAS_SIZE", "mias_pair_id"]

logger = logging.getLogger(__name__)

#: Rows and columns of every mini-MIAS image (Info.txt note 2).
MIAS_SIZE = 1024
_FINDING = {
    "CALC": "calcification",
    "CIRC": "mass",
    "SPIC": "mass",
    "MISC": "mass",
    "ARCH": "distortion",
    "ASYM": "asymmetry",
    "NORM": "none",
}
_SEVERITY = {"B": "benign", "M": "malignant"}
_REF = re.compile(r"^mdb(\d{3})$")


def mias_pair_id(ref: str) -> str:
    """``"mdb001"`` and ``"mdb002"`` -> ``"mias-pair-001"`` (the woman both films belong to)."""
    m = _REF.match(ref)
    if m is None:
        raise ValueError(f"not a mini-MIAS reference: {ref!r}")
    return f"mias-pair-{(int(m.group(1)) + 1) // 2:03d}"


class MIAS(DatasetAdapter):
    """mini-MIAS: 322 digitised MLO films (the shared development copy holds 238).

    Args:
        root: Folder with ``labels.csv`` + ``png/``, or ``Info.txt`` + ``mdbNNN.pgm``.
    """

    name = "mias"
    citation = (
        "J Suckling et al (1994) The Mammographic Image Analysis Society Digital Mammogram Database. "
        "Excerpta Medica, International Congress Series 1069, pp 375-378."
    )
    licence = "MIAS licence: research use only, no redistribution; cite the database (see Licence.txt)"
    url = "http://peipa.essex.ac.uk/info/mias.html"

    def _rows(self) -> tuple[Path, list[dict[str, str]]]:
        csv_path = self.root / "labels.csv"
        if csv_path.is_file():
            header, rows = read_table(csv_path, root=self.root)
            need = ("ref", "tissue", "abnormality_class", "severity", "x", "y", "radius")
            missing = [c for c in need if c not in header]
            if missing:
                raise self._error(csv_path, f"missing columns {missing}")
            idx = {c: header.index(c) for c in need}
            return csv_path, [{c: r[idx[c]].strip() for c in need} for r in rows]
        info = self.root / "Info.txt"
        if not info.is_file():
            raise self._error(self.root / "labels.csv", "neither labels.csv nor Info.txt found")
        out = []
        for line in info.read_text(encoding="latin-1").splitlines():
            parts = line.split()
            if not parts or not _REF.match(parts[0]):
                continue
            nums = [p for p in parts[4:7] if p.isdigit()]
            out.append(
                {
                    "ref": parts[0],
                    "tissue": parts[1] if len(parts) > 1 else "",
                    "abnormality_class": parts[2] if len(parts) > 2 else "",
                    "severity": parts[3] if len(parts) > 3 and parts[3] in _SEVERITY else "",
                    "x": nums[0] if len(nums) == 3 else "",
                    "y": nums[1] if len(nums) == 3 else "",
                    "radius": nums[2] if len(nums) == 3 else "",
                }
            )
        return info, out

    def _image(self, ref: str) -> Path:
        for rel in (f"png/{ref}.png", f"{ref}.png", f"{ref}.pgm", f"pgm/{ref}.pgm"):
            p = self.root / rel
            if p.is_file():
                return p
        png_dir = self.root / "png"
        expected = png_dir / f"{ref}.png" if png_dir.is_dir() else self.root / f"{ref}.pgm"
        raise self._error(expected, "image listed in the labels but not found")

    def _load(self) -> list[StudySample]:
        table, rows = self._rows()
        by_ref: dict[str, list[dict[str, str]]] = defaultdict(list)
        for n, r in enumerate(rows, start=2):
            if not _REF.match(r["ref"]):
                raise self._error(table, f"row {n}: not a mini-MIAS reference", DatasetLabelError)
            cls = r["abnormality_class"].upper()
            if cls not in _FINDING:
                raise self._error(table, f"row {n}: unknown abnormality class {cls!r}", DatasetLabelError)
            if cls != "NORM" and r["severity"].upper() not in _SEVERITY:
                raise self._error(table, f"row {n}: abnormal image without severity B/M", DatasetLabelError)
            by_ref[r["ref"]].append(r)
        samples = []
        for ref in sorted(by_ref):
            image = self._image(ref)
            refs = by_ref[ref]
            lesions = []
            for r in refs:
                cls = r["abnormality_class"].upper()
                if cls == "NORM":
                    continue
                centre = radius = None
                if r["x"] and r["y"]:
                    centre = (float(r["x"]), float(MIAS_SIZE - float(r["y"])))
                    radius = float(r["radius"]) if r["radius"] else None
                lesions.append(
                    Lesion(
                        image=image,
                        view=None,
                        centre=centre,
                        radius=radius,
                        finding=_FINDING[cls],
                        pathology=_SEVERITY[r["severity"].upper()],
                    )
                )
            classes = [r["abnormality_class"].upper() for r in refs]
            pathology = "normal" if not lesions else worst_pathology(les.pathology for les in lesions)
            findings = sorted({les.finding for les in lesions if les.finding}) or ["none"]
            tissue = {r["tissue"].upper() for r in refs}
            labels = BreastLabels(
                pathology=pathology,
                finding=";".join(findings),
                lesions=tuple(lesions),
                attributes={"tissue": "/".join(sorted(tissue)), "classes": ";".join(classes)},
            )
            samples.append(
                StudySample(
                    dataset=self.name,
                    study_id=ref,
                    patient_id=mias_pair_id(ref),
                    labels={UNKNOWN_SIDE: labels},
                    extras=(SampleImage(image, kind="MG", side=None, view="MLO", note="side unknown"),),
                )
            )
        if not samples:
            raise DatasetLayoutError(table, "no image rows", root=self.root)
        return samples
