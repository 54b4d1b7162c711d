"""Masks -> polygons in original pixel coordinates."""

from __future__ import annotations

import numpy as np
import pytest

from engine.contours import map_contours, mask_contours, polygon_area, polygon_centroid
from engine.preprocess import Geometry


def _disc(shape: tuple[int, int], cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


@pytest.mark.parametrize("r", [6.0, 23.5, 60.0])
def test_drawn_disc_centre_and_radius_within_a_pixel(r: float) -> None:
    cx, cy = 101.3, 77.8
    polys = mask_contours(_disc((200, 230), cx, cy, r))
    assert len(polys) == 1
    poly = polys[0]
    assert np.array_equal(poly[0], poly[-1])  # closed
    x, y = polygon_centroid(poly)
    assert abs(x - cx) < 1.0 and abs(y - cy) < 1.0
    radii = np.hypot(poly[:-1, 0] - cx, poly[:-1, 1] - cy)
    assert abs(radii.mean() - r) < 1.0 and radii.max() - radii.min() < 2.0
    assert abs(np.sqrt(polygon_area(poly) / np.pi) - r) < 1.0
    # simplified: far fewer vertices than boundary pixels
    assert len(poly) < 2 * np.pi * r


def test_border_region_closes_along_the_edge_and_empty_gives_nothing() -> None:
    m = np.zeros((30, 30), bool)
    m[:6, :10] = True
    (poly,) = mask_contours(m, tolerance=0)
    assert poly[:, 0].min() == -0.5 and poly[:, 1].min() == -0.5
    assert mask_contours(np.zeros((10, 10), bool)) == []
    assert mask_contours(np.full((10, 10), 0.3, np.float32)) == []


def test_two_regions_largest_first_and_specks_dropped() -> None:
    m = _disc((100, 100), 30, 30, 12) | _disc((100, 100), 75, 70, 5)
    m[90, 5] = True  # a single pixel
    polys = mask_contours(m, min_area=4.0)
    assert len(polys) == 2
    assert polygon_area(polys[0]) > polygon_area(polys[1])
    assert np.allclose(polygon_centroid(polys[0]), (30, 30), atol=1.0)


def test_model_space_polygons_land_in_original_pixels_flip_undone() -> None:
    geo = Geometry((900, 700), (50, 850, 200, 700), True, (64, 64))
    # a disc in model space around model (x=16, y=40)
    polys = map_contours(_disc((64, 64), 16, 40, 6).astype(np.float32), geo)
    assert len(polys) == 1
    centre = polygon_centroid(polys[0])
    (ex, ey), = geo.model_to_original_xy(np.array([[16.0, 40.0]]))
    foot_r, foot_c = geo.footprint()
    assert abs(centre[0] - ex) < foot_c and abs(centre[1] - ey) < foot_r
    assert centre[0] > 450  # model x = 16 of a flipped (right) view is in the right half
    assert np.all(polys[0] == np.round(polys[0], 2))
