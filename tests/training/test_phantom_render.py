"""Phantom realism: texture spectrum, CC/MLO geometry, masks, density, lesion conspicuity,
ultrasound and CESM signs. Everything is measured on rendered pixels."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from training.phantom.cesm import render_cesm
from training.phantom.geometry import SIZES
from training.phantom.plan import _DENSE_RANGE, demo_plan, plan_studies, plan_study
from training.phantom.render import MAX_VALUE, render_mg, render_study
from training.phantom.texture import power_law_noise, spectrum_slope
from training.phantom.ultrasound import clock_position, render_us


def _ring(mask: np.ndarray, width_px: int) -> np.ndarray:
    k = 2 * max(width_px, 1) + 1
    grown = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return grown.astype(bool) & ~mask


def _cnr(image, ring_mm: float = 3.0) -> float:
    mask = image.mask
    ring = _ring(mask, int(round(ring_mm / image.spacing_mm[0])))
    px = image.pixels.astype(np.float64)
    return float((px[mask].mean() - px[ring].mean()) / px[ring].std())


def _nipple_from_pixels(pixels: np.ndarray, side: str) -> tuple[float, float]:
    """The most anterior breast pixel, found without the generator's help."""
    breast = pixels > 600
    cols = np.nonzero(breast.any(axis=0))[0]
    col = cols.max() if side == "L" else cols.min()
    return float(col), float(np.nonzero(breast[:, col])[0].mean())


def _lesion_breasts(seed: int, n: int, findings=("mass", "cyst")):
    out = []
    for plan in plan_studies(n, seed):
        for side, b in plan.breasts.items():
            if b.lesion is not None and b.finding in findings and len(b.views) == 2:
                out.append((plan, side))
    return out


def test_power_law_field_has_slope_minus_three():
    rng = np.random.default_rng(0)
    field = power_law_noise(rng, (512, 512), 0.26, beta=3.0)
    assert abs(field.std() - 1.0) < 0.3
    assert -3.3 < spectrum_slope(field[128:384, 128:384], 0.26) < -2.7


def test_rendered_parenchyma_spectrum_slope_is_about_minus_three():
    """Radially averaged power spectrum of a 50 mm ROI of rendered CC views, 0.1-1 cycles/mm."""
    slopes = []
    for plan in plan_studies(12, seed=11):
        for side, b in plan.breasts.items():
            if b.lesion is not None or "CC" not in b.views:
                continue
            image = render_mg(plan, side, "CC", "demo")
            sp = image.spacing_mm[0]
            nx, ny = image.nipple
            cols = image.pixels.shape[1]
            c = int(nx / 2) if side == "L" else int((cols - 1 + nx) / 2)
            r, half = int(ny), int(25 / sp)
            if not image.breast_mask[r - half : r + half, c - half : c + half].all():
                continue
            slopes.append(spectrum_slope(image.pixels[r - half : r + half, c - half : c + half], sp))
            break
        if len(slopes) == 5:
            break
    assert len(slopes) == 5
    assert -3.5 <= float(np.mean(slopes)) <= -2.5
    assert all(-3.7 <= s <= -2.3 for s in slopes)


def test_same_lesion_same_nipple_distance_in_cc_and_mlo():
    """Distance from the nipple (found in the pixels) to the mask centroid, in mm from the
    image's own spacing: CC and MLO agree within 10 %."""
    pairs = _lesion_breasts(5, 60)[:10]
    assert len(pairs) >= 6
    for plan, side in pairs:
        dist = []
        for view in ("CC", "MLO"):
            image = render_mg(plan, side, view, "tiny")
            rows, cols = np.nonzero(image.mask)
            nx, ny = _nipple_from_pixels(image.pixels, side)
            d = float(np.hypot(cols.mean() - nx, rows.mean() - ny)) * image.spacing_mm[0]
            dist.append(d)
            assert abs(d - plan.breasts[side].lesion.distance_mm) < 0.1 * plan.breasts[side].lesion.distance_mm
        assert abs(dist[0] - dist[1]) <= 0.1 * np.mean(dist)


