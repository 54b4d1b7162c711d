"""DICOM images: decode, view identity, pixel spacing, VOI presets, CESM / ultrasound detection.

Everything here follows SPEC section 4; the rules that needed a decision are written out below.

View identity (order of trust):

- Laterality: ImageLaterality (0020,0062), else Laterality (0020,0060), else FrameLaterality
  (0020,9072) in the shared, then the first per-frame, functional groups' Frame Anatomy
  Sequence. ``B`` (both breasts) is kept and is not a standard slot; ``U`` is unknown.
- View: ViewPosition (0018,5101) when it holds a mammography view term, else the View Code
  Sequence (0054,0220) (CID 4014: SNOMED CT ``SCT`` codes, their ``SRT`` equivalents and legacy
  ``SNM3`` codes, which reuse the SRT code values; when the code is unknown, its CodeMeaning),
  else an unrecognised ViewPosition as it is (the image then becomes an extra).
  ``ML`` (medio-lateral, SCT 399260004 / R-10224) is not ``MLO`` (SCT 399368009 / R-10226).
- View modifiers (CID 4015: spot compression, magnification, implant displaced, rolled, ...) from
  the View Modifier Code Sequence inside the View Code Sequence item or at the top level.
- When the tags say nothing, the file-name convention of ``engine.io.raster`` fills the gap
  (``laterality_from``/``view_from`` = ``"filename"``), e.g. CBIS-DDSM, whose DICOM files carry
  no laterality or view and whose folders are named ``..._LEFT_CC``.

Modality: ``MG`` is a mammogram (or CESM, below); ``US`` is ultrasound; ``CR``/``DX``/``OT``/``SC``
or no Modality load as mammograms only with a sign of a breast image (a breast BodyPartExamined,
a mammography view or SOP class); any other modality (CT, MR, PT, ...) raises
:class:`~engine.errors.NotBreastImageError`, as does a BodyPartExamined that is clearly another body
part (``CHEST`` counts as another part only for plain X-ray, not for MG or US).

CESM (contrast-enhanced mammography): ImageType value 4 ``ADDITION``/``SUBTRACTION`` -> recombined;
value 5 ``LOW_ENERGY`` -> low energy; ``HIGH_ENERGY`` -> an extra image (not shown as either).
Vendors that put these terms in another position are recognised too (value 4/5 first).

Pixels: decoded with pydicom 3's ``pydicom.pixels`` API (first frame only for multi-frame objects,
with a warning). Colour (RGB, YBR_*, PALETTE COLOR) is reduced to luminance
``0.299 R + 0.587 G + 0.114 B`` after pydicom's conversion to RGB. Compressed transfer syntaxes
need a decoder plugin; when none is installed :class:`~engine.errors.MissingDecoderError` names the
pip package (see :data:`DECODER_PACKAGES`).

Display: modality LUT (rescale, or Modality LUT Sequence) -> VOI presets (VOI LUT Sequence items
first, then every WindowCenter/WindowWidth pair with VOILUTFunction; without any, a
``LINEAR_EXACT`` window over the data's min..max) -> inversion (see :func:`display_inversion`).

Pixel spacing (:func:`pixel_spacing`), in this order:

1. PixelSpacing with PixelSpacingCalibrationType (``GEOMETRY``/``FIDUCIAL``): calibrated.
2. PixelSpacing that differs from ImagerPixelSpacing: the vendor corrected it for magnification
   (PS3.3 10.7.1.3: a PixelSpacing equal to ImagerPixelSpacing is only a copy): calibrated.
3. ImagerPixelSpacing / EstimatedRadiographicMagnificationFactor (> 0): calibrated for the
   breast plane (the mammography norm: the detector spacing divided by the geometric magnification).
4. Otherwise the value found (PixelSpacing, ImagerPixelSpacing, NominalScannedPixelSpacing) is
   given with ``spacing_calibrated=False``: it is the detector (or scanner) plane, not the breast.
5. Ultrasound: the Sequence of Ultrasound Regions (PhysicalDeltaX/Y in cm when the units code
   is 3) of the largest 2-D tissue region: calibrated. Otherwise as above.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.display import full_range_window, render_array
from engine.errors import (
    DecodeError,
    MissingDecoderError,
    NoPixelDataError,
    NotBreastImageError,
    NotDicomError,
    TruncatedFileError,
    UnsupportedPhotometricError,
)
from engine.io.raster import NameInfo, luminance, parse_name
from engine.study import StudyImage, VoiLut, VoiWindow

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = [
    "VIEW_CODES",
    "VIEW_MODIFIER_CODES",
    "DECODER_PACKAGES",
    "is_dicom_file",
    "read_dataset",
    "view_identity",
    "image_kind",
    "pixel_spacing",
    "voi_presets",
    "modality_lut",
    "display_inversion",
    "acquisition_datetime",
    "decode_pixels",
    "read_dicom",
]

logger = logging.getLogger(__name__)

# --- code tables (facts from DICOM PS3.16 CID 4014 / CID 4015) --------------------------------

#: CID 4014 "View for Mammography": (scheme, code value) -> view. SNM3 reuses the SRT values.
VIEW_CODES: dict[tuple[str, str], str] = {}
for _sct, _srt, _view in (
    ("399162004", "R-10242", "CC"),
    ("399368009", "R-10226", "MLO"),
    ("399260004", "R-10224", "ML"),
    ("399352003", "R-10228", "LM"),
    ("399099002", "R-10230", "LMO"),
    ("399192008", "R-1024A", "XCCL"),
    ("399101009", "R-1024B", "XCCM"),
    ("399196006", "R-10244", "FB"),
    ("399188001", "R-102D0", "SIO"),
    ("441555000", "R-40AAA", "ISO"),
    ("399011000", "R-102D1", "AT"),  # axillary tail (a view in older CID 4014 editions)
    ("399161006", "R-102D2", "CV"),  # cleavage
    ("399110001", "R-102C2", "TAN"),  # tangential
    ("127457009", "G-8310", "SPECIMEN"),
):
    VIEW_CODES[("SCT", _sct)] = _view
    VIEW_CODES[("SRT", _srt)] = _view
    VIEW_CODES[("SNM3", _srt)] = _view

_VIEW_MEANINGS: dict[str, str] = {
    "craniocaudal": "CC",
    "mediolateraloblique": "MLO",
    "mediolateral": "ML",
    "medial-lateral": "ML",
    "lateromedial": "LM",
    "lateromedialoblique": "LMO",
    "craniocaudalexaggeratedlaterally": "XCCL",
    "craniocaudalexaggeratedmedially": "XCCM",
    "exaggeratedcraniocaudal": "XCC",
    "caudocranial": "FB",
    "caudocranialfrombelow": "FB",
    "superolateraltoinferomedialoblique": "SIO",
    "inferomedialtosuperolateraloblique": "ISO",
    "axillarytail": "AT",
    "cleavage": "CV",
    "tangential": "TAN",
    "tissuespecimenfrombreast": "SPECIMEN",
}

#: ViewPosition (0018,5101) terms taken as mammography views (anything else falls back).
_VIEW_POSITIONS = {
    "CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "XCC", "FB", "SIO", "ISO", "AT", "CV", "TAN",
}  # fmt: skip

#: CID 4015 "View Modifier for Mammography": (scheme, code value) -> meaning.
VIEW_MODIFIER_CODES: dict[tuple[str, str], str] = {}
for _sct, _srt, _meaning in (
    ("399055006", "R-102D7", "spot compression"),
    ("399163009", "R-102D6", "magnification"),
    ("399209000", "R-102D5", "implant displaced"),
    ("399197002", "R-102D3", "rolled lateral"),
    ("399226006", "R-102D4", "rolled medial"),
    ("415670009", "R-102C9", "rolled superior"),
    ("414493004", "R-102CA", "rolled inferior"),
    ("399161006", "R-102D2", "cleavage"),
    ("399011000", "R-102D1", "axillary tail"),
    ("399110001", "R-102C2", "tangential"),
    ("442580003", "R-40AB2", "axillary tissue"),
    ("442581004", "R-40AB3", "nipple in profile"),
    ("441752004", "P2-00161", "anterior compression"),
    ("442593008", "R-40ABE", "infra-mammary fold"),
):
    VIEW_MODIFIER_CODES[("SCT", _sct)] = _meaning
    VIEW_MODIFIER_CODES[("SRT", _srt)] = _meaning
    VIEW_MODIFIER_CODES[("SNM3", _srt)] = _meaning

#: Transfer syntax keyword prefix -> (decoder plugin, pip package) to name when it is missing.
DECODER_PACKAGES: dict[str, tuple[str, str]] = {
    "JPEG2000": ("pylibjpeg-openjpeg", "pylibjpeg-openjpeg"),
    "HTJ2K": ("pylibjpeg-openjpeg", "pylibjpeg-openjpeg"),
    "JPEGLS": ("pyjpegls", "pyjpegls"),
    "JPEG": ("pylibjpeg-libjpeg (or GDCM)", "pylibjpeg-libjpeg"),
    "RLE": ("pylibjpeg-rle", "pylibjpeg-rle"),
    "Deflated": ("zlib", "zlib"),
}

_MAMMO_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.2": "MG for presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "MG for processing",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "breast projection for presentation",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "breast projection for processing",
    "1.2.840.10008.5.1.4.1.1.13.1.3": "breast tomosynthesis",
}
_FOR_PROCESSING_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.13.1.5",
    "1.2.840.10008.5.1.4.1.1.1.3.1",
}
_TOMOSYNTHESIS = "1.2.840.10008.5.1.4.1.1.13.1.3"
_US_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1", "1.2.840.10008.5.1.4.1.1.6.2"}
_PLAIN_XRAY = {"CR", "DX", "OT", "SC", "XC", "RG", ""}
_BREAST_WORDS = ("BREAST", "MAMMA", "MAMMO", "MAMA", "SEIN", "BRUST", "BRST")
_NOT_BREAST_PARTS = {
    "HEAD", "SKULL", "BRAIN", "FACE", "ORBIT", "EYE", "EAR", "SINUS", "JAW", "TMJ", "NECK",
    "THYROID", "CAROTID", "SPINE", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "COCCYX", "SACRUM",
    "ABDOMEN", "PELVIS", "HIP", "KNEE", "LEG", "ANKLE", "FOOT", "TOE", "HAND", "FINGER", "WRIST",
    "ELBOW", "ARM", "FOREARM", "SHOULDER", "CLAVICLE", "HUMERUS", "FEMUR", "TIBIA", "FIBULA",
    "HEART", "LIVER", "KIDNEY", "BLADDER", "PROSTATE", "UTERUS", "OVARY", "TESTIS", "SCROTUM",
    "EXTREMITY", "WHOLEBODY", "LUNG", "CHEST", "THORAX", "RIB", "RIBS", "STERNUM", "ZYGOMA",
}  # fmt: skip
_CHEST_PARTS = {"CHEST", "THORAX", "LUNG", "RIB", "RIBS", "STERNUM"}
_GRAY = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT")


# --- reading -------------------------------------------------------------------------------------


def is_dicom_file(path: Path) -> bool:
    """True when the file has the ``DICM`` marker after its 128-byte preamble."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _looks_like_bare_dataset(path: Path) -> bool:
    """A DICOM data set without preamble/meta header starts with a group 0008 little-endian tag."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return len(head) == 8 and head[:2] == b"\x08\x00" and head[3:4] == b"\x00"


def _is_truncated(ds: Dataset, path: Path) -> bool:
    """Whether the file ends inside an element.

    pydicom stops quietly at the end of a cut file, dropping a partial element (or a whole
    encapsulated Pixel Data without its delimiter), so the last element it kept does not end
    where the file ends.
    """
    try:
        size = path.stat().st_size
    except OSError:
        return False
    keys = list(ds.keys())
    if not keys:
        return True
    raw = ds.get_item(keys[-1])
    tell = getattr(raw, "value_tell", None)
    length = getattr(raw, "length", None)
    if tell is None or length is None or length == 0xFFFFFFFF:
        return False
    # a value running past the end, or bytes left over that pydicom could not parse as an element
    return tell + length != size


def read_dataset(path: Path) -> Dataset:
    """Read a DICOM file with its pixel data, turning every failure into a typed error.

    Args:
        path: The file.

    Returns:
        The dataset (the caller drops it once the pixels are decoded).

    Raises:
        NotDicomError: Not DICOM.
        TruncatedFileError: The file ends before its pixel data does.
        NoPixelDataError: A complete DICOM object without an image.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    force = False
    if not is_dicom_file(path):
        if not _looks_like_bare_dataset(path):
            raise NotDicomError(path, "not a DICOM file (no DICM marker) or a supported image")
        force = True
    try:
        ds = pydicom.dcmread(path, force=force)
    except InvalidDicomError as exc:
        raise NotDicomError(path, "not a DICOM file (invalid header)") from exc
    except (EOFError, OSError, struct.error) as exc:
        raise TruncatedFileError(path, f"file ends unexpectedly ({type(exc).__name__})") from exc
    except Exception as exc:  # pydicom raises many kinds on corrupt headers
        raise NotDicomError(path, f"unreadable DICOM header ({type(exc).__name__})") from exc
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if _is_truncated(ds, path):
            raise TruncatedFileError(path, "file ends before its pixel data (truncated file)")
        if "Rows" in ds and "Columns" in ds:
            raise NoPixelDataError(path, "image attributes but no pixel data (incomplete file?)")
        raise NoPixelDataError(path, f"no pixel data ({_sop_class_name(ds)})")
    return ds


