"""Synthetic screening-study phantom (SPEC section 6).

Labelled four-view patient data cannot be bundled, so this package generates screening studies:
mammograms (R-CC, L-CC, R-MLO, L-MLO), optional breast ultrasound and contrast-enhanced spectral
mammography (CESM), written as standard DICOM with per-breast labels, per-image lesion boxes and
lesion masks. The demo study, the tests and the shipped demo models get their data here.

Pipeline: :mod:`~training.phantom.plan` draws every label and geometric choice of a study
(no pixels; a function of ``(seed, index)``), :mod:`~training.phantom.render` turns a plan into
pixels (:mod:`~training.phantom.geometry`, :mod:`~training.phantom.texture`,
:mod:`~training.phantom.lesions`, :mod:`~training.phantom.ultrasound`,
:mod:`~training.phantom.cesm`), :mod:`~training.phantom.dicom_writer` and
:mod:`~training.phantom.dataset` write the files, :mod:`~training.phantom.cli` is
``mammo-phantom``.

Typical use::

    from training.phantom import write_dataset, plan_study, render_study
    write_dataset("out", studies=20, seed=7, size="demo", with_us=True, with_cesm=True)
    study = render_study(plan_study(seed=7, index=0), size="tiny")   # in memory, no files

Conventions: stored mammograms hang right | left with the chest walls back to back (a right
breast's chest wall on the image's right edge, a left breast's on the left edge), CC lateral side
up, MLO axilla up; values are 14-bit presentation values (bright = dense; MONOCHROME1 studies
store them inverted). Sizes: ``full`` 4096 x 3328 at 0.07 mm, ``demo`` 1024 x 832 at 0.28 mm,
``small`` 512 x 416, ``tiny`` 256 x 208 (detector pitch; breast-plane spacing is that divided by
the magnification 1.07).

Measured realism (``.venv/bin/python bench/bench_phantom.py``; the tests in
``tests/training/test_phantom_*.py`` assert the bounds in brackets):

- parenchyma power spectrum, 50 mm ROIs of rendered CC views (demo size), 0.1-1 cycles/mm:
  log-log slope mean -2.91, min -3.06, max -2.68 over 20 normal breasts [mean in -3.5..-2.5];
- the same lesion in CC and MLO: distance from the nipple (found in the pixels) to the mask
  centroid agrees within 2.1 % at worst, 0.7 % on average, over 28 masses at tiny size [10 %];
- masks align with what is drawn: non-subtle masses in A/B breasts are brighter than the 3 mm
  ring around their mask, contrast-to-noise ratio 0.50 to 5.80 over 18 images [> 0.3];
- density A / B / C / D: share of the breast interior at least 25 % glandular along the ray
  0.02 / 0.23 / 0.64 / 0.92 [strictly increasing]; the same 8 malignant masses rendered at each
  density have mean CNR 2.76 / 1.83 / 1.30 / 1.16 [decreasing, A > 1.8 x D]: dense-breast
  masking, because a mass displaces glandular tissue of nearly its own attenuation;
- labels of a 1,000-study draw (seed 7, ``mammo-phantom --stats``): breasts 76 % normal,
  15 % benign, 9 % malignant; BI-RADS 4-5 are 82.5 % malignant, BI-RADS 2-3 are 69 % benign;
  3.0 % of breasts discordant on purpose (missed subtle cancers in dense breasts, benign
  biopsies, over-called normals);
- speed, one core: 1,000 plans 0.24 s; a four-view demo-size study 0.33 s to render
  (0.54 s with its DICOM files); with US and CESM 0.9 s; four full-size views 9.9 s.
"""

from __future__ import annotations

from training.phantom.dataset import (
    ANNOTATION_COLUMNS,
    DatasetSummary,
    write_dataset,
    write_demo_study,
    write_study,
)
from training.phantom.geometry import SIZES, ImageSize, get_size
from training.phantom.plan import (
    DEMO_STUDY_ID,
    LABEL_COLUMNS,
    BreastPlan,
    LesionPlan,
    StudyPlan,
    demo_plan,
    label_rows,
    label_stats,
    plan_studies,
    plan_study,
)
from training.phantom.render import LesionBox, RenderedImage, RenderedStudy, render_mg, render_study

__all__ = [
    "ANNOTATION_COLUMNS",
    "LABEL_COLUMNS",
    "DEMO_STUDY_ID",
    "SIZES",
    "ImageSize",
    "get_size",
    "StudyPlan",
    "BreastPlan",
    "LesionPlan",
    "plan_study",
    "plan_studies",
    "demo_plan",
    "label_rows",
    "label_stats",
    "RenderedImage",
    "RenderedStudy",
    "LesionBox",
    "render_mg",
    "render_study",
    "DatasetSummary",
    "write_study",
    "write_dataset",
    "write_demo_study",
]
