"""Lesions of the phantom, drawn in one view from their 3-D description.

Each lesion is rendered in a small patch of the canonical image (see
:mod:`training.phantom.geometry`) as physical quantities that :mod:`training.phantom.render`
composes with the breast:

- masses and cysts: an ellipsoid (semi-axes and rotation from the plan) projected along the
  view's X-ray direction, giving the path length ``l`` through the lesion at every pixel. The
  lesion replaces background tissue along its path, so its contrast is
  ``l * (density_ratio - g)`` in glandular-tissue units: high in fatty tissue (``g ~ 0``) and
  close to zero in dense tissue (``g ~ 1``) - dense-breast masking falls out of the physics.
  Irregular outlines come from angular harmonics of the radius (shared by both views),
  indistinct margins from a blur;
- spicules (spiculated masses, architectural distortion): thin tapering strands along 3-D rays
  from the centre, projected into the view (foreshortened differently in CC and MLO);
- calcifications: sub-millimetre dots and short rods at 3-D offsets projected into the view,
  rendered on a supersampled grid so a 0.2 mm calcification is a partial-volume bright pixel at
  demo size; attenuation about 60x that of glandular tissue per mm (hydroxyapatite at 20 keV);
- architectural distortion: spicules plus a retraction warp of the surrounding glandular
  tissue towards the centre, without a central mass.

Masks (what ``*_mask.png`` holds): the mass or cyst body (spicules excluded), the convex hull of
a calcification group dilated by 1.5 mm, the central 60 % of a distortion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from training.phantom.geometry import (
    BreastShape,
    ImageSize,
    ellipsoid_matrix,
    lesion_xy,
    project_ellipsoid,
    project_offsets,
)
from training.phantom.plan import LesionPlan

__all__ = ["LesionLayer", "render_lesion", "CALC_GAIN_PER_MM"]

#: Calcification attenuation per mm of path, in units of (glandular - fat) attenuation per mm.
CALC_GAIN_PER_MM = 60.0


@dataclass
class LesionLayer:
    """One lesion's contribution to one view, on the patch ``[r0:r0+h, c0:c0+w]`` of the
    canonical (left-breast layout) image.

    Attributes:
        lesion: The plan.
        r0: First row of the patch.
        c0: First column of the patch.
        center_xy_mm: Lesion centre in canonical mm (for calcifications, the centroid of the
            group as projected in this view).
        path: Path length through the lesion divided by the breast thickness, or None.
        strands: Spicule strands as extra glandular-tissue fraction, or None.
        calcs: Calcification excess attenuation (glandular units over the thickness), or None.
        warp: ``(map_x, map_y)`` float32 patch-pixel coordinates to resample the glandular map
            from (distortion), or None.
        mask: Boolean lesion mask of the patch.
    """

    lesion: LesionPlan
    r0: int
    c0: int
    center_xy_mm: tuple[float, float]
    path: np.ndarray | None
    strands: np.ndarray | None
    calcs: np.ndarray | None
    warp: tuple[np.ndarray, np.ndarray] | None
    mask: np.ndarray

    @property
    def slices(self) -> tuple[slice, slice]:
        """Row and column slices of the patch in the canonical image."""
        h, w = self.mask.shape
        return slice(self.r0, self.r0 + h), slice(self.c0, self.c0 + w)


def _patch(cx: float, cy: float, half_mm: float, size: ImageSize):
    sp = size.spacing_mm
    c0 = max(int(math.floor((cx - half_mm) / sp)), 0)
    c1 = min(int(math.ceil((cx + half_mm) / sp)), size.cols)
    r0 = max(int(math.floor((cy - half_mm) / sp)), 0)
    r1 = min(int(math.ceil((cy + half_mm) / sp)), size.rows)
    c1 = max(c1, c0 + 1)
    r1 = max(r1, r0 + 1)
    xs = ((np.arange(c0, c1, dtype=np.float32) + 0.5) * sp - cx).astype(np.float32)
    ys = ((np.arange(r0, r1, dtype=np.float32) + 0.5) * sp - cy).astype(np.float32)
    return r0, c0, xs[None, :], ys[:, None]


def _harmonics(rng: np.random.Generator, amplitude: float) -> list[tuple[float, int, float]]:
    return [
        (float(amplitude * rng.uniform(0.3, 1.0) / math.sqrt(k / 2.0)), k, float(rng.uniform(0, 2 * math.pi)))
        for k in range(2, 8)
    ]


def _outline_mod(dx: np.ndarray, dy: np.ndarray, harmonics) -> np.ndarray:
    psi = np.arctan2(dy, dx)
    mod = np.ones(np.broadcast(dx, dy).shape, dtype=np.float32)
    for amp, k, phase in harmonics:
        mod += np.float32(amp) * np.cos(np.float32(k) * psi + np.float32(phase))
    return np.maximum(mod, np.float32(0.3))


def _random_dirs(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _strands(
    dx: np.ndarray,
    dy: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    widths: np.ndarray,
    amps: np.ndarray,
) -> np.ndarray:
    """Strands tapering from ``starts[i]`` to ``ends[i]`` (mm offsets from the patch centre)."""
    out = np.zeros(np.broadcast(dx, dy).shape, dtype=np.float32)
    for (sx, sy), (ex, ey), w0, amp in zip(starts, ends, widths, amps, strict=True):
        vx, vy = ex - sx, ey - sy
        ll = vx * vx + vy * vy
        if ll < 1e-6:
            continue
        rx, ry = dx - np.float32(sx), dy - np.float32(sy)
        t = (rx * np.float32(vx) + ry * np.float32(vy)) / np.float32(ll)
        tc = np.clip(t, 0.0, 1.0)
        px = rx - tc * np.float32(vx)
        py = ry - tc * np.float32(vy)
        w = np.float32(w0) * (np.float32(1.0) - np.float32(0.8) * tc)
        val = np.float32(amp) * (np.float32(1.0) - tc) ** np.float32(0.7) * np.exp(-(px * px + py * py) / (w * w))
        np.maximum(out, val, out=out)
    return out


def _calcifications(
    lesion: LesionPlan, view: str, angle: float, size: ImageSize, cx: float, cy: float, thickness: float
):
    rng = np.random.default_rng(np.random.SeedSequence([lesion.shape_seed, 11]))
    n = lesion.n_calcs
    radius = lesion.size_mm / 2.0
    pleo = lesion.morphology == "clustered pleomorphic"
    if pleo:
        if rng.random() < 0.4:  # linear / segmental arrangement
            axis = _random_dirs(rng, 1)[0]
            offsets = np.outer(rng.uniform(-1, 1, n), axis) * radius + rng.normal(0, radius * 0.15, (n, 3))
        else:
            offsets = rng.normal(0, radius * 0.45, (n, 3))
        diam = rng.uniform(0.15, 0.55, n)
        rods = rng.random(n) < 0.45
        lengths = np.where(rods, rng.uniform(0.4, 1.5, n), 0.0)
    else:
        offsets = rng.uniform(-1, 1, (n, 3)) * radius
        diam = rng.uniform(0.4, 1.2, n)
        lengths = np.zeros(n)
    norms = np.linalg.norm(offsets, axis=1, keepdims=True)
    offsets = np.where(norms > radius, offsets * (radius / np.maximum(norms, 1e-9)), offsets)
    rod_dirs = _random_dirs(rng, n)
    centres = project_offsets(offsets, view, angle)
    rod_2d = project_offsets(rod_dirs * lengths[:, None] / 2.0, view, angle)
    gain = CALC_GAIN_PER_MM / thickness * lesion.density_ratio

    sp = size.spacing_mm
    ss = int(min(max(round(sp / 0.07), 1), 8))
    half = radius + 2.5
    r0, c0, xs, ys = _patch(cx, cy, half, size)
    h, w = ys.shape[0], xs.shape[1]
    sub = sp / ss
    canvas = np.zeros((h * ss, w * ss), dtype=np.float32)
    # supersampled coordinates (mm from the lesion centre) of the canvas pixel centres
    sx0 = float(xs[0, 0]) - sp / 2 + sub / 2
    sy0 = float(ys[0, 0]) - sp / 2 + sub / 2
    for (px, py), (hx, hy), d in zip(centres, rod_2d, diam, strict=True):
        rc = d / 2.0
        reach = rc + abs(hx) + abs(hy) + sub
        j0 = max(int((px - reach - sx0) / sub), 0)
        j1 = min(int((px + reach - sx0) / sub) + 2, w * ss)
        i0 = max(int((py - reach - sy0) / sub), 0)
        i1 = min(int((py + reach - sy0) / sub) + 2, h * ss)
        if j1 <= j0 or i1 <= i0:
            continue
        gx = (sx0 + np.arange(j0, j1) * sub - px)[None, :]
        gy = (sy0 + np.arange(i0, i1) * sub - py)[:, None]
        ll = hx * hx + hy * hy
        if ll > 1e-9:  # capsule: distance to the segment [-h, +h]
            t = np.clip((gx * hx + gy * hy) / ll, -1.0, 1.0)
            ddx, ddy = gx - t * hx, gy - t * hy
        else:
            ddx, ddy = gx, gy
        dist2 = ddx * ddx + ddy * ddy
        path = 2.0 * np.sqrt(np.maximum(rc * rc - dist2, 0.0))
        canvas[i0:i1, j0:j1] += (path * gain).astype(np.float32)
    calcs = canvas.reshape(h, ss, w, ss).mean(axis=(1, 3))

    # mask: convex hull of the calcifications, dilated by 1.5 mm
    mask = np.zeros((h, w), dtype=np.uint8)
    pts = np.stack(
        [(centres[:, 0] - float(xs[0, 0])) / sp, (centres[:, 1] - float(ys[0, 0])) / sp], axis=1
    )
    hull = cv2.convexHull(np.round(pts).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    k = max(int(round(1.5 / sp)), 1)
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    # the group's centre in this view is the centroid of its calcifications (inside the hull)
    centroid = (cx + float(centres[:, 0].mean()), cy + float(centres[:, 1].mean()))
    return r0, c0, calcs, mask.astype(bool), centroid


def render_lesion(
    lesion: LesionPlan, shape: BreastShape, view: str, size: ImageSize
) -> LesionLayer:
    """Draw ``lesion`` in ``view`` of the breast ``shape`` at ``size``.

    Args:
        lesion: The lesion plan.
        shape: The breast.
        view: ``"CC"`` or ``"MLO"``.
        size: The image grid.

    Returns:
        The lesion layer (canonical orientation).
    """
    cx, cy = lesion_xy(shape, view, lesion.distance_mm, lesion.alpha, lesion.phi)
    angle = shape.mlo_angle_deg
    t = shape.thickness
    sp = size.spacing_mm
    rng = np.random.default_rng(np.random.SeedSequence([lesion.shape_seed, 7]))
    radius = lesion.size_mm / 2.0

    if lesion.finding == "calcification":
        r0, c0, calcs, mask, centroid = _calcifications(lesion, view, angle, size, cx, cy, t)
        return LesionLayer(lesion, r0, c0, centroid, None, None, calcs, None, mask)

    if lesion.finding == "distortion":
        n = lesion.n_spicules
        dirs = _random_dirs(rng, n)
        lengths = radius * rng.uniform(0.55, 1.0, n)
        starts = project_offsets(dirs * (0.1 * lengths[:, None]), view, angle)
        ends = project_offsets(dirs * lengths[:, None], view, angle)
        widths = rng.uniform(0.3, 0.6, n)
        amps = rng.uniform(0.5, 1.0, n) * 0.22 * lesion.density_ratio
        r0, c0, xs, ys = _patch(cx, cy, radius + 2.0, size)
        strands = _strands(xs, ys, starts, ends, widths, amps)
        # retraction: sample the tissue from further out, so it looks pulled towards the centre
        s = max(radius * 0.55, 2.0)
        r2 = xs * xs + ys * ys
        pull = np.float32(0.45) * np.exp(-r2 / np.float32(2 * s * s))
        h, w = strands.shape
        jj = np.arange(w, dtype=np.float32)[None, :] + (xs * pull) / np.float32(sp)
        ii = np.arange(h, dtype=np.float32)[:, None] + (ys * pull) / np.float32(sp)
        map_x = np.broadcast_to(jj, (h, w)).astype(np.float32)
        map_y = np.broadcast_to(ii, (h, w)).astype(np.float32)
        mask = r2 <= np.float32((0.6 * radius) ** 2)
        return LesionLayer(lesion, r0, c0, (cx, cy), None, strands, None, (map_x, map_y), mask)

    # masses and cysts
    m = ellipsoid_matrix(lesion.axes_mm, np.asarray(lesion.rotation).reshape(3, 3))
    s_mat, c = project_ellipsoid(m, view, angle)
    ext = float(np.sqrt(np.max(np.linalg.eigvalsh(np.linalg.inv(s_mat)))))  # longest semi-axis
    spic_len = radius * 2.2 if lesion.n_spicules else 0.0
    half = ext * (1.0 + 1.5 * lesion.irregularity) + 3.0 * lesion.margin_blur_mm + spic_len + 1.5
    r0, c0, xs, ys = _patch(cx, cy, half, size)
    rho2 = (
        np.float32(s_mat[0, 0]) * xs * xs
        + np.float32(2.0 * s_mat[0, 1]) * xs * ys
        + np.float32(s_mat[1, 1]) * ys * ys
    )
    harmonics = _harmonics(rng, lesion.irregularity)
    rho = np.sqrt(rho2) / _outline_mod(xs, ys, harmonics)
    inside = rho < 1.0
    path = (np.float32(2.0 / math.sqrt(c) / t) * np.sqrt(np.maximum(1.0 - rho * rho, 0.0))).astype(
        np.float32
    )
    np.minimum(path, np.float32(1.0), out=path)
    sigma_px = lesion.margin_blur_mm / sp
    if sigma_px >= 0.3:
        path = cv2.GaussianBlur(path, (0, 0), sigma_px)
    strands = None
    if lesion.n_spicules:
        n = lesion.n_spicules
        dirs = _random_dirs(rng, n)
        lengths = radius * rng.uniform(1.0, 2.2, n)
        starts = project_offsets(dirs * (0.7 * radius), view, angle)
        ends = project_offsets(dirs * (0.7 * radius + lengths[:, None]), view, angle)
        widths = rng.uniform(0.4, 0.9, n)
        amps = rng.uniform(0.5, 1.0, n) * 0.2 * min(lesion.density_ratio, 1.3)
        strands = _strands(xs, ys, starts, ends, widths, amps)
    return LesionLayer(lesion, r0, c0, (cx, cy), path, strands, None, None, inside)
