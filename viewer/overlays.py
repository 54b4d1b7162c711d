"""Overlays as pure functions: an AI result -> arrays and polygons in view (display) coordinates.

Nothing here imports Qt; the widgets only hand these arrays to pyqtgraph items.

View coordinates are the display coordinates of ``viewer.imaging``: the displayed image's pixel
``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``. The engine gives heatmaps in the
original pixel grid and polygons with pixel centres at integer coordinates (``engine.contours``),
so a vertex ``(x, y)`` of the original image is drawn at ``(x + 0.5, y + 0.5)``, or at
``(cols - x - 0.5, y + 0.5)`` when the view mirrors the image.

Heatmaps are shown as a second, RGBA image over the mammogram (Grad-CAM, seed 000 and SPEC
section 5): the colour comes from a colour map of the normalised map value and the alpha grows
with it, so cold regions stay transparent and the mammogram shows through; the reader's opacity
slider scales the whole layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

__all__ = [
    "COLORMAP_ANCHORS",
    "colormap_table",
    "heatmap_display_map",
    "heatmap_rgba",
    "rgba_table",
    "contour_path",
    "join_paths",
    "breast_outline",
    "attention_percentages",
    "ruler_length",
    "ruler_text",
    "format_probability",
    "birads_bars",
    "target_label",
    "label_corner",
]

#: Colour maps as anchors ``(position, (r, g, b))``, interpolated linearly in RGB.
COLORMAP_ANCHORS: dict[str, list[tuple[float, tuple[int, int, int]]]] = {
    "jet": [
        (0.0, (0, 0, 128)),
        (0.125, (0, 0, 255)),
        (0.375, (0, 255, 255)),
        (0.625, (255, 255, 0)),
        (0.875, (255, 0, 0)),
        (1.0, (128, 0, 0)),
    ],
    "hot": [(0.0, (0, 0, 0)), (0.375, (255, 0, 0)), (0.75, (255, 255, 0)), (1.0, (255, 255, 255))],
    "inferno": [
        (0.0, (0, 0, 4)),
        (0.125, (31, 12, 72)),
        (0.25, (85, 15, 109)),
        (0.375, (136, 34, 106)),
        (0.5, (186, 54, 85)),
        (0.625, (227, 89, 51)),
        (0.75, (249, 140, 10)),
        (0.875, (249, 201, 50)),
        (1.0, (252, 255, 164)),
    ],
    "viridis": [
        (0.0, (68, 1, 84)),
        (0.125, (71, 44, 122)),
        (0.25, (59, 81, 139)),
        (0.375, (44, 113, 142)),
        (0.5, (33, 144, 141)),
        (0.625, (39, 173, 129)),
        (0.75, (92, 200, 99)),
        (0.875, (170, 220, 50)),
        (1.0, (253, 231, 37)),
    ],
}

#: Heat below this is fully transparent; alpha ramps up to full at ``_ALPHA_FULL``.
_ALPHA_FLOOR = 0.15
_ALPHA_FULL = 0.55
#: Long side of the heatmap image handed to the screen (maps are smooth upsampled CAMs).
HEATMAP_MAX_SIDE = 512


def colormap_table(name: str) -> np.ndarray:
    """A ``(256, 3)`` ``uint8`` table for a colour map of :data:`COLORMAP_ANCHORS`.

    Raises:
        KeyError: Unknown colour map.
    """
    anchors = COLORMAP_ANCHORS[name]
    pos = np.array([a[0] for a in anchors])
    rgb = np.array([a[1] for a in anchors], dtype=np.float64)
    x = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(x, pos, rgb[:, c]) for c in range(3)], axis=1)
    return np.rint(table).astype(np.uint8)


def heatmap_display_map(heatmap: np.ndarray, flipped: bool, max_side: int = HEATMAP_MAX_SIDE) -> np.ndarray:
    """Reduce an original-grid heatmap for display: area-averaged to ``max_side``, mirrored as the view.

    Args:
        heatmap: ``(rows, columns)`` float map in ``[0, 1]`` (``result.heatmaps[view]``).
        flipped: The view mirrors the image (see ``PreparedImage.flipped``).
        max_side: Long side of the output.

    Returns:
        ``float32`` map; drawn stretched over the whole image ``[0, cols] x [0, rows]``.
    """
    h = np.asarray(heatmap, dtype=np.float32)
    rows, cols = h.shape
    f = max(rows, cols) / float(max_side)
    if f > 1.0:
        out_w, out_h = max(1, int(round(cols / f))), max(1, int(round(rows / f)))
        h = cv2.resize(h, (out_w, out_h), interpolation=cv2.INTER_AREA)
    if flipped:
        h = h[:, ::-1]
    return np.ascontiguousarray(np.clip(h, 0.0, 1.0), dtype=np.float32)


def rgba_table(colormap: str) -> np.ndarray:
    """``(256, 4)`` ``uint8``: colour and alpha of each quantised heat level ``i / 255``."""
    table = np.empty((256, 4), np.uint8)
    table[:, :3] = colormap_table(colormap)
    level = np.arange(256) / 255.0
    alpha = np.clip((level - _ALPHA_FLOOR) / (_ALPHA_FULL - _ALPHA_FLOOR), 0.0, 1.0)
    table[:, 3] = np.rint(alpha * 255.0).astype(np.uint8)
    return table


def heatmap_rgba(m: np.ndarray, colormap: str) -> np.ndarray:
    """Colour a display heatmap: RGB from the colour map, alpha rising with the heat.

    The map is quantised to 256 levels and looked up in :func:`rgba_table` as 32-bit words (one
    gather per pixel).

    Args:
        m: Float map in ``[0, 1]`` (from :func:`heatmap_display_map`).
        colormap: A name of :data:`COLORMAP_ANCHORS`.

    Returns:
        ``(h, w, 4)`` ``uint8``; alpha is 0 below 0.15 and 255 from 0.55 up, linear between.
    """
    table = np.ascontiguousarray(rgba_table(colormap)).view(np.uint32).reshape(256)
    idx = np.empty(m.shape, np.float32)
    np.multiply(m, 255.0, out=idx)
    np.clip(idx, 0.0, 255.0, out=idx)
    np.rint(idx, out=idx)
    words = table[idx.astype(np.uint8)]
    return words.view(np.uint8).reshape(m.shape + (4,))


def contour_path(
    polygons: Iterable[np.ndarray], cols: int, flipped: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Polygons in original pixels -> one path in view coordinates, polygons separated by NaN.

    Args:
        polygons: ``(N, 2)`` arrays of original ``(x, y)`` (pixel centres at integers).
        cols: Image width (for the mirror).
        flipped: The view mirrors the image.

    Returns:
        ``(xs, ys)`` float arrays (closed polygons; ``connect="finite"`` draws them apart).
    """
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for poly in polygons:
        p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(p) < 2:
            continue
        if not np.array_equal(p[0], p[-1]):
            p = np.vstack([p, p[:1]])
        x = p[:, 0] + 0.5
        if flipped:
            x = cols - x
        xs += [x, np.array([np.nan])]
        ys += [p[:, 1] + 0.5, np.array([np.nan])]
    if not xs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(xs[:-1]), np.concatenate(ys[:-1])


