"""The scoring API: :class:`Engine` runs a bundled model on a loaded study and returns a Result.

::

    engine = Engine("hybrid-vssm-shared", device="auto")
    result = engine.score(study)                      # scores + Grad-CAM for each breast
    result.sides["L"].p_malignant, result.attention["L-MLO"], result.heatmaps["L-CC"]
    other = engine.gradcam_for(study, "birads:L:4")   # heatmaps for another target

Flow: :class:`~engine.preprocess.StudyPreprocessor` (the card's input spec) -> ``(1, 4, 1, H, W)``
tensors and a ``missing`` mask -> the model -> softmax per head -> :class:`~engine.result.Result`.
Without Grad-CAM the forward pass runs in ``torch.inference_mode()``. With Grad-CAM a single forward
pass serves both the scores and the maps: the parameters are frozen and only the per-view feature
maps require grad (:mod:`engine.gradcam`), so the encoder costs what it costs at inference and the
backward pass runs through the fusion and the heads only; the outputs are the same numbers.

Grad-CAM targets (:class:`CamTarget`, or their text form): ``"malignancy"`` (the default: each
view explained by the malignant logit of its own breast), ``"malignancy:L"`` (all views explained
by the left breast's malignant logit), ``"birads:4"`` (BI-RADS 4 of each view's own breast),
``"birads:R:5"``, ... Models without a malignancy head default to their highest BI-RADS category.

Contours: a model that returns ``"masks"`` logits ``(B, 4, h, w)`` (a segmentation model) gets its
mask outlines at probability 0.5 (``contour_source = "segmentation"``). Classification models give
no contours: outlining the hot part of a Grad-CAM map would look like a lesion outline that no model
drew, so a reader could mistake it for one.

Cancellation and progress are plain callables so the engine stays Qt-free: ``cancel() -> bool`` is
polled between stages (and between views while preprocessing) and raises
:class:`~engine.errors.Cancelled`; ``progress(fraction, stage)`` gets a fraction in ``[0, 1]`` and
a stage name (``"preprocess"``, ``"inference"``, ``"gradcam"``, ``"done"``). One Engine may be called
from several threads: model runs are serialised by a lock.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.contours import map_contours
from engine.errors import Cancelled, EmptyStudyError, ModelError
from engine.gradcam import grad_cam, normalise_shared
from engine.preprocess import PreparedStudy, StudyPreprocessor
from engine.result import Result, SideResult
from engine.study import STANDARD_VIEWS, Study
from engine.weights import ModelCard, load_model

__all__ = ["CamTarget", "Engine", "resolve_device", "DEFAULT_CLASSES"]

logger = logging.getLogger(__name__)

CancelFn = Callable[[], bool]
ProgressFn = Callable[[float, str], None]

#: Class names used when a card does not list them.
DEFAULT_CLASSES: dict[str, list[Any]] = {
    "malignancy": ["normal_or_benign", "malignant"],
    "birads": [1, 2, 3, 4, 5],
}
_SIDES = ("R", "L")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` as given.

    Raises:
        ValueError: Not one of those.
        ModelError: CUDA asked for but not available.
    """
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ModelError(f"device {name!r} asked for, but this torch sees no CUDA GPU")
        return torch.device(name)
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