def _sop_class_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    if not uid:
        return "unknown SOP class"
    name = getattr(uid, "name", "") or str(uid)
    return name if name != str(uid) else f"SOP class {uid}"


def _str(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, None) if ds is not None else None
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else ""
    return str(value).strip()


def _first_item(ds: Any, keyword: str) -> Any:
    seq = ds.get(keyword, None) if ds is not None else None
    try:
        return seq[0] if seq else None
    except (TypeError, IndexError):
        return None


# --- identity ------------------------------------------------------------------------------------


def _norm_meaning(text: str) -> str:
    return re.sub(r"[^a-z\-]", "", text.lower()).replace("-", "") if text else ""


def _code_view(item: Any) -> str | None:
    scheme = _str(item, "CodingSchemeDesignator").upper()
    code = _str(item, "CodeValue")
    view = VIEW_CODES.get((scheme, code))
    if view is None:
        view = _VIEW_MEANINGS.get(_norm_meaning(_str(item, "CodeMeaning")))
    return view


def _modifiers(seq: Any) -> list[str]:
    out = []
    for item in seq or ():
        key = (_str(item, "CodingSchemeDesignator").upper(), _str(item, "CodeValue"))
        meaning = VIEW_MODIFIER_CODES.get(key) or _str(item, "CodeMeaning").lower()
        out.append(meaning or f"view modifier {key[1]}")
    return out


