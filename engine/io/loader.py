"""Folder (or file) -> :class:`~engine.study.Study`: slots, extras, duplicates, per-file errors.

Rules (SPEC section 4):

- A study is a folder, read recursively in sorted path order (that order is the "file order"),
  or a single file (a one-image study whose ``study_id`` is the file's stem).
- Ignored quietly: hidden files and folders (name starting with ``.``), ``DICOMDIR``, documents
  and tables (``.csv .json .txt .md .xml .xls .xlsx .doc .docx .pdf .html .htm .yaml .yml .toml
  .ini .log .py .zip``), ground-truth masks (``*_mask.png``, ``*_mask_<n>.png`` and anything under a
  ``masks/`` folder) and this product's own overlay outputs (``*_heatmap.png``).
- Files with a raster suffix are read as rasters (``engine.io.raster``) unless they carry the
  DICOM ``DICM`` marker; every other file is tried as DICOM (any suffix or none).
- Placement: ultrasound -> ``study.ultrasound`` (several per breast allowed); CESM low-energy and
  recombined -> ``study.cesm``; a mammogram with a view modifier, a reader's ``extra_reason``
  (tomosynthesis, CESM high energy), unknown or ``B`` laterality, or a view other than CC/MLO ->
  ``study.extras`` with the reason; the rest fill the four slots.
- Duplicates of a slot: FOR PRESENTATION beats FOR PROCESSING, then the newest acquisition
  (AcquisitionDateTime, else AcquisitionDate + Time, else ContentDate + Time; an image without
  a time counts as older than one with), then the later file in file order. The others become
  extras: ``"duplicate of L-CC, older"`` (or ``..., FOR PROCESSING`` / ``..., same acquisition time,
  earlier in file order`` / ``..., same SOP instance``) and a study warning says which file was kept.
- A file that fails gets a :class:`~engine.study.FileError` in ``study.errors``; the others load.
  No loadable image at all raises :class:`~engine.errors.EmptyStudyError` naming the folder.

Messages and logs name files by their path relative to the study, never a patient name or ID
from the tags.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path
from typing import Literal

from engine.errors import DecodeError, EmptyStudyError, MammoError, StudyError
from engine.io.dicom import is_dicom_file, read_dicom
from engine.io.raster import RASTER_SUFFIXES, name_info_for, read_raster
from engine.study import STANDARD_VIEWS, ExtraImage, FileError, Study, StudyImage

__all__ = ["IGNORED_SUFFIXES", "is_ignored", "study_files", "load_image", "load_study"]

logger = logging.getLogger(__name__)

#: Suffixes skipped without a message (documents, tables, archives).
IGNORED_SUFFIXES: frozenset[str] = frozenset(
    {
        ".csv", ".json", ".txt", ".md", ".xml", ".xls", ".xlsx", ".doc", ".docx", ".pdf",
        ".html", ".htm", ".yaml", ".yml", ".toml", ".ini", ".log", ".py", ".zip",
    }
)  # fmt: skip
_MASK = re.compile(r"_(mask|heatmap)(_\d+)?$", re.IGNORECASE)

KindHint = Literal["auto", "MG", "US"]


def is_ignored(relpath: Path) -> bool:
    """Whether a file (path relative to the study folder) is skipped quietly."""
    parts = relpath.parts
    name = relpath.name
    if any(p.startswith(".") for p in parts):
        return True
    if name.upper() == "DICOMDIR" or relpath.suffix.lower() in IGNORED_SUFFIXES:
        return True
    if any(p.lower() == "masks" for p in parts[:-1]):
        return True
    return relpath.suffix.lower() in RASTER_SUFFIXES and bool(_MASK.search(relpath.stem))


def study_files(folder: Path) -> list[Path]:
    """Every file of a study folder that is not ignored, recursively, in sorted order."""
    out = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not is_ignored(path.relative_to(folder)):
            out.append(path)
    return out


def load_image(path: Path, root: Path | None = None, kind: KindHint = "auto") -> StudyImage:
    """Load one file (DICOM or raster) as an image of a study rooted at ``root``.

    Args:
        path: The file.
        root: The study folder (for ``relpath`` and the folder-name convention); None = the
            file's own folder, names read from the file name only.
        kind: ``"US"`` reads rasters whose names carry no kind token as ultrasound.

    Returns:
        The image.

    Raises:
        StudyError: A typed subclass naming the file.
    """
    path = Path(path)
    relpath = path.relative_to(root).as_posix() if root is not None else path.name
    info = name_info_for(path, root)
    if path.suffix.lower() in RASTER_SUFFIXES and not is_dicom_file(path):
        return read_raster(path, relpath, info, kind_hint=kind)
    return read_dicom(path, relpath, info)


def _place_reason(image: StudyImage) -> str | None:
    """Why an MG image is kept out of the slots, or None when it fills one."""
    if image.extra_reason:
        return image.extra_reason
    if image.view_modifiers:
        return "view modifier: " + ", ".join(image.view_modifiers)
    if image.laterality == "B":
        return "both breasts in one image (laterality B)"
    missing = [n for n, v in (("laterality", image.laterality), ("view", image.view)) if v is None]
    if missing:
        return " and ".join(missing) + " unknown"
    if image.view not in ("CC", "MLO"):
        return f"non-standard view {image.view}"
    return None


def _rank(item: tuple[int, StudyImage]) -> tuple[bool, bool, dt.datetime, int]:
    order, image = item
    stamp = image.acquisition or dt.datetime.min
    return (not image.for_processing, image.acquisition is not None, stamp, order)


def _duplicate_reason(key: str, loser: StudyImage, winner: StudyImage) -> str:
    if loser.sop_instance_uid and loser.sop_instance_uid == winner.sop_instance_uid:
        return f"duplicate of {key}, same SOP instance"
    if loser.for_processing and not winner.for_processing:
        return f"duplicate of {key}, FOR PROCESSING"
    if loser.acquisition is not None and winner.acquisition is not None:
        if loser.acquisition < winner.acquisition:
            return f"duplicate of {key}, older"
        return f"duplicate of {key}, same acquisition time, earlier in file order"
    if winner.acquisition is not None:
        return f"duplicate of {key}, older (no acquisition time)"
    return f"duplicate of {key}, earlier in file order"


def _assemble(study: Study, images: list[StudyImage]) -> None:
    candidates: dict[str, list[tuple[int, StudyImage]]] = {}
    for order, image in enumerate(images):
        if image.kind == "US":
            study.ultrasound.append(image)
            continue
        if image.kind == "CESM" and image.cesm_kind is not None and not image.extra_reason:
            study.cesm.append(image)
            continue
        reason = _place_reason(image)
        if reason is not None:
            study.extras.append(ExtraImage(image, reason))
            continue
        candidates.setdefault(image.key or "", []).append((order, image))
    for key in [k for k in STANDARD_VIEWS if k in candidates]:
        group = sorted(candidates[key], key=_rank, reverse=True)
        winner = group[0][1]
        study.views[key] = winner
        for _, loser in group[1:]:
            study.extras.append(ExtraImage(loser, _duplicate_reason(key, loser, winner)))
        if len(group) > 1:
            study.warnings.append(f"{len(group)} images for {key}: kept {winner.relpath}")
    for image in images:
        if image.for_processing:
            study.warnings.append(f"{image.relpath}: FOR PROCESSING image (not meant for reading)")
    uids = {i.study_instance_uid for i in images if i.study_instance_uid}
    if len(uids) > 1:
        study.warnings.append(f"images from {len(uids)} different DICOM studies in one folder")


def load_study(path: str | Path, *, kind: KindHint = "auto") -> Study:
    """Load a study folder (recursively) or a single image file.

    Args:
        path: A study folder, or one DICOM/raster file.
        kind: Hint for rasters without a kind token in their name: ``"US"`` loads them as
            ultrasound (e.g. a BUSI folder), ``"auto"``/``"MG"`` as mammograms. DICOM files
            follow their Modality whatever the hint.

    Returns:
        The :class:`~engine.study.Study`.

    Raises:
        StudyError: The path does not exist; for a single file, the file's typed error.
        EmptyStudyError: A folder with no loadable breast image.
    """
    if kind not in ("auto", "MG", "US"):
        raise ValueError(f"kind must be 'auto', 'MG' or 'US', got {kind!r}")
    path = Path(path).expanduser()
    if path.is_file():
        image = load_image(path, None, kind)
        study = Study(path=path.resolve(), study_id=path.stem)
        _assemble(study, [image])
        return study
    if not path.is_dir():
        raise StudyError(path, "no such file or folder")

    root = path.resolve()
    study = Study(path=root, study_id=root.name)
    images: list[StudyImage] = []
    files = study_files(root)
    for file in files:
        relpath = file.relative_to(root).as_posix()
        try:
            images.append(load_image(file, root, kind))
        except StudyError as exc:
            err = exc
        except MammoError as exc:  # pragma: no cover - readers raise StudyError subclasses
            err = DecodeError(file, str(exc))
        except Exception as exc:  # the loader is a boundary: one bad file never stops a study
            logger.debug("unexpected failure on %s", relpath, exc_info=True)
            err = DecodeError(file, f"unreadable file ({type(exc).__name__})")
        else:
            continue
        logger.info("skipped %s: %s", relpath, err.problem)
        study.errors.append(FileError(file, relpath, str(err).replace(file.name, relpath, 1), type(err).__name__))

    if not images:
        if not files:
            raise EmptyStudyError(root, "empty study folder: no DICOM or image files")
        first = study.errors[0].message
        raise EmptyStudyError(
            root, f"no loadable breast image ({len(study.errors)} file(s) failed; first: {first})"
        )
    _assemble(study, images)
    logger.info(
        "loaded study: %d slot(s), %d extra, %d US, %d CESM, %d error(s)",
        len(study.views),
        len(study.extras),
        len(study.ultrasound),
        len(study.cesm),
        len(study.errors),
    )
    return study
