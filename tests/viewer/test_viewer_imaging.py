"""Display maths without widgets: orientation, pyramid, window/level, viewports, overlays."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import engine
from engine.display import render
from study_factory import SLOT_FILES, breast_pixels, write_study
from viewer.imaging import (
    Region,
    WindowSetting,
    build_pyramid,
    chest_wall_side,
    choose_level,
    drag_window,
    fit_viewport,
    pixel_readout,
    prepare_study,
    render_region,
    view_ranges,
    zoom_viewport,
)
from viewer.overlays import (
    attention_percentages,
    breast_outline,
    colormap_table,
    contour_path,
    heatmap_display_map,
    heatmap_rgba,
    label_corner,
    ruler_text,
    target_label,
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = write_study(tmp_path_factory.mktemp("img") / "s", mirrored_views=("R-MLO",))
    study = engine.load_study(folder)
    return study, prepare_study(study)


def test_chest_wall_side_measured_on_pixels():
    for side, edge in (("R", "right"), ("L", "left")):
        img = (breast_pixels((200, 160), side, "CC") >> 4).astype(np.uint8)
        got, conf = chest_wall_side(img)
        assert got == edge and conf > 0.5
        flipped, _ = chest_wall_side(img[:, ::-1])
        assert flipped != edge


def test_slots_by_tags_and_mirrored_view_flipped(prepared):
    study, images = prepared
    assert list(images)[:4] == ["R-CC", "L-CC", "R-MLO", "L-MLO"]
    for key in ("R-CC", "L-CC", "R-MLO", "L-MLO"):
        p = images[key]
        assert p.image.relpath == SLOT_FILES[key]
        assert p.chest_wall == ("right" if key[0] == "R" else "left")
        # after the optional mirror, the displayed chest wall is where the hanging needs it
        shown = p.image.display[:, ::-1] if p.flipped else p.image.display
        assert chest_wall_side(shown)[0] == p.chest_wall
    assert images["R-MLO"].flipped and not images["R-CC"].flipped


def test_pyramid_is_rounded_block_mean():
    a = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) % 4096
    levels = build_pyramid(a, min_side=8)
    assert [lv.shape for lv in levels] == [(64, 48), (32, 24), (16, 12), (8, 6)]
    expect = (a.reshape(32, 2, 24, 2).astype(np.int64).sum(axis=(1, 3)) + 2) // 4
    np.testing.assert_array_equal(levels[1], expect)
    assert levels[1].dtype == np.uint16


def test_choose_level():
    assert choose_level(1.0, 5) == 0
    assert choose_level(2.0, 5) == 0
    assert choose_level(0.5, 5) == 1
    assert choose_level(0.3, 5) == 1  # 1/0.3 = 3.3 image px per screen px -> level 1 (2x)
    assert choose_level(0.2, 5) == 2
    assert choose_level(0.001, 3) == 2
    assert choose_level(1 / 7.9993, 5) == 3  # a hair under 8x: level 3 drawn 1.0001x, no switch
    assert choose_level(1 / 6.9, 5) == 2


def test_full_region_level0_equals_engine_display(prepared):
    """The interactive path renders exactly engine.display's default image."""
    _, images = prepared
    for key in ("R-CC", "R-MLO"):
        p = images[key]
        rows, cols = p.shape
        arr, covered = render_region(p, Region(0, 0, cols, rows), 0, WindowSetting(), False)
        assert covered == Region(0, 0, cols, rows)
        shown = p.image.display[:, ::-1] if p.flipped else p.image.display
        np.testing.assert_array_equal(arr, shown)
        inv, _ = render_region(p, Region(0, 0, cols, rows), 0, WindowSetting(), True)
        np.testing.assert_array_equal(inv, 255 - shown)


def test_window_preset_and_drag(prepared):
    _, images = prepared
    p = images["L-CC"]
    rows, cols = p.shape
    second, _ = render_region(p, Region(0, 0, cols, rows), 0, WindowSetting(preset_index=1), False)
    np.testing.assert_array_equal(second, render(p.image, 1))
    c, w = drag_window((2300.0, 2600.0), 100, 0, value_range=4000)
    assert c == 2300.0 and w == pytest.approx(2600.0 * math.e)
    c, w = drag_window((2300.0, 2600.0), 0, 50, value_range=4000)
    assert c == pytest.approx(2300.0 + 0.2 * 2600.0) and w == 2600.0
    arr, _ = render_region(p, Region(0, 0, cols, rows), 0, WindowSetting(0, c, w), False)
    np.testing.assert_array_equal(arr, render(p.image, center=c, width=w))


