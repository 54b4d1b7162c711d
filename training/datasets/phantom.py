"""The synthetic phantom (SPEC section 6) as a dataset: read from a folder, or generated on the fly.

Folder layout written by ``mammo-phantom OUT`` (:mod:`training.phantom.dataset`)::

    OUT/labels.csv          one row per study and imaged breast: study_id, side, pathology, birads,
                            density, age, finding, morphology, subtle, discordant, ...
    OUT/annotations.csv     one row per lesion per image: study_id, file, modality, side, view,
                            kind, finding, pathology, morphology, subtle, x0, y0, x1, y1, cx, cy,
                            mask, ...
    OUT/<study_id>/*.dcm    MG, and optionally US and CESM images
    OUT/masks/<study_id>/<file stem>_mask.png

Mapping: one sample per study folder (``patient_id = study_id``: every synthetic study is a
different woman). Images are identified from their DICOM tags with the engine's rules (the
writer's file names are for humans): MG CC/MLO fill the standard slots; US and CESM images are
extras (``kind``, ``cesm_kind`` from ImageType). ``labels.csv`` gives pathology, BI-RADS,
density, age and finding per breast (the other columns go to ``attributes``);
``annotations.csv`` gives the lesions: box ``(x0, y0, x1, y1)`` with ``x1, y1`` one past the last
pixel (as the phantom writes it), centre ``(cx, cy)``, and the mask PNG.

Generated on the fly: ``Phantom.generate(studies=..., seed=...)`` (or ``Phantom(None,
studies=..., seed=...)``) writes the folder with :func:`training.phantom.dataset.write_dataset`
into a cache folder keyed by the arguments (``$MAMMO_CACHE/phantom/...``, default
``~/.cache/mammo-viewer``), reusing it when ``phantom.json`` there records the same arguments.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import defaultdict
from pathlib import Path

from training.datasets._dicom import read_header
from training.datasets.base import (
    PATHOLOGIES,
    SIDES,
    BreastLabels,
    DatasetAdapter,
    DatasetLabelError,
    DatasetLayoutError,
    Lesion,
    SampleImage,
    StudySample,
    normalise_density,
    parse_age,
    parse_birads,
    read_table,
)

__all__ = ["Phantom", "default_cache_dir"]

logger = logging.getLogger(__name__)

_LABEL_FIELDS = ("study_id", "side", "pathology", "birads", "density", "age", "finding")


def default_cache_dir() -> Path:
    """``$MAMMO_CACHE`` or ``~/.cache/mammo-viewer``."""
    env = os.environ.get("MAMMO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mammo-viewer"


def _num(value: str) -> float | None:
    v = value.strip()
    return float(v) if v else None


class Phantom(DatasetAdapter):
    """Synthetic phantom studies.

    Args:
        root: A folder written by ``mammo-phantom``; None to generate one into the cache.
        studies: With ``root=None`` (or a ``root`` without ``labels.csv``): number of studies to
            generate.
        seed: Dataset seed for generation.
        size: Image size for generation (``demo``, ``full``, ``small``, ``tiny``).
        with_us: Generate ultrasound images too.
        with_cesm: Generate CESM images too.
        cache_dir: Where generated folders go (default :func:`default_cache_dir`).
        workers: Processes for generation.

    Raises:
        DatasetLayoutError: ``root`` has no ``labels.csv`` and nothing to generate.
    """

    name = "phantom"
    citation = "Synthetic screening studies from mammo-viewer's phantom generator (training/phantom)"
    licence = "synthetic data, no patient data; same licence as mammo-viewer"
    url = ""

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        studies: int | None = None,
        seed: int = 0,
        size: str = "demo",
        with_us: bool = False,
        with_cesm: bool = False,
        cache_dir: str | Path | None = None,
        workers: int = 1,
    ) -> None:
        if root is None or (studies is not None and not (Path(root) / "labels.csv").is_file()):
            if studies is None:
                raise DatasetLayoutError(Path(root or "."), "no phantom folder given and no studies to generate")
            root = self._generate(root, studies, seed, size, with_us, with_cesm, cache_dir, workers)
        super().__init__(root)
        #: How the folder was made (its ``phantom.json``: seed, studies, size, options), or {}.
        self.generation: dict = {}
        info = self.root / "phantom.json"
        if info.is_file():
            try:
                self.generation = json.loads(info.read_text(encoding="utf-8"))
            except ValueError:
                logger.warning("phantom: unreadable phantom.json")

    @classmethod
    def generate(
        cls,
        studies: int,
        seed: int = 0,
        *,
        size: str = "demo",
        with_us: bool = False,
        with_cesm: bool = False,
        out: str | Path | None = None,
        cache_dir: str | Path | None = None,
        workers: int = 1,
    ) -> Phantom:
        """Generate (or reuse) a phantom folder and open it.

        Args:
            studies: Number of studies.
            seed: Dataset seed.
            size: Image size.
            with_us: Write ultrasound images.
            with_cesm: Write CESM images.
            out: Output folder (default: a cache folder keyed by the arguments).
            cache_dir: Cache root when ``out`` is None.
            workers: Processes for generation.
        """
        return cls(
            out, studies=studies, seed=seed, size=size, with_us=with_us, with_cesm=with_cesm,
            cache_dir=cache_dir, workers=workers,
        )  # fmt: skip

    @staticmethod
    def _generate(
        out: str | Path | None,
        studies: int,
        seed: int,
        size: str,
        with_us: bool,
        with_cesm: bool,
        cache_dir: str | Path | None,
        workers: int,
    ) -> Path:
        from training.phantom.dataset import write_dataset

        if out is None:
            tag = f"s{seed}-n{studies}-{size}" + ("-us" if with_us else "") + ("-cesm" if with_cesm else "")
            out = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir() / "phantom"
            out = out / tag
        out = Path(out)
        want = {"seed": seed, "studies": studies, "size": size, "with_us": with_us, "with_cesm": with_cesm}
        info_path = out / "phantom.json"
        if info_path.is_file() and (out / "labels.csv").is_file():
            try:
                info = json.loads(info_path.read_text(encoding="utf-8"))
            except ValueError:
                info = {}
            if all(info.get(k) == v for k, v in want.items()):
                logger.info("phantom: reusing %s", out)
                return out
        if out.exists() and any(out.iterdir()):
            if not info_path.is_file():
                raise DatasetLayoutError(out, "folder is not empty and is not a phantom folder; not overwriting")
            shutil.rmtree(out)
        write_dataset(out, studies, seed, size=size, with_us=with_us, with_cesm=with_cesm, workers=workers)
        return out

    # --- reading ---------------------------------------------------------------------------------

    def _labels(self) -> dict[tuple[str, str], BreastLabels]:
        table = self._require(self.root / "labels.csv", "labels.csv")
        header, rows = read_table(table, root=self.root)
        missing = [c for c in _LABEL_FIELDS if c not in header]
        if missing:
            raise self._error(table, f"missing columns {missing}")
        col = {h: i for i, h in enumerate(header)}
        out: dict[tuple[str, str], BreastLabels] = {}
        for n, r in enumerate(rows, start=2):
            side = r[col["side"]].strip().upper()
            pathology = r[col["pathology"]].strip().lower() or None
            if side not in SIDES or (pathology is not None and pathology not in PATHOLOGIES):
                raise self._error(table, f"row {n}: bad side or pathology", DatasetLabelError)
            try:
                birads = parse_birads(r[col["birads"]])
                density = normalise_density(r[col["density"]])
                age = parse_age(r[col["age"]])
            except ValueError as exc:
                raise self._error(table, f"row {n}: {exc}", DatasetLabelError) from None
            attrs = {h: r[i].strip() for h, i in col.items() if h not in _LABEL_FIELDS and r[i].strip()}
            out[(r[col["study_id"]].strip(), side)] = BreastLabels(
                pathology=pathology,
                birads=birads,
                density=density,
                age=age,
                finding=r[col["finding"]].strip() or None,
                attributes=attrs,
            )
        return out

    def _annotations(self) -> dict[tuple[str, str], list[Lesion]]:
        table = self.root / "annotations.csv"
        if not table.is_file():
            logger.info("phantom: no annotations.csv; lesions will be empty")
            return {}
        header, rows = read_table(table, root=self.root)
        need = ("study_id", "file", "modality", "side", "view", "finding", "pathology",
                "x0", "y0", "x1", "y1", "cx", "cy", "mask")  # fmt: skip
        missing = [c for c in need if c not in header]
        if missing:
            raise self._error(table, f"missing columns {missing}")
        col = {h: i for i, h in enumerate(header)}
        out: dict[tuple[str, str], list[Lesion]] = defaultdict(list)
        for n, r in enumerate(rows, start=2):
            v = {c: r[col[c]].strip() for c in need}
            side = v["side"].upper()
            try:
                x0, y0, x1, y1 = (_num(v[k]) for k in ("x0", "y0", "x1", "y1"))
                cx, cy = _num(v["cx"]), _num(v["cy"])
            except ValueError:
                raise self._error(table, f"row {n}: non-numeric box or centre", DatasetLabelError) from None
            view = v["view"].upper()
            mg_like = v["modality"].upper() in ("MG", "CESM")
            key = f"{side}-{view}" if mg_like and side in SIDES and view in ("CC", "MLO") else None
            out[(v["study_id"], side)].append(
                Lesion(
                    image=self.root / v["file"],
                    view=key,
                    box=(x0, y0, x1, y1) if None not in (x0, y0, x1, y1) else None,  # type: ignore[arg-type]
                    centre=(cx, cy) if cx is not None and cy is not None else None,
                    masks=(self.root / v["mask"],) if v["mask"] else (),
                    finding=v["finding"] or None,
                    pathology=v["pathology"] or None,
                )
            )
        return out

    def _load(self) -> list[StudySample]:
        labels = self._labels()
        lesions = self._annotations()
        study_ids = sorted({sid for sid, _ in labels})
        samples = []
        for sid in study_ids:
            folder = self._require(self.root / sid, "study folder")
            files = sorted(folder.glob("*.dcm"))
            if not files:
                raise self._error(folder, "study folder without DICOM files")
            images: dict[str, Path] = {}
            extras: list[SampleImage] = []
            for f in files:
                h = read_header(f, self.root)
                key = f"{h.side}-{h.view}" if h.side in SIDES and h.view in ("CC", "MLO") else None
                if h.kind == "MG" and key is not None and not h.modifiers and key not in images:
                    images[key] = f
                elif h.kind in ("US", "CESM", "MG"):
                    extras.append(SampleImage(f, kind=h.kind, side=h.side, view=h.view, cesm_kind=h.cesm_kind))
                else:
                    raise self._error(f, "not a breast image", DatasetLabelError)
            sample_labels = {}
            for side in SIDES:
                lab = labels.get((sid, side))
                if lab is None:
                    continue
                les = tuple(lesions.get((sid, side), ()))
                sample_labels[side] = BreastLabels(
                    pathology=lab.pathology,
                    birads=lab.birads,
                    density=lab.density,
                    age=lab.age,
                    finding=lab.finding,
                    lesions=les,
                    attributes=lab.attributes,
                )
            samples.append(
                StudySample(
                    dataset=self.name,
                    study_id=sid,
                    patient_id=sid,
                    images=images,
                    labels=sample_labels,
                    extras=tuple(extras),
                )
            )
        return samples
