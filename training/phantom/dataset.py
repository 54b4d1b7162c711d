"""Write synthetic studies to disk: one DICOM folder per study, masks, and the two label tables.

Layout of an output folder ``OUT`` (the loader and the training code rely on it)::

    OUT/labels.csv                      one row per study and imaged breast (LABEL_COLUMNS)
    OUT/annotations.csv                 one row per lesion per image (ANNOTATION_COLUMNS)
    OUT/phantom.json                    how the folder was made (seed, size, options)
    OUT/P0001/MG_R_CC.dcm ...           MG_{R,L}_{CC,MLO}.dcm, US_{R,L}_{n}.dcm,
                                        CESM_{R,L}_{CC,MLO}_{LE,RC}.dcm (names are for humans;
                                        readers use the tags)
    OUT/masks/P0001/MG_L_CC_mask.png    8-bit 0/255 lesion mask in the image's own pixel grid,
                                        one per image that shows a lesion (union of its lesions)

Boxes in ``annotations.csv`` are pixel coordinates of the stored image (``x`` = column,
``y`` = row): ``x0, y0`` is the first pixel inside the mask, ``x1, y1`` one past the last, like a
Python slice; ``cx, cy`` is the lesion centre with pixel centres at integers.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from training.phantom.dicom_writer import series_info, write_dicom
from training.phantom.geometry import get_size
from training.phantom.plan import (
    DEMO_STUDY_ID,
    LABEL_COLUMNS,
    StudyPlan,
    demo_plan,
    label_rows,
    plan_study,
)
from training.phantom.render import RenderedImage, render_study

__all__ = [
    "ANNOTATION_COLUMNS",
    "DatasetSummary",
    "write_study",
    "write_dataset",
    "write_demo_study",
    "DEMO_STUDY_ID",
]

logger = logging.getLogger(__name__)

#: Columns of ``annotations.csv``.
ANNOTATION_COLUMNS = (
    "study_id",
    "file",
    "modality",
    "side",
    "view",
    "kind",
    "finding",
    "pathology",
    "morphology",
    "subtle",
    "x0",
    "y0",
    "x1",
    "y1",
    "cx",
    "cy",
    "mask",
    "nipple_x",
    "nipple_y",
    "distance_to_nipple_mm",
    "us_clock",
    "us_distance_cm",
)

@dataclass
class DatasetSummary:
    """What :func:`write_dataset` wrote.

    Attributes:
        out: Output folder.
        studies: Studies written.
        images: Image counts by modality (``MG``, ``US``, ``CESM``).
        masks: Mask PNGs written.
        breasts: Imaged breasts by pathology.
        seconds: Wall time.
    """

    out: Path
    studies: int = 0
    images: dict[str, int] = field(default_factory=lambda: {"MG": 0, "US": 0, "CESM": 0})
    masks: int = 0
    breasts: dict[str, int] = field(default_factory=lambda: {"normal": 0, "benign": 0, "malignant": 0})
    seconds: float = 0.0

    def line(self) -> str:
        """One-line human summary."""
        return (
            f"wrote {self.studies} studies ({self.images['MG']} MG, {self.images['US']} US, "
            f"{self.images['CESM']} CESM images; {self.masks} lesion masks; breasts: "
            f"{self.breasts['normal']} normal, {self.breasts['benign']} benign, "
            f"{self.breasts['malignant']} malignant) to {self.out} in {self.seconds:.1f} s"
        )


def _annotation_rows(plan: StudyPlan, image: RenderedImage, file: str, mask_file: str) -> list[dict]:
    rows = []
    for les in image.lesions:
        x0, y0, x1, y1 = les.box
        rows.append(
            {
                "study_id": plan.study_id,
                "file": file,
                "modality": image.modality,
                "side": image.side,
                "view": image.view or "",
                "kind": image.kind or "",
                "finding": les.finding,
                "pathology": les.pathology,
                "morphology": les.morphology,
                "subtle": int(les.subtle),
                "x0": x0,
                "y0": y0,
                "x1": x1,
                "y1": y1,
                "cx": f"{les.center[0]:.1f}",
                "cy": f"{les.center[1]:.1f}",
                "mask": mask_file,
                "nipple_x": f"{image.nipple[0]:.1f}" if image.nipple else "",
                "nipple_y": f"{image.nipple[1]:.1f}" if image.nipple else "",
                "distance_to_nipple_mm": f"{les.distance_to_nipple_mm:.1f}",
                "us_clock": image.meta.get("clock", "") if image.modality == "US" else "",
                "us_distance_cm": image.meta.get("distance_cm", "") if image.modality == "US" else "",
            }
        )
    return rows


def write_study(
    out: str | Path,
    plan: StudyPlan,
    size: str = "demo",
    with_us: bool = False,
    with_cesm: bool = False,
    cesm_size: str | None = None,
) -> tuple[list[dict], list[dict], dict]:
    """Render one study and write its DICOM files and masks under ``out``.

    Args:
        out: Dataset folder (the study goes to ``out/<study_id>``).
        plan: The study plan.
        size: Mammogram size.
        with_us: Write ultrasound images.
        with_cesm: Write CESM images.
        cesm_size: CESM image size (default: ``size``).

    Returns:
        ``(label rows, annotation rows, counts)`` where counts has ``MG``, ``US``, ``CESM`` and
        ``masks``.
    """
    out = Path(out)
    study = render_study(plan, size, with_us=with_us, with_cesm=with_cesm, cesm_size=cesm_size)
    folder = out / plan.study_id
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"MG": 0, "US": 0, "CESM": 0, "masks": 0}
    annotations: list[dict] = []
    instances: dict[str, int] = {}
    for image in study.images:
        key = series_info(image)[0]
        instances[key] = instances.get(key, 0) + 1
        rel = f"{plan.study_id}/{image.stem}.dcm"
        write_dicom(out / rel, plan, image, instances[key])
        counts[image.modality] += 1
        mask_rel = ""
        if image.mask is not None and image.mask.any():
            mask_rel = f"masks/{plan.study_id}/{image.stem}_mask.png"
            (out / mask_rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / mask_rel), image.mask.astype(np.uint8) * 255)
            counts["masks"] += 1
        annotations.extend(_annotation_rows(plan, image, rel, mask_rel))
    labels = label_rows(plan, with_us=with_us, with_cesm=with_cesm)
    return labels, annotations, counts


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _job(args: tuple) -> tuple[list[dict], list[dict], dict, dict]:
    out, seed, index, size, with_us, with_cesm = args
    plan = plan_study(seed, index)
    labels, annotations, counts = write_study(out, plan, size, with_us, with_cesm)
    breasts = {"normal": 0, "benign": 0, "malignant": 0}
    for b in plan.breasts.values():
        breasts[b.pathology] += 1
    return labels, annotations, counts, breasts


def write_dataset(
    out: str | Path,
    studies: int,
    seed: int,
    size: str = "demo",
    with_us: bool = False,
    with_cesm: bool = False,
    workers: int = 1,
) -> DatasetSummary:
    """Write ``studies`` synthetic studies (``P0001`` ...) of dataset ``seed`` to ``out``.

    The output is a deterministic function of the arguments (``workers`` only changes speed).

    Args:
        out: Output folder (created).
        studies: Number of studies.
        seed: Dataset seed (>= 0).
        size: Mammogram size: ``demo`` (1024 x 832, 0.28 mm), ``full`` (4096 x 3328, 0.07 mm),
            or ``small`` / ``tiny`` for tests.
        with_us: Also write ultrasound images.
        with_cesm: Also write CESM low-energy and recombined images.
        workers: Processes to render with.

    Returns:
        The summary.

    Raises:
        ValueError: Bad size, negative seed or count, or ``out`` is a file.
    """
    get_size(size)
    if studies < 0 or seed < 0:
        raise ValueError(f"studies and seed must be >= 0 (got {studies}, {seed})")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out.name}: output path exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = [(out, seed, i, size, with_us, with_cesm) for i in range(studies)]
    if workers > 1 and studies > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_job, jobs, chunksize=max(1, studies // (4 * workers))))
    else:
        results = [_job(j) for j in jobs]
    summary = DatasetSummary(out=out, studies=studies)
    labels: list[dict] = []
    annotations: list[dict] = []
    for lab, ann, counts, breasts in results:
        labels.extend(lab)
        annotations.extend(ann)
        for k in ("MG", "US", "CESM"):
            summary.images[k] += counts[k]
        summary.masks += counts["masks"]
        for k, v in breasts.items():
            summary.breasts[k] += v
    _write_csv(out / "labels.csv", LABEL_COLUMNS, labels)
    _write_csv(out / "annotations.csv", ANNOTATION_COLUMNS, annotations)
    info = {
        "generator": "training.phantom",
        "seed": seed,
        "studies": studies,
        "size": size,
        "with_us": with_us,
        "with_cesm": with_cesm,
    }
    (out / "phantom.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    summary.seconds = time.perf_counter() - t0
    logger.info("%s", summary.line())
    return summary


_DEMO_README = """# Demo study

