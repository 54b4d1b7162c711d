"""Study -> model tensors, and the geometry that maps model-space maps back to the original pixels.

The four-view models take ``(4, 1, H, W)`` float32 images in ``[0, 1]`` (grayscale, dense tissue
bright) in :data:`engine.study.STANDARD_VIEWS` order, plus a ``(4,)`` bool ``missing`` mask. Each
present view goes through the same deterministic steps (training reuses exactly these classes):

1. **Display orientation** (:class:`DisplayOrientation`): the modality-LUT values
   (:meth:`StudyImage.values`) are negated when the image is ``inverted_for_display``
   (MONOCHROME1 xor PresentationLUTShape INVERSE), so that dense tissue is bright and air is dark.
   Only the sign matters: the normalisation below removes any offset.
2. **Breast box** (:class:`BreastBox`): on a strided thumbnail (long side about 256 pixels, so a
   4096 x 3328 image costs nothing; smoothed by a 3 x 3 box blur against detector noise), a
   robust threshold separates the breast from the background:
   halfway between the background floor (1st percentile) and Otsu's threshold (the middle of its
   plateau when the histogram has a gap), both computed on values clipped to the 0.5-99.5
   percentile range (hot pixels and burnt-in labels do not move them). Halfway, because Otsu alone
   may split fatty from dense tissue and cut the skin line off. The bounding box of the largest 8-connected component, grown by a small margin, is the
   crop box; labels and markers outside it are dropped. When nothing sensible is found the whole
   image is kept.
3. **Crop, resize, flip** (:meth:`Geometry.to_model` does the same to any original-grid array,
   e.g. a lesion mask): the crop of the raw values is resized to
   ``in_size`` with area averaging (anti-aliased; the box is stretched to the square input, as the
   paper resizes whole images to 512 x 512, seed 000 section 3.1) and right breasts are flipped
   horizontally so every breast faces the same way (seed 000 section 3.1). For integer stored
   pixels with a linear modality LUT the stored values are resized first and the rescale applied
   after: the same numbers as resizing :meth:`StudyImage.values` up to rounding to the stored
   integer grid (less than half a stored unit), at half the cost.
4. **Robust normalisation** (:class:`RobustNormalise`): ``x = clip((v - lo) / (hi - lo), 0, 1)``
   where ``lo`` is the median of the background pixels of the model-space image (the air level;
   the 0.5th percentile of all pixels when under 1 % of the image is background) and ``hi`` is the
   99.5th percentile of the breast pixels (the same threshold as step 2). Air is 0, the densest
   tissue about 1; bright markers saturate at 1.

Every view keeps a :class:`Geometry` (original shape, crop box, flip, model shape) that maps any
``(h, w)`` map in model space (a Grad-CAM map at feature resolution, a mask logit map, the model
input itself) back to the original ``(rows, columns)`` grid, and points both ways. Convention:
pixel centres are at integer coordinates, ``x`` is the column and ``y`` the row; a map of shape
``(h, w)`` covers the crop box exactly (its pixel ``j`` covers box columns
``[j * box_w / w, (j + 1) * box_w / w)``, mirrored for right breasts).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.errors import Cancelled
from engine.study import STANDARD_VIEWS, Study, StudyImage

__all__ = [
    "PREPROCESSING_NAME",
    "Geometry",
    "DisplayOrientation",
    "BreastBox",
    "RobustNormalise",
    "PreparedView",
    "PreparedStudy",
    "ViewPreprocessor",
    "StudyPreprocessor",
    "is_right_view",
    "otsu_threshold",
]

logger = logging.getLogger(__name__)

#: Name and version of the pipeline written into model cards (``input.preprocessing.name``).
PREPROCESSING_NAME = "breast-crop-v1"


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        out = (int(size), int(size))
    else:
        out = (int(size[0]), int(size[1]))
    if out[0] < 1 or out[1] < 1:
        raise ValueError(f"in_size must be positive, got {size!r}")
    return out


def is_right_view(key: str | None, image: StudyImage | None = None) -> bool:
    """True for a right-breast view (``"R-CC"``, ``"R-MLO"``; else the image's laterality)."""
    if key:
        return key.upper().startswith("R")
    return image is not None and image.laterality == "R"


def _resize(a: np.ndarray, shape: tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    """Resize a 2-D array to ``shape = (rows, cols)``: area when shrinking, bilinear when growing."""
    rows, cols = shape
    if a.shape == (rows, cols):
        return a
    if nearest:
        interp = cv2.INTER_NEAREST
    elif rows <= a.shape[0] and cols <= a.shape[1]:
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_LINEAR
    if a.dtype == np.bool_:
        out = cv2.resize(a.view(np.uint8), (cols, rows), interpolation=cv2.INTER_NEAREST)
        return out.astype(bool)
    if a.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        a = a.astype(np.float32)
    return cv2.resize(a, (cols, rows), interpolation=interp)


@dataclass(frozen=True)
class Geometry:
    """How one view's model-space grid sits in its original pixel grid.

    Attributes:
        original_shape: ``(rows, columns)`` of the original image.
        box: Crop box ``(row0, row1, col0, col1)`` in original pixels, half-open.
        flipped: True when the crop was flipped horizontally (right breasts).
        model_shape: ``(H, W)`` of the model input.
    """

    original_shape: tuple[int, int]
    box: tuple[int, int, int, int]
    flipped: bool
    model_shape: tuple[int, int]

    def __post_init__(self) -> None:
        r0, r1, c0, c1 = self.box
        rows, cols = self.original_shape
        if not (0 <= r0 < r1 <= rows and 0 <= c0 < c1 <= cols):
            raise ValueError(f"crop box {self.box} outside an image of shape {self.original_shape}")

    @property
    def box_shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the crop box."""
        r0, r1, c0, c1 = self.box
        return (r1 - r0, c1 - c0)

    def footprint(self, map_shape: tuple[int, int] | None = None) -> tuple[float, float]:
        """Size ``(rows, columns)`` in original pixels of one pixel of a model-space map."""
        h, w = map_shape or self.model_shape
        bh, bw = self.box_shape
        return (bh / h, bw / w)

    def to_original(self, m: np.ndarray, *, fill: float = 0.0) -> np.ndarray:
        """Map a model-space map back to the original pixel grid.

        The map is resized to the crop box (bilinear when enlarging, area when shrinking), the
        right-breast flip is undone, and it is placed in a frame of the original shape.

        Args:
            m: ``(h, w)`` map over the model input (any resolution: feature map, mask, input).
            fill: Value outside the crop box.

        Returns:
            float32 ``(rows, columns)``.
        """
        m = np.asarray(m, dtype=np.float32)
        if m.ndim != 2:
            raise ValueError(f"expected a 2-D map, got shape {m.shape}")
        r0, r1, c0, c1 = self.box
        up = _resize(m, self.box_shape)
        if self.flipped:
            up = up[:, ::-1]
        out = np.full(self.original_shape, fill, dtype=np.float32)
        out[r0:r1, c0:c1] = up
        return out

    def to_model(
        self,
        a: np.ndarray,
        *,
        shape: tuple[int, int] | None = None,
        nearest: bool = False,
    ) -> np.ndarray:
        """Map an original-grid array (a lesion mask, an image) into model space.

        Args:
            a: ``(rows, columns)`` array in the original grid.
            shape: Output ``(h, w)``; the model input shape by default.
            nearest: Nearest-neighbour instead of area/bilinear (for label maps).

        Returns:
            ``(h, w)`` array, flipped like the model input.
        """
        if a.shape[:2] != self.original_shape:
            raise ValueError(f"array of shape {a.shape} is not in the grid {self.original_shape}")
        r0, r1, c0, c1 = self.box
        out = _resize(a[r0:r1, c0:c1], shape or self.model_shape, nearest=nearest)
        if self.flipped:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def model_to_original_xy(
        self, xy: np.ndarray, map_shape: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Points ``(N, 2)`` as ``(x, y)`` in a model-space map -> ``(x, y)`` original pixels."""
        h, w = map_shape or self.model_shape
        bh, bw = self.box_shape
        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        x = pts[:, 0]
        if self.flipped:
            x = (w - 1) - x
        out = np.empty_like(pts)
        out[:, 0] = self.box[2] + (x + 0.5) * (bw / w) - 0.5
        out[:, 1] = self.box[0] + (pts[:, 1] + 0.5) * (bh / h) - 0.5
        return out

    def original_to_model_xy(
        self, xy: np.ndarray, map_shape: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Points ``(N, 2)`` as ``(x, y)`` original pixels -> ``(x, y)`` in a model-space map."""
        h, w = map_shape or self.model_shape
        bh, bw = self.box_shape
        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        out = np.empty_like(pts)
        x = (pts[:, 0] - self.box[2] + 0.5) * (w / bw) - 0.5
        if self.flipped:
            x = (w - 1) - x
        out[:, 0] = x
        out[:, 1] = (pts[:, 1] - self.box[0] + 0.5) * (h / bh) - 0.5
        return out

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "original_shape": [int(v) for v in self.original_shape],
            "box": [int(v) for v in self.box],
            "flipped": bool(self.flipped),
            "model_shape": [int(v) for v in self.model_shape],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Geometry:
        """Inverse of :meth:`to_dict`."""
        return cls(
            original_shape=tuple(int(v) for v in d["original_shape"]),  # type: ignore[arg-type]
            box=tuple(int(v) for v in d["box"]),  # type: ignore[arg-type]
            flipped=bool(d["flipped"]),
            model_shape=tuple(int(v) for v in d["model_shape"]),  # type: ignore[arg-type]
        )


def otsu_threshold(x: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of the values in ``x`` (maximal between-class variance).

    Args:
        x: Values (any shape); NaNs are not allowed.
        bins: Histogram bins.

    Returns:
        The threshold (a bin edge); the minimum when ``x`` is constant.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    lo, hi = float(x.min()), float(x.max())
    if not hi > lo:
        return lo
    hist, edges = np.histogram(x, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)[:-1].astype(np.float64)
    total = float(hist.sum())
    w1 = total - w0
    s0 = np.cumsum(hist * centres)[:-1]
    s = float((hist * centres).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (s0 / w0 - (s - s0) / w1) ** 2
    between = np.nan_to_num(between, nan=-1.0)
    best = int(np.argmax(between))
    # empty bins between two classes give a plateau of equal variance: take its middle
    end = best
    while end + 1 < between.size and between[end + 1] >= between[best]:
        end += 1
    return float(edges[(best + end) // 2 + 1])


class DisplayOrientation:
    """Raw values -> dense-is-bright values (negated when the image is inverted for display)."""

    def __call__(self, values: np.ndarray, inverted_for_display: bool) -> np.ndarray:
        """Args: values: modality-LUT values. inverted_for_display: the StudyImage flag.

        Returns:
            float32 values where dense tissue is bright.
        """
        values = np.asarray(values, dtype=np.float32)
        return np.negative(values) if inverted_for_display else values


class BreastBox:
    """Find the breast bounding box on a thumbnail (see the module docstring, step 2).

    Args:
        thumb_size: Long side of the strided thumbnail the box is searched on.
        margin: Growth of the box on each side, as a fraction of the image size.
        low_percentile: Background floor percentile.
        clip_percentiles: Values are clipped to this range before Otsu.
        min_fraction: A component smaller than this fraction of the image is not a breast; the
            whole image is used instead.
    """

    def __init__(
        self,
        thumb_size: int = 256,
        margin: float = 0.01,
        low_percentile: float = 1.0,
        clip_percentiles: tuple[float, float] = (0.5, 99.5),
        min_fraction: float = 0.01,
    ) -> None:
        self.thumb_size = int(thumb_size)
        self.margin = float(margin)
        self.low_percentile = float(low_percentile)
        self.clip_percentiles = clip_percentiles
        self.min_fraction = float(min_fraction)

    def stride(self, shape: tuple[int, int]) -> int:
        """Thumbnail stride for an image of this shape."""
        return max(1, math.ceil(max(shape) / self.thumb_size))

    @staticmethod
    def smooth(thumb: np.ndarray) -> np.ndarray:
        """3 x 3 box blur of the strided thumbnail (tames detector noise before thresholding)."""
        thumb = np.asarray(thumb, dtype=np.float32)
        return cv2.blur(thumb, (3, 3)) if min(thumb.shape) >= 3 else thumb

    def threshold(self, thumb: np.ndarray) -> float:
        """The breast/background threshold of a dense-is-bright thumbnail."""
        lo, hi = np.percentile(thumb, self.clip_percentiles)
        clipped = np.clip(thumb, lo, hi)
        t_otsu = otsu_threshold(clipped)
        floor = float(np.percentile(clipped, self.low_percentile))
        return 0.5 * (floor + t_otsu)

    def __call__(
        self, thumb: np.ndarray, stride: int, original_shape: tuple[int, int]
    ) -> tuple[tuple[int, int, int, int], float]:
        """Find the box.

        Args:
            thumb: Dense-is-bright thumbnail, ``original[::stride, ::stride]``.
            stride: Its stride.
            original_shape: ``(rows, columns)`` of the full image.

        Returns:
            ``((row0, row1, col0, col1), threshold)`` in original pixels (half-open) and in value
            units.
        """
        rows, cols = original_shape
        thumb = self.smooth(thumb)
        t = self.threshold(thumb)
        mask = (thumb > t).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        whole = (0, rows, 0, cols)
        if n < 2:
            return whole, t
        label = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < self.min_fraction * thumb.size:
            return whole, t
        pad_r = int(math.ceil(self.margin * rows)) + stride
        pad_c = int(math.ceil(self.margin * cols)) + stride
        r0 = max(0, y * stride - pad_r)
        r1 = min(rows, (y + h - 1) * stride + 1 + pad_r)
        c0 = max(0, x * stride - pad_c)
        c1 = min(cols, (x + w - 1) * stride + 1 + pad_c)
        return (r0, r1, c0, c1), t


class RobustNormalise:
    """Dense-is-bright values -> ``[0, 1]`` (see the module docstring, step 4).

    Args:
        hi_percentile: Percentile of the breast pixels mapped to 1.
        lo_fallback_percentile: Percentile of all pixels mapped to 0 when there is (almost) no
            background.
        min_background: Fraction of background pixels needed to use the background median.
    """

    def __init__(
        self,
        hi_percentile: float = 99.5,
        lo_fallback_percentile: float = 0.5,
        min_background: float = 0.01,
    ) -> None:
        self.hi_percentile = float(hi_percentile)
        self.lo_fallback_percentile = float(lo_fallback_percentile)
        self.min_background = float(min_background)

    def levels(self, x: np.ndarray, threshold: float) -> tuple[float, float]:
        """``(lo, hi)`` for an image and its breast threshold."""
        breast = x > threshold
        n_bg = x.size - int(breast.sum())
        if n_bg >= self.min_background * x.size:
            lo = float(np.median(x[~breast]))
        else:
            lo = float(np.percentile(x, self.lo_fallback_percentile))
        fg = x[breast] if breast.any() else x.ravel()
        hi = float(np.percentile(fg, self.hi_percentile))
        if not hi > lo:
            hi = lo + 1.0
        return lo, hi

    @staticmethod
    def apply(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
        """``clip((x - lo) / (hi - lo), 0, 1)`` as float32."""
        out = (x.astype(np.float32) - np.float32(lo)) * np.float32(1.0 / (hi - lo))
        np.clip(out, 0.0, 1.0, out=out)
        return out

    def __call__(self, x: np.ndarray, threshold: float) -> np.ndarray:
        """Args: x: dense-is-bright values. threshold: breast/background threshold.

        Returns:
            float32 in ``[0, 1]``, same shape.
        """
        return self.apply(x, *self.levels(x, threshold))


@dataclass(eq=False)
class PreparedView:
    """One view ready for a model.

    Attributes:
        array: float32 ``(H, W)`` in ``[0, 1]``, dense bright, right breasts flipped.
        geometry: Mapping back to the original grid.
        levels: ``(lo, hi)`` raw dense-is-bright values mapped to 0 and 1.
        threshold: Breast/background threshold (dense-is-bright value units).
    """

    array: np.ndarray
    geometry: Geometry
    levels: tuple[float, float]
    threshold: float


class ViewPreprocessor:
    """One :class:`StudyImage` (or a raw array) -> :class:`PreparedView` (module docstring).

    Args:
        in_size: Model input ``(H, W)`` or one int.
        flip_right: Flip right breasts horizontally (seed 000 section 3.1).
        crop: Crop to the breast box (False keeps the whole image).
        breast_box: The box finder.
        normalise: The normaliser.
    """

    def __init__(
        self,
        in_size: int | Sequence[int] = 512,
        *,
        flip_right: bool = True,
        crop: bool = True,
        breast_box: BreastBox | None = None,
        normalise: RobustNormalise | None = None,
    ) -> None:
        self.in_size = _pair(in_size)
        self.flip_right = bool(flip_right)
        self.crop = bool(crop)
        self.orient = DisplayOrientation()
        self.breast_box = breast_box or BreastBox()
        self.normalise = normalise or RobustNormalise()

    def __call__(self, image: StudyImage, key: str | None = None) -> PreparedView:
        """Prepare one image.

        Args:
            image: The loaded image.
            key: Its slot (``"R-CC"``...); decides the flip (else ``image.laterality``).

        Returns:
            The prepared view.
        """
        stored = image.stored
        if stored.ndim != 2:
            raise ValueError(f"{image.path.name}: expected a 2-D image, got shape {stored.shape}")
        shape = (int(stored.shape[0]), int(stored.shape[1]))
        flip = self.flip_right and is_right_view(key, image)

        def values_of(sub: np.ndarray) -> np.ndarray:
            return dataclasses.replace(image, stored=sub).values()

        stride = self.breast_box.stride(shape)
        thumb = self.orient(values_of(stored[::stride, ::stride]), image.inverted_for_display)
        if self.crop:
            box, threshold = self.breast_box(thumb, stride, shape)
        else:
            box, threshold = (0, shape[0], 0, shape[1]), self.breast_box.threshold(
                self.breast_box.smooth(thumb)
            )
        r0, r1, c0, c1 = box
        geometry = Geometry(shape, box, flip, self.in_size)
        linear = image.modality_lut is None and stored.dtype in (np.uint8, np.uint16, np.int16)
        if linear:
            # resize the stored integers, then rescale the small array (module docstring, step 3)
            small = _resize(stored[r0:r1, c0:c1], self.in_size).astype(np.float32)
            small = values_of(small)
        else:
            small = _resize(values_of(stored[r0:r1, c0:c1]), self.in_size)
        small = self.orient(small, image.inverted_for_display)
        if flip:
            small = small[:, ::-1]
        lo, hi = self.normalise.levels(small, threshold)
        array = self.normalise.apply(small, lo, hi)
        return PreparedView(np.ascontiguousarray(array), geometry, (lo, hi), float(threshold))

    def array(
        self, values: np.ndarray, *, inverted_for_display: bool = False, right: bool = False
    ) -> PreparedView:
        """Prepare a raw ``(rows, columns)`` array of modality-LUT values (dataset adapters)."""
        values = np.asarray(values)
        image = StudyImage(
            path=Path("<array>"),
            relpath="<array>",
            kind="MG",
            stored=values,
            display=np.zeros((1, 1), np.uint8),
            voi_presets=(),
            laterality="R" if right else "L",
            inverted_for_display=inverted_for_display,
        )
        return self(image)


@dataclass(eq=False)
class PreparedStudy:
    """A study ready for a four-view model.

    Attributes:
        images: float32 ``(4, 1, H, W)`` in :data:`STANDARD_VIEWS` order; zeros where missing.
        missing: bool ``(4,)``, True where the slot is empty.
        geometries: Per present view key.
        views: The prepared views, per present key.
        study_path: The study folder.
        study_id: The study id.
    """

    images: np.ndarray
    missing: np.ndarray
    geometries: dict[str, Geometry]
    views: dict[str, PreparedView]
    study_path: Path
    study_id: str


class StudyPreprocessor:
    """A :class:`Study` -> :class:`PreparedStudy` for four-view models.

    Args:
        in_size: Model input ``(H, W)`` or one int (512 by default, seed 000 section 3.1).
        flip_right: Flip right breasts horizontally.
        crop: Crop each view to its breast box.
    """

    def __init__(
        self, in_size: int | Sequence[int] = 512, *, flip_right: bool = True, crop: bool = True
    ) -> None:
        self.view = ViewPreprocessor(in_size, flip_right=flip_right, crop=crop)

    @property
    def in_size(self) -> tuple[int, int]:
        """Model input ``(H, W)``."""
        return self.view.in_size

    def spec(self) -> dict:
        """The ``input`` section of a model card describing this preprocessing."""
        return {
            "views": list(STANDARD_VIEWS),
            "size": list(self.in_size),
            "channels": 1,
            "layout": "(B, 4, 1, H, W) float32 in [0, 1], dense tissue bright; missing (B, 4) bool",
            "preprocessing": {
                "name": PREPROCESSING_NAME,
                "crop": self.view.crop,
                "flip_right": self.view.flip_right,
                "normalisation": (
                    "lo = median background, hi = p99.5 of breast pixels (threshold halfway "
                    "between the p1 floor and Otsu); clip((v - lo) / (hi - lo), 0, 1)"
                ),
            },
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> StudyPreprocessor:
        """Build from a model card's ``input`` section (defaults when absent)."""
        spec = dict(spec or {})
        pre = dict(spec.get("preprocessing") or {})
        name = pre.get("name", PREPROCESSING_NAME)
        if name != PREPROCESSING_NAME:
            raise ValueError(f"unknown preprocessing {name!r} (this engine has {PREPROCESSING_NAME})")
        return cls(
            spec.get("size", 512),
            flip_right=bool(pre.get("flip_right", True)),
            crop=bool(pre.get("crop", True)),
        )

    def __call__(
        self, study: Study, *, cancel: Callable[[], bool] | None = None
    ) -> PreparedStudy:
        """Prepare the four standard slots of a study.

        Args:
            study: The loaded study (any slot may be missing).
            cancel: Optional callable; when it returns True a
                :class:`engine.errors.Cancelled` is raised between views.

        Returns:
            The prepared study.
        """
        h, w = self.in_size
        images = np.zeros((len(STANDARD_VIEWS), 1, h, w), dtype=np.float32)
        missing = np.ones(len(STANDARD_VIEWS), dtype=bool)
        geometries: dict[str, Geometry] = {}
        views: dict[str, PreparedView] = {}
        for i, key in enumerate(STANDARD_VIEWS):
            if cancel is not None and cancel():
                raise Cancelled(study.path, "cancelled while preprocessing")
            image = study.views.get(key)
            if image is None:
                continue
            prepared = self.view(image, key)
            images[i, 0] = prepared.array
            missing[i] = False
            geometries[key] = prepared.geometry
            views[key] = prepared
        return PreparedStudy(images, missing, geometries, views, Path(study.path), study.study_id)
