"""DICOM header reading shared by the adapters (no pixel data is decoded here)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from training.datasets.base import DatasetLayoutError, parse_age

__all__ = ["HeaderInfo", "read_header"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeaderInfo:
    """What an adapter needs from a DICOM header.

    Attributes:
        side: ``"L"``/``"R"`` from ImageLaterality, Laterality or FrameLaterality, else None.
        view: ``"CC"``, ``"MLO"``, ... from ViewPosition or the View Code Sequence, else None.
        modifiers: View modifier meanings (spot, magnification, ...).
        age: PatientAge in years, or None.
        rows: Rows, or None.
        columns: Columns, or None.
        image_type: ImageType values (upper case).
        kind: ``"MG"``, ``"US"`` or ``"CESM"`` by the engine's rules, or None for a non-breast
            image.
        cesm_kind: ``"low_energy"`` / ``"recombined"`` for CESM, else None.
    """

    side: str | None
    view: str | None
    modifiers: tuple[str, ...]
    age: float | None
    rows: int | None
    columns: int | None
    image_type: tuple[str, ...]
    kind: str | None = "MG"
    cesm_kind: str | None = None


def read_header(path: Path, root: Path | None = None) -> HeaderInfo:
    """Read the identity of one DICOM image (the engine's rules: :func:`engine.io.dicom.view_identity`).

    Args:
        path: The file.
        root: Dataset root (for the error message).

    Raises:
        DatasetLayoutError: The file is not a readable DICOM header.
    """
    import pydicom

    from engine.errors import NotBreastImageError
    from engine.io.dicom import image_kind, view_identity

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many kinds on a bad header
        raise DatasetLayoutError(path, f"unreadable DICOM header ({type(exc).__name__})", root=root) from exc
    side, _, view, _, modifiers = view_identity(ds)
    try:
        kind, cesm_kind, _ = image_kind(ds, path, has_view=view is not None)
    except NotBreastImageError:
        kind, cesm_kind = None, None
    try:
        age = parse_age(str(ds.get("PatientAge", "") or ""))
    except ValueError:
        age = None
    rows = ds.get("Rows", None)
    cols = ds.get("Columns", None)
    itype = ds.get("ImageType", None) or ()
    if isinstance(itype, str):
        itype = [itype]
    return HeaderInfo(
        side=side if side in ("L", "R") else None,
        view=view,
        modifiers=tuple(modifiers),
        age=age,
        rows=int(rows) if rows is not None else None,
        columns=int(cols) if cols is not None else None,
        image_type=tuple(str(v).upper() for v in itype),
        kind=kind,
        cesm_kind=cesm_kind,
    )
