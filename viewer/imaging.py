"""Display-side image work, NumPy only: orientation, pyramids, window/level, viewport maths.

Nothing here imports Qt, so every function is tested without a window.

Coordinates. A view shows an image in *display coordinates*: ``x`` to the right, ``y`` down, the
pixel ``(row, col)`` of the displayed array covering ``[col, col + 1) x [row, row + 1)``. The
displayed array is the stored array, mirrored left-right when the image's chest wall is not on the
side the standard hanging needs (right breasts: chest wall at the right edge; left breasts: at the
left edge, so that in ``R | L`` the chest walls meet at the centre line). Whether a mirror is needed
is measured on the pixels (:func:`chest_wall_side`), not assumed from the laterality.

Synchronised zoom works in *chest-wall coordinates* ``(u, y)``: ``u`` is the distance from the
chest-wall edge in image pixels (``u = x`` when the chest wall is on the left, ``u = width - x``
when it is on the right). One :class:`Viewport` in these coordinates gives every view its range,
which is the mirror semantics: panning toward the chest wall in one view pans toward the chest
wall in the other.

Window/level on full-field images (4096 x 3328) stays interactive because nothing ever touches
every pixel: each image keeps a 2x pyramid of its stored values (:func:`build_pyramid`), a view
renders only the region it shows at the pyramid level closest to the screen resolution
(:func:`choose_level`, :func:`render_region`), and the value -> grey mapping is one ``uint8``
table from :func:`engine.display.window_lut` (the DICOM modality LUT, VOI and inversion folded
together) applied with one ``take``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from engine.display import apply_lut, render_array, window_lut
from engine import STANDARD_VIEWS, VoiWindow

if TYPE_CHECKING:
    from engine import Study, StudyImage, VoiLut

    VoiPreset = VoiWindow | VoiLut

__all__ = [
    "CHEST_WALL_FOR_SIDE",
    "WindowSetting",
    "Viewport",
    "Region",
    "PreparedImage",
    "chest_wall_side",
    "tissue_mask",
    "build_pyramid",
    "choose_level",
    "effective_preset",
    "window_center_width",
    "drag_window",
    "fit_viewport",
    "view_ranges",
    "zoom_viewport",
    "pan_viewport",
    "render_region",
    "prepare_image",
    "prepare_study",
    "image_key",
    "u_of_x",
    "pixel_readout",
]

logger = logging.getLogger(__name__)

#: Side of the displayed image where the chest wall must sit, per breast (standard hanging).
CHEST_WALL_FOR_SIDE: dict[str, str] = {"R": "right", "L": "left"}

#: Smallest pyramid level kept (long side, pixels).
_PYRAMID_MIN_SIDE = 256


def image_key(study: Study, image: StudyImage) -> str:
    """The key an image has in the viewer: its slot (``"R-CC"``) when it fills one, else its
    relative path (extras, CESM, ultrasound)."""
    key = image.key
    if key is not None and study.views.get(key) is image:
        return key
    return image.relpath


@dataclass(frozen=True)
class WindowSetting:
    """How one image is windowed.

    Attributes:
        preset_index: Index into ``image.voi_presets`` (clamped to the ones the image has).
        center: Interactive window centre (modality-LUT units); None = the preset.
        width: Interactive window width; None = the preset.
    """

    preset_index: int = 0
    center: float | None = None
    width: float | None = None

    @property
    def interactive(self) -> bool:
        """True when a mouse drag replaced the preset."""
        return self.center is not None and self.width is not None


@dataclass(frozen=True)
class Viewport:
    """A synchronised view: centre in chest-wall coordinates and zoom.

    Attributes:
        center_u: Distance of the view centre from the chest-wall edge, image pixels.
        center_y: Row of the view centre, image pixels.
        scale: Screen pixels (logical) per image pixel.
    """

    center_u: float
    center_y: float
    scale: float


@dataclass(frozen=True)
class Region:
    """A rectangle of the displayed full-resolution image, in pixels (``x0 <= x < x1``)."""

    x0: int
    y0: int
    x1: int
    y1: int

    def contains(self, other: Region) -> bool:
        """True when ``other`` lies inside this rectangle."""
        return (
            self.x0 <= other.x0 and self.y0 <= other.y0 and self.x1 >= other.x1 and self.y1 >= other.y1
        )

    @property
    def empty(self) -> bool:
        """True for a rectangle without pixels."""
        return self.x1 <= self.x0 or self.y1 <= self.y0


def _thumbnail(a: np.ndarray, long_side: int = 256) -> np.ndarray:
    step = max(1, int(math.ceil(max(a.shape[:2]) / long_side)))
    return a[::step, ::step]


def tissue_mask(display: np.ndarray, long_side: int = 256) -> np.ndarray:
    """Low-resolution breast mask of a displayed ``uint8`` image (dense = bright).

    The displayed image has air near black; fatty tissue is only a little brighter, so a global
    Otsu threshold (which splits dense from fatty tissue on many mammograms) would miss the
    breast periphery. The threshold is 5 % of the way from the background floor (1st percentile)
    to the bright end (99th percentile), and at least 6 grey levels above the floor.

    Args:
        display: ``uint8`` image as displayed (air dark).
        long_side: Long side of the mask, pixels (the image is strided, not resampled).

    Returns:
        bool array of the strided thumbnail: True where there is breast (or other non-air).
    """
    thumb = _thumbnail(display, long_side)
    floor, top = np.percentile(thumb, [1.0, 99.0])
    t = max(float(floor) + 0.05 * float(top - floor), float(floor) + 6.0)
    return thumb > t


def chest_wall_side(display: np.ndarray) -> tuple[str, float]:
    """Which edge of an image the chest wall is on, measured on the pixels.

    A mammogram's breast tissue touches the image edge along the chest wall over much of the
    image height, and the opposite edge (beyond the nipple) is air. The score of an edge is the
    fraction of rows whose outer 3 % of columns are mostly tissue.

    Args:
        display: ``uint8`` displayed image (dense bright).

    Returns:
        ``("left" | "right", confidence)``; confidence is the difference of the two edge scores
        (0 = cannot tell, 1 = certain).
    """
    mask = tissue_mask(display)
    cols = mask.shape[1]
    band = max(1, int(round(0.03 * cols)))
    left = float(np.mean(mask[:, :band].mean(axis=1) > 0.5))
    right = float(np.mean(mask[:, -band:].mean(axis=1) > 0.5))
    return ("left" if left >= right else "right"), abs(left - right)


def build_pyramid(stored: np.ndarray, min_side: int = _PYRAMID_MIN_SIDE) -> list[np.ndarray]:
    """Level 0 is ``stored``; each next level halves both sides by 2x2 block means.

    Integer images stay in their dtype (rounded mean), so the window table of
    :func:`engine.display.window_lut` applies to every level unchanged.

    Args:
        stored: ``(rows, columns)`` stored values (or any 2-D array).
        min_side: Stop when the next level's long side would fall below this.

    Returns:
        Levels, finest first.
    """
    levels = [stored]
    cur = stored
    while max(cur.shape) // 2 >= min_side and min(cur.shape) >= 2:
        h, w = (cur.shape[0] // 2) * 2, (cur.shape[1] // 2) * 2
        c = cur[:h, :w]
        if c.dtype.kind in "ui":
            acc = c[0::2, 0::2].astype(np.int32)
            acc += c[1::2, 0::2]
            acc += c[0::2, 1::2]
            acc += c[1::2, 1::2]
            acc += 2
            acc >>= 2  # floor((sum + 2) / 4): rounded mean, exact for signed values too
            nxt = acc.astype(c.dtype)
        else:
            nxt = (
                c[0::2, 0::2].astype(np.float32)
                + c[1::2, 0::2]
                + c[0::2, 1::2]
                + c[1::2, 1::2]
            ) * np.float32(0.25)
        levels.append(nxt)
        cur = nxt
    return levels


#: A pyramid level may be drawn up to this much enlarged before the next finer level is used
#: (imperceptible; it stops a zoom that hovers at a level boundary from re-rendering every frame).
LEVEL_UPSCALE_TOLERANCE = 1.15


def choose_level(scale: float, n_levels: int) -> int:
    """Pyramid level for a zoom: the coarsest level whose pixels are drawn at most
    :data:`LEVEL_UPSCALE_TOLERANCE` screen pixels wide.

    Args:
        scale: Screen pixels per full-resolution image pixel.
        n_levels: Levels available.

    Returns:
        Level index in ``[0, n_levels - 1]``.
    """
    if scale <= 0 or not math.isfinite(scale):
        return n_levels - 1
    ratio = LEVEL_UPSCALE_TOLERANCE / scale
    level = int(math.floor(math.log2(ratio) + 1e-9)) if ratio >= 1 else 0
    return max(0, min(n_levels - 1, level))


def effective_preset(image: StudyImage, setting: WindowSetting) -> VoiPreset:
    """The VOI preset a setting means for an image (an interactive window replaces the preset)."""
    presets = image.voi_presets
    base = presets[max(0, min(len(presets) - 1, setting.preset_index))]
    if setting.interactive:
        fn = base.function if isinstance(base, VoiWindow) else "LINEAR"
        width = float(setting.width)  # type: ignore[arg-type]
        if fn == "LINEAR":
            width = max(width, 1.0)
        return VoiWindow(center=float(setting.center), width=width, function=fn, explanation="interactive")  # type: ignore[arg-type]
    return base


def window_center_width(image: StudyImage, setting: WindowSetting) -> tuple[float, float]:
    """Centre and width (modality-LUT units) of what a setting shows; tables use their input range."""
    p = effective_preset(image, setting)
    return float(p.center), float(p.width)


def drag_window(
    start: tuple[float, float],
    dx_px: float,
    dy_px: float,
    *,
    value_range: float,
    sensitivity: float = 1.0,
) -> tuple[float, float]:
    """New centre and width after a window/level mouse drag.

    Horizontal drag changes the width multiplicatively (right = wider, 1 % per pixel), vertical
    drag moves the centre by a fraction of the width (down = higher centre = darker image,
    0.4 % of the width per pixel), as on common mammography workstations.

    Args:
        start: ``(center, width)`` when the drag started.
        dx_px: Horizontal mouse displacement since the start, screen pixels.
        dy_px: Vertical mouse displacement since the start, screen pixels (down positive).
        value_range: Span of the image's values; the width is kept in ``[1, 2 * value_range]``.
        sensitivity: Multiplies both rates.

    Returns:
        ``(center, width)``.
    """
    c0, w0 = start
    width = w0 * math.exp(0.01 * sensitivity * dx_px)
    width = float(min(max(width, 1.0), max(2.0 * value_range, 2.0)))
    center = float(c0 + 0.004 * sensitivity * dy_px * w0)
    return center, width


def fit_viewport(
    image_shape: tuple[int, int], widget_size: tuple[float, float], chest_wall: str, *, anchor: bool = True
) -> Viewport:
    """The view that shows a whole image, its chest wall on the widget edge facing the centre line.

    Args:
        image_shape: ``(rows, columns)`` of the full-resolution image.
        widget_size: ``(width, height)`` of the view in screen pixels.
        chest_wall: ``"left"`` or ``"right"``: where the chest wall is in the displayed image.
        anchor: True (the hanging) puts the chest-wall edge of the image on the widget edge on
            the same side; False centres the image.

    Returns:
        The fitted viewport: the image touches the chest-wall edge of the widget (or is centred)
        and is centred vertically, as large as fits.
    """
    rows, cols = image_shape
    w_px, h_px = max(1.0, float(widget_size[0])), max(1.0, float(widget_size[1]))
    scale = min(w_px / cols, h_px / rows)
    # u is measured from the chest-wall edge whichever side it is on, so the anchored centre is
    # half a widget width from it
    center_u = w_px / (2.0 * scale) if anchor else cols / 2.0
    del chest_wall
    return Viewport(center_u=center_u, center_y=rows / 2.0, scale=scale)


def view_ranges(
    vp: Viewport, image_shape: tuple[int, int], widget_size: tuple[float, float], chest_wall: str
) -> tuple[tuple[float, float], tuple[float, float]]:
    """The x and y ranges (display coordinates) one view shows for a viewport.

    Args:
        vp: The viewport.
        image_shape: ``(rows, columns)`` of this view's image.
        widget_size: ``(width, height)`` of this view, screen pixels.
        chest_wall: ``"left"`` or ``"right"`` (this view's displayed chest-wall side).

    Returns:
        ``((x0, x1), (y0, y1))`` with ``x0 < x1`` and ``y0 < y1``.
    """
    cols = image_shape[1]
    half_w = max(1.0, float(widget_size[0])) / (2.0 * vp.scale)
    half_h = max(1.0, float(widget_size[1])) / (2.0 * vp.scale)
    if chest_wall == "left":
        cx = vp.center_u
    else:
        cx = cols - vp.center_u
    return (cx - half_w, cx + half_w), (vp.center_y - half_h, vp.center_y + half_h)


def u_of_x(x: float, cols: int, chest_wall: str) -> float:
    """Chest-wall coordinate of a display ``x``."""
    return x if chest_wall == "left" else cols - x


def zoom_viewport(
    vp: Viewport,
    factor: float,
    anchor_u: float,
    anchor_y: float,
    *,
    min_scale: float = 0.02,
    max_scale: float = 32.0,
) -> Viewport:
    """Zoom by ``factor`` keeping the chest-wall point ``(anchor_u, anchor_y)`` fixed on screen."""
    new_scale = float(min(max(vp.scale * factor, min_scale), max_scale))
    k = vp.scale / new_scale
    return Viewport(
        center_u=anchor_u + (vp.center_u - anchor_u) * k,
        center_y=anchor_y + (vp.center_y - anchor_y) * k,
        scale=new_scale,
    )


def pan_viewport(vp: Viewport, du_px: float, dy_px: float) -> Viewport:
    """Move the view content by screen pixels (``du_px`` toward the chest wall is negative u)."""
    return Viewport(
        center_u=vp.center_u - du_px / vp.scale,
        center_y=vp.center_y - dy_px / vp.scale,
        scale=vp.scale,
    )


@dataclass(eq=False)
class PreparedImage:
    """An image ready for interactive display (built in a worker thread).

    Attributes:
        image: The loaded image.
        key: Its viewer key (slot or relative path).
        flipped: True when the displayed array is the stored array mirrored left-right.
        chest_wall: Displayed chest-wall side (``"left"``/``"right"``), None for US/CESM extras
            where it is not meaningful.
        pyramid: Stored values as displayed (mirrored when ``flipped``), finest first.
        tissue: Low-resolution breast mask of the displayed default rendering.
        value_range: ``(min, max)`` of the modality-LUT values (for window limits).
    """

    image: StudyImage
    key: str
    flipped: bool
    chest_wall: str | None
    pyramid: list[np.ndarray]
    tissue: np.ndarray
    value_range: tuple[float, float]
    _luts: dict = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the full-resolution displayed image."""
        return (int(self.pyramid[0].shape[0]), int(self.pyramid[0].shape[1]))

    def stored_at(self, x: float, y: float) -> tuple[int, int] | None:
        """Stored ``(row, col)`` of the display point ``(x, y)``, or None outside the image."""
        rows, cols = self.shape
        xi, yi = int(math.floor(x)), int(math.floor(y))
        if not (0 <= xi < cols and 0 <= yi < rows):
            return None
        return (yi, cols - 1 - xi) if self.flipped else (yi, xi)

    def lut(self, setting: WindowSetting, invert: bool) -> np.ndarray | None:
        """The ``uint8`` value table for a setting (cached; None for float images)."""
        key = (setting, bool(invert))
        table = self._luts.get(key)
        if table is None and key not in self._luts:
            img = self.image
            try:
                table = window_lut(
                    img.stored.dtype,
                    effective_preset(img, setting),
                    slope=img.rescale_slope,
                    intercept=img.rescale_intercept,
                    modality_lut=img.modality_lut,
                    invert=invert,
                )
            except ValueError:
                table = None
            if len(self._luts) > 16:
                self._luts.clear()
            self._luts[key] = table
        return table

    def invert_for(self, invert_toggle: bool) -> bool:
        """Whether the display is inverted: the file's inversion XOR the reader's toggle."""
        return bool(self.image.inverted_for_display) != bool(invert_toggle)


def render_region(
    prepared: PreparedImage,
    region: Region,
    level: int,
    setting: WindowSetting,
    invert_toggle: bool,
) -> tuple[np.ndarray, Region]:
    """Render part of an image at a pyramid level.

    Args:
        prepared: The image.
        region: Full-resolution display rectangle wanted (clipped to the image).
        level: Pyramid level (0 = full resolution).
        setting: Window setting.
        invert_toggle: The reader's invert toggle.

    Returns:
        ``(uint8 array, covered)``: the rendered pixels and the full-resolution rectangle they
        cover exactly (the wanted one snapped outward to the level's pixel grid).
    """
    level = max(0, min(len(prepared.pyramid) - 1, level))
    arr = prepared.pyramid[level]
    f = 2**level
    rows, cols = arr.shape
    lx0 = max(0, region.x0 // f)
    ly0 = max(0, region.y0 // f)
    lx1 = min(cols, -(-region.x1 // f))
    ly1 = min(rows, -(-region.y1 // f))
    if lx1 <= lx0 or ly1 <= ly0:
        return np.zeros((0, 0), np.uint8), Region(0, 0, 0, 0)
    crop = arr[ly0:ly1, lx0:lx1]
    invert = prepared.invert_for(invert_toggle)
    table = prepared.lut(setting, invert)
    if table is not None:
        out = apply_lut(crop, table)
    else:
        img = prepared.image
        out = render_array(
            crop,
            effective_preset(img, setting),
            slope=img.rescale_slope,
            intercept=img.rescale_intercept,
            modality_lut=img.modality_lut,
            invert=invert,
        )
    # Full-resolution extent of the level's pixels (the last level pixel may cover a dropped
    # odd row/column of the finer level: clamp to the image).
    full_rows, full_cols = prepared.shape
    covered = Region(lx0 * f, ly0 * f, min(full_cols, lx1 * f), min(full_rows, ly1 * f))
    return np.ascontiguousarray(out), covered


def _value_range(image: StudyImage) -> tuple[float, float]:
    thumb = _thumbnail(image.stored, 512)
    img = image
    if img.modality_lut is not None:
        first, table = img.modality_lut
        idx = np.clip(thumb.astype(np.int64) - first, 0, len(table) - 1)
        vals = np.asarray(table)[idx].astype(np.float64)
    else:
        vals = thumb.astype(np.float64) * img.rescale_slope + img.rescale_intercept
    return float(vals.min()), float(vals.max())


def prepare_image(image: StudyImage, key: str, *, side_rule: bool = True) -> PreparedImage:
    """Orientation, pyramid, tissue mask and value range of one image.

    Args:
        image: A loaded image.
        key: Its viewer key (see :func:`image_key`).
        side_rule: For MG images of a known breast, mirror the display when the measured chest
            wall is on the wrong side for the standard hanging (right breast: right edge, left
            breast: left edge) and the measurement is clear (confidence >= 0.2).

    Returns:
        The prepared image.
    """
    display = image.display
    flipped = False
    chest_wall: str | None = None
    if image.kind in ("MG", "CESM") and image.laterality in CHEST_WALL_FOR_SIDE:
        want = CHEST_WALL_FOR_SIDE[image.laterality]
        measured, confidence = chest_wall_side(display)
        if side_rule and measured != want and confidence >= 0.2:
            logger.info(
                "%s: chest wall measured on the %s edge; mirrored for display", image.relpath, measured
            )
            flipped = True
        chest_wall = want
    stored = image.stored[:, ::-1] if flipped else image.stored
    pyramid = build_pyramid(np.ascontiguousarray(stored) if flipped else stored)
    shown = display[:, ::-1] if flipped else display
    return PreparedImage(
        image=image,
        key=key,
        flipped=flipped,
        chest_wall=chest_wall,
        pyramid=pyramid,
        tissue=tissue_mask(shown),
        value_range=_value_range(image),
    )


def prepare_study(
    study: Study,
    *,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, PreparedImage]:
    """Prepare every image a reader sees: the four slots, then CESM, ultrasound and extras.

    Args:
        study: The loaded study.
        cancel: Returns True to stop early (the images prepared so far are returned).
        progress: Called with ``(fraction, what)``.

    Returns:
        ``{key: PreparedImage}``, slots first in :data:`STANDARD_VIEWS` order.
    """
    todo = [study.views[k] for k in STANDARD_VIEWS if k in study.views]
    todo += list(study.cesm) + list(study.ultrasound) + [e.image for e in study.extras]
    out: dict[str, PreparedImage] = {}
    for i, image in enumerate(todo):
        if cancel is not None and cancel():
            break
        p = prepare_image(image, image_key(study, image))
        out[p.key] = p
        if progress is not None:
            progress((i + 1) / len(todo), p.key)
    return out


def pixel_readout(prepared: PreparedImage, x: float, y: float) -> str | None:
    """The status-bar readout of the pixel under display point ``(x, y)``.

    Returns:
        ``"R-CC  x 1203  y 2210  stored 1834  value 1834"`` (column/row of the *stored* image,
        stored value, modality-LUT value), or None outside the image.
    """
    rc = prepared.stored_at(x, y)
    if rc is None:
        return None
    row, col = rc
    img = prepared.image
    stored = img.stored[row, col]
    if img.modality_lut is not None:
        first, table = img.modality_lut
        value = float(table[int(np.clip(int(stored) - first, 0, len(table) - 1))])
    else:
        value = float(stored) * img.rescale_slope + img.rescale_intercept
    sval = f"{stored:.4g}" if np.issubdtype(type(stored), np.floating) else f"{int(stored)}"
    return f"{prepared.key}  x {col}  y {row}  stored {sval}  value {value:.6g}"