def _frame_laterality(ds: Dataset) -> str:
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        anatomy = _first_item(_first_item(ds, group), "FrameAnatomySequence")
        value = _str(anatomy, "FrameLaterality").upper()
        if value:
            return value
    return ""


def view_identity(
    ds: Dataset, name_info: NameInfo | None = None
) -> tuple[str | None, str | None, str | None, str | None, tuple[str, ...]]:
    """Laterality, view and view modifiers of a DICOM image (rules in the module docstring).

    Args:
        ds: The dataset.
        name_info: The file-name convention's reading, used only when the tags say nothing.

    Returns:
        ``(laterality, laterality_from, view, view_from, modifiers)``.
    """
    laterality = laterality_from = None
    for keyword, value in (
        ("ImageLaterality", _str(ds, "ImageLaterality").upper()),
        ("Laterality", _str(ds, "Laterality").upper()),
        ("FrameLaterality", _frame_laterality(ds)),
    ):
        if value in ("L", "R", "B"):
            laterality, laterality_from = value, keyword
            break

    view = view_from = None
    position = re.sub(r"\s+", "", _str(ds, "ViewPosition").upper())
    code_item = _first_item(ds, "ViewCodeSequence")
    if position in _VIEW_POSITIONS:
        view, view_from = position, "ViewPosition"
    elif code_item is not None and (code_view := _code_view(code_item)):
        view, view_from = code_view, "ViewCodeSequence"
    elif position:
        view, view_from = position, "ViewPosition"

    modifiers = _modifiers(code_item.get("ViewModifierCodeSequence", None) if code_item is not None else None)
    modifiers += [m for m in _modifiers(ds.get("ViewModifierCodeSequence", None)) if m not in modifiers]

    if name_info is not None:
        if laterality is None and name_info.laterality:
            laterality, laterality_from = name_info.laterality, "filename"
        if view is None and name_info.view:
            view, view_from = name_info.view, "filename"
        modifiers += [m for m in name_info.modifiers if m not in modifiers]
    return laterality, laterality_from, view, view_from, tuple(modifiers)


