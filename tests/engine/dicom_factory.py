"""Small DICOM writers for the I/O tests: every file is built here with pydicom, nothing downloaded."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

__all__ = [
    "MG_FOR_PRESENTATION",
    "MG_FOR_PROCESSING",
    "US_IMAGE",
    "CT_IMAGE",
    "VIEW_CODE",
    "code_item",
    "ramp",
    "make_image",
    "make_mg",
    "make_us",
    "save",
]

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"

#: (view, scheme) -> (code value, meaning) as CID 4014 lists them.
VIEW_CODE: dict[tuple[str, str], tuple[str, str]] = {
    ("CC", "SCT"): ("399162004", "cranio-caudal"),
    ("CC", "SRT"): ("R-10242", "cranio-caudal"),
    ("CC", "SNM3"): ("R-10242", "cranio-caudal"),
    ("MLO", "SCT"): ("399368009", "medio-lateral oblique"),
    ("MLO", "SRT"): ("R-10226", "medio-lateral oblique"),
    ("MLO", "SNM3"): ("R-10226", "medio-lateral oblique"),
    ("ML", "SCT"): ("399260004", "medio-lateral"),
    ("ML", "SRT"): ("R-10224", "medio-lateral"),
    ("LM", "SCT"): ("399352003", "latero-medial"),
}

_STUDY_UID = generate_uid()


def code_item(value: str, scheme: str, meaning: str = "") -> Dataset:
    """A code sequence item."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def ramp(rows: int = 64, columns: int = 48, bits: int = 12, dtype: Any = np.uint16) -> np.ndarray:
    """A deterministic image that covers the whole ``bits`` range (row-major ramp)."""
    n = rows * columns
    values = np.round(np.linspace(0, 2**bits - 1, n)).astype(np.int64)
    return values.reshape(rows, columns).astype(dtype)


def make_image(
    pixels: np.ndarray | None = None,
    *,
    sop_class: str = MG_FOR_PRESENTATION,
    modality: str = "MG",
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **attrs: Any,
) -> Dataset:
    """A minimal valid image dataset with ``pixels`` (default: a 12-bit ramp).

    Any keyword in ``attrs`` is set as a DICOM attribute (``None`` deletes it).
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = _STUDY_UID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = "Test^Patient"
    ds.PatientID = "SECRET-ID-123"
    arr = ramp() if pixels is None else pixels
    if bits_stored is None:
        bits_stored = 8 if arr.dtype.itemsize == 1 else (12 if arr.max() < 4096 else 16)
    ds.set_pixel_data(arr, photometric, bits_stored)
    for key, value in attrs.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds


def make_mg(
    laterality: str | None = "L",
    view: str | None = "CC",
    pixels: np.ndarray | None = None,
    *,
    laterality_tag: str = "ImageLaterality",
    view_tag: str = "ViewPosition",
    scheme: str = "SCT",
    modifiers: list[tuple[str, str, str]] | None = None,
    **attrs: Any,
) -> Dataset:
    """A mammogram with its laterality and view written in the named tags.

    Args:
        laterality: ``"L"``/``"R"`` or None.
        view: ``"CC"``, ``"MLO"``, ``"ML"``, ... or None.
        pixels: Pixel array (default ramp).
        laterality_tag: ``ImageLaterality``, ``Laterality`` or ``FrameLaterality``.
        view_tag: ``ViewPosition`` or ``ViewCodeSequence``.
        scheme: Coding scheme for the View Code Sequence.
        modifiers: View modifier codes ``(value, scheme, meaning)`` inside the view code item.
        **attrs: More attributes (see :func:`make_image`).
    """
    ds = make_image(pixels, **attrs)
    if laterality is not None:
        if laterality_tag == "FrameLaterality":
            anatomy = Dataset()
            anatomy.FrameLaterality = laterality
            anatomy.AnatomicRegionSequence = Sequence([code_item("76752008", "SCT", "Breast")])
            shared = Dataset()
            shared.FrameAnatomySequence = Sequence([anatomy])
            ds.SharedFunctionalGroupsSequence = Sequence([shared])
        else:
            setattr(ds, laterality_tag, laterality)
    if view is not None:
        if view_tag == "ViewCodeSequence":
            value, meaning = VIEW_CODE[(view, scheme)]
            item = code_item(value, scheme, meaning)
            if modifiers:
                item.ViewModifierCodeSequence = Sequence([code_item(*m) for m in modifiers])
            ds.ViewCodeSequence = Sequence([item])
        else:
            ds.ViewPosition = view
            if modifiers:
                ds.ViewModifierCodeSequence = Sequence([code_item(*m) for m in modifiers])
    return ds


def make_us(pixels: np.ndarray | None = None, *, regions: list[dict] | None = None, **attrs: Any) -> Dataset:
    """An ultrasound image; ``regions`` are Sequence of Ultrasound Regions items as dicts."""
    arr = pixels if pixels is not None else ramp(40, 50, 8, np.uint8)
    photometric = "RGB" if arr.ndim == 3 else "MONOCHROME2"
    ds = make_image(arr, sop_class=US_IMAGE, modality="US", photometric=photometric, bits_stored=8, **attrs)
    if regions:
        items = []
        for r in regions:
            item = Dataset()
            for key, value in r.items():
                setattr(item, key, value)
            items.append(item)
        ds.SequenceOfUltrasoundRegions = Sequence(items)
    return ds


def save(ds: Dataset, path: Path, syntax: str | None = None) -> Path:
    """Write ``ds`` to ``path`` (compressed with transfer syntax ``syntax`` when given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = copy.deepcopy(ds)
    if syntax is not None and syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path
