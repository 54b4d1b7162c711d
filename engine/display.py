"""Display pipeline: modality LUT -> VOI -> inversion -> ``uint8`` (NumPy only).

This is the grayscale pipeline of DICOM PS3.4 N.2 / PS3.3 C.11, cut at the P-values (the
Presentation LUT is an identity or an inversion; the display's GSDF calibration is the monitor's job):

1. **Modality LUT** (PS3.3 C.11.1): ``value = slope * stored + intercept``, or a Modality LUT
   Sequence table indexed by the stored value (inputs outside the table clamp to its ends).
2. **VOI** (PS3.3 C.11.2): a VOI LUT Sequence table, or a window with VOILUTFunction
   ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID`` (formulas of C.11.2.1.2, written out in
   :func:`voi_output`), producing ``y`` in ``[0, 255]``.
3. **Inversion** (after VOI, once): ``y -> 255 - y`` when the image is displayed inverted
   (``MONOCHROME1`` and/or ``PresentationLUTShape INVERSE``; see ``engine.io.dicom``).
4. **Quantisation**: ``np.rint`` (round half to even) to ``uint8``.

Speed. For integer pixels of at most 16 bits all four steps are folded into one ``uint8`` table
with one entry per representable stored value (256 or 65536 entries, built in about a millisecond)
and applied with NumPy fancy indexing: display costs one pass over the pixels and no temporary
larger than the output. Signed data index the table through their unsigned view, so no offset
pass is needed. Anything else (floats, 32-bit integers) takes the float path, which gives the same
numbers.

The viewer calls :func:`render` for interactive window/level on full-field images.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from engine.study import VoiLut, VoiWindow

if TYPE_CHECKING:
    from engine.study import StudyImage, VoiPreset

__all__ = [
    "VOI_FUNCTIONS",
    "modality_values",
    "voi_output",
    "full_range_window",
    "window_lut",
    "apply_lut",
    "render_array",
    "render",
]

logger = logging.getLogger(__name__)

#: VOILUTFunction values the pipeline implements (PS3.3 C.11.2.1.3).
VOI_FUNCTIONS: tuple[str, ...] = ("LINEAR", "LINEAR_EXACT", "SIGMOID")

_YMAX = 255.0


def modality_values(
    stored: np.ndarray,
    *,
    slope: float = 1.0,
    intercept: float = 0.0,
    modality_lut: tuple[int, np.ndarray] | None = None,
) -> np.ndarray:
    """Apply the modality LUT (PS3.3 C.11.1) in float64.

    Args:
        stored: Stored pixel values, any shape.
        slope: RescaleSlope.
        intercept: RescaleIntercept.
        modality_lut: ``(first_mapped, table)`` from a Modality LUT Sequence; replaces the rescale.

    Returns:
        float64 array of the same shape: the modality-LUT output.
    """
    if modality_lut is not None:
        first, table = modality_lut
        idx = np.clip(np.asarray(stored, dtype=np.int64) - int(first), 0, len(table) - 1)
        return np.asarray(table, dtype=np.float64)[idx]
    out = np.asarray(stored, dtype=np.float64)
    if slope != 1.0 or intercept != 0.0:
        out = out * float(slope) + float(intercept)
    return out


def voi_output(x: np.ndarray, preset: VoiPreset) -> np.ndarray:
    """VOI transform of modality-LUT output ``x`` to ``y`` in ``[0, 255]`` (float64).

    Formulas of DICOM PS3.3 C.11.2.1.2 with ``ymin = 0``, ``ymax = 255``, centre ``c``, width ``w``:

    - ``LINEAR`` (C.11.2.1.2.1), ``w >= 1``: ``y = 0`` if ``x <= c - 0.5 - (w - 1) / 2``;
      ``y = 255`` if ``x > c - 0.5 + (w - 1) / 2``; else
      ``y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255``. (For ``w = 1`` the ramp is empty: a step.)
    - ``LINEAR_EXACT`` (C.11.2.1.3.2), ``w > 0``: ``y = 0`` if ``x <= c - w / 2``; ``y = 255`` if
      ``x > c + w / 2``; else ``y = ((x - c) / w + 0.5) * 255``.
    - ``SIGMOID`` (C.11.2.1.3.1), ``w > 0``: ``y = 255 / (1 + exp(-4 (x - c) / w))``.
    - VOI LUT Sequence table (C.11.2.1.1): ``x`` rounded to the nearest integer indexes the table
      from ``first_mapped`` (clamped to its ends); entries scale from ``[0, 2**bits - 1]`` to
      ``[0, 255]``.

    Args:
        x: Modality-LUT output values.
        preset: A :class:`~engine.study.VoiWindow` or :class:`~engine.study.VoiLut`.

    Returns:
        float64 array of the same shape, in ``[0, 255]``.

    Raises:
        ValueError: A width the standard does not allow for that function, or an unknown function.
    """
    x = np.asarray(x, dtype=np.float64)
    if isinstance(preset, VoiLut):
        table = np.asarray(preset.table, dtype=np.float64)
        idx = np.clip(np.rint(x) - preset.first_mapped, 0, len(table) - 1).astype(np.int64)
        return table[idx] * (_YMAX / float(2**preset.bits - 1))
    c, w, fn = float(preset.center), float(preset.width), preset.function.upper()
    if fn == "LINEAR":
        if w < 1:
            raise ValueError(f"LINEAR window width must be >= 1, got {w}")
        lo = c - 0.5 - (w - 1) / 2
        hi = c - 0.5 + (w - 1) / 2
        if w == 1:
            return np.where(x <= lo, 0.0, _YMAX)
        y = ((x - (c - 0.5)) / (w - 1) + 0.5) * _YMAX
        return np.where(x <= lo, 0.0, np.where(x > hi, _YMAX, y))
    if fn == "LINEAR_EXACT":
        if w <= 0:
            raise ValueError(f"LINEAR_EXACT window width must be > 0, got {w}")
        y = ((x - c) / w + 0.5) * _YMAX
        return np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, _YMAX, y))
    if fn == "SIGMOID":
        if w <= 0:
            raise ValueError(f"SIGMOID window width must be > 0, got {w}")
        with np.errstate(over="ignore"):
            return _YMAX / (1.0 + np.exp(-4.0 * (x - c) / w))
    raise ValueError(f"unknown VOI LUT function {preset.function!r}")


def full_range_window(lo: float, hi: float, explanation: str) -> VoiWindow:
    """A ``LINEAR_EXACT`` window mapping ``lo`` to 0 and ``hi`` to 255 exactly.

    Used when a file has no VOI of its own: an 8-bit raster gets ``(0, 255)`` (the identity);
    DICOM and 16-bit rasters get the data's min and max (modality-LUT units).
    """
    lo, hi = float(lo), float(hi)
    if hi <= lo:  # flat image: everything at or below the centre -> black
        return VoiWindow(center=lo + 0.5, width=1.0, function="LINEAR_EXACT", explanation=explanation)
    return VoiWindow(center=(lo + hi) / 2, width=hi - lo, function="LINEAR_EXACT", explanation=explanation)


def _to_uint8(y: np.ndarray, invert: bool) -> np.ndarray:
    if invert:
        y = _YMAX - y
    return np.rint(y).astype(np.uint8)


def _lut_domain(dtype: np.dtype) -> np.ndarray | None:
    """Every value an integer dtype of <= 16 bits holds, in the order of its unsigned view."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui" or dtype.itemsize > 2:
        return None
    unsigned = np.dtype(f"u{dtype.itemsize}")
    return np.arange(2 ** (8 * dtype.itemsize), dtype=unsigned).view(dtype)