def image_kind(ds: Dataset, path: Path, has_view: bool) -> tuple[str, str | None, str | None]:
    """Decide mammogram / CESM / ultrasound, or refuse a non-breast image.

    Args:
        ds: The dataset.
        path: The file (for the error message).
        has_view: Whether a mammography view was found (evidence for CR/DX/OT images).

    Returns:
        ``(kind, cesm_kind, extra_reason)``: kind ``"MG"``, ``"US"`` or ``"CESM"``; cesm_kind
        ``"low_energy"``/``"recombined"``/None; a reason to keep it out of the slots, or None.

    Raises:
        NotBreastImageError: Another modality or body part.
    """
    modality = _str(ds, "Modality").upper()
    sop = str(ds.get("SOPClassUID", "") or "")
    part = re.sub(r"[^A-Z]", "", _str(ds, "BodyPartExamined").upper())
    breast_part = any(w in part for w in _BREAST_WORDS)
    not_breast = bool(part) and not breast_part and part in _NOT_BREAST_PARTS

    if modality == "US" or sop in _US_SOP_CLASSES:
        if not_breast and part not in _CHEST_PARTS:
            raise NotBreastImageError(path, f"ultrasound of {part.lower()}, not of the breast")
        return "US", None, None
    if modality == "MG" or sop in _MAMMO_SOP_CLASSES:
        if not_breast and part not in _CHEST_PARTS:
            raise NotBreastImageError(path, f"body part {part} is not the breast")
    elif modality in _PLAIN_XRAY:
        if not_breast:
            raise NotBreastImageError(path, f"modality {modality or 'unknown'} of body part {part}, not a breast image")
        if not (breast_part or has_view):
            raise NotBreastImageError(
                path, f"modality {modality or 'unknown'} with no sign of a breast image (body part, view)"
            )
    else:
        raise NotBreastImageError(path, f"modality {modality} is not a supported breast image (MG, US or CESM expected)")

    if sop == _TOMOSYNTHESIS:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        return "MG", None, f"breast tomosynthesis volume ({frames} frames; first shown)"
    values = [str(v).strip().upper() for v in (ds.get("ImageType", None) or [])]
    v4 = values[3] if len(values) > 3 else ""
    v5 = values[4] if len(values) > 4 else ""
    if v4 in ("ADDITION", "SUBTRACTION"):
        return "CESM", "recombined", None
    if v5 == "LOW_ENERGY":
        return "CESM", "low_energy", None
    if v5 == "HIGH_ENERGY":
        return "CESM", None, "CESM high-energy image (neither low-energy nor recombined)"
    rest = set(values[2:])
    if rest & {"ADDITION", "SUBTRACTION"}:
        return "CESM", "recombined", None
    if "LOW_ENERGY" in rest:
        return "CESM", "low_energy", None
    if "HIGH_ENERGY" in rest:
        return "CESM", None, "CESM high-energy image (neither low-energy nor recombined)"
    return "MG", None, None


