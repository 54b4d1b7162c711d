"""Breast ultrasound images of the phantom (B-mode, linear probe, 8-bit).

Image model (rows are depth, columns are the lateral direction of the probe):

- tissue layers with wavy boundaries: skin (bright entry line), subcutaneous fat (hypoechoic,
  crossed by bright Cooper's ligaments), the fibroglandular layer (hyperechoic, thicker in dense
  breasts), retromammary fat, pectoral muscle (striated);
- a lesion (when the breast's finding is visible on ultrasound), following the BI-RADS US lexicon:
  benign masses oval, parallel to the skin (wider than tall), circumscribed, hypoechoic, with
  posterior enhancement; cysts anechoic with a thin bright wall and strong posterior enhancement;
  malignant masses irregular, not parallel (taller than wide), angular margins with an echogenic
  halo, heterogeneous, with posterior acoustic shadowing; architectural distortion an ill-defined
  hypoechoic area with shadowing. Calcification findings are not shown (a negative scan);
- fully developed speckle: complex Gaussian scatterers filtered by an anisotropic point-spread
  function (longer laterally than axially), envelope-detected, spatially compounded (three
  looks averaged) and log-compressed to 8 bits.

The written image also says where the probe was (``ImageComments``: clock position and distance
from the nipple, derived from the lesion's 3-D direction).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from training.phantom.geometry import US_SIZES
from training.phantom.plan import BreastPlan, StudyPlan
from training.phantom.render import LesionBox, RenderedImage, image_rng
from training.phantom.texture import power_law_noise

__all__ = ["render_us", "clock_position"]

_LAYER_BY_DENSITY = {"A": (3.0, 6.0), "B": (6.0, 10.0), "C": (10.0, 16.0), "D": (14.0, 22.0)}


def clock_position(side: str, phi: float) -> int:
    """Clock-face hour (1-12) of a direction ``phi`` around the nipple (0 lateral, pi/2 superior)
    as seen facing the patient: lateral is 3 o'clock on the left breast, 9 o'clock on the right."""
    lateral, superior = math.cos(phi), math.sin(phi)
    # angle clockwise from 12 o'clock as the viewer sees it
    ang = math.degrees(math.atan2(lateral if side == "L" else -lateral, superior)) % 360.0
    hour = int(round(ang / 30.0)) % 12
    return 12 if hour == 0 else hour


def _wavy(rng: np.random.Generator, n: int, base: float, amp: float, sp: float) -> np.ndarray:
    x = np.arange(n) * sp
    out = np.full(n, base, dtype=np.float32)
    for _ in range(3):
        lam = rng.uniform(15.0, 60.0)
        wave = np.sin(2 * np.pi * x / lam + rng.uniform(0, 6.3)).astype(np.float32)
        out += np.float32(amp * rng.uniform(0.3, 1.0)) * wave
    return out


def render_us(plan: StudyPlan, breast: BreastPlan, number: int, size: str = "demo") -> RenderedImage:
    """Render ultrasound image ``number`` (1-based) of ``breast``.

    Args:
        plan: The study.
        breast: The breast (its finding decides whether a lesion is shown).
        number: Image number within the breast; image 2 of a lesion is the orthogonal plane.
        size: Mammogram size name; the US grid follows (:data:`~training.phantom.geometry.US_SIZES`).

    Returns:
        The image: uint8 MONOCHROME2, with the lesion mask and box when a lesion is shown.
    """
    rows, cols, sp = US_SIZES[size]
    rng = image_rng(plan, "US", breast.side, None, extra=number)
    z = ((np.arange(rows, dtype=np.float32) + 0.5) * sp)[:, None]  # depth, mm
    xl = ((np.arange(cols, dtype=np.float32) + 0.5) * sp)[None, :]  # lateral, mm
    depth_mm, width_mm = rows * sp, cols * sp

    # layers
    skin = _wavy(rng, cols, 1.6, 0.2, sp)[None, :]
    sub_fat = _wavy(rng, cols, rng.uniform(4.0, 9.0), 1.2, sp)[None, :]
    lo, hi = _LAYER_BY_DENSITY[plan.density]
    gland_end = sub_fat + _wavy(rng, cols, rng.uniform(lo, hi), 1.5, sp)[None, :]
    retro_end = gland_end + _wavy(rng, cols, rng.uniform(2.0, 4.0), 0.6, sp)[None, :]
    muscle_end = retro_end + _wavy(rng, cols, rng.uniform(6.0, 9.0), 0.8, sp)[None, :]
    echo = np.full((rows, cols), 0.07, dtype=np.float32)  # below the muscle: chest wall
    tex = power_law_noise(rng, (rows, cols), sp, beta=2.5, f_low_per_mm=1.0 / 8.0)
    echo = np.where(z < muscle_end, 0.16 + 0.1 * np.sin(2 * np.pi * z / 1.6 + 0.3 * tex), echo)
    echo = np.where(z < retro_end, 0.05 + 0.015 * tex, echo)
    echo = np.where(z < gland_end, np.clip(0.5 + 0.18 * tex, 0.12, 1.0), echo)
    echo = np.where(z < sub_fat, 0.06 + 0.015 * tex, echo)
    echo = np.where(z < skin, 0.4, echo)
    echo = np.where(np.abs(z - 0.4) < 0.25, 1.0, echo).astype(np.float32)  # skin entry echo
    # Cooper's ligaments: bright oblique curved lines in the subcutaneous fat
    lig = power_law_noise(rng, (rows, cols), sp, beta=4.0, f_low_per_mm=1.0 / 10.0)
    gy, gx = np.gradient(lig)
    dist = np.abs(lig) / (np.sqrt(gx * gx + gy * gy) + 1e-6) * sp
    ligaments = np.exp(-np.square(dist / 0.25)) * ((z > skin) & (z < gland_end + 1.0))
    echo = np.maximum(echo, (0.85 * ligaments).astype(np.float32))

    lesion = breast.lesion
    mask = None
    boxes: list[LesionBox] = []
    meta: dict = {}
    if lesion is not None:
        hour = clock_position(breast.side, lesion.phi)
        meta["clock"] = hour
        meta["distance_cm"] = round(lesion.distance_mm / 10.0, 1)
    shown = lesion is not None and lesion.finding in ("mass", "cyst", "distortion")
    if shown:
        lrng = np.random.default_rng(np.random.SeedSequence([lesion.shape_seed, 21, number]))
        malignant = lesion.pathology == "malignant"
        w = float(np.clip(lesion.size_mm, 4.0, 0.7 * width_mm)) / 2.0
        if lesion.finding == "cyst":
            h = w * lrng.uniform(0.65, 0.95)
        elif malignant:
            h = w * lrng.uniform(1.1, 1.6)  # taller than wide (not parallel)
        else:
            h = w * lrng.uniform(0.45, 0.75)  # wider than tall (parallel)
        if h > 0.28 * depth_mm:  # keep the shape (taller or wider than tall), shrink the size
            w *= 0.28 * depth_mm / h
            h = 0.28 * depth_mm
        top, bottom_layer = float(np.median(sub_fat)), float(np.median(gland_end))
        zc = top + lrng.uniform(0.3, 0.7) * (bottom_layer - top) + 2.0
        zc = float(np.clip(zc, h + 3.0, depth_mm - h - 6.0))
        xc = width_mm / 2.0 + lrng.uniform(-0.15, 0.15) * width_mm
        tilt = lrng.uniform(-0.25, 0.25)
        dx, dz = xl - np.float32(xc), z - np.float32(zc)
        ca, sa = math.cos(tilt), math.sin(tilt)
        u = (dx * ca + dz * sa) / np.float32(w)
        v = (-dx * sa + dz * ca) / np.float32(h)
        rho = np.sqrt(u * u + v * v)
        psi = np.arctan2(v, u)
        mod = np.ones_like(rho)
        irregular = malignant or lesion.finding == "distortion"
        n_h = 7 if irregular else 3
        amp0 = 0.12 if irregular else 0.03
        for k in range(2, 2 + n_h):
            a = amp0 * lrng.uniform(0.3, 1.0) / math.sqrt(k / 2.0)
            mod += np.float32(a) * np.cos(np.float32(k) * psi + np.float32(lrng.uniform(0, 6.3)))
        if irregular:  # angular margins: a few sharp spikes
            for _ in range(int(lrng.integers(3, 7))):
                c = lrng.uniform(-math.pi, math.pi)
                d = np.angle(np.exp(1j * (psi - c)))
                mod += np.float32(lrng.uniform(0.1, 0.22)) * np.exp(-np.square(d / 0.07)).astype(np.float32)
        r = rho / mod
        inside = r < 1.0
        edge_blur = 1.2 if lesion.finding == "distortion" else 0.0
        if lesion.finding == "cyst":
            level = 0.001
        elif lesion.subtle:
            level = 0.12
        else:
            level = 0.02 if malignant else 0.035
        inner = np.float32(level) * (1.0 + (0.6 if irregular else 0.2) * tex)
        soft = np.clip((1.0 - r) / 0.06, 0.0, 1.0)
        if edge_blur > 0:
            soft = cv2.GaussianBlur(soft.astype(np.float32), (0, 0), edge_blur / sp)
        echo = echo * (1.0 - soft) + np.maximum(inner, 0.0) * soft
        if irregular:  # echogenic halo
            halo = np.exp(-np.square((r - 1.12) / 0.12)) * (r > 1.0)
            echo = np.maximum(echo, (0.5 * halo).astype(np.float32))
        elif lesion.finding == "cyst":  # thin bright wall
            wall = np.exp(-np.square((r - 1.0) / (0.25 / max(w, 1.0))))
            echo = np.maximum(echo, (0.7 * wall).astype(np.float32))
        # posterior features: a column below the lesion
        bottom = zc + h * 0.9
        lateral = np.exp(-np.square(dx / np.float32(0.8 * w)) ** 2)
        below = np.clip((z - bottom) / 1.5, 0.0, 1.0) * np.exp(-np.maximum(z - bottom, 0) / 25.0)
        if irregular:
            factor = 1.0 - 0.85 * below * lateral  # shadowing
        elif lesion.finding == "cyst":
            factor = 1.0 + 2.5 * below * lateral  # strong enhancement
        else:
            factor = 1.0 + 1.6 * below * lateral
        echo = (echo * factor).astype(np.float32)
        mask = inside
        rr, cc = np.nonzero(inside)
        if rr.size:
            boxes.append(
                LesionBox(
                    finding=lesion.finding,
                    pathology=lesion.pathology,
                    morphology=lesion.morphology,
                    subtle=lesion.subtle,
                    box=(int(cc.min()), int(rr.min()), int(cc.max()) + 1, int(rr.max()) + 1),
                    center=(float(xc / sp - 0.5), float(zc / sp - 0.5)),
                    distance_to_nipple_mm=float(lesion.distance_mm),
                )
            )

    # speckle: complex scatterers through an anisotropic PSF, envelope, log compression
    # spatial compounding (three steering angles averaged), as breast scanners do
    sx, sz = 0.45 / sp, 0.2 / sp
    env2 = np.zeros((rows, cols), dtype=np.float32)
    for _ in range(3):
        re = cv2.GaussianBlur(rng.standard_normal((rows, cols), dtype=np.float32), (0, 0), sigmaX=sx, sigmaY=sz)
        im = cv2.GaussianBlur(rng.standard_normal((rows, cols), dtype=np.float32), (0, 0), sigmaX=sx, sigmaY=sz)
        env2 += re * re + im * im
    env2 /= np.float32(env2.mean())
    tgc = np.exp(-np.float32(0.012) * z)  # residual depth attenuation after TGC
    amp = np.sqrt(np.maximum(echo, 1e-4) * env2) * tgc
    db = 20.0 * np.log10(amp + 1e-4)
    img = np.clip((db + 30.0) / 40.0, 0.0, 1.0) * 255.0
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.6)  # scan conversion
    pixels = np.rint(img).astype(np.uint8)
    return RenderedImage(
        modality="US",
        side=breast.side,
        view=None,
        kind=None,
        number=number,
        pixels=pixels,
        spacing_mm=(sp, sp),
        mask=mask,
        lesions=boxes,
        meta=meta,
    )
