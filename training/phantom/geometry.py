"""Breast geometry of the phantom: image sizes, the compressed breast outline, the nipple, the
pectoral muscle, and how a 3-D lesion position projects into the CC and MLO views.

Coordinates
-----------
Everything is first built in a *canonical* image frame, in millimetres: ``x`` is the distance
from the chest-wall edge of the image (``x = 0`` on that edge, growing towards the nipple) and
``y`` is the distance from the top edge (growing downwards). Pixel ``(row i, column j)`` has its
centre at ``x = (j + 0.5) * spacing``, ``y = (i + 0.5) * spacing``.

Stored images follow the usual hanging convention (right | left, chest walls back to back): a
**left** breast has its chest wall on the image's **left** edge (the breast points right), a
**right** breast has its chest wall on the image's **right** edge (the breast points left). The
canonical frame is the left-breast layout; right-breast images are flipped left-right at the end
(:func:`to_pixel`). CC images have the lateral side at the top, MLO images the axilla (superior
and lateral) at the top, for both sides.

3-D frame of one breast, centred on the nipple: ``X`` posterior (nipple towards the chest wall),
``Y`` lateral, ``Z`` superior. A CC view projects along ``Z``; its detector plane holds ``X`` and
``Y`` (lateral up). An MLO view at C-arm angle ``theta`` (from the CC position) projects along
``(0, sin theta, -cos theta)``; its plane holds ``X`` and ``u = (0, cos theta, sin theta)``
(superolateral up).

Compression model (the triangulation rule radiologists use): compressing the breast slides tissue
along arcs centred on the nipple, so a tissue point keeps its distance from the nipple in every
view; the view only decides the in-plane direction, which is the projection of the point's 3-D
direction onto the detector plane. A lesion at distance ``r`` from the nipple is therefore drawn
at distance ``r`` from the nipple in both CC and MLO (the property the tests check).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "ImageSize",
    "MAGNIFICATION",
    "FIELD_MM",
    "SIZES",
    "US_SIZES",
    "get_size",
    "BreastShape",
    "sample_breast_shape",
    "breast_rho",
    "pectoral_rho",
    "nipple_xy",
    "view_basis",
    "direction_3d",
    "project_direction",
    "lesion_xy",
    "project_offsets",
    "project_ellipsoid",
    "ellipsoid_matrix",
    "to_pixel",
    "inside_breast",
]

#: Estimated radiographic magnification factor at the breast (source-to-detector over
#: source-to-breast distance; DICOM EstimatedRadiographicMagnificationFactor).
MAGNIFICATION = 1.07


@dataclass(frozen=True)
class ImageSize:
    """A pixel grid for the mammograms of one size.

    Attributes:
        name: ``"tiny"``, ``"small"``, ``"demo"`` or ``"full"``.
        rows: Image rows.
        cols: Image columns.
        detector_spacing_mm: Detector pixel pitch (DICOM ImagerPixelSpacing).
    """

    name: str
    rows: int
    cols: int
    detector_spacing_mm: float

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return (self.rows, self.cols)

    @property
    def spacing_mm(self) -> float:
        """Pixel spacing at the breast plane (DICOM PixelSpacing): the detector pitch divided by
        :data:`MAGNIFICATION`. All geometry is in breast-plane millimetres."""
        return self.detector_spacing_mm / MAGNIFICATION


#: Mammogram sizes. ``full`` is a full-field detector (14-bit, 0.07 mm pixels), ``demo`` is 4x4
#: binned (0.28 mm), ``small`` 8x8 (CESM images of the demo study), ``tiny`` 16x16 (tests).
SIZES: dict[str, ImageSize] = {
    "tiny": ImageSize("tiny", 256, 208, 1.12),
    "small": ImageSize("small", 512, 416, 0.56),
    "demo": ImageSize("demo", 1024, 832, 0.28),
    "full": ImageSize("full", 4096, 3328, 0.07),
}

#: Field of view shared by every size at the breast plane (rows x columns in mm).
FIELD_MM = (4096 * 0.07 / MAGNIFICATION, 3328 * 0.07 / MAGNIFICATION)

#: Ultrasound image grids per mammogram size: (rows, cols, spacing in mm); 38.4 x 51.2 mm field.
US_SIZES: dict[str, tuple[int, int, float]] = {
    "tiny": (96, 128, 0.4),
    "small": (192, 256, 0.2),
    "demo": (384, 512, 0.1),
    "full": (768, 1024, 0.05),
}


def get_size(size: str | ImageSize) -> ImageSize:
    """Return the :class:`ImageSize` named ``size`` (or ``size`` itself).

    Raises:
        ValueError: Unknown size name.
    """
    if isinstance(size, ImageSize):
        return size
    try:
        return SIZES[size]
    except KeyError:
        raise ValueError(f"unknown phantom size {size!r}; use one of {sorted(SIZES)}") from None


@dataclass(frozen=True)
class BreastShape:
    """Physical shape of one compressed breast in both views (millimetres, canonical frame).

    Attributes:
        depth_cc: Chest wall to the ellipse apex in CC.
        lat_cc: Semi-axis above the nipple line in CC (lateral half).
        med_cc: Semi-axis below the nipple line in CC (medial half).
        yc_cc: Height of the nipple line in CC (from the top edge).
        n_cc: Super-ellipse exponent of the CC outline.
        depth_mlo: Chest wall to the apex in MLO.
        up_mlo: Semi-axis above the nipple line in MLO (reaches past the top edge: the axilla).
        down_mlo: Semi-axis below the nipple line in MLO (ends at the inframammary fold).
        yc_mlo: Height of the nipple line in MLO.
        n_mlo: Super-ellipse exponent of the MLO outline below the nipple line.
        n_up: Exponent above the nipple line (lower: a straighter axilla-to-nipple contour).
        pec_top: Width of the pectoral muscle along the top edge (MLO).
        pec_len: Length of the pectoral muscle down the chest-wall edge (MLO).
        pec_q: Exponent of the pectoral edge (1 straight, > 1 convex).
        cc_pec: Half-height of the pectoral sliver seen at the chest wall in CC (0: none).
        cc_pec_depth: Its depth into the image.
        nipple_r: Radius of the nipple bump.
        thickness: Compressed breast thickness.
        mlo_angle_deg: C-arm angle of the MLO view.
        wobble: Outline perturbation, ``((amplitude, harmonic, phase), ...)``.
    """

    depth_cc: float
    lat_cc: float
    med_cc: float
    yc_cc: float
    n_cc: float
    depth_mlo: float
    up_mlo: float
    down_mlo: float
    yc_mlo: float
    n_mlo: float
    n_up: float
    pec_top: float
    pec_len: float
    pec_q: float
    cc_pec: float
    cc_pec_depth: float
    nipple_r: float
    thickness: float
    mlo_angle_deg: float
    wobble: tuple[tuple[float, int, float], ...] = ()

    def depth(self, view: str) -> float:
        """Chest wall to the ellipse apex in ``view``."""
        return self.depth_cc if view == "CC" else self.depth_mlo

    def nipple_line(self, view: str) -> float:
        """Height of the nipple line in ``view``."""
        return self.yc_cc if view == "CC" else self.yc_mlo


def sample_breast_shape(rng: np.random.Generator, scale: float, thickness: float) -> BreastShape:
    """Draw one breast's shape.

    Args:
        rng: Random generator.
        scale: Breast size factor (about 0.75-1.25; both breasts of a woman share it).
        thickness: Compressed thickness in mm.

    Returns:
        The shape; it fits the shared field of view (:data:`FIELD_MM`) with a margin.
    """
    h, w = FIELD_MM
    u = rng.uniform
    depth_cc = min(112.0 * scale * u(0.9, 1.1), w - 25.0)
    lat = min(86.0 * scale * u(0.9, 1.1), h / 2 - 8.0)
    med = min(80.0 * scale * u(0.9, 1.1), h / 2 - 8.0)
    lo, hi = lat + 6.0, h - med - 6.0  # the whole CC outline stays inside the field
    yc_cc = (lo + hi) / 2 + u(-0.4, 0.4) * (hi - lo) / 2
    depth_mlo = min(depth_cc * u(1.0, 1.12), w - 25.0)
    yc_mlo = h * u(0.5, 0.6)
    n_mlo = u(1.9, 2.3)
    n_up = u(1.35, 1.75)
    x_top = depth_mlo * u(0.38, 0.55)  # breast width where it meets the top edge (axilla)
    up = yc_mlo / (1.0 - (x_top / depth_mlo) ** n_up) ** (1.0 / n_up)
    down = min((h - yc_mlo) * u(0.62, 0.85), 0.95 * (h - yc_mlo))
    pec_top = x_top * u(0.55, 0.85)
    pec_len = yc_mlo * u(0.75, 1.15)
    has_cc_pec = rng.random() < 0.3
    wobble = tuple(
        (float(u(0.01, 0.03)), int(k), float(u(0, 2 * math.pi))) for k in (2, 3, 5)
    )
    return BreastShape(
        depth_cc=float(depth_cc),
        lat_cc=float(lat),
        med_cc=float(med),
        yc_cc=float(yc_cc),
        n_cc=float(u(1.9, 2.4)),
        depth_mlo=float(depth_mlo),
        up_mlo=float(up),
        down_mlo=float(down),
        yc_mlo=float(yc_mlo),
        n_mlo=float(n_mlo),
        n_up=float(n_up),
        pec_top=float(pec_top),
        pec_len=float(pec_len),
        pec_q=float(u(1.0, 1.35)),
        cc_pec=float(u(15.0, 35.0)) if has_cc_pec else 0.0,
        cc_pec_depth=float(u(4.0, 12.0)) if has_cc_pec else 0.0,
        nipple_r=float(u(3.0, 5.0)),
        thickness=float(thickness),
        mlo_angle_deg=float(u(40.0, 55.0)),
        wobble=wobble,
    )


def breast_rho(shape: BreastShape, view: str, x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Normalised radius of the breast outline: ``< 1`` inside, ``1`` on the skin line.

    Args:
        shape: The breast.
        view: ``"CC"`` or ``"MLO"``.
        x: Canonical x in mm (array or scalar).
        y: Canonical y in mm (same shape as ``x``).

    Returns:
        float32 array of the broadcast shape (0-d for scalars). The nipple bump is not included
        (see :func:`nipple_xy`).
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if view == "CC":
        a, yc, n = shape.depth_cc, shape.yc_cc, shape.n_cc
        b = np.where(y < yc, np.float32(shape.lat_cc), np.float32(shape.med_cc))
    else:
        a, yc = shape.depth_mlo, shape.yc_mlo
        upper = y < yc
        b = np.where(upper, np.float32(shape.up_mlo), np.float32(shape.down_mlo))
        n = np.where(upper, np.float32(shape.n_up), np.float32(shape.n_mlo))
    dx = np.maximum(x, 0.0) / np.float32(a)
    dy = np.abs(y - np.float32(yc)) / b
    rho = (dx**n + dy**n) ** (1.0 / n)
    if shape.wobble:
        # low-order bumps of the outline, faded out towards the nipple so that the nipple stays
        # the most anterior point of the breast
        psi = np.arctan2(y - np.float32(yc), np.maximum(x, 1e-3))
        wob = np.zeros_like(rho)
        for amp, k, phase in shape.wobble:
            wob = wob + np.float32(amp) * np.cos(np.float32(k) * psi + np.float32(phase))
        rho = rho / (np.float32(1.0) + wob * np.square(np.sin(psi)))
    return rho


def pectoral_rho(shape: BreastShape, view: str, x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Normalised distance of the pectoral muscle edge: ``< 1`` inside the muscle.

    MLO: a triangle-like region in the upper chest-wall corner (convex edge when ``pec_q > 1``).
    CC: a half-ellipse sliver at the chest wall on some breasts; ``inf`` elsewhere.
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if view == "MLO":
        q = shape.pec_q
        return (np.maximum(x, 0.0) / shape.pec_top) ** q + (np.maximum(y, 0.0) / shape.pec_len) ** q
    if shape.cc_pec <= 0:
        return np.full(np.broadcast(x, y).shape, np.inf, dtype=np.float32)
    yc = shape.yc_cc + 0.1 * (shape.lat_cc - shape.med_cc)
    return np.sqrt((np.maximum(x, 0.0) / shape.cc_pec_depth) ** 2 + ((y - yc) / shape.cc_pec) ** 2)


def nipple_xy(shape: BreastShape, view: str) -> tuple[float, float]:
    """Canonical position (mm) of the nipple tip: the most anterior point of the breast."""
    return (shape.depth(view) + 0.6 * shape.nipple_r, shape.nipple_line(view))


def inside_breast(shape: BreastShape, view: str, x: float, y: float, margin_mm: float) -> bool:
    """True when the canonical point is inside the breast, ``margin_mm`` from the skin line, and
    outside the pectoral muscle (with the same margin)."""
    d = shape.depth(view)
    if x < margin_mm or y < 0 or y > FIELD_MM[0]:
        return False
    if float(breast_rho(shape, view, x, y)) > 1.0 - margin_mm / max(d, 1.0):
        return False
    x_in = x - margin_mm
    return not float(pectoral_rho(shape, view, max(x_in, 0.0), y)) < 1.0


def view_basis(view: str, mlo_angle_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(e1, e2, n)``: the detector plane's posterior and "up" axes and the projection direction,
    in the breast's 3-D frame ``(X posterior, Y lateral, Z superior)``."""
    e1 = np.array([1.0, 0.0, 0.0])
    if view == "CC":
        return e1, np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])
    t = math.radians(mlo_angle_deg)
    return (
        e1,
        np.array([0.0, math.cos(t), math.sin(t)]),
        np.array([0.0, math.sin(t), -math.cos(t)]),
    )