# --- spacing -------------------------------------------------------------------------------------


def _pair(ds: Any, keyword: str) -> tuple[float, float] | None:
    value = ds.get(keyword, None) if ds is not None else None
    if value is None:
        return None
    items = [value] if isinstance(value, (str, bytes, int, float)) else list(value)
    try:
        vals = [float(v) for v in items]
    except (TypeError, ValueError):
        return None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) < 2 or not all(math.isfinite(v) and v > 0 for v in vals[:2]):
        return None
    return (vals[0], vals[1])


def _us_region_spacing(ds: Dataset) -> tuple[tuple[float, float], int] | None:
    best = None
    n_distinct = set()
    for item in ds.get("SequenceOfUltrasoundRegions", None) or ():
        try:
            if int(item.get("PhysicalUnitsXDirection", 0)) != 3 or int(item.get("PhysicalUnitsYDirection", 0)) != 3:
                continue
            dx, dy = abs(float(item.PhysicalDeltaX)), abs(float(item.PhysicalDeltaY))
        except (AttributeError, TypeError, ValueError):
            continue
        if not (dx > 0 and dy > 0):
            continue
        spatial = int(item.get("RegionSpatialFormat", 0) or 0)
        try:
            area = (int(item.RegionLocationMaxX1) - int(item.RegionLocationMinX0) + 1) * (
                int(item.RegionLocationMaxY1) - int(item.RegionLocationMinY0) + 1
            )
        except (AttributeError, TypeError, ValueError):
            area = 0
        spacing = (dy * 10.0, dx * 10.0)
        n_distinct.add(tuple(round(v, 9) for v in spacing))
        rank = (spatial == 1, area)
        if best is None or rank > best[0]:
            best = (rank, spacing)
    if best is None:
        return None
    return best[1], len(n_distinct)


def pixel_spacing(ds: Dataset, kind: str = "MG") -> tuple[tuple[float, float] | None, bool, str, list[str]]:
    """Pixel spacing ``(row, column)`` in mm, whether it is calibrated, its source, and warnings.

    The rule is in the module docstring.

    Args:
        ds: The dataset.
        kind: ``"US"`` reads the ultrasound regions first.

    Returns:
        ``(spacing_mm or None, calibrated, source, warnings)``.
    """
    notes: list[str] = []
    if kind == "US":
        region = _us_region_spacing(ds)
        if region is not None:
            spacing, n = region
            if n > 1:
                notes.append(f"{n} ultrasound regions with different spacing; the largest 2-D region's is used")
            return spacing, True, "SequenceOfUltrasoundRegions", notes
    ps = _pair(ds, "PixelSpacing")
    ips = _pair(ds, "ImagerPixelSpacing")
    calib = _str(ds, "PixelSpacingCalibrationType").upper()
    if ps is not None and calib:
        return ps, True, f"PixelSpacing (PixelSpacingCalibrationType {calib})", notes
    if ps is not None and ips is not None and not np.allclose(ps, ips, rtol=1e-6, atol=0):
        return ps, True, "PixelSpacing (differs from ImagerPixelSpacing: magnification-corrected)", notes
    try:
        ermf = float(ds.get("EstimatedRadiographicMagnificationFactor", 0) or 0)
    except (TypeError, ValueError):
        ermf = 0.0
    if ips is not None and ermf > 0 and math.isfinite(ermf):
        return (
            (ips[0] / ermf, ips[1] / ermf),
            True,
            "ImagerPixelSpacing / EstimatedRadiographicMagnificationFactor",
            notes,
        )
    if ips is not None:
        return ips, False, "ImagerPixelSpacing (detector plane, uncalibrated)", notes
    if ps is not None:
        return ps, False, "PixelSpacing (no calibration information)", notes
    nominal = _pair(ds, "NominalScannedPixelSpacing")
    if nominal is not None:
        return nominal, False, "NominalScannedPixelSpacing (digitised film, uncalibrated)", notes
    return None, False, "none", notes


# --- LUTs ----------------------------------------------------------------------------------------


def _lut_descriptor(item: Any, signed: bool) -> tuple[int, int, int]:
    desc = [int(v) for v in item.LUTDescriptor]
    n, first, bits = desc[0], desc[1], desc[2]
    n = n + 65536 if n < 0 else n  # the descriptor's VR is US or SS; entry counts are unsigned
    n = 65536 if n == 0 else n
    if signed and first >= 2**15:
        first -= 2**16
    return n, first, bits


def _lut_data(item: Any, n: int, bits: int) -> np.ndarray:
    elem = item["LUTData"]
    value = elem.value
    if isinstance(value, (bytes, bytearray)):
        if len(value) >= 2 * n:
            table = np.frombuffer(value, dtype="<u2", count=n)
        elif len(value) >= n and bits <= 8:
            table = np.frombuffer(value, dtype=np.uint8, count=n)
        else:
            raise ValueError(f"LUT Data holds {len(value)} bytes for {n} entries")
    else:
        table = np.asarray(list(value) if not np.isscalar(value) else [value], dtype=np.int64)
    if len(table) < n:
        raise ValueError(f"LUT Data holds {len(table)} entries, descriptor says {n}")
    return np.asarray(table[:n], dtype=np.uint16 if table.max(initial=0) < 65536 else np.int64).copy()