def test_hanging_convention_chest_wall_and_pectoral():
    """Right breasts: chest wall on the right image edge, nipple pointing left; left breasts the
    mirror image. MLO views have the (bright) pectoral muscle in the upper chest-wall corner."""
    plan = demo_plan()
    for side in ("R", "L"):
        for view in ("CC", "MLO"):
            image = render_mg(plan, side, view, "tiny")
            breast = image.breast_mask
            chest, far = (-1, 0) if side == "R" else (0, -1)
            assert breast[:, chest].sum() > 0.4 * breast.shape[0]
            assert not breast[:, far].any()
            nx, _ = image.nipple
            assert (nx < breast.shape[1] / 2) == (side == "R")
        mlo = render_mg(plan, side, "MLO", "tiny").pixels.astype(float)
        corner = mlo[2:12, -8:-2] if side == "R" else mlo[2:12, 2:8]
        cc = render_mg(plan, side, "CC", "tiny")
        assert corner.mean() > np.median(cc.pixels[cc.breast_mask])


def test_pixels_are_14_bit():
    study = render_study(plan_study(3, 4), "small")
    for image in study.images:
        assert image.pixels.dtype == np.uint16
        assert image.pixels.max() <= MAX_VALUE
        assert image.pixels.max() < MAX_VALUE  # the tone curve's shoulder avoids clipping
        assert image.pixels.shape == SIZES["small"].shape


def test_masses_are_brighter_than_the_ring_around_their_mask():
    """Non-subtle masses in fatty or scattered breasts: mask mean above the 3 mm ring's mean."""
    checked = 0
    for plan, side in _lesion_breasts(5, 150):
        b = plan.breasts[side]
        if b.lesion.subtle or plan.density not in ("A", "B") or b.finding != "mass":
            continue
        for view in b.views:
            assert _cnr(render_mg(plan, side, view, "small")) > 0.3
            checked += 1
    assert checked >= 6


def test_calcifications_are_bright_specks_inside_their_mask():
    checked = 0
    for plan in plan_studies(80, 5):
        for side, b in plan.breasts.items():
            if b.finding != "calcification" or b.lesion.subtle:
                continue
            image = render_mg(plan, side, b.views[0], "demo")
            px = image.pixels.astype(float)
            ring = _ring(image.mask, 10)
            assert px[image.mask].max() > np.percentile(px[ring], 99.5)
            checked += 1
        if checked >= 3:
            break
    assert checked >= 3


def _dense_pixel_fraction(image) -> float:
    """Share of the breast interior (more than 15 mm from the skin) that is at least 25 %
    glandular tissue along the ray, read from the pixel values."""
    from training.phantom import render as r

    sp = image.spacing_mm[0]
    interior = cv2.erode(
        image.breast_mask.astype(np.uint8),
        cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(15 / sp) + 1,) * 2),
    ).astype(bool)
    level = r._AIR + r._SPAN * (r._FAT + r._GAIN * 0.25)
    return float((image.pixels[interior] > level).mean())


def test_density_category_raises_the_dense_tissue_fraction():
    means = []
    base = [p for p in plan_studies(6, seed=13)]
    for density in "ABCD":
        lo, hi = _DENSE_RANGE[density]
        fractions = []
        for plan in base:
            plan = dataclasses.replace(plan, density=density, dense_fraction=(lo + hi) / 2)
            side = next(iter(plan.breasts))
            fractions.append(_dense_pixel_fraction(render_mg(plan, side, "CC", "small")))
        means.append(float(np.mean(fractions)))
    assert means == sorted(means) and len(set(means)) == 4
    assert means[0] < 0.15 and means[3] > 0.75


