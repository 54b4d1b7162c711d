"""Plan -> pixels: the mammograms (and, through :mod:`~training.phantom.ultrasound` and
:mod:`~training.phantom.cesm`, the ultrasound and CESM images) of one study, with lesion masks,
boxes and the nipple position.

Image model of one MG view (canonical left-breast layout, flipped for right breasts at the end):

1. breast outline (:func:`~training.phantom.geometry.breast_rho`) plus the nipple bump; distance
   from the skin line ``e`` (mm); compressed thickness falling off in a half-circle profile of
   radius ``T/2`` towards the skin (``tf = t/T``);
2. local glandular fraction ``g`` in ``[0, 1]`` (power-law texture,
   :mod:`~training.phantom.texture`) with the dense fraction of the study's density category;
   the projected fraction along a ray is ``G = 0.03 + (G_max - 0.03) g`` plus thin fibrous
   strands, with ``G_max`` 0.30 / 0.38 / 0.48 / 0.58 for density A-D (no ray crosses only gland;
   but a lesion embedded in dense tissue displaces gland, not fat);
3. lesions (:mod:`~training.phantom.lesions`): distortion warps of ``g``, then the excess
   attenuation over fat, in glandular units of the full thickness::

       E = tf * G + sum(path * (density_ratio - g)) + spicules * (1 - g) + calcifications

   so a mass is conspicuous in fat (``g ~ 0``) and masked in dense tissue (``g ~ 1``);
4. pectoral muscle (MLO, and a sliver on some CC views), skin line, nipple;
5. "for presentation" processing: ``P = air + span * (fat * tf**0.5 + gain * E)`` (log
   image with partial periphery equalisation) through a tone curve with a soft shoulder, then
   signal-dependent detector noise (its standard deviation scales with the detector pitch as
   binned quantum noise does), rounded to 14 bits.

Stored values are MONOCHROME2 presentation values (bright = dense) in ``[0, 16383]``; the DICOM
writer inverts them for MONOCHROME1 studies.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from training.phantom.geometry import (
    ImageSize,
    breast_rho,
    get_size,
    nipple_xy,
    pectoral_rho,
    to_pixel,
)
from training.phantom.lesions import LesionLayer, render_lesion
from training.phantom.plan import BreastPlan, StudyPlan
from training.phantom.texture import fibroglandular_fraction, power_law_noise, strand_network

__all__ = [
    "MAX_VALUE",
    "LesionBox",
    "RenderedImage",
    "RenderedStudy",
    "MGComponents",
    "mg_components",
    "compose_mg",
    "render_mg",
    "render_study",
    "image_rng",
    "voi_windows",
    "detector_noise",
    "finish_image",
    "full_mask",
    "lesion_boxes",
]

logger = logging.getLogger(__name__)

#: Largest stored value (14 bits).
MAX_VALUE = 16383
_AIR = 150.0
_SPAN = 14500.0
_FAT = 0.18
_GAIN = 0.85
_KNEE = 0.82  # start of the tone curve's shoulder (fraction of the span)
_G_MIN = 0.03  # projected glandular fraction of fatty regions
#: ... and of the densest regions, per density category (no ray crosses only gland; the
#: residual tissue of a fatty breast is thin)
_G_MAX = {"A": 0.3, "B": 0.38, "C": 0.48, "D": 0.58}
_NOISE_AT_DEMO = 70.0  # P-value standard deviation at 0.28 mm for mid-grey tissue
_RENDER_STREAM = 2
_SIDE_CODE = {"R": 0, "L": 1}
_VIEW_CODE = {"CC": 0, "MLO": 1}
_MOD_CODE = {"MG": 0, "US": 1, "CESM": 2}


@dataclass(frozen=True)
class LesionBox:
    """A lesion as seen in one stored image (pixel coordinates: x = column, y = row).

    Attributes:
        finding: ``mass``, ``calcification``, ``distortion`` or ``cyst``.
        pathology: ``benign`` or ``malignant``.
        morphology: Descriptor from the plan.
        subtle: The lesion was made subtle on purpose.
        box: ``(x0, y0, x1, y1)``: first column/row inside the mask and one past the last.
        center: ``(x, y)`` of the lesion centre (the projected 3-D centre; for calcifications the
            centroid of the group in this view), pixel centres at integers.
        distance_to_nipple_mm: In-image distance from the nipple tip to the centre (MG/CESM),
            or the distance from the nipple written on the US image.
    """

    finding: str
    pathology: str
    morphology: str
    subtle: bool
    box: tuple[int, int, int, int]
    center: tuple[float, float]
    distance_to_nipple_mm: float


@dataclass
class RenderedImage:
    """One image of a study, ready to be written.

    Attributes:
        modality: ``"MG"``, ``"US"`` or ``"CESM"``.
        side: ``"L"`` or ``"R"``.
        view: ``"CC"`` / ``"MLO"``, or None for US.
        kind: CESM ``"low_energy"`` / ``"recombined"``, else None.
        number: US image number within the breast (1, 2), else 0.
        pixels: MONOCHROME2 values: uint16 in ``[0, 16383]`` (MG, CESM) or uint8 (US).
        spacing_mm: ``(row, column)`` spacing.
        mask: Boolean union of the lesion masks, or None when the image shows no lesion.
        lesions: Lesions in this image.
        nipple: ``(x, y)`` pixel position of the nipple tip (MG, CESM), else None.
        breast_mask: Boolean breast region (MG, CESM), else None.
        windows: VOI windows ``[(center, width, explanation), ...]`` for MONOCHROME2 values.
        meta: Extra acquisition facts for the DICOM header (thickness, kVp, clock position...).
    """

    modality: str
    side: str
    view: str | None
    kind: str | None
    number: int
    pixels: np.ndarray
    spacing_mm: tuple[float, float]
    mask: np.ndarray | None
    lesions: list[LesionBox]
    nipple: tuple[float, float] | None = None
    breast_mask: np.ndarray | None = None
    windows: list[tuple[float, float, str]] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def stem(self) -> str:
        """File stem: ``MG_L_CC``, ``US_L_1``, ``CESM_L_CC_LE`` ..."""
        if self.modality == "MG":
            return f"MG_{self.side}_{self.view}"
        if self.modality == "US":
            return f"US_{self.side}_{self.number}"
        return f"CESM_{self.side}_{self.view}_{'LE' if self.kind == 'low_energy' else 'RC'}"


@dataclass
class RenderedStudy:
    """All images of one study."""

    plan: StudyPlan
    size: ImageSize
    images: list[RenderedImage]


@dataclass
class MGComponents:
    """The noise-free physical maps of one view (canonical orientation) that the MG image and the
    CESM low-energy and recombined images are composed from.

    Attributes:
        size: Image grid.
        side: Breast side.
        view: ``"CC"`` or ``"MLO"``.
        inside: Breast mask.
        edge_mm: Distance from the skin line (0 outside).
        tf: Thickness fraction ``t / T``.
        gland: Local glandular fraction ``g`` in ``[0, 1]`` after distortion warps (the
            projected fraction along a ray is ``0.03 + (G_max - 0.03) g``).
        excess: ``E`` (see module docstring), pectoral, skin and nipple included.
        layers: Lesion layers.
        nipple_xy_mm: Canonical nipple tip.
    """

    size: ImageSize
    side: str
    view: str
    inside: np.ndarray
    edge_mm: np.ndarray
    tf: np.ndarray
    gland: np.ndarray
    excess: np.ndarray
    layers: list[LesionLayer]
    nipple_xy_mm: tuple[float, float]


def image_rng(plan: StudyPlan, modality: str, side: str, view: str | None, extra: int = 0) -> np.random.Generator:
    """The random stream of one image: a function of (seed, study index, image identity) only."""
    return np.random.default_rng(
        np.random.SeedSequence(
            [
                plan.seed,
                plan.index,
                _RENDER_STREAM,
                _MOD_CODE[modality],
                _SIDE_CODE[side],
                _VIEW_CODE.get(view or "", 2),
                extra,
            ]
        )
    )


def _coarse_factor(size: ImageSize) -> int:
    return max(1, size.rows // 256)


def _clip01(a: np.ndarray) -> np.ndarray:
    """``clip(a, 0, 1)`` in place (``np.clip`` is several times slower on large arrays)."""
    np.maximum(a, np.float32(0.0), out=a)
    np.minimum(a, np.float32(1.0), out=a)
    return a


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = _clip01((x - np.float32(lo)) / np.float32(hi - lo))
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)


def mg_components(
    plan: StudyPlan, breast: BreastPlan, view: str, size: ImageSize, rng: np.random.Generator
) -> MGComponents:
    """Build the noise-free maps of one view (steps 1-4 of the module docstring).

    Args:
        plan: The study.
        breast: The breast.
        view: ``"CC"`` or ``"MLO"``.
        size: Image grid.
        rng: The image's random stream (texture).

    Returns:
        The components.
    """
    shape = breast.shape
    sp = size.spacing_mm
    rows, cols = size.shape
    f = _coarse_factor(size)
    cr, cc = -(-rows // f), -(-cols // f)
    # smooth fields on a coarse grid, then bilinear upsampling to full resolution
    xs = ((np.arange(cc, dtype=np.float32) + 0.5) * f * sp)[None, :]
    ys = ((np.arange(cr, dtype=np.float32) + 0.5) * f * sp)[:, None]
    xg, yg = np.broadcast_to(xs, (cr, cc)), np.broadcast_to(ys, (cr, cc))
    rho_b = breast_rho(shape, view, xg, yg).astype(np.float32)
    rho_p = pectoral_rho(shape, view, xg, yg).astype(np.float32)
    rho_p = np.minimum(rho_p, np.float32(10.0))
    nx, ny = nipple_xy(shape, view)
    depth = shape.depth(view)
    dfrac = (np.float32(nx) - xg) / np.float32(depth)
    if view == "CC":
        b = 0.5 * (shape.lat_cc + shape.med_cc)
        yg_c = ny - 0.12 * shape.lat_cc
    else:
        b = 0.55 * (shape.up_mlo + shape.down_mlo) * 0.6
        yg_c = ny - 0.25 * b
    envelope = np.exp(-np.square((dfrac - np.float32(0.45)) / np.float32(0.42)))
    envelope *= np.exp(-np.square((yg - np.float32(yg_c)) / np.float32(0.95 * b)))
    envelope *= _smoothstep(xg, 4.0, 16.0)  # retromammary fat at the chest wall
    envelope = envelope.astype(np.float32)

    def up(a: np.ndarray) -> np.ndarray:
        if f == 1:
            return a[:rows, :cols]
        return cv2.resize(a, (cc * f, cr * f), interpolation=cv2.INTER_LINEAR)[:rows, :cols]

    rho_b, rho_p, envelope = up(rho_b), up(rho_p), up(envelope)
    inside = rho_b < 1.0
    # nipple bump (a disc at the apex), drawn on a small patch at full resolution
    rn = shape.nipple_r
    ncx, ncy = depth - 0.4 * rn, shape.nipple_line(view)
    j0, j1 = max(int((ncx - rn) / sp) - 1, 0), min(int((ncx + rn) / sp) + 2, cols)
    i0, i1 = max(int((ncy - rn) / sp) - 1, 0), min(int((ncy + rn) / sp) + 2, rows)
    nip_x = (np.arange(j0, j1, dtype=np.float32) + 0.5) * sp - ncx
    nip_y = (np.arange(i0, i1, dtype=np.float32) + 0.5) * sp - ncy
    nip_d = np.sqrt(nip_x[None, :] ** 2 + nip_y[:, None] ** 2)
    nipple = _clip01((np.float32(rn) - nip_d) / np.float32(max(sp, 0.3)))
    inside[i0:i1, j0:j1] |= nipple > 0.5
    inside_f = inside.astype(np.float32)

    # distance from the skin line; the chest-wall edge (and the axilla at the top edge of MLO
    # views) is not skin, so the mask is extended past those edges before the transform
    thick = shape.thickness
    pad = int(math.ceil(thick / 2.0 / sp)) + 2
    top = pad if view == "MLO" else 0
    m8 = cv2.copyMakeBorder(inside.astype(np.uint8), top, 0, pad, 0, cv2.BORDER_REPLICATE)
    edge = cv2.distanceTransform(m8, cv2.DIST_L2, 5)[top:, pad:] * np.float32(sp)
    r_edge = np.float32(thick / 2.0)
    e_rel = np.minimum(edge / r_edge, np.float32(1.0))
    tf = np.sqrt(e_rel * (np.float32(2.0) - e_rel))  # e_rel in [0, 1]: no negative roots

    # fibroglandular tissue: the envelope keeps a subcutaneous fat layer too
    envelope *= _smoothstep(edge, 2.0, 9.0)
    field_ = power_law_noise(rng, (rows, cols), sp, beta=3.0, min_spacing_mm=0.13)
    gland = fibroglandular_fraction(field_, envelope, inside, plan.dense_fraction)
    strands = strand_network(rng, (rows, cols), sp, width_mm=0.35, beta=4.5)

    layers: list[LesionLayer] = []
    if breast.lesion is not None and view in breast.views:
        layer = render_lesion(breast.lesion, shape, view, size)
        layers.append(layer)
        if layer.warp is not None:
            rs, cs = layer.slices
            for a in (gland, strands):
                patch = np.ascontiguousarray(a[rs, cs])
                a[rs, cs] = cv2.remap(
                    patch, layer.warp[0], layer.warp[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
                )

    # projected glandular fraction along the ray; ``gland`` itself is the local fraction
    # around a lesion's depth (what the lesion displaces)
    g_max = _G_MAX[plan.density]
    proj = np.float32(_G_MIN) + np.float32(g_max - _G_MIN) * gland
    proj += np.float32(0.1) * strands * (np.float32(1.0) - gland)
    proj *= inside_f
    excess = tf * proj
    for layer in layers:
        rs, cs = layer.slices
        g_p = gland[rs, cs]
        if layer.path is not None:
            excess[rs, cs] += layer.path * (np.float32(layer.lesion.density_ratio) - g_p)
        if layer.strands is not None:
            excess[rs, cs] += layer.strands * (np.float32(1.0) - g_p) * tf[rs, cs]
        if layer.calcs is not None:
            excess[rs, cs] += layer.calcs
    # pectoral muscle: a bright band with a slightly soft edge, partly overlapping the gland
    level = np.float32(rng.uniform(0.55, 0.75))
    if view == "MLO" or shape.cc_pec > 0:
        soft = np.float32(0.6 / max(shape.pec_top if view == "MLO" else shape.cc_pec_depth, 1.0))
        pm = _clip01((np.float32(1.0) - rho_p) / soft + np.float32(0.5)) * inside_f
        muscle = level * (np.float32(1.0) + np.float32(0.04) * field_)
        excess = excess * (np.float32(1.0) - np.float32(0.7) * pm) + pm * muscle
    # skin line (about 1 mm of dense skin seen tangentially) and nipple
    skin = np.maximum(np.float32(1.0) - edge / np.float32(1.6), np.float32(0.0))
    skin *= skin
    skin *= np.float32(0.28) * inside_f
    excess += skin
    excess[i0:i1, j0:j1] += np.float32(0.25) * nipple
    return MGComponents(
        size=size,
        side=breast.side,
        view=view,
        inside=inside,
        edge_mm=edge,
        tf=tf,
        gland=gland,
        excess=excess.astype(np.float32, copy=False),
        layers=layers,
        nipple_xy_mm=(nx, ny),
    )


def detector_noise(rng: np.random.Generator, size: ImageSize) -> np.ndarray:
    """White noise with unit standard deviation at the demo pixel pitch (0.28 mm), scaled for
    the detector pitch of ``size`` (binning n x n pixels divides sigma by n)."""
    return rng.standard_normal(size.shape, dtype=np.float32) * np.float32(0.28 / size.detector_spacing_mm)


def compose_mg(comp: MGComponents, rng: np.random.Generator, gain: float = _GAIN) -> np.ndarray:
    """Presentation values of a view (step 5), canonical orientation, uint16 in ``[0, 16383]``."""
    p_norm = (np.float32(_FAT) * np.sqrt(comp.tf) + np.float32(gain) * comp.excess) * comp.inside
    # tone curve with a soft shoulder: dense tissue + calcifications never clip at 14 bits
    knee = np.float32(_KNEE)
    high = p_norm > knee
    if high.any():
        p_norm[high] = knee + np.float32(1.0 - _KNEE) * np.tanh((p_norm[high] - knee) / np.float32(1.0 - _KNEE))
    sigma = np.float32(_NOISE_AT_DEMO) * (np.float32(0.5) + np.float32(1.0) * p_norm)
    p = np.float32(_AIR) + np.float32(_SPAN) * p_norm + sigma * detector_noise(rng, comp.size)
    np.rint(p, out=p)
    np.maximum(p, np.float32(0.0), out=p)
    np.minimum(p, np.float32(MAX_VALUE), out=p)
    return p.astype(np.uint16)


def voi_windows(pixels: np.ndarray, inside: np.ndarray) -> list[tuple[float, float, str]]:
    """Two VOI presets from the breast's value range: ``NORMAL`` and ``DENSE`` (narrower, for
    the bright end), as ``(center, width, explanation)`` on MONOCHROME2 values."""
    vals = pixels[::2, ::2][inside[::2, ::2]]
    if vals.size == 0:
        return [(MAX_VALUE / 2.0, float(MAX_VALUE), "NORMAL")]
    lo, mid, hi = (float(v) for v in np.percentile(vals, [1.0, 40.0, 99.5]))
    return [
        (float(round((lo + hi) / 2.0)), float(max(round((hi - lo) * 1.05), 2)), "NORMAL"),
        (float(round((mid + hi) / 2.0)), float(max(round(hi - mid), 2)), "DENSE"),
    ]


def _flip(a: np.ndarray, side: str) -> np.ndarray:
    return np.ascontiguousarray(a[:, ::-1]) if side == "R" else a


def lesion_boxes(comp: MGComponents) -> list[LesionBox]:
    """Boxes and centres of the lesion layers in stored (flipped for R) pixel coordinates."""
    out = []
    size = comp.size
    nx, ny = comp.nipple_xy_mm
    for layer in comp.layers:
        les = layer.lesion
        rows_, cols_ = np.nonzero(layer.mask)
        if rows_.size == 0:
            continue
        x0 = layer.c0 + int(cols_.min())
        x1 = layer.c0 + int(cols_.max()) + 1
        y0 = layer.r0 + int(rows_.min())
        y1 = layer.r0 + int(rows_.max()) + 1
        if comp.side == "R":
            x0, x1 = size.cols - x1, size.cols - x0
        cx, cy = layer.center_xy_mm
        col, row = to_pixel(cx, cy, comp.side, size.cols, size.spacing_mm)
        out.append(
            LesionBox(
                finding=les.finding,
                pathology=les.pathology,
                morphology=les.morphology,
                subtle=les.subtle,
                box=(x0, y0, x1, y1),
                center=(float(col), float(row)),
                distance_to_nipple_mm=float(math.hypot(cx - nx, cy - ny)),
            )
        )
    return out


def full_mask(comp: MGComponents) -> np.ndarray | None:
    """Union of the lesion masks in the canonical full image, or None without lesions."""
    if not comp.layers:
        return None
    mask = np.zeros(comp.size.shape, dtype=bool)
    for layer in comp.layers:
        rs, cs = layer.slices
        mask[rs, cs] |= layer.mask
    return mask


def finish_image(
    comp: MGComponents, pixels_canonical: np.ndarray, modality: str, kind: str | None, meta: dict
) -> RenderedImage:
    """Flip to the stored orientation and attach masks, boxes, nipple and VOI presets."""
    side = comp.side
    size = comp.size
    mask = full_mask(comp)
    pixels = _flip(pixels_canonical, side)
    inside = _flip(comp.inside, side)
    ncol, nrow = to_pixel(*comp.nipple_xy_mm, side, size.cols, size.spacing_mm)
    return RenderedImage(
        modality=modality,
        side=side,
        view=comp.view,
        kind=kind,
        number=0,
        pixels=pixels,
        spacing_mm=(size.spacing_mm, size.spacing_mm),
        mask=_flip(mask, side) if mask is not None else None,
        lesions=lesion_boxes(comp),
        nipple=(float(ncol), float(nrow)),
        breast_mask=inside,
        windows=voi_windows(pixels, inside),
        meta=meta,
    )


def render_mg(plan: StudyPlan, side: str, view: str, size: str | ImageSize = "demo") -> RenderedImage:
    """Render one mammogram of a study.

    Args:
        plan: The study.
        side: ``"L"`` or ``"R"`` (must be imaged in the plan).
        view: ``"CC"`` or ``"MLO"``.
        size: Size name or grid.

    Returns:
        The image (stored orientation, MONOCHROME2 values).

    Raises:
        KeyError: The side is not imaged in this study.
    """
    size = get_size(size)
    breast = plan.breasts[side]
    rng = image_rng(plan, "MG", side, view)
    comp = mg_components(plan, breast, view, size, rng)
    pixels = compose_mg(comp, rng)
    return finish_image(comp, pixels, "MG", None, _mg_meta(breast, view))


def _mg_meta(breast: BreastPlan, view: str) -> dict:
    t = breast.shape.thickness
    return {
        "thickness_mm": round(t, 1),
        "kvp": round(26.0 + 0.12 * (t - 30.0), 0),
        "mas": round(40.0 + 2.2 * (t - 30.0), 1),
        "compression_n": round(90.0 + 0.8 * (t - 30.0), 0),
        "angle_deg": 0.0 if view == "CC" else round(breast.shape.mlo_angle_deg, 0),
    }


def render_study(
    plan: StudyPlan,
    size: str | ImageSize = "demo",
    with_us: bool = False,
    with_cesm: bool = False,
    cesm_size: str | ImageSize | None = None,
) -> RenderedStudy:
    """Render every image of a study.

    Args:
        plan: The study plan.
        size: Mammogram size (``tiny``, ``small``, ``demo``, ``full``).
        with_us: Also render the plan's ultrasound images.
        with_cesm: Also render CESM low-energy and recombined images of every MG view.
        cesm_size: Size of the CESM images (default: ``size``).

    Returns:
        The images, MG first (R-CC, L-CC, R-MLO, L-MLO order), then US, then CESM.
    """
    from training.phantom.cesm import render_cesm
    from training.phantom.ultrasound import render_us

    size = get_size(size)
    images = [render_mg(plan, side, view, size) for side, view in plan.views_present()]
    if with_us:
        for side in ("R", "L"):
            b = plan.breasts.get(side)
            if b is None:
                continue
            for k in range(1, b.n_us + 1):
                images.append(render_us(plan, b, k, size.name))
    if with_cesm:
        csize = get_size(cesm_size) if cesm_size is not None else size
        for side, view in plan.views_present():
            images.extend(render_cesm(plan, plan.breasts[side], view, csize))
    logger.debug("rendered %d images of one study at %s size", len(images), size.name)
    return RenderedStudy(plan=plan, size=size, images=images)
