"""Contrast-enhanced spectral mammography (CESM) images of the phantom.

For every MG view, CESM gives two images of the same compression (seed 004, Fig. 1):

- **low energy (LE)**: an exposure below the iodine K-edge, equivalent to a standard mammogram
  (the same physical maps as :func:`~training.phantom.render.mg_components`, slightly lower
  contrast, its own noise);
- **recombined (RC)**: the weighted log-subtraction of the high- and low-energy images, which
  cancels the fat/gland contrast and leaves the iodine: a flat grey breast with
  background parenchymal enhancement (BPE: minimal / mild / moderate / marked, following the
  glandular tissue, patchy), enhancing vessels, a bright rim at the skin line (scatter and
  misregistration), and the lesion's enhancement. Malignant masses and distortions enhance
  strongly and heterogeneously with a rim; benign masses enhance weakly; cysts do not enhance
  (only a thin rim); malignant calcifications come with faint non-mass enhancement. Recombined
  images are noisier than LE images.

Both images are written as MG (Digital Mammography For Presentation) with ImageType value 4
``SUBTRACTION`` (RC) or value 5 ``LOW_ENERGY`` (LE). Their lesion masks are the MG masks.
"""

from __future__ import annotations

import cv2
import numpy as np

from training.phantom.geometry import ImageSize
from training.phantom.plan import BreastPlan, StudyPlan
from training.phantom.render import (
    MAX_VALUE,
    RenderedImage,
    _mg_meta,
    compose_mg,
    detector_noise,
    finish_image,
    image_rng,
    mg_components,
)
from training.phantom.texture import power_law_noise, strand_network

__all__ = ["render_cesm", "BPE_LEVEL"]

_RC_AIR = 0.24
_RC_BREAST = 0.36
_RC_SPAN = 14500.0

#: Recombined-image enhancement of fully glandular tissue per BPE category.
BPE_LEVEL = {"minimal": 0.03, "mild": 0.07, "moderate": 0.13, "marked": 0.22}


def render_cesm(plan: StudyPlan, breast: BreastPlan, view: str, size: ImageSize) -> list[RenderedImage]:
    """Render the low-energy and recombined images of one view.

    Args:
        plan: The study.
        breast: The breast.
        view: ``"CC"`` or ``"MLO"``.
        size: Image grid.

    Returns:
        ``[low_energy, recombined]``.
    """
    rng = image_rng(plan, "CESM", breast.side, view)
    comp = mg_components(plan, breast, view, size, rng)
    meta = _mg_meta(breast, view)
    le = compose_mg(comp, rng, gain=0.78)
    le_img = finish_image(comp, le, "CESM", "low_energy", dict(meta, kvp=29.0))

    sp = size.spacing_mm
    shape = size.shape
    inside = comp.inside.astype(np.float32)
    gland_s = cv2.GaussianBlur(comp.gland, (0, 0), 2.5 / sp)
    patchy = power_law_noise(rng, shape, sp, beta=3.0, f_low_per_mm=1 / 30.0, min_spacing_mm=1.0)
    patchy = np.clip(0.5 + 0.35 * patchy, 0.0, 1.0)
    enh = np.float32(BPE_LEVEL[plan.bpe]) * gland_s * (np.float32(0.4) + np.float32(1.2) * patchy)
    # vessels: sparse, smooth, a millimetre wide
    vessels = strand_network(rng, shape, sp, width_mm=0.7, beta=5.0)
    enh += np.float32(0.06) * vessels * (power_law_noise(rng, shape, sp, beta=4.0, min_spacing_mm=1.0) > 0.6)
    for layer in comp.layers:
        les = layer.lesion
        rs, cs = layer.slices
        m = layer.mask.astype(np.float32)
        h, w = m.shape
        lrng = np.random.default_rng(np.random.SeedSequence([les.shape_seed, 31]))
        het = np.clip(0.75 + 0.35 * lrng.standard_normal((h, w)).astype(np.float32), 0.2, 1.3)
        het = cv2.GaussianBlur(het, (0, 0), max(0.8 / sp, 0.5))
        if les.finding in ("mass", "distortion"):
            body = cv2.GaussianBlur(m, (0, 0), max(0.5 / sp, 0.4))
            edge = np.clip(body * (1.0 - body) * 4.0, 0.0, 1.0)
            rim = 0.5 if les.pathology == "malignant" else 0.1
            add = np.float32(les.enhancement) * (body * het + np.float32(rim) * edge)
        elif les.finding == "cyst":
            body = cv2.GaussianBlur(m, (0, 0), max(0.4 / sp, 0.4))
            add = np.float32(0.05) * np.clip(body * (1.0 - body) * 4.0, 0.0, 1.0)
        else:  # calcifications: non-mass enhancement of the region (malignant only)
            body = cv2.GaussianBlur(m, (0, 0), max(2.0 / sp, 0.5))
            add = np.float32(les.enhancement) * body * het
        enh[rs, cs] += add.astype(np.float32)
    skin = np.exp(-comp.edge_mm / np.float32(2.0)) * comp.inside
    base = np.float32(_RC_AIR) + (np.float32(_RC_BREAST) - np.float32(0.05) * (1.0 - comp.tf)) * inside
    p_norm = base + np.float32(0.5) * enh * inside + np.float32(0.05) * skin
    sigma = np.float32(2.0 * 70.0)
    noise = detector_noise(rng, size)
    rc = np.float32(_RC_SPAN) * p_norm + sigma * noise
    np.rint(rc, out=rc)
    np.maximum(rc, np.float32(0.0), out=rc)
    np.minimum(rc, np.float32(MAX_VALUE), out=rc)
    rc = rc.astype(np.uint16)
    rc_img = finish_image(comp, rc, "CESM", "recombined", dict(meta, kvp=49.0))
    # fixed windows: a percentile window would stretch a non-enhancing breast into "marked BPE"
    level = _RC_SPAN * (_RC_AIR + _RC_BREAST)
    rc_img.windows = [
        (float(round(level + 0.1 * _RC_SPAN)), float(round(0.6 * _RC_SPAN)), "RECOMBINED"),
        (float(round(level + 0.14 * _RC_SPAN)), float(round(0.34 * _RC_SPAN)), "NARROW"),
    ]
    return [le_img, rc_img]
