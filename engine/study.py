"""What a loaded study is: images, their identity, their pixels. Data only, no I/O.

A :class:`Study` has the four standard mammography slots (``R-CC``, ``L-CC``, ``R-MLO``, ``L-MLO``;
any may be missing), extra images that are not placed in a slot (spot, magnification, ML, ...),
ultrasound images, CESM images, and the files that could not be loaded with their error.

Pixel values of a :class:`StudyImage`:

- ``stored``: the decoded stored values, ``(rows, columns)``, integer dtype when the file has integer
  samples (colour images are reduced to luminance when loaded).
- ``values()``: the modality-LUT output (rescale slope/intercept or Modality LUT Sequence) as float32:
  the "raw values" the models normalise from (each model documents its normalisation).
- ``display``: ``uint8`` ``(rows, columns)``, the image exactly as the viewer shows it with the
  default VOI preset and MONOCHROME1/INVERSE handled (white = dense). Built by ``engine.display``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "STANDARD_VIEWS",
    "ViewKey",
    "VoiWindow",
    "VoiLut",
    "VoiPreset",
    "StudyImage",
    "ExtraImage",
    "FileError",
    "Study",
    "view_key",
]

ViewKey = Literal["R-CC", "L-CC", "R-MLO", "L-MLO"]
#: Slot order used everywhere a four-view tensor is built: ``(B, 4, ...)`` follows this order.
STANDARD_VIEWS: tuple[str, ...] = ("R-CC", "L-CC", "R-MLO", "L-MLO")

ImageKind = Literal["MG", "US", "CESM"]
CesmKind = Literal["low_energy", "recombined"]


def view_key(laterality: str | None, view: str | None) -> str | None:
    """``("L", "CC") -> "L-CC"``; ``None`` unless both are known and the view is CC or MLO."""
    if laterality in ("L", "R") and view in ("CC", "MLO"):
        return f"{laterality}-{view}"
    return None


@dataclass(frozen=True)
class VoiWindow:
    """A window from WindowCenter/WindowWidth (in modality-LUT output units).

    Attributes:
        center: Window centre.
        width: Window width (> 0; 1 is allowed for LINEAR_EXACT only by the standard).
        function: ``"LINEAR"``, ``"LINEAR_EXACT"`` or ``"SIGMOID"`` (VOILUTFunction).
        explanation: WindowCenterWidthExplanation, or a description of where it came from.
    """

    center: float
    width: float
    function: str = "LINEAR"
    explanation: str = ""

    def to_dict(self) -> dict:
        return {"center": float(self.center), "width": float(self.width), "function": self.function}


@dataclass(frozen=True, eq=False)
class VoiLut:
    """A table from the VOI LUT Sequence.

    Attributes:
        first_mapped: The first input value mapped (LUTDescriptor[1]).
        table: The LUT entries, ``(n,)`` integer array; inputs below/above clamp to the ends.
        bits: Bits per output entry (LUTDescriptor[2]); the output range is ``[0, 2**bits - 1]``.
        explanation: LUTExplanation.
    """

    first_mapped: int
    table: np.ndarray
    bits: int
    explanation: str = ""
    function: str = "LUT"

    @property
    def center(self) -> float:
        """Centre of the input range the table covers (for the JSON summary)."""
        return self.first_mapped + (len(self.table) - 1) / 2.0

    @property
    def width(self) -> float:
        """Width of the input range the table covers (for the JSON summary)."""
        return float(len(self.table))

    def to_dict(self) -> dict:
        return {"center": float(self.center), "width": float(self.width), "function": "LUT"}


VoiPreset = VoiWindow | VoiLut


@dataclass(eq=False)
class StudyImage:
    """One loaded image and everything known about it.

    Attributes:
        path: Source file (absolute).
        relpath: Source file relative to the study folder (POSIX separators).
        kind: ``"MG"``, ``"US"`` or ``"CESM"``.
        laterality: ``"L"``, ``"R"``, ``"B"`` (both) or None when unknown.
        view: ``"CC"``, ``"MLO"``, ``"ML"``, ``"LM"``, ``"XCCL"``, ... or None when unknown.
        laterality_from: The tag or rule the laterality came from (``ImageLaterality``,
            ``Laterality``, ``FrameLaterality``, ``filename``) or None.
        view_from: The tag or rule the view came from (``ViewPosition``, ``ViewCodeSequence``,
            ``filename``) or None.
        view_modifiers: View modifier meanings (``"spot compression"``, ``"magnification"``, ...).
        cesm_kind: For CESM, ``"low_energy"`` or ``"recombined"``; None otherwise.
        stored: Decoded stored pixel values ``(rows, columns)``.
        rescale_slope: Modality LUT slope (1.0 when absent).
        rescale_intercept: Modality LUT intercept (0.0 when absent).
        modality_lut: Modality LUT Sequence table as ``(first_mapped, table)``, or None.
        photometric: PhotometricInterpretation as found in the file (rasters: ``"MONOCHROME2"``).
        inverted_for_display: True when the display is inverted (MONOCHROME1 and/or
            PresentationLUTShape INVERSE: in DX/MG the two state the same single inversion),
            applied once, after VOI.
        voi_presets: The VOI presets; the first is the default. Never empty (a full-range window is
            made when the file has none).
        display: ``uint8`` image as shown with the default preset.
        pixel_spacing_mm: ``(row, column)`` spacing in mm at the detector-corrected plane, or None.
        spacing_calibrated: True when the spacing is calibrated for the breast plane (PixelSpacing,
            or ImagerPixelSpacing corrected by the estimated magnification factor).
        spacing_source: The tag(s) the spacing came from, or ``"none"``.
        for_processing: True for "FOR PROCESSING" images (loaded, but flagged).
        acquisition: Acquisition (or content) date-time, used to keep the newest duplicate.
        bits_stored: BitsStored (8 or 16 for rasters).
        sop_instance_uid: SOPInstanceUID (None for rasters).
        study_instance_uid: StudyInstanceUID (None for rasters).
        patient_age_years: From PatientAge when present (a model input, not shown in logs).
        warnings: Things worth telling the reader (non-fatal).
        extra_reason: Set by the reader when the image must stay out of the standard slots
            whatever its view (tomosynthesis volume, CESM high-energy image), else None.
        frames: Number of frames in the source file (only the first is loaded).
    """

    path: Path
    relpath: str
    kind: ImageKind
    stored: np.ndarray
    display: np.ndarray
    voi_presets: tuple[VoiPreset, ...]
    laterality: str | None = None
    view: str | None = None
    laterality_from: str | None = None
    view_from: str | None = None
    view_modifiers: tuple[str, ...] = ()
    cesm_kind: CesmKind | None = None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    modality_lut: tuple[int, np.ndarray] | None = None
    photometric: str = "MONOCHROME2"
    inverted_for_display: bool = False
    pixel_spacing_mm: tuple[float, float] | None = None
    spacing_calibrated: bool = False
    spacing_source: str = "none"
    for_processing: bool = False
    acquisition: _dt.datetime | None = None
    bits_stored: int = 16
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    patient_age_years: float | None = None
    warnings: list[str] = field(default_factory=list)
    extra_reason: str | None = None
    frames: int = 1

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)``."""
        return (int(self.stored.shape[0]), int(self.stored.shape[1]))

    @property
    def key(self) -> str | None:
        """The standard slot this image belongs to (``"L-CC"``, ...), or None."""
        return view_key(self.laterality, self.view)

    def values(self) -> np.ndarray:
        """Modality-LUT output as float32 ``(rows, columns)``: the raw values models start from."""
        if self.modality_lut is not None:
            first, table = self.modality_lut
            idx = np.clip(self.stored.astype(np.int64) - first, 0, len(table) - 1)
            return table[idx].astype(np.float32)
        out = self.stored.astype(np.float32)
        if self.rescale_slope != 1.0:
            out *= np.float32(self.rescale_slope)
        if self.rescale_intercept != 0.0:
            out += np.float32(self.rescale_intercept)
        return out

    def summary(self) -> dict:
        """The per-image JSON entry of ``mammo-study --json`` (SPEC section 3)."""
        return {
            "file": self.relpath,
            "kind": self.kind,
            "laterality": self.laterality,
            "view": self.view,
            "laterality_from": self.laterality_from,
            "view_from": self.view_from,
            "view_modifiers": list(self.view_modifiers),
            "rows": self.shape[0],
            "columns": self.shape[1],
            "photometric": self.photometric,
            "inverted_for_display": bool(self.inverted_for_display),
            "voi_presets": [p.to_dict() for p in self.voi_presets],
            "pixel_spacing_mm": (
                [float(self.pixel_spacing_mm[0]), float(self.pixel_spacing_mm[1])]
                if self.pixel_spacing_mm is not None
                else None
            ),
            "spacing_calibrated": bool(self.spacing_calibrated),
            "spacing_source": self.spacing_source,
            "for_processing": bool(self.for_processing),
            "warnings": list(self.warnings),
        }