@dataclass(frozen=True)
class CamTarget:
    """Which logit a Grad-CAM heatmap explains.

    Attributes:
        task: Head family: ``"malignancy"`` or ``"birads"`` (any ``<task>_<side>`` head works).
        side: ``"R"``/``"L"`` to explain every view by that breast's head; None to explain each
            view by its own breast's head (the default).
        label: Class label: a BI-RADS category (``4``) or a malignancy class name
            (``"malignant"``); None = ``"malignant"`` for malignancy, the highest category for
            BI-RADS.
    """

    task: str = "malignancy"
    side: str | None = None
    label: int | str | None = None

    def __post_init__(self) -> None:
        if self.side not in (None, "R", "L"):
            raise ValueError(f"target side must be 'R', 'L' or None, got {self.side!r}")

    @classmethod
    def parse(cls, target: str | CamTarget | None) -> CamTarget:
        """``None`` / ``"malignancy"`` / ``"malignancy:L"`` / ``"birads:4"`` / ``"birads:R:5"``."""
        if target is None:
            return cls()
        if isinstance(target, CamTarget):
            return target
        parts = [p.strip() for p in str(target).split(":") if p.strip()]
        if not parts:
            return cls()
        task, side, label = parts[0].lower(), None, None
        for part in parts[1:]:
            if part.upper() in _SIDES and side is None:
                side = part.upper()
            elif label is None:
                label = int(part) if part.lstrip("-").isdigit() else part
            else:
                raise ValueError(f"cannot read Grad-CAM target {target!r}")
        return cls(task, side, label)

    def __str__(self) -> str:
        parts = [self.task]
        if self.side:
            parts.append(self.side)
        if self.label is not None:
            parts.append(str(self.label))
        return ":".join(parts)