def direction_3d(alpha: float, phi: float) -> np.ndarray:
    """Unit vector from the nipple into the breast: ``alpha`` from the nipple axis (posterior),
    ``phi`` around it in the coronal plane (0 lateral, pi/2 superior)."""
    s = math.sin(alpha)
    return np.array([math.cos(alpha), s * math.cos(phi), s * math.sin(phi)])


def project_direction(direction: np.ndarray, view: str, mlo_angle_deg: float) -> tuple[float, float]:
    """In-plane unit vector ``(posterior, up)`` of a 3-D direction in ``view``."""
    e1, e2, _ = view_basis(view, mlo_angle_deg)
    p = np.array([direction @ e1, direction @ e2])
    norm = float(np.hypot(*p))
    if norm < 1e-6:
        return (1.0, 0.0)
    return (float(p[0] / norm), float(p[1] / norm))


def lesion_xy(
    shape: BreastShape, view: str, distance_mm: float, alpha: float, phi: float
) -> tuple[float, float]:
    """Canonical position (mm) of a point ``distance_mm`` from the nipple in direction
    ``(alpha, phi)`` (compression model in the module docstring)."""
    q1, q2 = project_direction(direction_3d(alpha, phi), view, shape.mlo_angle_deg)
    nx, ny = nipple_xy(shape, view)
    return (nx - distance_mm * q1, ny - distance_mm * q2)