def test_malignant_masses_are_harder_to_see_in_dense_breasts():
    """Same lesions, same breasts, density A -> D: the mean contrast-to-noise ratio falls."""
    cases = []
    i = 0
    while len(cases) < 8:
        plan = plan_study(21, i)
        i += 1
        for side, b in plan.breasts.items():
            if b.pathology == "malignant" and b.finding == "mass" and not b.lesion.subtle and "CC" in b.views:
                cases.append((plan, side))
                break
    cnr = []
    for density in "ABCD":
        lo, hi = _DENSE_RANGE[density]
        values = [
            _cnr(render_mg(dataclasses.replace(p, density=density, dense_fraction=(lo + hi) / 2), s, "CC", "small"))
            for p, s in cases
        ]
        cnr.append(float(np.mean(values)))
    assert cnr[0] > cnr[1] > cnr[2] > cnr[3]
    assert cnr[0] > 1.8 * cnr[3]


def test_ultrasound_signs_follow_the_lexicon():
    found: dict[str, tuple] = {}
    for plan in plan_studies(200, 5):
        for b in plan.breasts.values():
            if b.lesion is not None and not b.lesion.subtle and b.lesion.morphology not in found:
                found[b.lesion.morphology] = (plan, b)
    for morphology in ("irregular spiculated", "oval circumscribed", "round cyst"):
        plan, b = found[morphology]
        image = render_us(plan, b, 1, "demo")
        assert image.pixels.dtype == np.uint8 and image.mask is not None
        x0, y0, x1, y1 = image.lesions[0].box
        w, h = x1 - x0, y1 - y0
        px = image.pixels.astype(float)
        below = px[y1 + 5 : y1 + 80, x0 + w // 4 : x1 - w // 4].mean()
        beside = np.r_[
            px[y1 + 5 : y1 + 80, max(x0 - 2 * w, 0) : max(x0 - w, 1)].ravel(),
            px[y1 + 5 : y1 + 80, x1 + w : x1 + 2 * w].ravel(),
        ].mean()
        inside = px[image.mask].mean()
        ring = px[_ring(image.mask, 15)].mean()
        assert inside < ring - 20  # hypo- or anechoic
        if morphology == "irregular spiculated":
            assert h > w  # taller than wide
            assert below < beside - 10  # posterior shadowing
        else:
            assert w > h  # parallel
            assert below > beside + 5  # posterior enhancement
        if morphology == "round cyst":
            assert inside < 40  # anechoic
    plan, b = next((p, b) for p in plan_studies(50, 5) for b in p.breasts.values() if b.lesion is None)
    assert render_us(plan, b, 1, "tiny").mask is None


def test_clock_positions():
    assert clock_position("L", 0.0) == 3 and clock_position("R", 0.0) == 9  # lateral
    assert clock_position("L", np.pi / 2) == 12 and clock_position("R", np.pi / 2) == 12
    assert clock_position("L", np.pi / 4) in (1, 2)


def test_cesm_malignant_enhances_more_than_benign():
    plan = demo_plan()
    uptake = {}
    for side in ("L", "R"):
        le, rc = render_cesm(plan, plan.breasts[side], "CC", SIZES["small"])
        assert le.kind == "low_energy" and rc.kind == "recombined"
        assert np.array_equal(le.mask, rc.mask) and le.mask.any()
        px = rc.pixels.astype(float)
        background = np.median(px[rc.breast_mask & ~rc.mask])
        uptake[plan.breasts[side].pathology] = px[rc.mask].mean() - background
    assert uptake["malignant"] > 2.0 * uptake["benign"] > 0


@pytest.mark.parametrize("size", ["tiny", "demo"])
def test_sizes_and_spacing(size):
    image = render_mg(demo_plan(), "L", "CC", size)
    assert image.pixels.shape == SIZES[size].shape
    assert image.spacing_mm == (SIZES[size].spacing_mm,) * 2
    assert SIZES["full"].shape == (4096, 3328) and SIZES["full"].detector_spacing_mm == 0.07
    assert SIZES["demo"].shape == (1024, 832) and SIZES["tiny"].shape == (256, 208)