class Engine:
    """Scores studies with one bundled model.

    Args:
        model: A registry name (``"hybrid-vssm-shared"``), or a model folder / ``model.json`` path.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        models_dir: Where names are looked up (default: ``$MAMMO_MODELS_DIR`` or
            ``<repo>/resources/models``).

    Raises:
        UnknownModelError: Unknown name (the message lists the available ones).
        WeightsMismatchError: Weights that do not match the card (hash or architecture).
        ModelError: CUDA asked for but absent, or an unusable card.
    """

    def __init__(
        self,
        model: str | Path,
        device: str = "auto",
        models_dir: str | Path | None = None,
    ) -> None:
        module, card = load_model(model, models_dir)
        self._setup(module, card, device)

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        card: ModelCard | Mapping[str, Any],
        device: str = "auto",
    ) -> Engine:
        """An Engine around a model in memory (training's evaluation; tests).

        The module is moved to the device and put in eval mode (call ``.train()`` again to go on
        training it).

        Args:
            module: A four-view model honouring the ``engine.models`` contract.
            card: Its card (``name``, ``version``, ``architecture`` at least; ``input`` and
                ``classes`` as in a bundled card).
            device: As for the constructor.
        """
        self = cls.__new__(cls)
        card = card if isinstance(card, ModelCard) else ModelCard.from_dict(card)
        self._setup(module, card, device)
        return self

    def _setup(self, module: nn.Module, card: ModelCard, device: str) -> None:
        self.card = card
        self.device = resolve_device(device)
        self.model = module.to(self.device).eval()
        spec = dict(card.input)
        if "size" not in spec:
            spec["size"] = card.architecture.get("in_size", 512)
        self.preprocessor = StudyPreprocessor.from_spec(spec)
        classes = {k: list(v) for k, v in DEFAULT_CLASSES.items()}
        arch_birads = card.architecture.get("birads_classes")
        if arch_birads:
            classes["birads"] = list(arch_birads)
        classes.update({k: list(v) for k, v in card.classes.items()})
        self.classes: dict[str, list[Any]] = classes
        self._lock = threading.Lock()
        self._cache: tuple[tuple, Study, PreparedStudy] | None = None
        logger.info("engine ready: %s %s on %s", card.name, card.version, self.device_name)

    # ----------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Model name."""
        return self.card.name

    @property
    def version(self) -> str:
        """Model version."""
        return self.card.version

    @property
    def device_name(self) -> str:
        """``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
        d = self.device
        return d.type if d.index in (None, 0) else str(d)

    @property
    def in_size(self) -> tuple[int, int]:
        """Model input ``(H, W)``."""
        return self.preprocessor.in_size

    @property
    def tasks(self) -> list[str]:
        """The model's tasks (``"malignancy"``, ``"birads"``), from its config."""
        tasks = self.card.architecture.get("tasks")
        return list(tasks) if tasks else ["malignancy", "birads"]

    def info(self) -> dict:
        """Name, version, family, device, input size, tasks, classes (for the UI and logs)."""
        return {
            "model": self.name,
            "model_version": self.version,
            "family": self.card.family,
            "device": self.device_name,
            "in_size": list(self.in_size),
            "tasks": self.tasks,
            "classes": self.classes,
        }

    def targets(self) -> list[CamTarget]:
        """Every Grad-CAM target this model offers (for the viewer's target picker)."""
        out: list[CamTarget] = []
        for task in self.tasks:
            labels: list[Any] = list(self.classes.get(task, []))
            if task == "malignancy":
                labels = [None]  # the malignant class
            for side in (None, *_SIDES):
                out.extend(CamTarget(task, side, label) for label in labels)
        return out

    def __repr__(self) -> str:
        return f"Engine({self.name!r} {self.version}, device={self.device_name!r})"

    # ----------------------------------------------------------------------------------------
    def _default_label(self, task: str) -> Any:
        labels = self.classes.get(task, [])
        if task == "malignancy" and "malignant" in labels:
            return "malignant"
        return labels[-1] if labels else 1

    def _label_index(self, task: str, label: Any, n_classes: int) -> int:
        labels = self.classes.get(task) or list(range(n_classes))
        for i, name in enumerate(labels):
            if name == label or str(name) == str(label):
                return i
        raise ValueError(
            f"{task} has no class {label!r} (classes: {', '.join(str(c) for c in labels)})"
        )

    def _resolve_target(
        self, target: str | CamTarget | None, outputs_heads: Sequence[str], n_classes: Mapping
    ) -> tuple[CamTarget, dict[str, tuple[str, int, str]]]:
        """``{view: (head, class index, "head:label")}`` for all four views."""
        t = CamTarget.parse(target)
        if target is None and "malignancy" not in self.tasks:
            t = CamTarget("birads")
        out: dict[str, tuple[str, int, str]] = {}
        for view in STANDARD_VIEWS:
            side = t.side or view[0]
            head = f"{t.task}_{side}"
            if head not in outputs_heads:
                heads = ", ".join(h for h in outputs_heads if h != "attention")
                raise ValueError(f"Grad-CAM target {str(t)!r}: the model has no head {head} ({heads})")
            label = t.label if t.label is not None else self._default_label(t.task)
            index = self._label_index(t.task, label, n_classes[head])
            out[view] = (head, index, f"{head}:{self.classes.get(t.task, [label])[index]}")
        return t, out

    def _heads(self) -> tuple[list[str], dict[str, int]]:
        heads, n = [], {}
        for task in self.tasks:
            k = len(self.classes.get(task, []))
            for side in _SIDES:
                heads.append(f"{task}_{side}")
                n[f"{task}_{side}"] = k
        return heads, n

    def clear_cache(self) -> None:
        """Forget the last study's preprocessing (kept so ``gradcam_for`` need not redo it)."""
        self._cache = None

    def _prepare(self, study: Study, cancel: CancelFn | None) -> PreparedStudy:
        key = tuple((k, id(img)) for k, img in sorted(study.views.items()))
        if self._cache is not None and self._cache[1] is study and self._cache[0] == key:
            return self._cache[2]
        prepared = self.preprocessor(study, cancel=cancel)
        self._cache = (key, study, prepared)
        return prepared

    # ----------------------------------------------------------------------------------------
    def score(
        self,
        study: Study,
        *,
        gradcam: bool = True,
        target: str | CamTarget | None = None,
        cancel: CancelFn | None = None,
        progress: ProgressFn | None = None,
    ) -> Result:
        """Score one study.

        Args:
            study: A loaded study (missing views allowed, not all four).
            gradcam: Compute heatmaps (and their contours).
            target: Grad-CAM target (see :class:`CamTarget`); default: malignancy of each view's
                own breast.
            cancel: Polled between stages; return True to stop.
            progress: Called with ``(fraction, stage)``.

        Returns:
            The :class:`~engine.result.Result`.

        Raises:
            EmptyStudyError: All four standard views are missing (names the study folder).
            Cancelled: ``cancel()`` returned True.
            ValueError: Unknown target.
        """
        return self.score_many(
            [study], gradcam=gradcam, target=target, cancel=cancel, progress=progress
        )[0]

    def gradcam_for(
        self,
        study: Study,
        target: str | CamTarget | None,
        *,
        cancel: CancelFn | None = None,
        progress: ProgressFn | None = None,
    ) -> Result:
        """Recompute the heatmaps for another target (scores are the same numbers).

        The preprocessing of the last study scored is reused when ``study`` is that object.
        """
        return self.score(study, gradcam=True, target=target, cancel=cancel, progress=progress)

    def score_many(
        self,
        studies: Sequence[Study],
        *,
        gradcam: bool = False,
        target: str | CamTarget | None = None,
        cancel: CancelFn | None = None,
        progress: ProgressFn | None = None,
    ) -> list[Result]:
        """Score several studies in one batch (one forward pass).

        Per result, ``timings["preprocess"]`` is that study's; ``inference`` and ``gradcam`` are
        the batch's divided by the batch size.

        Raises:
            EmptyStudyError: A study with all four views missing (nothing is scored).
            Cancelled: ``cancel()`` returned True.
        """
        if not studies:
            return []
        report = progress or (lambda fraction, stage: None)
        t_start = time.perf_counter()

        def check(study: Study, where: str) -> None:
            if cancel is not None and cancel():
                raise Cancelled(study.path, f"scoring cancelled {where}")

        for study in studies:
            if not study.views or all(k not in study.views for k in STANDARD_VIEWS):
                raise EmptyStudyError(
                    study.path,
                    "no image in the four standard views (R-CC, L-CC, R-MLO, L-MLO) to score",
                )
        report(0.0, "preprocess")
        prepared: list[PreparedStudy] = []
        pre_seconds: list[float] = []
        for i, study in enumerate(studies):
            check(study, "before preprocessing")
            t0 = time.perf_counter()
            prepared.append(self._prepare(study, cancel))
            pre_seconds.append(time.perf_counter() - t0)
            report(0.3 * (i + 1) / len(studies), "preprocess")
        check(studies[0], "before inference")
        report(0.3, "inference")

        n = len(studies)
        images = torch.from_numpy(np.stack([p.images for p in prepared])).to(self.device)
        missing = torch.from_numpy(np.stack([p.missing for p in prepared])).to(self.device)
        heads, n_classes = self._heads()
        with self._lock:
            if gradcam:
                cam_target, view_targets = self._resolve_target(target, heads, n_classes)
                run = grad_cam(
                    self.model, images, missing, {v: vt[:2] for v, vt in view_targets.items()}
                )
                outputs = run.outputs
                t_inference, t_cam = run.forward_seconds, run.backward_seconds
            else:
                cam_target, view_targets = None, {}
                _sync(self.device)
                t0 = time.perf_counter()
                with torch.inference_mode():
                    outputs = self.model(images, missing)
                _sync(self.device)
                t_inference, t_cam = time.perf_counter() - t0, 0.0
        outputs_np = {k: v.float().cpu().numpy() for k, v in outputs.items()}
        if gradcam:
            check(studies[0], "before the heatmaps")
            report(0.7, "gradcam")

        results = []
        for b, (study, prep) in enumerate(zip(studies, prepared)):
            t0 = time.perf_counter()
            result = self._build_result(study, prep, outputs_np, b)
            if gradcam:
                self._add_heatmaps(result, prep, run.cams, b, view_targets, str(cam_target))
            if "masks" in outputs_np:
                self._add_mask_contours(result, prep, outputs_np["masks"][b])
            t_post = time.perf_counter() - t0
            result.timings = {
                "preprocess": pre_seconds[b],
                "inference": t_inference / n,
                "gradcam": (t_cam / n + t_post) if gradcam else 0.0,
                "total": 0.0,
            }
            results.append(result)
        total = time.perf_counter() - t_start
        for r, pre in zip(results, pre_seconds):
            r.timings["total"] = pre + (total - sum(pre_seconds)) / n
        report(1.0, "done")
        return results

    # ----------------------------------------------------------------------------------------
    def _build_result(
        self, study: Study, prep: PreparedStudy, outputs: Mapping[str, np.ndarray], b: int
    ) -> Result:
        missing = [v for v, m in zip(STANDARD_VIEWS, prep.missing) if m]
        attention: dict[str, float] = {}
        if "attention" in outputs:
            alpha = outputs["attention"][b].astype(np.float64)
            present = ~prep.missing
            if np.any(alpha[~present] != 0.0) or abs(float(alpha[present].sum()) - 1.0) > 1e-4:
                raise ModelError(
                    f"model {self.name}: attention weights break the contract "
                    "(missing views must be exactly 0 and present views sum to 1)"
                )
            attention = {v: float(a) for v, a in zip(STANDARD_VIEWS, alpha)}
        sides: dict[str, SideResult] = {}
        for side in _SIDES:
            views = [v for v in STANDARD_VIEWS if v[0] == side and v not in missing]
            sr = SideResult(side=side, available=bool(views), views=views)
            if views:
                mal = outputs.get(f"malignancy_{side}")
                if mal is not None:
                    p = _softmax(mal[b])
                    names = self.classes.get("malignancy") or [str(i) for i in range(len(p))]
                    sr.p_pathology = {str(nm): float(pi) for nm, pi in zip(names, p)}
                    idx = self._label_index("malignancy", self._default_label("malignancy"), len(p))
                    sr.p_malignant = float(p[idx])
                bir = outputs.get(f"birads_{side}")
                if bir is not None:
                    p = _softmax(bir[b])
                    labels = self.classes.get("birads") or list(range(1, len(p) + 1))
                    if len(labels) != len(p):
                        raise ModelError(
                            f"model {self.name}: birads head has {len(p)} classes, card lists "
                            f"{len(labels)}"
                        )
                    sr.p_birads = {lab: float(pi) for lab, pi in zip(labels, p)}
                    sr.birads_pred = labels[int(np.argmax(p))]
            sides[side] = sr
        return Result(
            study_id=study.study_id,
            study_path=str(study.path),
            model=self.name,
            model_version=self.version,
            device=self.device_name,
            sides=sides,
            attention=attention,
            missing=missing,
            geometries=dict(prep.geometries),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )

    def _add_heatmaps(
        self,
        result: Result,
        prep: PreparedStudy,
        cams: Mapping[str, np.ndarray],
        b: int,
        view_targets: Mapping[str, tuple[str, int, str]],
        target_text: str,
    ) -> None:
        present = [v for v in STANDARD_VIEWS if v in prep.geometries]
        raw = {v: cams[v][b] for v in present if v in cams}
        groups = {v: view_targets[v][2] for v in raw}
        normalised, scales = normalise_shared(raw, groups)
        result.cams = normalised
        result.cam_scales = scales
        result.view_targets = dict(groups)
        result.target = target_text

    def _add_mask_contours(self, result: Result, prep: PreparedStudy, masks: np.ndarray) -> None:
        contours = {}
        for i, v in enumerate(STANDARD_VIEWS):
            if v in prep.geometries:
                prob = 1.0 / (1.0 + np.exp(-masks[i].astype(np.float64)))
                contours[v] = map_contours(prob, prep.geometries[v], level=0.5)
        result.contours = contours
        result.contour_source = "segmentation"


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max())
    return z / z.sum()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
