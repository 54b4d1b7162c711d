"""Generic manifest CSV: any local data set described one image per row.

Columns (header names, any order; required first)::

    study_id, side, view, path                 side L / R (empty or U: unknown), view CC / MLO / ...
    patient_id                                 default: the study_id
    pathology, birads, density, age, finding   per breast; repeated on each image row of the breast
    split                                      e.g. train / val / test
    kind                                       MG (default), US or CESM
    cesm_kind                                  low_energy / recombined (CESM rows)
    mask                                       lesion mask file(s), ';'-separated
    group_id                                   keep samples with the same key in one split fold

Paths are relative to the manifest's folder (absolute paths are kept). Any other column is kept
per breast in ``BreastLabels.attributes``.

Per breast the image rows are combined: pathology = the worst, BI-RADS = the highest, findings =
the union; density and age must agree between the rows of one breast (else
:class:`DatasetLabelError` naming the row). A standard MG view (``L`` + ``CC``) fills its slot
(twice in one study is an error); other MG images, US and CESM images are extras. A row with a
``mask`` adds a :class:`Lesion` on its image.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from training.datasets.base import (
    PATHOLOGIES,
    SIDES,
    UNKNOWN_SIDE,
    BreastLabels,
    DatasetAdapter,
    DatasetLabelError,
    Lesion,
    SampleImage,
    StudySample,
    normalise_density,
    parse_age,
    parse_birads,
    read_table,
    worst_pathology,
)

__all__ = ["Manifest", "MANIFEST_COLUMNS"]

logger = logging.getLogger(__name__)

#: Columns the adapter interprets (the first four are required).
MANIFEST_COLUMNS = (
    "study_id", "side", "view", "path", "patient_id", "pathology", "birads", "density", "age",
    "finding", "split", "kind", "cesm_kind", "mask", "group_id",
)  # fmt: skip


class Manifest(DatasetAdapter):
    """A manifest CSV (see the module docstring).

    Args:
        root: The manifest file, or the folder holding it.
        manifest: File name inside ``root`` when ``root`` is a folder.
    """

    name = "manifest"
    citation = ""
    licence = "as stated by the data's owner"
    url = ""

    def __init__(self, root: str | Path, *, manifest: str = "manifest.csv") -> None:
        p = Path(root).expanduser()
        if p.is_file():
            self.manifest = p.resolve()
            root = p.parent
        else:
            self.manifest = (p / manifest).resolve()
        super().__init__(root)

    def _load(self) -> list[StudySample]:
        table = self._require(self.manifest, "manifest")
        header, rows = read_table(table, root=self.root)
        header = [h.strip().lower() for h in header]
        missing = [c for c in MANIFEST_COLUMNS[:4] if c not in header]
        if missing:
            raise self._error(table, f"missing columns {missing}")
        other = [h for h in header if h and h not in MANIFEST_COLUMNS]
        studies: dict[str, dict] = {}
        base = table.parent
        for n, r in enumerate(rows, start=2):
            v = {h: r[i].strip() for i, h in enumerate(header) if h}
            sid = v["study_id"]
            if not sid:
                raise self._error(table, f"row {n}: empty study_id", DatasetLabelError)
            side = v["side"].upper() or UNKNOWN_SIDE
            if side in ("LEFT", "RIGHT"):
                side = side[0]
            if side not in (*SIDES, UNKNOWN_SIDE):
                raise self._error(table, f"row {n}: side must be L, R, U or empty", DatasetLabelError)
            view = v["view"].upper() or None
            kind = (v.get("kind") or "MG").upper()
            if kind not in ("MG", "US", "CESM"):
                raise self._error(table, f"row {n}: kind must be MG, US or CESM", DatasetLabelError)
            path = Path(v["path"]).expanduser()
            path = path if path.is_absolute() else base / path
            self._require(path, "image")
            st = studies.setdefault(
                sid,
                {"patient": v.get("patient_id") or sid, "images": {}, "extras": [], "breasts": defaultdict(list),
                 "split": v.get("split") or None, "group": v.get("group_id") or None},
            )  # fmt: skip
            if (v.get("patient_id") or sid) != st["patient"]:
                raise self._error(table, f"row {n}: one study with two patient ids", DatasetLabelError)
            real_side = side if side in SIDES else None
            key = f"{side}-{view}" if real_side and view in ("CC", "MLO") else None
            if kind == "MG" and key is not None:
                if key in st["images"]:
                    raise self._error(table, f"row {n}: second {key} image in one study", DatasetLabelError)
                st["images"][key] = path
            else:
                cesm_kind = v.get("cesm_kind") or None
                if kind == "CESM" and cesm_kind not in ("low_energy", "recombined"):
                    raise self._error(
                        table, f"row {n}: CESM rows need cesm_kind low_energy/recombined", DatasetLabelError
                    )
                st["extras"].append(SampleImage(path, kind=kind, side=real_side, view=view, cesm_kind=cesm_kind))
            pathology = (v.get("pathology") or "").lower() or None
            if pathology is not None and pathology not in PATHOLOGIES:
                raise self._error(table, f"row {n}: unknown pathology", DatasetLabelError)
            try:
                birads = parse_birads(v.get("birads"))
                density = normalise_density(v.get("density"))
                age = parse_age(v.get("age"))
            except ValueError as exc:
                raise self._error(table, f"row {n}: {exc}", DatasetLabelError) from None
            masks = tuple(
                (m if m.is_absolute() else base / m)
                for m in (Path(x.strip()).expanduser() for x in (v.get("mask") or "").split(";") if x.strip())
            )
            for m in masks:
                self._require(m, "mask")
            lesion = None
            if masks:
                lesion = Lesion(
                    image=path,
                    view=key,
                    masks=masks,
                    pathology=pathology if pathology in ("benign", "malignant") else None,
                )
            st["breasts"][side].append(
                {"n": n, "pathology": pathology, "birads": birads, "density": density, "age": age,
                 "finding": v.get("finding") or "", "lesion": lesion,
                 "attributes": {h: v[h] for h in other if v.get(h)}}
            )  # fmt: skip
        samples = []
        for sid in sorted(studies):
            st = studies[sid]
            labels = {side: self._breast(table, items) for side, items in st["breasts"].items()}
            samples.append(
                StudySample(
                    dataset=self.name,
                    study_id=sid,
                    patient_id=st["patient"],
                    images=dict(st["images"]),
                    labels=labels,
                    extras=tuple(st["extras"]),
                    group_id=st["group"],
                    split=st["split"],
                )
            )
        return samples

    def _breast(self, table: Path, items: list[dict]) -> BreastLabels:
        for field in ("density", "age"):
            values = {x[field] for x in items if x[field] is not None}
            if len(values) > 1:
                n = max(x["n"] for x in items)
                raise self._error(table, f"row {n}: {field} differs between rows of one breast", DatasetLabelError)
        findings = sorted({f.strip().lower() for x in items for f in x["finding"].split(";") if f.strip()})
        attributes: dict[str, str] = {}
        for x in items:
            for k, val in x["attributes"].items():
                attributes.setdefault(k, val)
        return BreastLabels(
            pathology=worst_pathology(x["pathology"] for x in items),
            birads=max((x["birads"] for x in items if x["birads"] is not None), default=None),
            density=next((x["density"] for x in items if x["density"] is not None), None),
            age=next((x["age"] for x in items if x["age"] is not None), None),
            finding=";".join(findings) if findings else None,
            lesions=tuple(x["lesion"] for x in items if x["lesion"] is not None),
            attributes=attributes,
        )