def modality_lut(ds: Dataset) -> tuple[float, float, tuple[int, np.ndarray] | None, list[str]]:
    """Modality LUT of a dataset: ``(slope, intercept, lut_or_None, warnings)``.

    A Modality LUT Sequence (first item) replaces the rescale; both present is a non-conformant
    file: the sequence wins and a warning says so.
    """
    notes: list[str] = []
    try:
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    except (TypeError, ValueError):
        slope, intercept = 1.0, 0.0
        notes.append("unreadable RescaleSlope/RescaleIntercept ignored")
    item = _first_item(ds, "ModalityLUTSequence")
    if item is not None:
        try:
            n, first, bits = _lut_descriptor(item, int(ds.get("PixelRepresentation", 0) or 0) == 1)
            table = _lut_data(item, n, bits)
        except (AttributeError, KeyError, ValueError, TypeError) as exc:
            notes.append(f"unreadable Modality LUT Sequence ignored ({exc})")
        else:
            if "RescaleSlope" in ds or "RescaleIntercept" in ds:
                notes.append("both Modality LUT Sequence and rescale present; the sequence is used")
            return 1.0, 0.0, (first, table), notes
    return slope, intercept, None, notes


def _multi(ds: Dataset, keyword: str) -> list[Any]:
    value = ds.get(keyword, None)
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return [value]
    return list(value)


def voi_presets(ds: Dataset, *, signed_input: bool = False) -> tuple[list[VoiLut | VoiWindow], list[str]]:
    """VOI presets of a dataset: VOI LUT Sequence tables, then WindowCenter/Width pairs.

    Args:
        ds: The dataset.
        signed_input: Whether the VOI input (modality output) can be negative; a LUTDescriptor
            first value read as ``>= 32768`` is then taken as negative.

    Returns:
        ``(presets, warnings)``; the presets may be empty (the caller adds a full-range window).
    """
    presets: list[VoiLut | VoiWindow] = []
    notes: list[str] = []
    for i, item in enumerate(ds.get("VOILUTSequence", None) or ()):
        try:
            n, first, bits = _lut_descriptor(item, signed_input)
            table = _lut_data(item, n, bits)
        except (AttributeError, KeyError, ValueError, TypeError) as exc:
            notes.append(f"VOI LUT {i + 1} unreadable, ignored ({exc})")
            continue
        top = int(table.max(initial=0))
        if top > 2**bits - 1:
            fixed = max(top.bit_length(), 1)
            notes.append(f"VOI LUT {i + 1}: entries exceed {bits} bits; scaled as {fixed}-bit")
            bits = fixed
        presets.append(VoiLut(first_mapped=first, table=table, bits=bits, explanation=_str(item, "LUTExplanation")))

    centers = _multi(ds, "WindowCenter")
    widths = _multi(ds, "WindowWidth")
    explanations = _multi(ds, "WindowCenterWidthExplanation")
    function = _str(ds, "VOILUTFunction").upper() or "LINEAR"
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        notes.append(f"unknown VOILUTFunction {function!r}; LINEAR used")
        function = "LINEAR"
    if len(centers) != len(widths):
        notes.append(f"{len(centers)} window centres for {len(widths)} widths; extra values ignored")
    for i, (c, w) in enumerate(zip(centers, widths)):
        try:
            c, w = float(c), float(w)
        except (TypeError, ValueError):
            notes.append(f"window {i + 1} unreadable, ignored")
            continue
        if not (math.isfinite(c) and math.isfinite(w)) or w <= 0 or (function == "LINEAR" and w < 1):
            notes.append(f"window {i + 1} has an invalid width {w:g} for {function}, ignored")
            continue
        text = str(explanations[i]).strip() if i < len(explanations) else ""
        presets.append(VoiWindow(center=c, width=w, function=function, explanation=text))
    return presets, notes


def display_inversion(ds: Dataset) -> bool:
    """Whether the displayed image is inverted (white = low values), applied once after VOI.

    ``MONOCHROME1`` means minimum = white (PS3.3 C.7.6.3.1.2); PresentationLUTShape ``INVERSE``
    asks for the same inversion at the Presentation LUT. In DX/MG the two go together (PS3.3
    C.8.11.7: INVERSE *shall* be used with MONOCHROME1), so they state one inversion, never two:
    inverted = MONOCHROME1 or INVERSE. (MONOCHROME2 with INVERSE is honoured as an inversion;
    IDENTITY never cancels MONOCHROME1, whose inversion the Presentation LUT "accounts for".)
    """
    photometric = _str(ds, "PhotometricInterpretation").upper()
    shape = _str(ds, "PresentationLUTShape").upper()
    return photometric == "MONOCHROME1" or shape == "INVERSE"


