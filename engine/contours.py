"""Masks and probability maps -> simplified polygons, in original pixel coordinates.

Polygons are ``(N, 2)`` float arrays of ``(x, y)`` = (column, row) with pixel centres at integer
coordinates, closed (the first vertex is repeated at the end), traced with marching squares
(:func:`skimage.measure.find_contours`) on the iso-line ``level`` of a map, so a binary mask's
contour runs half-way between inside and outside pixel centres: the polygon's area is close to
the mask's pixel count (a drawn disc of radius r gives a polygon whose area-equivalent radius is
r within a few tenths of a pixel, centred on the disc). Borders are handled by padding the map,
so a region touching the image edge is a closed polygon along the edge (x = -0.5, ...). Polygons are simplified with the
Douglas-Peucker algorithm (:func:`skimage.measure.approximate_polygon`) and tiny ones dropped.

:func:`map_contours` traces in model space and maps the vertices through a view's
:class:`~engine.preprocess.Geometry` (exact affine map: scale, flip, shift), which is much cheaper
than tracing a full-field map of 4096 x 3328 pixels.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from engine.preprocess import Geometry

__all__ = ["mask_contours", "polygon_area", "polygon_centroid", "map_contours"]

logger = logging.getLogger(__name__)


def polygon_area(poly: np.ndarray) -> float:
    """Area (shoelace formula, absolute value) of a closed or open ``(N, 2)`` polygon."""
    p = np.asarray(poly, dtype=np.float64)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def polygon_centroid(poly: np.ndarray) -> np.ndarray:
    """Area centroid ``(x, y)`` of a simple polygon (vertex mean when the area is zero)."""
    p = np.asarray(poly, dtype=np.float64)
    if len(p) > 1 and np.array_equal(p[0], p[-1]):
        p = p[:-1]
    x, y = p[:, 0], p[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    a = cross.sum() / 2.0
    if abs(a) < 1e-12:
        return p.mean(axis=0)
    return np.array([((x + x1) * cross).sum() / (6 * a), ((y + y1) * cross).sum() / (6 * a)])


def mask_contours(
    mask: np.ndarray,
    *,
    level: float = 0.5,
    tolerance: float = 0.5,
    min_area: float = 4.0,
) -> list[np.ndarray]:
    """Trace the outlines of a binary mask or of a probability/heat map at ``level``.

    Args:
        mask: ``(rows, columns)`` bool, integer or float map.
        level: Iso-value traced (0.5 for a mask or a probability map).
        tolerance: Douglas-Peucker tolerance in pixels (0 keeps every vertex).
        min_area: Polygons enclosing less than this many square pixels are dropped.

    Returns:
        Closed ``(N, 2)`` float64 polygons of ``(x, y)``, largest first.
    """
    from skimage.measure import approximate_polygon, find_contours

    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {m.shape}")
    m = m.astype(np.float32, copy=False)
    if m.size == 0 or not (m > level).any():
        return []
    # pad so that a region touching the border closes exactly on the image edge (x = -0.5 ...):
    # outside values mirror the edge values about the level where the edge is inside, and copy
    # them (no crossing) where it is not
    edge = np.pad(m, 1, mode="edge")
    padded = np.minimum(edge, 2.0 * level - edge)
    padded[1:-1, 1:-1] = m
    polys: list[np.ndarray] = []
    for rc in find_contours(padded, level):
        xy = np.stack([rc[:, 1] - 1.0, rc[:, 0] - 1.0], axis=1)
        if tolerance > 0:
            xy = approximate_polygon(xy, tolerance=tolerance)
        if not np.array_equal(xy[0], xy[-1]):
            xy = np.vstack([xy, xy[:1]])
        if polygon_area(xy) >= min_area:
            polys.append(xy)
    polys.sort(key=polygon_area, reverse=True)
    return polys


def map_contours(
    m: np.ndarray,
    geometry: Geometry,
    *,
    level: float = 0.5,
    tolerance: float = 0.5,
    min_area: float = 1.0,
    decimals: int | None = 2,
) -> list[np.ndarray]:
    """Trace a model-space map and return its polygons in the view's original pixels.

    Args:
        m: ``(h, w)`` map over the model input (any resolution).
        geometry: The view's geometry.
        level: Iso-value traced.
        tolerance: Simplification tolerance in pixels of ``m``.
        min_area: Minimum area in pixels of ``m``.
        decimals: Round the vertices (2: a hundredth of a pixel; None keeps them as computed).

    Returns:
        Closed ``(N, 2)`` polygons of original ``(x, y)``, largest first.
    """
    out = []
    for poly in mask_contours(m, level=level, tolerance=tolerance, min_area=min_area):
        xy = geometry.model_to_original_xy(poly, map_shape=m.shape)
        out.append(np.round(xy, decimals) if decimals is not None else xy)
    return out