@dataclass(eq=False)
class ExtraImage:
    """An image kept out of the standard slots, and why (spot view, duplicate, unknown view...)."""

    image: StudyImage
    reason: str


@dataclass(frozen=True)
class FileError:
    """A file of the study that could not be loaded."""

    path: Path
    relpath: str
    message: str
    error_type: str


@dataclass(eq=False)
class Study:
    """A loaded study.

    Attributes:
        path: The study folder (or the single file given).
        study_id: The folder name (batch scoring replaces it by the path relative to its input).
        views: Standard slots that were found, keyed ``"R-CC"``, ``"L-CC"``, ``"R-MLO"``, ``"L-MLO"``.
        extras: Images not placed in a slot, with the reason.
        ultrasound: Ultrasound images (several per breast allowed).
        cesm: CESM images (low-energy and recombined).
        errors: Files that could not be loaded.
        warnings: Study-level remarks (duplicates replaced, FOR PROCESSING images, ...).
    """

    path: Path
    study_id: str
    views: dict[str, StudyImage] = field(default_factory=dict)
    extras: list[ExtraImage] = field(default_factory=list)
    ultrasound: list[StudyImage] = field(default_factory=list)
    cesm: list[StudyImage] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """Standard slots with no image, in ``STANDARD_VIEWS`` order."""
        return [k for k in STANDARD_VIEWS if k not in self.views]

    def images(self) -> list[StudyImage]:
        """Every loaded image: slots, extras, ultrasound, CESM."""
        return (
            [self.views[k] for k in STANDARD_VIEWS if k in self.views]
            + [e.image for e in self.extras]
            + list(self.ultrasound)
            + list(self.cesm)
        )

    def summary(self) -> dict:
        """The exact JSON shape of ``mammo-study --json`` (SPEC section 3)."""
        return {
            "study_id": self.study_id,
            "views": {k: self.views[k].summary() for k in STANDARD_VIEWS if k in self.views},
            "missing": self.missing,
            "extras": [{"file": e.image.relpath, "reason": e.reason} for e in self.extras],
            "ultrasound": [
                {"file": u.relpath, "laterality": u.laterality} for u in self.ultrasound
            ],
            "cesm": [
                {
                    "file": c.relpath,
                    "laterality": c.laterality,
                    "view": c.view,
                    "kind": c.cesm_kind,
                }
                for c in self.cesm
            ],
            "errors": [{"file": e.relpath, "message": e.message} for e in self.errors],
            "warnings": list(self.warnings),
        }
