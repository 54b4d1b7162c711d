"""Evaluation of a four-view model's predictions: the table of seed 000 (section 4.4, Tables 2-4).

Every breast is one case (the paper's figures are breast-based): the right and left predictions of
the N studies are pooled into 2N cases, and breasts whose label is unknown (``-1``: not imaged, no
label, or outside the BI-RADS subset) are dropped. The numbers come from :mod:`engine.metrics`, the
same functions the viewer's failure-case browser plots:

- malignancy: ROC AUC of ``p_malignant`` and F1-macro of the arg-max prediction
  (:func:`engine.metrics.binary_report`, threshold 0.5);
- BI-RADS: macro one-vs-rest ROC AUC and F1-macro over the model's classes
  (:func:`engine.metrics.multiclass_report`).

The validation score the scheduler and the best checkpoint follow is the sum of the defined AUCs
("a combined score of label AUC and BI-RADS AUC", seed 000 section 4.3).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine import metrics as M

__all__ = ["Predictions", "evaluate_predictions", "validation_score", "jsonable", "TABLE_KEYS"]

logger = logging.getLogger(__name__)

#: The columns of the paper's table.
TABLE_KEYS: tuple[str, ...] = ("malignancy_auc", "malignancy_f1_macro", "birads_auc", "birads_f1_macro")


@dataclass
class Predictions:
    """A model's outputs on a split, in the split's sample order.

    Attributes:
        study_ids: ``N`` study ids.
        probs: Per task, float ``(N, 2, K)`` softmax probabilities for the sides ``(R, L)``.
        targets: Per task, int ``(N, 2)`` class indices, -1 = unknown.
        attention: float ``(N, 4)`` view attention (STANDARD_VIEWS order).
        loss: Mean loss over the split, when computed.
    """

    study_ids: list[str]
    probs: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    attention: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    loss: float = float("nan")


def _pooled(pred: Predictions, task: str) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred.probs[task], dtype=np.float64)
    y = np.asarray(pred.targets[task], dtype=np.int64)
    return y.reshape(-1), p.reshape(-1, p.shape[-1])


def evaluate_predictions(pred: Predictions, birads_classes: Sequence[int]) -> dict[str, Any]:
    """The paper's table and the full reports for a split.

    Args:
        pred: The predictions.
        birads_classes: The BI-RADS categories of the model's classes (for the class names).

    Returns:
        ``{"n_studies", "table": {malignancy_auc, malignancy_f1_macro, birads_auc,
        birads_f1_macro} (tasks the model has), "malignancy": binary report, "birads":
        multi-class report, "score": validation score, "loss"}``; undefined metrics are nan.
    """
    out: dict[str, Any] = {"n_studies": len(pred.study_ids), "table": {}}
    if "malignancy" in pred.probs:
        y, p = _pooled(pred, "malignancy")
        rep = M.binary_report(y, p[:, 1])
        out["malignancy"] = rep
        out["table"]["malignancy_auc"] = float(rep["auc"])
        out["table"]["malignancy_f1_macro"] = float(rep["f1_macro"])
    if "birads" in pred.probs:
        y, p = _pooled(pred, "birads")
        names = [f"birads_{c}" for c in birads_classes]
        rep = M.multiclass_report(y, p, class_names=names)
        out["birads"] = rep
        out["table"]["birads_auc"] = float(rep["auc_macro"])
        out["table"]["birads_f1_macro"] = float(rep["f1_macro"])
    out["score"] = validation_score(out["table"])
    out["loss"] = float(pred.loss)
    return out


def validation_score(table: Mapping[str, float]) -> float:
    """Sum of the defined task AUCs of a table (nan when none is defined)."""
    aucs = [table[k] for k in ("malignancy_auc", "birads_auc") if k in table and not math.isnan(table[k])]
    return float(sum(aucs)) if aucs else float("nan")


def jsonable(obj: Any) -> Any:
    """A copy with NaN/inf floats as None and numpy scalars/arrays as Python values (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