def project_offsets(offsets: np.ndarray, view: str, mlo_angle_deg: float) -> np.ndarray:
    """Project 3-D offsets ``(N, 3)`` (mm, breast frame) to canonical image offsets ``(N, 2)``
    ``(dx, dy)`` in mm (posterior is ``-x``, up is ``-y``)."""
    e1, e2, _ = view_basis(view, mlo_angle_deg)
    offsets = np.asarray(offsets, dtype=np.float64).reshape(-1, 3)
    return np.stack([-(offsets @ e1), -(offsets @ e2)], axis=1)


def ellipsoid_matrix(axes_mm: tuple[float, float, float], rotation: np.ndarray) -> np.ndarray:
    """``M`` with ``x^T M x <= 1`` inside an ellipsoid of semi-axes ``axes_mm`` rotated by the
    3x3 ``rotation`` (columns are the axes' directions)."""
    r = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    d = np.diag(1.0 / np.square(np.asarray(axes_mm, dtype=np.float64)))
    return r @ d @ r.T


def project_ellipsoid(m: np.ndarray, view: str, mlo_angle_deg: float) -> tuple[np.ndarray, float]:
    """Orthographic projection of the ellipsoid ``x^T m x <= 1`` into ``view``.

    Returns:
        ``(s, c)``: the silhouette is ``u^T s u <= 1`` for canonical offsets ``u = (dx, dy)`` in mm,
        and the path length through the ellipsoid at ``u`` is
        ``2 / sqrt(c) * sqrt(1 - u^T s u)``.
    """
    e1, e2, n = view_basis(view, mlo_angle_deg)
    basis = np.stack([-e1, -e2, n], axis=1)  # canonical image axes (dx, dy) then the ray
    mm = basis.T @ m @ basis
    a = mm[:2, :2]
    b = mm[:2, 2]
    c = float(mm[2, 2])
    return a - np.outer(b, b) / c, c


def to_pixel(
    x_mm: ArrayLike, y_mm: ArrayLike, side: str, cols: int, spacing_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical millimetres to stored pixel coordinates ``(col, row)`` (floats; pixel centres
    at integers). Right breasts are flipped left-right."""
    col = np.asarray(x_mm) / spacing_mm - 0.5
    row = np.asarray(y_mm) / spacing_mm - 0.5
    if side == "R":
        col = (cols - 1) - col
    return col, row
