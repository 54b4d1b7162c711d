"""Per-study plans: every label and every geometric choice of a synthetic study, and no pixels.

A :class:`StudyPlan` is a pure function of ``(seed, index)``: the study ``P0003`` of seed 7 is the
same whether 3 or 3,000 studies are drawn, and drawing 1,000 plans takes about a quarter of a
second. Rendering (:mod:`training.phantom.render`) turns a plan into pixels with its own
random streams, so labels never depend on the image size.

What is drawn (an enriched screening population, not a natural one, so models see enough disease):

- age 35-85 (mean 56); density A-D from the BI-RADS atlas mix (about 10/42/38/10 %), denser when
  younger; the dense-tissue fraction of the breast area within the category's range;
- per breast: pathology normal (about 76 %), benign (about 15 %), malignant (about 9 %, rising
  with age); bilateral disease happens by chance, 4 % of studies image one breast only, 5 % miss
  one view;
- benign findings: oval circumscribed mass, cyst, scattered round calcifications;
  malignant: irregular spiculated or indistinct mass, clustered pleomorphic calcifications,
  architectural distortion; about a quarter of lesions are subtle (small, low contrast);
- the lesion's 3-D position (distance from the nipple and direction), size and shape parameters;
- BI-RADS from the finding (the category a reader would give its appearance) with reader noise:
  subtle lesions in dense breasts get missed (malignant called 1-2), some benign lesions are
  recalled as 4, some normal breasts are called 2-3 — the ``discordant`` flag marks the cases
  where BI-RADS 4-5 and malignancy disagree.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from training.phantom.geometry import (
    BreastShape,
    inside_breast,
    lesion_xy,
    sample_breast_shape,
)

__all__ = [
    "FINDINGS",
    "LesionPlan",
    "BreastPlan",
    "StudyPlan",
    "study_id_for",
    "plan_study",
    "plan_studies",
    "demo_plan",
    "DEMO_STUDY_ID",
    "label_rows",
    "LABEL_COLUMNS",
    "label_stats",
]

#: Values of the ``finding`` column.
FINDINGS = ("none", "mass", "calcification", "distortion", "cyst")
DENSITIES = ("A", "B", "C", "D")
_DENSE_RANGE = {"A": (0.05, 0.18), "B": (0.22, 0.42), "C": (0.48, 0.66), "D": (0.74, 0.9)}
#: Folder name of the bundled demo study (``resources/samples/demo/P0001``).
DEMO_STUDY_ID = "P0001"
_PLAN_STREAM = 1  # SeedSequence entropy tag of the plan stream (render uses other tags)


@dataclass(frozen=True)
class LesionPlan:
    """One lesion, in the breast's 3-D frame.

    Attributes:
        finding: ``mass``, ``calcification``, ``distortion`` or ``cyst``.
        pathology: ``benign`` or ``malignant``.
        morphology: Descriptor (``oval circumscribed``, ``irregular spiculated``,
            ``irregular indistinct``, ``round cyst``, ``scattered round``,
            ``clustered pleomorphic``, ``architectural distortion``).
        size_mm: Longest diameter of the mass, or the extent of the calcifications/distortion.
        axes_mm: Semi-axes of the mass ellipsoid (``X, Y, Z`` before rotation).
        rotation: 3x3 rotation (row-major, 9 floats) of the ellipsoid.
        distance_mm: Distance from the nipple (the same in every view).
        alpha: Angle from the nipple axis (radians).
        phi: Angle around the nipple axis in the coronal plane (0 lateral, pi/2 superior).
        density_ratio: Attenuation of the lesion relative to glandular tissue (masses, cysts).
        subtle: Small and/or low contrast on purpose.
        n_calcs: Number of calcifications (calcification findings).
        n_spicules: Number of spicules (spiculated masses, distortion).
        irregularity: Amplitude of the outline's harmonics (0 smooth).
        margin_blur_mm: Blur of the margin (indistinct margins).
        enhancement: Contrast uptake in CESM recombined images (0-1).
        shape_seed: Seed of the lesion's own shape details (calcification and spicule layout),
            shared by all views so that CC and MLO show the same 3-D object.
    """

    finding: str
    pathology: str
    morphology: str
    size_mm: float
    axes_mm: tuple[float, float, float]
    rotation: tuple[float, ...]
    distance_mm: float
    alpha: float
    phi: float
    density_ratio: float
    subtle: bool
    n_calcs: int
    n_spicules: int
    irregularity: float
    margin_blur_mm: float
    enhancement: float
    shape_seed: int

    @property
    def radius_mm(self) -> float:
        """Half the size."""
        return self.size_mm / 2.0


@dataclass(frozen=True)
class BreastPlan:
    """One imaged breast: labels, shape, lesion, views.

    Attributes:
        side: ``"L"`` or ``"R"``.
        pathology: ``normal``, ``benign`` or ``malignant``.
        birads: BI-RADS assessment 1-5 (reader's call, with noise).
        birads_true: The category the lesion's appearance calls for (before reader noise).
        finding: One of :data:`FINDINGS`.
        lesion: The lesion, or None for a normal breast.
        shape: Breast shape.
        views: MG views present, subset of ``("CC", "MLO")``.
        n_us: Ultrasound images of this breast when ultrasound is written.
        discordant: True when (BI-RADS >= 4) disagrees with (pathology is malignant).
    """

    side: str
    pathology: str
    birads: int
    birads_true: int
    finding: str
    lesion: LesionPlan | None
    shape: BreastShape
    views: tuple[str, ...]
    n_us: int
    discordant: bool


@dataclass(frozen=True)
class StudyPlan:
    """Everything about one synthetic study except its pixels.

    Attributes:
        study_id: Folder name, ``P0001`` ...
        seed: Dataset seed.
        index: Study index within the dataset (0-based).
        age: Patient age in years.
        density: BI-RADS density category ``A``-``D``.
        dense_fraction: Fraction of the breast area that is dense tissue.
        breasts: Imaged breasts keyed by side (one or two).
        photometric: ``MONOCHROME2`` or ``MONOCHROME1`` for the MG/CESM files.
        voi_function: ``LINEAR`` or ``SIGMOID``.
        rle: Write MG/CESM pixel data RLE Lossless compressed.
        bpe: Background parenchymal enhancement (CESM): ``minimal``, ``mild``, ``moderate``,
            ``marked``.
        acquired: Acquisition date-time of the mammograms.
    """

    study_id: str
    seed: int
    index: int
    age: int
    density: str
    dense_fraction: float
    breasts: dict[str, BreastPlan] = field(default_factory=dict)
    photometric: str = "MONOCHROME2"
    voi_function: str = "LINEAR"
    rle: bool = False
    bpe: str = "minimal"
    acquired: _dt.datetime = _dt.datetime(2024, 1, 1, 9, 0, 0)

    def views_present(self) -> list[tuple[str, str]]:
        """``[(side, view), ...]`` in the order R-CC, L-CC, R-MLO, L-MLO."""
        out = []
        for view in ("CC", "MLO"):
            for side in ("R", "L"):
                b = self.breasts.get(side)
                if b is not None and view in b.views:
                    out.append((side, view))
        return out


def study_id_for(index: int) -> str:
    """``0 -> "P0001"``."""
    return f"P{index + 1:04d}"


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal(4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _choice(rng: np.random.Generator, items: tuple, probs: tuple) -> object:
    return items[int(rng.choice(len(items), p=np.asarray(probs) / np.sum(probs)))]


def _sample_lesion(rng: np.random.Generator, pathology: str, shape: BreastShape) -> LesionPlan:
    if pathology == "benign":
        finding, morphology = _choice(
            rng,
            (("mass", "oval circumscribed"), ("cyst", "round cyst"), ("calcification", "scattered round")),
            (0.45, 0.25, 0.30),
        )
    else:
        finding, morphology = _choice(
            rng,
            (
                ("mass", "irregular spiculated"),
                ("mass", "irregular indistinct"),
                ("calcification", "clustered pleomorphic"),
                ("distortion", "architectural distortion"),
            ),
            (0.35, 0.20, 0.30, 0.15),
        )
    subtle = bool(rng.random() < 0.25)
    n_calcs = n_spicules = 0
    irregularity = margin_blur = 0.0
    if finding in ("mass", "cyst"):
        size = float(np.clip(rng.lognormal(math.log(14.0), 0.35), 7.0, 35.0))
        if subtle:
            size = float(np.clip(size * 0.6, 5.0, 14.0))
        elong = rng.uniform(1.0, 1.25) if finding == "cyst" else rng.uniform(1.1, 1.7)
        if morphology == "irregular spiculated":
            elong = rng.uniform(1.0, 1.3)
        a = size / 2.0
        axes = (a, a / elong, a / rng.uniform(1.0, elong))
        # attenuation relative to glandular tissue: masses are about as dense as gland (which
        # is what hides them in dense breasts), malignant ones a little denser
        if pathology == "malignant":
            ratio = rng.uniform(1.05, 1.35)
        elif finding == "cyst":
            ratio = rng.uniform(1.0, 1.15)
        else:
            ratio = rng.uniform(1.0, 1.25)
        if subtle:
            ratio *= rng.uniform(0.7, 0.85)
        if morphology == "irregular spiculated":
            irregularity, margin_blur = rng.uniform(0.08, 0.16), rng.uniform(0.3, 0.8)
            n_spicules = int(rng.integers(8, 20))
        elif morphology == "irregular indistinct":
            irregularity, margin_blur = rng.uniform(0.10, 0.20), rng.uniform(1.0, 2.5)
        elif finding == "cyst":
            irregularity, margin_blur = rng.uniform(0.0, 0.02), 0.0
        else:
            irregularity, margin_blur = rng.uniform(0.01, 0.04), rng.uniform(0.0, 0.3)
    elif finding == "calcification":
        if morphology == "clustered pleomorphic":
            size = float(rng.uniform(5.0, 15.0))
            n_calcs = int(rng.integers(6, 30))
        else:
            size = float(rng.uniform(15.0, 40.0))
            n_calcs = int(rng.integers(5, 16))
        if subtle:
            n_calcs = max(4, n_calcs // 2)
        axes = (size / 2.0,) * 3
        ratio = rng.uniform(0.8, 1.0) * (0.55 if subtle else 1.0)  # calcification density factor
    else:  # distortion
        size = float(rng.uniform(18.0, 40.0))
        if subtle:
            size *= 0.75
        axes = (size / 2.0,) * 3
        ratio = rng.uniform(0.7, 1.0) * (0.6 if subtle else 1.0)  # spicule contrast factor
        n_spicules = int(rng.integers(12, 26))
    if pathology == "malignant":
        enhancement = rng.uniform(0.35, 0.7) if finding != "calcification" else rng.uniform(0.15, 0.35)
    elif finding == "cyst":
        enhancement = 0.0
    else:
        enhancement = rng.uniform(0.0, 0.2) if finding != "calcification" else 0.0
    if subtle:
        enhancement *= 0.6
    rotation = _random_rotation(rng)

    # 3-D position: distance from the nipple and direction; the upper outer quadrant is the
    # most common site. Rejection-sampled so the lesion lies inside the breast in every view.
    radius = size / 2.0
    for attempt in range(400):
        r = rng.uniform(0.3, 0.85) * shape.depth_cc
        r = max(r, 18.0)
        alpha = rng.uniform(0.0, math.radians(58.0))
        if rng.random() < 0.5:
            phi = float(rng.vonmises(math.pi / 4, 2.0))
        else:
            phi = float(rng.uniform(-math.pi, math.pi))
        margin = 3.0 + 0.6 * radius * (1.0 - attempt / 400.0)
        ok = True
        for view in ("CC", "MLO"):
            x, y = lesion_xy(shape, view, r, alpha, phi)
            if not inside_breast(shape, view, x, y, margin):
                ok = False
                break
        if ok:
            break
    else:  # pragma: no cover - the loop always finds a place for the sizes drawn above
        r, alpha, phi = 0.5 * shape.depth_cc, 0.0, 0.0
    return LesionPlan(
        finding=finding,
        pathology=pathology,
        morphology=morphology,
        size_mm=float(size),
        axes_mm=tuple(float(v) for v in axes),
        rotation=tuple(float(v) for v in rotation.ravel()),
        distance_mm=float(r),
        alpha=float(alpha),
        phi=float(phi),
        density_ratio=float(ratio),
        subtle=subtle,
        n_calcs=n_calcs,
        n_spicules=n_spicules,
        irregularity=float(irregularity),
        margin_blur_mm=float(margin_blur),
        enhancement=float(enhancement),
        shape_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _true_birads(lesion: LesionPlan | None, rng: np.random.Generator) -> int:
    if lesion is None:
        return 1
    m = lesion.morphology
    if m in ("round cyst", "scattered round"):
        return 2
    if m == "oval circumscribed":
        return 3 if rng.random() < 0.7 else 2
    if m == "irregular spiculated":
        return 5 if rng.random() < 0.75 else 4
    if m == "irregular indistinct":
        return 4 if rng.random() < 0.6 else 5
    if m == "clustered pleomorphic":
        return 4 if rng.random() < 0.7 else 5
    return 4 if rng.random() < 0.8 else 5  # architectural distortion


def _reader_birads(
    true: int, pathology: str, lesion: LesionPlan | None, density: str, rng: np.random.Generator
) -> int:
    """Reader noise: what a screening reader would write, misses and over-calls included."""
    dense = density in ("C", "D")
    subtle = lesion is not None and lesion.subtle
    u = rng.random()
    if pathology == "normal":
        if u < 0.05:
            return 2
        if u < 0.065:
            return 3
        if u < 0.07:
            return 4
        return 1
    if pathology == "benign":
        p_noise = 0.10 + 0.08 * subtle
        if u < p_noise * 0.6:
            return 4
        if u < p_noise:
            return 1
        return true
    p_miss = 0.02 + 0.08 * subtle + 0.04 * dense + 0.08 * (subtle and dense)
    if u < p_miss:
        return 1 if rng.random() < 0.7 else 2
    if u < p_miss + 0.06:
        return 3
    return true


def _age_density(rng: np.random.Generator) -> tuple[int, str, float]:
    age = int(np.clip(round(rng.normal(56.0, 9.0)), 35, 85))
    if age < 50:
        probs = (0.05, 0.33, 0.45, 0.17)
    elif age > 65:
        probs = (0.17, 0.50, 0.28, 0.05)
    else:
        probs = (0.10, 0.42, 0.38, 0.10)
    density = str(_choice(rng, DENSITIES, probs))
    lo, hi = _DENSE_RANGE[density]
    return age, density, float(rng.uniform(lo, hi))


def plan_study(seed: int, index: int) -> StudyPlan:
    """Draw the plan of study ``index`` of dataset ``seed`` (deterministic).

    Args:
        seed: Non-negative dataset seed.
        index: Non-negative study index.

    Returns:
        The plan.

    Raises:
        ValueError: Negative seed or index.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0 (got {seed}, {index})")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), _PLAN_STREAM]))
    age, density, dense_fraction = _age_density(rng)
    # Layout: single-breast studies, and a missing view now and then.
    sides = ["R", "L"]
    if rng.random() < 0.04:
        sides = [str(rng.choice(sides))]
    views = {s: ["CC", "MLO"] for s in sides}
    if rng.random() < 0.05:
        side = str(rng.choice(sides))
        views[side].remove(str(rng.choice(views[side])))
    scale = rng.uniform(0.75, 1.25)
    thickness = float(np.clip(rng.normal(52.0, 10.0) * (0.8 + 0.25 * scale), 25.0, 85.0))
    p_malignant = 0.11 * float(np.clip(0.6 + 0.014 * (age - 40), 0.5, 1.4))
    breasts: dict[str, BreastPlan] = {}
    for side in ("R", "L"):
        # Draw everything for both sides so one side's labels do not depend on the layout.
        shape = sample_breast_shape(rng, scale * rng.uniform(0.96, 1.04), thickness * rng.uniform(0.95, 1.05))
        u = rng.random()
        pathology = "malignant" if u < p_malignant else ("benign" if u < p_malignant + 0.13 else "normal")
        lesion = _sample_lesion(rng, pathology, shape) if pathology != "normal" else None
        true = _true_birads(lesion, rng)
        birads = _reader_birads(true, pathology, lesion, density, rng)
        finding = lesion.finding if lesion is not None else "none"
        if finding in ("mass", "cyst", "distortion"):
            n_us = int(rng.integers(1, 3))
        elif finding == "calcification":
            n_us = int(rng.random() < 0.4)
        else:
            n_us = int(rng.random() < 0.12)
        if side in views:
            breasts[side] = BreastPlan(
                side=side,
                pathology=pathology,
                birads=birads,
                birads_true=true,
                finding=finding,
                lesion=lesion,
                shape=shape,
                views=tuple(views[side]),
                n_us=n_us,
                discordant=(birads >= 4) != (pathology == "malignant"),
            )
    photometric = "MONOCHROME1" if rng.random() < 0.2 else "MONOCHROME2"
    voi = "SIGMOID" if rng.random() < 0.2 else "LINEAR"
    rle = bool(rng.random() < 0.25)
    bpe_probs = (0.45, 0.32, 0.16, 0.07) if age >= 50 else (0.30, 0.35, 0.23, 0.12)
    bpe = str(_choice(rng, ("minimal", "mild", "moderate", "marked"), bpe_probs))
    day = _dt.date(2021, 1, 4) + _dt.timedelta(days=int(rng.integers(0, 1100)))
    t0 = _dt.datetime.combine(day, _dt.time(8, 0)) + _dt.timedelta(seconds=int(rng.integers(0, 9 * 3600)))
    return StudyPlan(
        study_id=study_id_for(index),
        seed=int(seed),
        index=int(index),
        age=age,
        density=density,
        dense_fraction=dense_fraction,
        breasts=breasts,
        photometric=photometric,
        voi_function=voi,
        rle=rle,
        bpe=bpe,
        acquired=t0,
    )


def plan_studies(n: int, seed: int, start: int = 0) -> list[StudyPlan]:
    """Plans of studies ``start .. start + n - 1`` of dataset ``seed``."""
    return [plan_study(seed, i) for i in range(start, start + n)]


def demo_plan(seed: int = 2024) -> StudyPlan:
    """The bundled demo study: four views, density B, a malignant spiculated mass in the left
    breast and a benign oval circumscribed mass in the right, plain MONOCHROME2 / LINEAR /
    uncompressed files."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0, _PLAN_STREAM, 99]))
    shape_r = sample_breast_shape(rng, 1.0, 50.0)
    shape_l = sample_breast_shape(rng, 1.02, 51.0)

    def lesion(pathology: str, morphology: str, shape: BreastShape) -> LesionPlan:
        for _ in range(200):
            cand = _sample_lesion(rng, pathology, shape)
            if cand.morphology == morphology and not cand.subtle and 12.0 <= cand.size_mm <= 20.0:
                return cand
        raise RuntimeError("demo lesion could not be drawn")  # pragma: no cover

    les_l = replace(lesion("malignant", "irregular spiculated", shape_l), density_ratio=1.35)
    les_r = replace(lesion("benign", "oval circumscribed", shape_r), density_ratio=1.2)
    breasts = {
        "R": BreastPlan("R", "benign", 3, 3, "mass", les_r, shape_r, ("CC", "MLO"), 1, False),
        "L": BreastPlan("L", "malignant", 5, 5, "mass", les_l, shape_l, ("CC", "MLO"), 1, False),
    }
    return StudyPlan(
        study_id=DEMO_STUDY_ID,
        seed=int(seed),
        index=0,
        age=58,
        density="B",
        dense_fraction=0.26,
        breasts=breasts,
        photometric="MONOCHROME2",
        voi_function="LINEAR",
        rle=False,
        bpe="mild",
        acquired=_dt.datetime(2024, 3, 12, 10, 24, 0),
    )


#: Columns of ``labels.csv`` (one row per study and imaged breast).
LABEL_COLUMNS = (
    "study_id",
    "side",
    "pathology",
    "birads",
    "density",
    "age",
    "finding",
    "morphology",
    "subtle",
    "discordant",
    "lesion_size_mm",
    "views_present",
    "n_us",
    "n_cesm",
    "photometric",
    "voi_function",
    "compressed",
)


def label_rows(plan: StudyPlan, with_us: bool = False, with_cesm: bool = False) -> list[dict]:
    """The ``labels.csv`` rows of one study (only the imaged breasts).

    ``views_present`` is the MG views of that breast joined with ``;`` (``CC;MLO``, ``CC``,
    ``MLO``); ``n_us`` and ``n_cesm`` count the ultrasound and CESM images written for it.
    """
    rows = []
    for side in ("R", "L"):
        b = plan.breasts.get(side)
        if b is None:
            continue
        les = b.lesion
        rows.append(
            {
                "study_id": plan.study_id,
                "side": side,
                "pathology": b.pathology,
                "birads": b.birads,
                "density": plan.density,
                "age": plan.age,
                "finding": b.finding,
                "morphology": les.morphology if les else "",
                "subtle": int(bool(les and les.subtle)),
                "discordant": int(b.discordant),
                "lesion_size_mm": f"{les.size_mm:.1f}" if les else "",
                "views_present": ";".join(b.views),
                "n_us": b.n_us if with_us else 0,
                "n_cesm": 2 * len(b.views) if with_cesm else 0,
                "photometric": plan.photometric,
                "voi_function": plan.voi_function,
                "compressed": "RLE" if plan.rle else "",
            }
        )
    return rows


def label_stats(plans: list[StudyPlan]) -> str:
    """A printable summary of a draw: label mix and the BI-RADS x pathology table.

    Args:
        plans: Study plans.

    Returns:
        Multi-line text (the ``mammo-phantom --stats`` output).
    """
    breasts = [b for p in plans for b in p.breasts.values()]
    n = max(len(breasts), 1)
    lines = [f"{len(plans)} studies, {len(breasts)} imaged breasts"]

    def mix(title: str, counter: Counter, keys) -> None:
        total = max(sum(counter.values()), 1)
        parts = [f"{k} {counter.get(k, 0)} ({100.0 * counter.get(k, 0) / total:.1f}%)" for k in keys]
        lines.append(f"{title}: " + ", ".join(parts))

    mix("pathology", Counter(b.pathology for b in breasts), ("normal", "benign", "malignant"))
    mix("finding", Counter(b.finding for b in breasts), FINDINGS)
    mix("density", Counter(p.density for p in plans), DENSITIES)
    mix("BI-RADS", Counter(b.birads for b in breasts), (1, 2, 3, 4, 5))
    lesions = [b.lesion for b in breasts if b.lesion is not None]
    ages = np.array([p.age for p in plans]) if plans else np.zeros(1)
    n_discordant = sum(b.discordant for b in breasts)
    lines.append(
        f"age: mean {ages.mean():.1f}, range {ages.min()}-{ages.max()}; "
        f"subtle lesions {sum(les.subtle for les in lesions)}/{len(lesions)}; "
        f"discordant breasts {n_discordant} ({100.0 * n_discordant / n:.1f}%)"
    )
    bilateral = sum(
        1 for p in plans if len(p.breasts) == 2 and all(b.pathology != "normal" for b in p.breasts.values())
    )
    single = sum(1 for p in plans if len(p.breasts) == 1)
    missing = sum(1 for p in plans if len(p.views_present()) == 3)
    lines.append(
        f"layout: bilateral findings {bilateral}, single-breast studies {single}, "
        f"a missing view {missing}; MONOCHROME1 {sum(p.photometric == 'MONOCHROME1' for p in plans)}, "
        f"SIGMOID {sum(p.voi_function == 'SIGMOID' for p in plans)}, RLE {sum(p.rle for p in plans)}"
    )
    lines.append("")
    lines.append("BI-RADS x pathology (breasts)")
    header = f"{'BI-RADS':>8} {'normal':>8} {'benign':>8} {'malignant':>10} {'% malignant':>12}"
    lines.append(header)
    table = Counter((b.birads, b.pathology) for b in breasts)
    for k in (1, 2, 3, 4, 5):
        row = [table.get((k, p), 0) for p in ("normal", "benign", "malignant")]
        tot = sum(row)
        pct = f"{100.0 * row[2] / tot:.1f}" if tot else "-"
        lines.append(f"{k:>8} {row[0]:>8} {row[1]:>8} {row[2]:>10} {pct:>12}")
    hi = [b for b in breasts if b.birads >= 4]
    mid = [b for b in breasts if b.birads in (2, 3)]
    lines.append(
        f"BI-RADS 4-5: {100.0 * sum(b.pathology == 'malignant' for b in hi) / max(len(hi), 1):.1f}% malignant; "
        f"BI-RADS 2-3: {100.0 * sum(b.pathology == 'benign' for b in mid) / max(len(mid), 1):.1f}% benign"
    )
    return "\n".join(lines)