def test_region_at_coarse_level_covers_request(prepared):
    _, images = prepared
    p = dataclasses.replace(images["L-CC"], pyramid=build_pyramid(images["L-CC"].pyramid[0], min_side=32))
    assert len(p.pyramid) >= 2
    arr, covered = render_region(p, Region(10, 21, 100, 133), 1, WindowSetting(), False)
    assert covered.contains(Region(10, 21, 100, 133))
    assert arr.shape == ((covered.y1 - covered.y0) // 2, (covered.x1 - covered.x0) // 2)


def test_fit_anchors_chest_wall_and_mirror_ranges():
    shape = (400, 300)  # rows, cols: narrower than a 500 x 400 widget
    vp = fit_viewport(shape, (500, 400), "right")
    assert vp.scale == pytest.approx(1.0)
    (rx0, rx1), (ry0, ry1) = view_ranges(vp, shape, (500, 400), "right")
    (lx0, lx1), _ = view_ranges(vp, shape, (500, 400), "left")
    assert rx1 == pytest.approx(300) and rx0 == pytest.approx(-200)  # chest wall on the widget's right edge
    assert lx0 == pytest.approx(0) and lx1 == pytest.approx(500)  # chest wall on the widget's left edge
    assert (ry0, ry1) == (pytest.approx(0), pytest.approx(400))
    z = zoom_viewport(vp, 2.0, anchor_u=50, anchor_y=100)
    (rx0, rx1), (ry0, ry1) = view_ranges(z, shape, (500, 400), "right")
    (lx0, lx1), (ly0, ly1) = view_ranges(z, shape, (500, 400), "left")
    # mirror semantics: the right view's range is the left view's reflected about the chest wall
    assert (300 - rx1, 300 - rx0) == (pytest.approx(lx0), pytest.approx(lx1))
    assert (ry0, ry1) == (ly0, ly1)
    # the anchor stays put on screen: same fraction of the range before and after
    before = (50 - 0) / 500
    after = (50 - lx0) / (lx1 - lx0)
    assert after == pytest.approx(before)


def test_pixel_readout_maps_back_through_mirror(prepared):
    _, images = prepared
    p = images["R-MLO"]
    rows, cols = p.shape
    text = pixel_readout(p, 5.5, 7.5)
    stored = int(p.image.stored[7, cols - 1 - 5])
    assert text == f"R-MLO  x {cols - 1 - 5}  y 7  stored {stored}  value {float(stored):.6g}"
    assert pixel_readout(p, -1, 5) is None


def test_attention_percentages_sum_to_100():
    att = {"R-CC": 0.333, "L-CC": 0.333, "R-MLO": 0.334, "L-MLO": 0.0}
    pct = attention_percentages(att, list(att))
    assert sum(pct.values()) == 100 and pct["L-MLO"] == 0
    pct = attention_percentages({"R-CC": 0.125, "L-CC": 0.125, "R-MLO": 0.125, "L-MLO": 0.625}, list(att))
    assert pct == {"R-CC": 13, "L-CC": 13, "R-MLO": 12, "L-MLO": 62}  # ties: first views first
    assert attention_percentages({}, ["R-CC"]) == {"R-CC": 0}


def test_heatmap_rgba_alpha_and_colours():
    m = np.array([[0.0, 0.1, 0.25, 0.6, 1.0]], np.float32)
    rgba = heatmap_rgba(m, "jet")
    assert [int(a) for a in rgba[0, :, 3]] == [0, 0, 64, 255, 255]
    table = colormap_table("jet")
    assert tuple(table[0]) == (0, 0, 128) and tuple(table[255]) == (128, 0, 0)
    big = np.zeros((2048, 1600), np.float32)
    big[:, :800] = 1.0
    small = heatmap_display_map(big, flipped=True)
    assert max(small.shape) == 512
    assert small[:, -10:].min() == 1.0 and small[:, :10].max() == 0.0  # mirrored


def test_contour_path_mirrors_and_separates():
    square = np.array([[0, 0], [9, 0], [9, 9], [0, 9], [0, 0]], float)
    xs, ys = contour_path([square, square + 20], cols=100, flipped=True)
    assert np.isnan(xs[5]) and len(xs) == 11
    assert xs[0] == pytest.approx(100 - 0.5) and ys[0] == pytest.approx(0.5)


def test_breast_outline_skips_image_border():
    mask = np.zeros((64, 48), bool)
    yy, xx = np.mgrid[0:64, 0:48]
    mask[((yy - 32) / 26.0) ** 2 + (xx / 36.0) ** 2 <= 1] = True  # chest wall on the left edge
    pieces = breast_outline(mask, (640, 480))
    assert pieces
    pts = np.vstack(pieces)
    assert pts[:, 0].max() == pytest.approx(370, abs=15)
    # no stretch of the outline runs down the chest-wall edge
    for piece in pieces:
        seg_on_edge = (piece[:-1, 0] < 11) & (piece[1:, 0] < 11)
        assert not seg_on_edge.any()


def test_label_corner_avoids_tissue():
    tissue = np.zeros((100, 80), bool)
    tissue[:50, :] = True  # tissue across the whole top half
    corner = label_corner(tissue, (1000, 800), ((0, 800), (0, 1000)), (400, 500), (80, 40), ["top-left", "bottom-left"])
    assert corner == "bottom-left"


def test_ruler_and_target_text():
    assert ruler_text((0, 0), (300, 400), (0.1, 0.1), True) == "50.0 mm"
    assert ruler_text((0, 0), (300, 400), (0.1, 0.1), False) == "50.0 mm (uncalibrated)"
    assert ruler_text((0, 0), (300, 400), None, False) == "500 px (uncalibrated)"
    assert target_label("malignancy") == "Malignancy (each breast)"
    assert target_label("birads:L:4") == "BI-RADS 4 (left breast)"