def _parse_da_tm(date: str, time: str = "") -> dt.datetime | None:
    date = re.sub(r"[^0-9]", "", date or "")
    if len(date) < 8:
        return None
    time = (time or "").split("+")[0].split("-")[0].replace(":", "").strip()
    frac = 0
    if "." in time:
        time, f = time.split(".", 1)
        frac = int((f + "000000")[:6]) if f.isdigit() else 0
    time = (time + "000000")[:6] if time.isdigit() else "000000"
    try:
        return dt.datetime(
            int(date[:4]), int(date[4:6]), int(date[6:8]), int(time[:2]), int(time[2:4]), int(time[4:6]), frac
        )
    except ValueError:
        return None


def acquisition_datetime(ds: Dataset) -> dt.datetime | None:
    """AcquisitionDateTime, else AcquisitionDate + Time, else ContentDate + Time (naive)."""
    value = _str(ds, "AcquisitionDateTime")
    if value:
        digits = value.split("+")[0]
        digits = digits[:-5] if re.search(r"-\d{4}$", digits) else digits
        parsed = _parse_da_tm(digits[:8], digits[8:])
        if parsed is not None:
            return parsed
    for date_kw, time_kw in (("AcquisitionDate", "AcquisitionTime"), ("ContentDate", "ContentTime")):
        parsed = _parse_da_tm(_str(ds, date_kw), _str(ds, time_kw))
        if parsed is not None:
            return parsed
    return None


def _patient_age_years(ds: Dataset) -> float | None:
    value = _str(ds, "PatientAge").upper()
    m = re.fullmatch(r"(\d{1,3})([DWMY]?)", value)
    if not m:
        return None
    n = float(m.group(1))
    return {"D": n / 365.25, "W": n / 52.18, "M": n / 12.0}.get(m.group(2), n)


# --- pixels --------------------------------------------------------------------------------------


def _missing_decoder(ds: Dataset, path: Path) -> MissingDecoderError | None:
    from pydicom.pixels import get_decoder

    tsyntax = ds.file_meta.get("TransferSyntaxUID", None) if hasattr(ds, "file_meta") else None
    if tsyntax is None or not tsyntax.is_encapsulated:
        return None
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        return MissingDecoderError(path, f"no decoder exists for {tsyntax.name}", "")
    if decoder.is_available:
        return None
    keyword = getattr(tsyntax, "keyword", "") or ""
    plugin, package = next(
        ((p, k) for prefix, (p, k) in DECODER_PACKAGES.items() if keyword.startswith(prefix)),
        ("a decoder plugin", "pylibjpeg"),
    )
    return MissingDecoderError(
        path, f"{tsyntax.name} pixel data needs the {plugin} plugin: pip install {package}", package
    )


def decode_pixels(ds: Dataset, path: Path) -> tuple[np.ndarray, int, list[str]]:
    """Decode the first frame to a 2-D array (colour reduced to luminance).

    Args:
        ds: The dataset with its pixel data.
        path: The file (for error messages).

    Returns:
        ``(stored, frames, warnings)``: ``(rows, columns)`` array owning its memory, the number of
        frames in the file, and remarks.

    Raises:
        MissingDecoderError: No installed plugin decodes the transfer syntax.
        UnsupportedPhotometricError: A photometric interpretation the pipeline does not display.
        TruncatedFileError: Less pixel data than the header announces.
        DecodeError: Anything else that stops decoding.
    """
    from pydicom.pixels import pixel_array

    notes: list[str] = []
    photometric = _str(ds, "PhotometricInterpretation").upper()
    if photometric not in _GRAY + _COLOUR + ("PALETTE COLOR",):
        raise UnsupportedPhotometricError(path, f"photometric interpretation {photometric or '(none)'} is not supported")
    missing = _missing_decoder(ds, path)
    if missing is not None:
        raise missing
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    try:
        arr = pixel_array(ds, index=0 if frames > 1 else None)
    except (ValueError, EOFError) as exc:
        text = str(exc)
        if "less than expected" in text or "end of" in text.lower() or "truncat" in text.lower():
            raise TruncatedFileError(path, "less pixel data than the header announces (truncated file)") from exc
        raise DecodeError(path, f"cannot decode the pixel data: {text.splitlines()[0][:160]}") from exc
    except RuntimeError as exc:
        text = str(exc)
        if "plugin" in text and "missing" in text:
            raise MissingDecoderError(path, text.splitlines()[0][:160], "pylibjpeg") from exc
        raise DecodeError(path, f"cannot decode the pixel data: {text.splitlines()[0][:160]}") from exc
    except Exception as exc:  # decoder plugins raise their own types
        raise DecodeError(path, f"cannot decode the pixel data ({type(exc).__name__})") from exc
    if frames > 1:
        notes.append(f"multi-frame object ({frames} frames): only the first frame is loaded")
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            arr = apply_color_lut(arr, ds)
        except Exception as exc:
            raise UnsupportedPhotometricError(path, f"unreadable palette ({type(exc).__name__})") from exc
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = luminance(arr[..., :3])
        notes.append(f"{photometric} image reduced to luminance (0.299 R + 0.587 G + 0.114 B)")
    if arr.ndim != 2:
        raise DecodeError(path, f"expected a 2-D frame, got shape {arr.shape}")
    if not arr.flags.owndata or not arr.flags.c_contiguous:
        arr = np.array(arr, order="C", copy=True)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr, frames, notes


