"""Raster images (PNG 8/16-bit, JPEG, TIFF, PGM, BMP) and the file-name convention.

File-name convention (rasters carry no tags, so their identity comes from their name):

- The name (without extension) is split into tokens at ``_``, ``-``, ``.``, spaces and brackets;
  tokens are compared case-insensitively.
- Laterality tokens: ``L``, ``R``, ``LEFT``, ``RIGHT``. View tokens: ``CC``, ``MLO`` and the
  non-standard views ``ML``, ``LM``, ``LMO``, ``XCCL``, ``XCCM``, ``FB``, ``SIO``, ``ISO``, ``AT``,
  ``CV``, ``TAN``. ``ML`` is not ``MLO``.
- A laterality glued in front of a view counts as both: ``LCC``, ``RMLO``, ``LML``, ``LEFTCC``
  (``LM`` and ``LMO`` are views, never ``L`` + ``M...``).
- ``US`` (or ``ULTRASOUND``) marks an ultrasound image (e.g. ``L_US_1.png``); ``DM`` / ``CM``
  (CDD-CESM) mark a CESM low-energy / recombined ("subtracted") image (``P12_L_CM_CC.jpg``).
- ``SPOT`` and ``MAG`` mark spot-compression and magnification views (kept out of the slots).
- Tokens that disagree (``L`` and ``RIGHT`` in one name) leave that item unknown.
- When the file name says nothing, the names of the folders between the file and the study folder
  (nearest first) are read the same way; see :func:`name_info_for`.

Examples: ``R_CC.png``, ``case7-L-MLO.png``, ``LCC.tif``, ``p1.rmlo.png`` -> a standard view;
``mdb001.png`` (mini-MIAS) -> unknown laterality and view (an extra image);
``benign (2).png`` (BUSI) -> an MG-less raster: an extra, unless its name has a ``US`` token or
the study is loaded with ``kind="US"``.

Pixels: grayscale stays as stored (8-bit ``uint8``; 16-bit ``uint16``); colour (RGB, palette,
CMYK) is reduced to luminance ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, the luma of
DICOM's YBR_FULL) rounded to the input's integer type; alpha is dropped. The default display
preset is the identity for 8-bit images and the data's min..max for 16-bit images.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from engine.display import full_range_window, render_array
from engine.errors import DecodeError, NotDicomError, TruncatedFileError, UnsupportedPhotometricError
from engine.study import StudyImage

__all__ = [
    "RASTER_SUFFIXES",
    "LATERALITY_TOKENS",
    "VIEW_TOKENS",
    "NameInfo",
    "parse_name",
    "name_info_for",
    "luminance",
    "read_raster_pixels",
    "read_raster",
]

logger = logging.getLogger(__name__)

#: File suffixes read as raster images (lower case).
RASTER_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pgm", ".pnm", ".ppm", ".bmp"}
)

#: Laterality tokens of the file-name convention.
LATERALITY_TOKENS: dict[str, str] = {"L": "L", "R": "R", "LEFT": "L", "RIGHT": "R"}
#: View tokens of the file-name convention (token -> view).
VIEW_TOKENS: dict[str, str] = {
    v: v for v in ("CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "FB", "SIO", "ISO", "AT", "CV", "TAN")
}
_KIND_TOKENS = {"US": "US", "ULTRASOUND": "US"}
_CESM_TOKENS = {"DM": "low_energy", "CM": "recombined"}
_MODIFIER_TOKENS = {"SPOT": "spot compression", "MAG": "magnification"}
_SPLIT = re.compile(r"[_\-.\s()\[\]{}]+")
_GLUE = re.compile(r"^(LEFT|RIGHT|L|R)(" + "|".join(sorted(VIEW_TOKENS, key=len, reverse=True)) + r")$")


@dataclass
class NameInfo:
    """What a file name (or folder name) says about an image.

    Attributes:
        laterality: ``"L"``, ``"R"`` or None.
        view: ``"CC"``, ``"MLO"``, ``"ML"``, ... or None.
        kind: ``"US"`` or ``"CESM"`` when a token says so, else None (mammogram by default).
        cesm_kind: ``"low_energy"`` / ``"recombined"`` for ``DM`` / ``CM`` tokens.
        modifiers: View modifiers (``"spot compression"``, ``"magnification"``).
        conflicts: Items with disagreeing tokens (``"laterality"``, ``"view"``).
    """

    laterality: str | None = None
    view: str | None = None
    kind: str | None = None
    cesm_kind: str | None = None
    modifiers: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = field(default=())

    def merged(self, fallback: NameInfo) -> NameInfo:
        """This info with its unknown items taken from ``fallback`` (a parent folder's)."""
        return NameInfo(
            laterality=self.laterality or (fallback.laterality if "laterality" not in self.conflicts else None),
            view=self.view or (fallback.view if "view" not in self.conflicts else None),
            kind=self.kind or fallback.kind,
            cesm_kind=self.cesm_kind or fallback.cesm_kind,
            modifiers=self.modifiers or fallback.modifiers,
            conflicts=self.conflicts,
        )


def parse_name(name: str) -> NameInfo:
    """Read one file or folder name with the convention of this module.

    Args:
        name: A file name (its last suffix is dropped when it is a known image or DICOM suffix) or
            a folder name.

    Returns:
        The :class:`NameInfo` (unknown items are None).
    """
    stem = name
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in RASTER_SUFFIXES or suffix in (".dcm", ".dicom", ".ima"):
        stem = name[: -len(suffix)]
    lats: set[str] = set()
    views: set[str] = set()
    kind = cesm_kind = None
    modifiers: list[str] = []
    for token in _SPLIT.split(stem.upper()):
        if not token:
            continue
        if token in VIEW_TOKENS:
            views.add(VIEW_TOKENS[token])
        elif token in LATERALITY_TOKENS:
            lats.add(LATERALITY_TOKENS[token])
        elif token in _KIND_TOKENS:
            kind = _KIND_TOKENS[token]
        elif token in _CESM_TOKENS:
            kind, cesm_kind = "CESM", _CESM_TOKENS[token]
        elif token in _MODIFIER_TOKENS:
            modifiers.append(_MODIFIER_TOKENS[token])
        elif m := _GLUE.match(token):
            lats.add(LATERALITY_TOKENS[m.group(1)])
            views.add(VIEW_TOKENS[m.group(2)])
    conflicts = tuple(n for n, s in (("laterality", lats), ("view", views)) if len(s) > 1)
    return NameInfo(
        laterality=lats.pop() if len(lats) == 1 else None,
        view=views.pop() if len(views) == 1 else None,
        kind=kind,
        cesm_kind=cesm_kind,
        modifiers=tuple(modifiers),
        conflicts=conflicts,
    )


def name_info_for(path: Path, root: Path | None = None) -> NameInfo:
    """The convention applied to a file's name, then to its folders up to ``root`` (nearest first).

    Args:
        path: The file.
        root: The study folder; its own name is read last. None: the file name only.

    Returns:
        The merged :class:`NameInfo`.
    """
    info = parse_name(path.name)
    if root is None:
        return info
    try:
        parents = path.parent.relative_to(root).parts
    except ValueError:
        return info
    for part in reversed((root.name, *parents)):
        if info.laterality and info.view and info.kind:
            break
        info = info.merged(parse_name(part))
    return info


def luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of ``(..., 3)``, rounded, input dtype."""
    y = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    if np.issubdtype(rgb.dtype, np.integer):
        info = np.iinfo(rgb.dtype)
        return np.clip(np.rint(y), info.min, info.max).astype(rgb.dtype)
    return y.astype(rgb.dtype)


def read_raster_pixels(path: Path) -> tuple[np.ndarray, str]:
    """Decode a raster file to a 2-D array.

    Args:
        path: The file.

    Returns:
        ``(pixels, note)``: ``uint8``/``uint16`` (``int32``/``float32`` only for such TIFFs) of
        shape ``(rows, columns)``, and ``"luminance"`` when colour was reduced, else ``""``.

    Raises:
        NotDicomError: Not an image Pillow can identify.
        TruncatedFileError: The image data ends early.
        UnsupportedPhotometricError: A mode with no grayscale meaning.
        DecodeError: Any other decoding failure.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = im.mode
            try:
                im.load()
            except OSError as exc:
                if "truncated" in str(exc).lower() or "broken" in str(exc).lower():
                    raise TruncatedFileError(path, "image data ends early (truncated file)") from exc
                raise
            note = ""
            if mode in ("L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
                arr = np.asarray(im)
            elif mode == "1":
                arr = np.asarray(im, dtype=np.uint8) * np.uint8(255)
            elif mode in ("LA", "La"):
                arr = np.asarray(im.getchannel("L"))
            elif mode in ("RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                rgb = np.asarray(im.convert("RGB"))
                arr, note = luminance(rgb), "luminance"
            else:
                raise UnsupportedPhotometricError(path, f"image mode {mode!r} is not supported")
    except UnidentifiedImageError as exc:
        raise NotDicomError(path, "not a DICOM file or a readable image") from exc
    except (TruncatedFileError, UnsupportedPhotometricError):
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise DecodeError(path, f"cannot decode the image ({type(exc).__name__})") from exc
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        arr = arr.astype(np.uint16)
    if arr.ndim != 2:
        raise DecodeError(path, f"expected a 2-D image, got shape {arr.shape}")
    return np.ascontiguousarray(arr), note


def read_raster(
    path: Path,
    relpath: str | None = None,
    name_info: NameInfo | None = None,
    kind_hint: str = "auto",
) -> StudyImage:
    """Load a raster image as a :class:`~engine.study.StudyImage`.

    Args:
        path: The file.
        relpath: Path relative to the study folder (default: the file name).
        name_info: Identity from the file-name convention (default: :func:`parse_name` of the
            file name).
        kind_hint: ``"US"`` loads the image as ultrasound when its name has no kind token
            (``"auto"``/``"MG"``: mammogram unless the name says otherwise).

    Returns:
        The image, ``MONOCHROME2``, no spacing (rasters carry none), default preset as described
        in the module docstring.

    Raises:
        StudyError: A typed subclass naming the file (see :func:`read_raster_pixels`).
    """
    path = Path(path)
    info = name_info if name_info is not None else parse_name(path.name)
    arr, note = read_raster_pixels(path)
    kind = info.kind or ("US" if kind_hint == "US" else "MG")
    warnings: list[str] = []
    if note:
        warnings.append("colour image reduced to luminance (0.299 R + 0.587 G + 0.114 B)")
    for item in info.conflicts:
        warnings.append(f"file name gives more than one {item}; {item} left unknown")
    if arr.dtype == np.uint8:
        preset = full_range_window(0, 255, "full 8-bit range")
        bits = 8
    else:
        preset = full_range_window(float(arr.min()), float(arr.max()), "full range of the data")
        bits = 16 if arr.dtype == np.uint16 else 8 * arr.dtype.itemsize
    display = render_array(arr, preset)
    from_name = "filename"
    return StudyImage(
        path=path.resolve(),
        relpath=relpath or path.name,
        kind=kind,  # type: ignore[arg-type]
        stored=arr,
        display=display,
        voi_presets=(preset,),
        laterality=info.laterality,
        view=info.view,
        laterality_from=from_name if info.laterality else None,
        view_from=from_name if info.view else None,
        view_modifiers=info.modifiers,
        cesm_kind=info.cesm_kind if kind == "CESM" else None,  # type: ignore[arg-type]
        photometric="MONOCHROME2",
        inverted_for_display=False,
        pixel_spacing_mm=None,
        spacing_calibrated=False,
        spacing_source="none",
        bits_stored=bits,
        warnings=warnings,
    )