def window_lut(
    dtype: np.dtype | type,
    preset: VoiPreset,
    *,
    slope: float = 1.0,
    intercept: float = 0.0,
    modality_lut: tuple[int, np.ndarray] | None = None,
    invert: bool = False,
) -> np.ndarray:
    """The whole pipeline folded into one ``uint8`` table for integer stored values.

    Args:
        dtype: Stored-value dtype: ``uint8``/``int8`` (256 entries) or ``uint16``/``int16``
            (65536 entries).
        preset: VOI window or table.
        slope: RescaleSlope.
        intercept: RescaleIntercept.
        modality_lut: ``(first_mapped, table)`` from a Modality LUT Sequence.
        invert: Invert after VOI.

    Returns:
        ``uint8`` table indexed by the stored values' unsigned view (see :func:`apply_lut`).

    Raises:
        ValueError: ``dtype`` is not an integer type of at most 16 bits.
    """
    domain = _lut_domain(np.dtype(dtype))
    if domain is None:
        raise ValueError(f"no lookup table for dtype {np.dtype(dtype)} (use the float path)")
    x = modality_values(domain, slope=slope, intercept=intercept, modality_lut=modality_lut)
    return _to_uint8(voi_output(x, preset), invert)


def apply_lut(stored: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Look ``stored`` up in a table from :func:`window_lut` (one pass, ``uint8`` output)."""
    if stored.dtype.kind == "i":
        stored = stored.view(f"u{stored.dtype.itemsize}")
    return table[stored]


def render_array(
    stored: np.ndarray,
    preset: VoiPreset,
    *,
    slope: float = 1.0,
    intercept: float = 0.0,
    modality_lut: tuple[int, np.ndarray] | None = None,
    invert: bool = False,
) -> np.ndarray:
    """Stored values -> displayed ``uint8`` image, table path when possible, else float path.

    Args:
        stored: Stored pixel values ``(rows, columns)`` (any shape works).
        preset: VOI window or table.
        slope: RescaleSlope.
        intercept: RescaleIntercept.
        modality_lut: ``(first_mapped, table)`` from a Modality LUT Sequence.
        invert: Invert after VOI.

    Returns:
        ``uint8`` array of the same shape.
    """
    stored = np.asarray(stored)
    if _lut_domain(stored.dtype) is not None:
        table = window_lut(
            stored.dtype,
            preset,
            slope=slope,
            intercept=intercept,
            modality_lut=modality_lut,
            invert=invert,
        )
        return apply_lut(stored, table)
    x = modality_values(stored, slope=slope, intercept=intercept, modality_lut=modality_lut)
    return _to_uint8(voi_output(x, preset), invert)


def render(
    image: StudyImage,
    preset: VoiPreset | int | None = None,
    *,
    center: float | None = None,
    width: float | None = None,
    function: str | None = None,
    invert: bool | None = None,
) -> np.ndarray:
    """Display a loaded image with a preset or an interactive window.

    Args:
        image: The loaded image.
        preset: A preset, or an index into ``image.voi_presets``; None = the default (first).
        center: Window centre (modality-LUT units); with ``width``, overrides the preset.
        width: Window width; with ``center``, overrides the preset.
        function: VOILUTFunction for the ``center``/``width`` window; default: the preset's
            function when the preset is a window, else ``"LINEAR"``.
        invert: Override the image's inversion (None = as the file says).

    Returns:
        ``uint8`` ``(rows, columns)``.

    Raises:
        ValueError: Only one of ``center`` and ``width`` given, or a width the function forbids.
    """
    if preset is None:
        chosen: VoiPreset = image.voi_presets[0]
    elif isinstance(preset, int):
        chosen = image.voi_presets[preset]
    else:
        chosen = preset
    if (center is None) != (width is None):
        raise ValueError("give both center and width, or neither")
    if center is not None and width is not None:
        fn = function or (chosen.function if isinstance(chosen, VoiWindow) else "LINEAR")
        chosen = VoiWindow(center=float(center), width=float(width), function=fn, explanation="interactive")
    return render_array(
        image.stored,
        chosen,
        slope=image.rescale_slope,
        intercept=image.rescale_intercept,
        modality_lut=image.modality_lut,
        invert=image.inverted_for_display if invert is None else bool(invert),
    )