# --- the whole file ------------------------------------------------------------------------------


def read_dicom(
    path: Path, relpath: str | None = None, name_info: NameInfo | None = None
) -> StudyImage:
    """Load one DICOM file: decode, identify, build presets and the default display.

    The dataset and its pixel-data bytes are dropped before returning: the image keeps only the
    decoded stored array, the display array and the metadata.

    Args:
        path: The file.
        relpath: Path relative to the study folder (default: the file name).
        name_info: File-name convention reading used when the tags lack laterality or view
            (default: the file name alone).

    Returns:
        The :class:`~engine.study.StudyImage`; a reason to keep it out of the slots (tomosynthesis,
        CESM high energy) is in ``extra_reason``.

    Raises:
        StudyError: A typed subclass naming the file (not DICOM, truncated, no pixel data,
            unsupported photometric, missing decoder, not a breast image, decode error).
    """
    path = Path(path)
    ds = read_dataset(path)
    info = name_info if name_info is not None else parse_name(path.name)
    laterality, lat_from, view, view_from, modifiers = view_identity(ds, info)
    has_view = view in _VIEW_POSITIONS | {"SPECIMEN"} and view_from != "filename"
    kind, cesm_kind, extra_reason = image_kind(ds, path, has_view)
    notes: list[str] = []

    stored, frames, pixel_notes = decode_pixels(ds, path)
    notes += pixel_notes
    slope, intercept, mod_lut, lut_notes = modality_lut(ds)
    notes += lut_notes
    signed_input = stored.dtype.kind == "i" or intercept < 0 or slope < 0
    presets, voi_notes = voi_presets(ds, signed_input=signed_input)
    notes += voi_notes
    photometric = _str(ds, "PhotometricInterpretation").upper()
    is_gray = photometric in _GRAY
    if not presets:
        if stored.dtype == np.uint8 and mod_lut is None and slope == 1.0 and intercept == 0.0:
            presets = [full_range_window(0, 255, "full 8-bit range")]
        else:
            lo, hi = (float(stored.min()), float(stored.max())) if stored.size else (0.0, 1.0)
            if mod_lut is not None:
                from engine.display import modality_values

                ends = modality_values(np.array([lo, hi]), modality_lut=mod_lut)
                lo, hi = float(ends.min()), float(ends.max())
            else:
                lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
            presets = [full_range_window(lo, hi, "full range of the data (no window in file)")]
    invert = display_inversion(ds) if is_gray else False
    if not is_gray and _str(ds, "PresentationLUTShape").upper() == "INVERSE":
        notes.append("PresentationLUTShape INVERSE ignored on a colour image")

    spacing, calibrated, spacing_source, spacing_notes = pixel_spacing(ds, kind)
    notes += spacing_notes
    for_processing = (
        _str(ds, "PresentationIntentType").upper() == "FOR PROCESSING"
        or str(ds.get("SOPClassUID", "")) in _FOR_PROCESSING_SOP_CLASSES
    )
    if for_processing:
        notes.append("FOR PROCESSING image (raw detector data, not meant for reading)")
    if view_from == "filename" or lat_from == "filename":
        notes.append("laterality/view not in the DICOM tags; taken from the file or folder name")
    try:
        bits_stored = int(ds.get("BitsStored", 8 * stored.dtype.itemsize) or 8 * stored.dtype.itemsize)
    except (TypeError, ValueError):
        bits_stored = 8 * stored.dtype.itemsize
    if not is_gray:
        bits_stored = 8 * stored.dtype.itemsize

    display = render_array(
        stored, presets[0], slope=slope, intercept=intercept, modality_lut=mod_lut, invert=invert
    )
    image = StudyImage(
        path=path.resolve(),
        relpath=relpath or path.name,
        kind=kind,  # type: ignore[arg-type]
        stored=stored,
        display=display,
        voi_presets=tuple(presets),
        laterality=laterality,
        view=view,
        laterality_from=lat_from,
        view_from=view_from,
        view_modifiers=modifiers,
        cesm_kind=cesm_kind,  # type: ignore[arg-type]
        rescale_slope=slope,
        rescale_intercept=intercept,
        modality_lut=mod_lut,
        photometric=photometric,
        inverted_for_display=invert,
        pixel_spacing_mm=spacing,
        spacing_calibrated=calibrated,
        spacing_source=spacing_source,
        for_processing=for_processing,
        acquisition=acquisition_datetime(ds),
        bits_stored=bits_stored,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "") or "") or None,
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or "") or None,
        series_instance_uid=str(ds.get("SeriesInstanceUID", "") or "") or None,
        patient_age_years=_patient_age_years(ds),
        warnings=notes,
        extra_reason=extra_reason,
        frames=frames,
    )
    del ds
    return image
