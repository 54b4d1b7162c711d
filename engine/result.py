"""What scoring a study gives: :class:`Result` and :class:`SideResult`, and their JSON form.

Public names (SPEC section 3): ``result.sides["L"].p_malignant``, ``result.sides["L"].p_birads``
(``{category: probability}``), ``result.sides["L"].birads_pred``, ``result.attention`` (per view,
exactly 0 for missing views), ``result.heatmaps[view]`` (float32 map in ``[0, 1]`` in the view's
original pixel grid), ``result.contours[view]`` (closed polygons of original ``(x, y)`` pixels),
``result.model``, ``result.model_version``, ``result.device``, ``result.timings`` (seconds:
``preprocess``, ``inference``, ``gradcam``, ``total``), ``result.missing``, ``result.target``.

Heatmaps are stored compactly: per view the Grad-CAM map at the model's feature resolution (e.g.
16 x 16 or 64 x 64, already normalised) and the view's :class:`~engine.preprocess.Geometry`.
``result.heatmaps`` maps them to the original grid on first access and caches them (a full-field
view is 4096 x 3328 float32, 54 MB; only the views a caller reads are built). The JSON form keeps
the same two things, the map as base64 little-endian float32, so ``from_json(to_json())`` gives
bit-identical heatmaps and identical scalars (Python floats are written with ``repr`` precision).
To rebuild a heatmap without this package: decode the array, resize it bilinearly (half-pixel
centres) to the crop box ``box = [row0, row1, col0, col1]``, mirror it left-right when
``flipped``, and place it in a zero frame of ``original_shape``.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.preprocess import Geometry
from engine.study import STANDARD_VIEWS

__all__ = ["RESULT_FORMAT", "SideResult", "Heatmaps", "Result"]

logger = logging.getLogger(__name__)

RESULT_FORMAT = "mammo-result"
_FORMAT_VERSION = 1


def _encode_array(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": list(a.shape), "dtype": "float32", "data": base64.b64encode(a).decode("ascii")}


def _decode_array(d: Mapping[str, Any]) -> np.ndarray:
    if d.get("dtype", "float32") != "float32":
        raise ValueError(f"unsupported heatmap dtype {d.get('dtype')!r}")
    raw = base64.b64decode(d["data"])
    return np.frombuffer(raw, dtype="<f4").reshape(d["shape"]).astype(np.float32)


def _label_key(label: Any) -> Any:
    """BI-RADS labels are ints; JSON object keys are strings: turn ``"4"`` back into ``4``."""
    if isinstance(label, str):
        try:
            return int(label)
        except ValueError:
            return label
    return label


@dataclass
class SideResult:
    """One breast's scores.

    Attributes:
        side: ``"R"`` or ``"L"``.
        available: False when both views of this breast are missing (scores are then None/empty:
            the model has nothing to say about it).
        views: This breast's present views.
        p_malignant: Probability of the malignant class of the malignancy head (None without one).
        p_pathology: Every class of the malignancy head, ``{class name: probability}``.
        p_birads: ``{BI-RADS category: probability}`` over the model's categories (empty without
            a BI-RADS head).
        birads_pred: The most probable category (None without a BI-RADS head).
    """

    side: str
    available: bool
    views: list[str] = field(default_factory=list)
    p_malignant: float | None = None
    p_pathology: dict[str, float] = field(default_factory=dict)
    p_birads: dict[Any, float] = field(default_factory=dict)
    birads_pred: Any = None

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "side": self.side,
            "available": self.available,
            "views": list(self.views),
            "p_malignant": self.p_malignant,
            "p_pathology": dict(self.p_pathology),
            "p_birads": {str(k): v for k, v in self.p_birads.items()},
            "birads_pred": self.birads_pred,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SideResult:
        """Inverse of :meth:`to_dict`."""
        return cls(
            side=str(d["side"]),
            available=bool(d["available"]),
            views=list(d.get("views", [])),
            p_malignant=d.get("p_malignant"),
            p_pathology={str(k): float(v) for k, v in d.get("p_pathology", {}).items()},
            p_birads={_label_key(k): float(v) for k, v in d.get("p_birads", {}).items()},
            birads_pred=_label_key(d.get("birads_pred")),
        )


class Heatmaps(Mapping):
    """Read-only ``{view: original-grid float32 map}``, built on first access and cached.

    Args:
        cams: ``{view: (h, w)}`` normalised maps in model space.
        geometries: ``{view: Geometry}`` for at least those views.
    """

    def __init__(self, cams: Mapping[str, np.ndarray], geometries: Mapping[str, Geometry]) -> None:
        self._cams = cams
        self._geometries = geometries
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, view: str) -> np.ndarray:
        if view not in self._cams:
            raise KeyError(view)
        if view not in self._cache:
            m = self._geometries[view].to_original(self._cams[view])
            m.setflags(write=False)
            self._cache[view] = m
        return self._cache[view]

    def __iter__(self) -> Iterator[str]:
        return (v for v in STANDARD_VIEWS if v in self._cams)

    def __len__(self) -> int:
        return len(self._cams)

    def __repr__(self) -> str:
        return f"Heatmaps({list(self)})"


@dataclass(eq=False)
class Result:
    """The result of scoring one study (module docstring for the public names).

    Attributes:
        study_id: The study's id.
        study_path: The study folder, as a string.
        model: Model name.
        model_version: Model version.
        device: ``"cpu"`` or ``"cuda"`` (with index when not 0).
        sides: ``{"R": SideResult, "L": SideResult}``.
        attention: ``{view: alpha}`` for the four views (0.0 where missing); empty when the model
            gives no attention output.
        missing: Missing views, in ``STANDARD_VIEWS`` order.
        target: The Grad-CAM target as given (e.g. ``"malignancy"``, ``"birads:L:4"``), or None
            when no heatmaps were computed.
        view_targets: ``{view: "<head>:<class>"}``, the logit each view's heatmap explains, e.g.
            ``{"L-CC": "malignancy_L:malignant"}``.
        cams: ``{view: (h, w)}`` normalised Grad-CAM maps in model space.
        geometries: ``{view: Geometry}`` of the present views.
        contours: ``{view: [polygon, ...]}`` in original pixels (see ``contour_source``).
        contour_source: What the contours outline: ``"segmentation"`` (a model mask output at
            0.5), ``"gradcam>=0.5"`` (the heatmap's half-maximum region) or None.
        cam_scales: ``{target name: raw Grad-CAM maximum}`` before normalisation.
        timings: Seconds: ``preprocess``, ``inference``, ``gradcam``, ``total``.
        created: ISO time stamp (UTC).
        extra: Free-form additions (kept on a JSON round trip).
    """

    study_id: str
    study_path: str
    model: str
    model_version: str
    device: str
    sides: dict[str, SideResult]
    attention: dict[str, float]
    missing: list[str]
    target: str | None = None
    view_targets: dict[str, str] = field(default_factory=dict)
    cams: dict[str, np.ndarray] = field(default_factory=dict)
    geometries: dict[str, Geometry] = field(default_factory=dict)
    contours: dict[str, list[np.ndarray]] = field(default_factory=dict)
    contour_source: str | None = None
    cam_scales: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    _heatmaps: Heatmaps | None = field(default=None, init=False, repr=False)

    @property
    def heatmaps(self) -> Heatmaps:
        """``{view: float32 (rows, columns)}`` in ``[0, 1]``, original pixel grid (lazy)."""
        if self._heatmaps is None:
            self._heatmaps = Heatmaps(self.cams, self.geometries)
        return self._heatmaps

    @property
    def views(self) -> list[str]:
        """Present views, in ``STANDARD_VIEWS`` order."""
        return [v for v in STANDARD_VIEWS if v not in self.missing]

    def to_dict(self) -> dict:
        """JSON-ready form (see the module docstring for the heatmap encoding)."""
        return {
            "format": RESULT_FORMAT,
            "format_version": _FORMAT_VERSION,
            "study_id": self.study_id,
            "study_path": self.study_path,
            "model": self.model,
            "model_version": self.model_version,
            "device": self.device,
            "sides": {k: s.to_dict() for k, s in self.sides.items()},
            "attention": dict(self.attention),
            "missing": list(self.missing),
            "target": self.target,
            "view_targets": dict(self.view_targets),
            "heatmaps": {
                "encoding": (
                    "model-space Grad-CAM map (base64 float32 little-endian) + geometry; "
                    "original grid = bilinear resize to box, un-flip, place in original_shape"
                ),
                "views": {
                    v: {"map": _encode_array(self.cams[v]), "geometry": self.geometries[v].to_dict()}
                    for v in STANDARD_VIEWS
                    if v in self.cams
                },
            },
            "geometries": {
                v: g.to_dict() for v, g in self.geometries.items() if v not in self.cams
            },
            "contours": {
                v: [np.asarray(p, dtype=np.float64).tolist() for p in polys]
                for v, polys in self.contours.items()
            },
            "contour_source": self.contour_source,
            "cam_scales": dict(self.cam_scales),
            "timings": dict(self.timings),
            "created": self.created,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Result:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: Not a result of this format.
        """
        if d.get("format") != RESULT_FORMAT:
            raise ValueError(f"not a {RESULT_FORMAT} JSON object")
        if int(d.get("format_version", 0)) > _FORMAT_VERSION:
            raise ValueError(f"result format version {d['format_version']} is newer than this engine")
        cams: dict[str, np.ndarray] = {}
        geometries: dict[str, Geometry] = {}
        for v, entry in d.get("heatmaps", {}).get("views", {}).items():
            cams[v] = _decode_array(entry["map"])
            geometries[v] = Geometry.from_dict(entry["geometry"])
        for v, g in d.get("geometries", {}).items():
            geometries[v] = Geometry.from_dict(g)
        return cls(
            study_id=str(d["study_id"]),
            study_path=str(d["study_path"]),
            model=str(d["model"]),
            model_version=str(d["model_version"]),
            device=str(d["device"]),
            sides={k: SideResult.from_dict(s) for k, s in d["sides"].items()},
            attention={str(k): float(v) for k, v in d.get("attention", {}).items()},
            missing=list(d.get("missing", [])),
            target=d.get("target"),
            view_targets=dict(d.get("view_targets", {})),
            cams=cams,
            geometries=geometries,
            contours={
                v: [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polys]
                for v, polys in d.get("contours", {}).items()
            },
            contour_source=d.get("contour_source"),
            cam_scales={str(k): float(v) for k, v in d.get("cam_scales", {}).items()},
            timings={str(k): float(v) for k, v in d.get("timings", {}).items()},
            created=str(d.get("created", "")),
            extra=dict(d.get("extra", {})),
        )

    def to_json(self, path: str | Path | None = None, *, indent: int | None = None) -> str:
        """The JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> Result:
        """Read a result from JSON text or from a ``.json`` file path."""
        if isinstance(source, Path) or (
            isinstance(source, str) and not source.lstrip().startswith("{")
        ):
            source = Path(source).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(source))