Synthetic screening study written by the phantom (`training/phantom`), regenerated with

    mammo-phantom resources/samples/demo --demo-study

`mammo-viewer --demo` opens the study folder **`resources/samples/demo/{study_id}`**.

Contents (demo size: mammograms 1024 x 832 at 0.28 mm detector pitch, 14-bit; all files
MONOCHROME2, LINEAR VOI, uncompressed, so any DICOM viewer opens them):

- `{study_id}/MG_R_CC.dcm`, `MG_L_CC.dcm`, `MG_R_MLO.dcm`, `MG_L_MLO.dcm`: the four screening
  views. Left breast: malignant irregular spiculated mass (BI-RADS 5). Right breast: benign oval
  circumscribed mass (BI-RADS 3). Density B, age 58.
- `{study_id}/US_R_1.dcm`, `US_L_1.dcm`: one ultrasound image per breast (benign: oval, parallel,
  posterior enhancement; malignant: irregular, taller than wide, posterior shadowing).
- `{study_id}/CESM_*_{{LE,RC}}.dcm`: CESM low-energy and recombined images of the four views at
  half the demo resolution (512 x 416) to keep the folder small; the malignant mass enhances
  strongly, the benign one weakly.
- `labels.csv` (per breast), `annotations.csv` (per lesion per image: box, centre, mask file,
  nipple position), `masks/{study_id}/*_mask.png` (0/255 lesion masks in each image's pixel grid).

Every image is synthetic; no patient data.
"""


def write_demo_study(out: str | Path) -> DatasetSummary:
    """Write the bundled demo study (:func:`~training.phantom.plan.demo_plan`) to ``out``.

    Four MG views at demo size, one US image per breast, CESM LE/RC of the four views at ``small``
    size, plain MONOCHROME2 / LINEAR / uncompressed files, the label tables, masks and a
    README.md naming the study folder.

    Returns:
        The summary.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    plan = demo_plan()
    labels, annotations, counts = write_study(out, plan, "demo", True, True, cesm_size="small")
    _write_csv(out / "labels.csv", LABEL_COLUMNS, labels)
    _write_csv(out / "annotations.csv", ANNOTATION_COLUMNS, annotations)
    info = {"generator": "training.phantom", "demo_study": plan.study_id, "size": "demo", "cesm_size": "small"}
    (out / "phantom.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(_DEMO_README.format(study_id=plan.study_id), encoding="utf-8")
    summary = DatasetSummary(out=out, studies=1, masks=counts["masks"])
    for k in ("MG", "US", "CESM"):
        summary.images[k] = counts[k]
    for b in plan.breasts.values():
        summary.breasts[b.pathology] += 1
    summary.seconds = time.perf_counter() - t0
    logger.info("%s", summary.line())
    return summary