def join_paths(polygons: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Polygons already in view coordinates -> ``(xs, ys)`` separated by NaN."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for poly in polygons:
        p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        xs += [p[:, 0], np.array([np.nan])]
        ys += [p[:, 1], np.array([np.nan])]
    if not xs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(xs[:-1]), np.concatenate(ys[:-1])


def breast_outline(tissue: np.ndarray, shape: tuple[int, int]) -> list[np.ndarray]:
    """The breast outline of a view from its low-resolution tissue mask, in display coordinates.

    The largest connected region of the mask (closed and opened by 3 x 3 to drop noise and fill
    pinholes, then smoothed by a Gaussian of 1 mask pixel) is traced with OpenCV's border
    following and simplified by 1 mask pixel.

    Args:
        tissue: bool mask of the strided thumbnail (``viewer.imaging.tissue_mask``).
        shape: ``(rows, columns)`` of the full-resolution displayed image.

    Returns:
        ``(N, 2)`` polylines of ``(x, y)`` view coordinates: the outline of the largest region
        without the stretches along the image border (empty when there is no tissue).
    """
    if tissue.size == 0 or not tissue.any():
        return []
    m = tissue.astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, k)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, k)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return []
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    # smooth the pixel staircase of the low-resolution mask before tracing it
    soft = cv2.GaussianBlur((labels == biggest).astype(np.float32), (5, 5), 1.0)
    m = (soft >= 0.5).astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return []
    c = max(contours, key=cv2.contourArea)
    c = cv2.approxPolyDP(c, 1.0, True).reshape(-1, 2).astype(np.float64)
    sy = shape[0] / tissue.shape[0]
    sx = shape[1] / tissue.shape[1]
    xy = np.column_stack([(c[:, 0] + 0.5) * sx, (c[:, 1] + 0.5) * sy])
    xy[:, 0] = np.clip(xy[:, 0], 0, shape[1])
    xy[:, 1] = np.clip(xy[:, 1], 0, shape[0])
    closed = np.vstack([xy, xy[:1]])
    # The skin line only: drop the stretches that run along the image border (the chest wall
    # edge, or where the breast is cut by the detector), which are not an outline of anything.
    on_edge = (
        (closed[:, 0] <= 1.01 * sx)
        | (closed[:, 0] >= shape[1] - 1.01 * sx)
        | (closed[:, 1] <= 1.01 * sy)
        | (closed[:, 1] >= shape[0] - 1.01 * sy)
    )
    pieces: list[np.ndarray] = []
    current: list[np.ndarray] = [closed[0]]
    for i in range(1, len(closed)):
        if on_edge[i] and on_edge[i - 1]:
            if len(current) >= 2:
                pieces.append(np.array(current))
            current = [closed[i]]
        else:
            current.append(closed[i])
    if len(current) >= 2:
        pieces.append(np.array(current))
    return pieces


