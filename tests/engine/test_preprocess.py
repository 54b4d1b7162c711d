"""Preprocessing: display orientation, breast box, normalisation, flip, resize and the geometry back."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from _inference_toys import make_breast, make_image, make_study

from engine.errors import Cancelled
from engine.preprocess import (
    BreastBox,
    Geometry,
    StudyPreprocessor,
    ViewPreprocessor,
    otsu_threshold,
)
from engine.study import STANDARD_VIEWS


def _ellipse_extent(shape: tuple[int, int], right: bool) -> tuple[float, float, float, float]:
    """Row/column extent of make_breast's ellipse (row0, row1, col0, col1), inclusive pixels."""
    rows, cols = shape
    cy, ry, rx = (rows - 1) / 2.0, 0.42 * rows, 0.7 * cols
    c0, c1 = (cols - 1 - rx, cols - 1) if right else (0, rx)
    return cy - ry, cy + ry, c0, c1


@pytest.mark.parametrize("right", [False, True])
@pytest.mark.parametrize("inverted", [False, True])
def test_dot_maps_back_to_its_original_pixel(right: bool, inverted: bool) -> None:
    shape = (300, 220)
    dot = (97, 170) if right else (97, 50)  # (row, col), inside the breast
    key = "R-MLO" if right else "L-MLO"
    arr = make_breast(shape, right=right, dots=(dot,), inverted=inverted, label=False)
    prepared = ViewPreprocessor(64)(make_image(key, arr, inverted=inverted), key)
    geo = prepared.geometry
    assert geo.flipped is right
    foot_r, foot_c = geo.footprint()

    # the model-space maximum, mapped as a point, lands on the dot within one model pixel
    my, mx = np.unravel_index(np.argmax(prepared.array), prepared.array.shape)
    (ox, oy), = geo.model_to_original_xy(np.array([[mx, my]]))
    assert abs(oy - dot[0]) <= foot_r and abs(ox - dot[1]) <= foot_c

    # the model-space array mapped back as a map peaks at the dot too (flip undone)
    back = geo.to_original(prepared.array)
    assert back.shape == shape
    r, c = np.unravel_index(np.argmax(back), back.shape)
    assert abs(r - dot[0]) <= foot_r and abs(c - dot[1]) <= foot_c

    # and the dot's original position goes to that model pixel
    (px, py), = geo.original_to_model_xy(np.array([[dot[1], dot[0]]]))
    assert abs(px - mx) <= 1.0 and abs(py - my) <= 1.0


def test_right_breast_is_the_mirror_of_the_left() -> None:
    left = make_breast((200, 150), right=False, dots=((60, 40),), seed=3)
    right = np.ascontiguousarray(left[:, ::-1])
    pre = ViewPreprocessor(48)
    a = pre(make_image("L-CC", left), "L-CC")
    b = pre(make_image("R-CC", right), "R-CC")
    # both breasts face the same way in model space
    np.testing.assert_allclose(a.array, b.array, atol=1e-5)
    r0, r1, c0, c1 = a.geometry.box
    assert b.geometry.box == (r0, r1, 150 - c1, 150 - c0)


def test_geometry_points_round_trip_and_maps_agree() -> None:
    geo = Geometry((1000, 800), (100, 900, 300, 800), True, (64, 64))
    pts = np.array([[0.0, 0.0], [63.0, 63.0], [10.25, 40.5]])
    np.testing.assert_allclose(geo.original_to_model_xy(geo.model_to_original_xy(pts)), pts)
    # a map at feature resolution: a one-cell spike maps to the box region of that cell
    m = np.zeros((8, 8), np.float32)
    m[2, 1] = 1.0  # row 2, col 1 in model space (flipped)
    full = geo.to_original(m)
    r, c = np.unravel_index(np.argmax(full), full.shape)
    (cx, cy), = geo.model_to_original_xy(np.array([[1.0, 2.0]]), map_shape=(8, 8))
    assert abs(r - cy) <= 1 and abs(c - cx) <= 1
    assert cx > 700  # col 1 of a flipped map is near the right edge of the box
    assert full[:100].max() == 0 and full[:, :300].max() == 0  # zero outside the box
    assert Geometry.from_dict(geo.to_dict()) == geo


def test_to_model_then_back_preserves_smooth_content() -> None:
    geo = Geometry((400, 300), (20, 380, 0, 250), False, (128, 128))
    yy, xx = np.mgrid[0:400, 0:300].astype(np.float32)
    a = np.sin(xx / 40.0) + np.cos(yy / 50.0)
    back = geo.to_original(geo.to_model(a))
    inner = (slice(30, 370), slice(10, 240))
    np.testing.assert_allclose(back[inner], a[inner], atol=0.02)