def attention_percentages(attention: Mapping[str, float], views: Sequence[str]) -> dict[str, int]:
    """Whole percentages of the view attention weights that add up to exactly 100.

    Largest-remainder rounding (Hamilton's method): floor every share, then give the missing
    points to the largest remainders. A view with weight 0 (missing) always shows 0 %.

    Args:
        attention: ``{view: alpha}`` (alpha >= 0, present views sum to 1).
        views: The views to show, in order.

    Returns:
        ``{view: percent}``; all zeros when every weight is 0.
    """
    w = np.array([max(0.0, float(attention.get(v, 0.0))) for v in views], dtype=np.float64)
    total = w.sum()
    if total <= 0:
        return {v: 0 for v in views}
    shares = w / total * 100.0
    floors = np.floor(shares).astype(int)
    short = 100 - int(floors.sum())
    order = np.argsort(-(shares - floors), kind="stable")
    for i in order[:short]:
        if w[i] > 0:
            floors[i] += 1
    return {v: int(p) for v, p in zip(views, floors)}


def ruler_length(
    p0: tuple[float, float], p1: tuple[float, float], spacing_mm: tuple[float, float] | None
) -> tuple[float, str]:
    """Length of a line between two display points.

    Args:
        p0: ``(x, y)`` start, image pixels.
        p1: ``(x, y)`` end, image pixels.
        spacing_mm: ``(row, column)`` spacing, or None.

    Returns:
        ``(length, unit)`` with unit ``"mm"`` (when a spacing is known) or ``"px"``.
    """
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    if spacing_mm is None:
        return math.hypot(dx, dy), "px"
    return math.hypot(dx * spacing_mm[1], dy * spacing_mm[0]), "mm"


def ruler_text(
    p0: tuple[float, float],
    p1: tuple[float, float],
    spacing_mm: tuple[float, float] | None,
    calibrated: bool,
) -> str:
    """The ruler's label: ``"23.4 mm"`` (calibrated spacing), ``"23.4 mm (uncalibrated)"`` (a
    spacing of the detector or with no calibration information) or ``"812 px (uncalibrated)"``."""
    length, unit = ruler_length(p0, p1, spacing_mm)
    if unit == "px":
        return f"{length:.0f} px (uncalibrated)"
    if calibrated:
        return f"{length:.1f} mm"
    return f"{length:.1f} mm (uncalibrated)"


def format_probability(p: float | None) -> str:
    """``0.734 -> "73 %"``; ``0.004 -> "<1 %"``; None -> ``"n/a"``."""
    if p is None or not math.isfinite(p):
        return "n/a"
    pct = 100.0 * float(p)
    if 0 < pct < 1:
        return "<1 %"
    if 99 < pct < 100:
        return ">99 %"
    return f"{pct:.0f} %"


def birads_bars(p_birads: Mapping[Any, float]) -> list[tuple[str, float]]:
    """``{category: p}`` -> ``[("BI-RADS 1", p1), ...]`` in category order."""

    def order(k: Any) -> tuple[int, str]:
        try:
            return (int(k), "")
        except (TypeError, ValueError):
            return (99, str(k))

    return [(f"BI-RADS {k}", float(v)) for k, v in sorted(p_birads.items(), key=lambda kv: order(kv[0]))]


def target_label(target: str) -> str:
    """A reader's name for a Grad-CAM target text (``engine.CamTarget`` form)."""
    parts = [p for p in str(target).split(":") if p]
    if not parts:
        return "Malignancy"
    task = parts[0].lower()
    side = next((p for p in parts[1:] if p.upper() in ("L", "R")), None)
    label = next((p for p in parts[1:] if p.upper() not in ("L", "R")), None)
    where = {None: "each breast", "L": "left breast", "R": "right breast"}[side.upper() if side else None]
    if task == "malignancy":
        name = "Malignancy" if label in (None, "malignant") else f"Pathology: {label}"
    elif task == "birads":
        name = f"BI-RADS {label}" if label is not None else "BI-RADS (highest)"
    else:
        name = task
    return f"{name} ({where})"


def label_corner(
    tissue: np.ndarray,
    shape: tuple[int, int],
    ranges: tuple[tuple[float, float], tuple[float, float]],
    widget_size: tuple[float, float],
    box_size: tuple[float, float],
    preference: Sequence[str],
) -> str:
    """The widget corner where a label box covers the least breast tissue.

    Args:
        tissue: Low-resolution tissue mask of the displayed image.
        shape: ``(rows, columns)`` of the full-resolution displayed image.
        ranges: ``((x0, x1), (y0, y1))`` the view shows (display coordinates).
        widget_size: ``(width, height)`` of the view, screen pixels.
        box_size: ``(width, height)`` of the label box, screen pixels (margin included).
        preference: Corner names in order of preference (``"top-left"``, ``"top-right"``,
            ``"bottom-left"``, ``"bottom-right"``); ties keep this order.

    Returns:
        The chosen corner: the first of ``preference`` with (almost) no tissue under the box,
        else the one with the least.
    """
    (x0, x1), (y0, y1) = ranges
    ww, wh = max(1.0, widget_size[0]), max(1.0, widget_size[1])
    bw, bh = box_size
    rows, cols = shape
    sy = tissue.shape[0] / rows
    sx = tissue.shape[1] / cols
    best, best_cover = preference[0], float("inf")
    for corner in preference:
        left = corner.endswith("left")
        top = corner.startswith("top")
        px0, px1 = (0.0, bw) if left else (ww - bw, ww)
        py0, py1 = (0.0, bh) if top else (wh - bh, wh)
        ix0 = x0 + (x1 - x0) * px0 / ww
        ix1 = x0 + (x1 - x0) * px1 / ww
        iy0 = y0 + (y1 - y0) * py0 / wh
        iy1 = y0 + (y1 - y0) * py1 / wh
        c0 = int(np.clip(math.floor(ix0 * sx), 0, tissue.shape[1]))
        c1 = int(np.clip(math.ceil(ix1 * sx), 0, tissue.shape[1]))
        r0 = int(np.clip(math.floor(iy0 * sy), 0, tissue.shape[0]))
        r1 = int(np.clip(math.ceil(iy1 * sy), 0, tissue.shape[0]))
        cover = float(tissue[r0:r1, c0:c1].mean()) if (c1 > c0 and r1 > r0) else 0.0
        if cover <= 0.01:
            return corner
        if cover < best_cover:
            best, best_cover = corner, cover
    return best