def test_breast_box_finds_the_breast_and_drops_the_label() -> None:
    shape = (1024, 832)  # stride 4 thumbnail
    for right in (False, True):
        arr = make_breast(shape, right=right, label=True, seed=1)
        prepared = ViewPreprocessor(64)(make_image("R-CC" if right else "L-CC", arr))
        r0, r1, c0, c1 = prepared.geometry.box
        e_r0, e_r1, e_c0, e_c1 = _ellipse_extent(shape, right)
        slack = 0.01 * 1024 + 2 * 4 + 2  # margin + thumbnail stride uncertainty
        assert e_r0 - slack <= r0 <= e_r0 and e_r1 < r1 <= e_r1 + slack + 1
        assert e_c0 - slack <= c0 <= max(e_c0, 0) + 1 and e_c1 < c1 <= e_c1 + slack + 1
        # the burnt-in label sits in the far top corner, outside the ellipse's columns
        label_cols = (int(0.05 * 832), int(0.15 * 832)) if right else (int(0.85 * 832), 832)
        assert c1 <= label_cols[0] or c0 >= label_cols[1]


def test_normalisation_air_zero_dense_one_and_inversion_invariant() -> None:
    arr = make_breast((240, 200), right=False, label=False, seed=2)
    pre = ViewPreprocessor(64)
    a = pre(make_image("L-CC", arr), "L-CC")
    assert a.array.dtype == np.float32 and a.array.min() == 0.0 and a.array.max() == 1.0
    assert a.levels[0] == pytest.approx(150.0, abs=10.0)  # the air level maps to 0
    # MONOCHROME1 storage of the same image: identical model input
    inv = pre(make_image("L-CC", (4095 - arr).astype(np.uint16), inverted=True), "L-CC")
    np.testing.assert_allclose(inv.array, a.array, atol=1e-5)
    assert inv.geometry == a.geometry
    # the dense core is brighter than the periphery
    h, w = a.array.shape
    assert a.array[h // 2, 2] > a.array[h // 2, int(0.8 * w)] > 0.0


def test_linear_fast_path_matches_the_modality_lut_values() -> None:
    arr = make_breast((260, 200), right=True, dots=((80, 150),), seed=4)
    img = dataclasses.replace(make_image("R-CC", arr), rescale_slope=2.0, rescale_intercept=-100.0)
    table = (2.0 * np.arange(4096) - 100.0).astype(np.float32)
    lut = dataclasses.replace(make_image("R-CC", arr), modality_lut=(0, table))
    np.testing.assert_array_equal(img.values(), lut.values())
    pre = ViewPreprocessor(64)
    fast, slow = pre(img, "R-CC"), pre(lut, "R-CC")
    assert fast.geometry == slow.geometry
    # resizing the stored integers rounds to half a stored unit: ~1e-3 of the [0, 1] range
    np.testing.assert_allclose(fast.array, slow.array, atol=2e-3)


def test_study_preprocessor_layout_missing_views_and_determinism(tmp_path: Path) -> None:
    study = make_study(tmp_path / "s", (120, 96), views=("R-CC", "L-MLO"))
    pre = StudyPreprocessor(32)
    p = pre(study)
    assert p.images.shape == (4, 1, 32, 32) and p.images.dtype == np.float32
    np.testing.assert_array_equal(p.missing, [False, True, True, False])
    assert set(p.geometries) == {"R-CC", "L-MLO"}
    assert not p.images[1].any() and not p.images[2].any()
    assert p.images[0].max() == 1.0 and p.images[3].max() == 1.0
    q = pre(study)
    np.testing.assert_array_equal(p.images, q.images)
    assert p.study_id == "s"


def test_cancel_stops_preprocessing(tmp_path: Path) -> None:
    study = make_study(tmp_path / "s", (80, 64))
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled) as info:
        StudyPreprocessor(32)(study, cancel=cancel)
    assert "s:" in str(info.value) and len(calls) == 3


def test_spec_round_trip() -> None:
    pre = StudyPreprocessor((64, 48), flip_right=False)
    spec = pre.spec()
    assert spec["views"] == list(STANDARD_VIEWS) and spec["size"] == [64, 48]
    again = StudyPreprocessor.from_spec(spec)
    assert again.in_size == (64, 48) and again.view.flip_right is False
    with pytest.raises(ValueError, match="unknown preprocessing"):
        StudyPreprocessor.from_spec({"preprocessing": {"name": "something-else"}})


def test_otsu_splits_two_classes_in_the_middle_of_the_gap() -> None:
    x = np.concatenate([np.full(500, 10.0), np.full(300, 90.0)])
    t = otsu_threshold(x)
    assert 40.0 <= t <= 60.0
    assert otsu_threshold(np.full(10, 3.0)) == 3.0


def test_whole_image_when_no_breast_is_found() -> None:
    flat = np.full((50, 40), 1000, np.uint16)
    p = ViewPreprocessor(16)(make_image("L-CC", flat), "L-CC")
    assert p.geometry.box == (0, 50, 0, 40)
    assert np.all(p.array == 0.0)  # a flat image has no contrast to show
    box = BreastBox()
    assert box.stride((4096, 3328)) == 16
