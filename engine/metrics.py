"""Evaluation metrics shared by training and the viewer's failure-case browser (numpy only).

Every function takes numpy-convertible arrays and returns plain Python floats or numpy arrays, so
the same numbers appear in training logs, model cards and the viewer's ROC / confusion-matrix
plots. Nothing here imports scikit-learn, torch or Qt; the tests check the numbers against
scikit-learn and against hand-computed values.

Conventions
-----------
- **Unknown labels.** A true label below 0 (``-1``, what the training dataset adapters report for
  an unknown pathology) means "unknown": those entries are dropped before any classification
  metric is computed (seed 000, section 4.1 ignores them in the loss the same way).
- **Undefined metrics.** ROC AUC and PR-AUC need both classes. When one is missing the metric is
  undefined: the functions raise :class:`UndefinedMetricError` (a ``ValueError``) by default, or
  return ``nan`` when called with ``undefined="nan"`` (what a training loop that logs every epoch
  wants). Macro averages skip undefined classes and are undefined only when every class is.
- **Zero division.** Precision, recall and F1 of a class that is never predicted (or never true)
  are 0.0, as scikit-learn's default ``zero_division`` reports them.
- **Classes.** Class labels are integers ``0..K-1``; ``n_classes`` fixes ``K`` when some classes do
  not occur in a small evaluation set.

Metrics implemented (papers in ``../shared/seeds``): ROC AUC and macro F1 (seed 000, section 4.4),
accuracy, precision, recall, F1, AUC and PR-AUC (seed 003, evaluation metrics), Dice and mIoU of
lesion masks (seed 004, "Comparison of Segmentation"), patient-level aggregation of image or breast
predictions by mean, max or majority vote (seed 002: several US images per patient, majority vote).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np

__all__ = [
    "UndefinedMetricError",
    "roc_auc",
    "binary_auc",
    "per_class_auc",
    "macro_auc_ovr",
    "roc_curve",
    "precision_recall_curve",
    "pr_auc",
    "confusion_matrix",
    "accuracy",
    "precision",
    "recall",
    "f1_score",
    "f1_macro",
    "per_class_precision_recall_f1",
    "specificity",
    "binary_report",
    "multiclass_report",
    "dice",
    "iou",
    "mean_iou",
    "segmentation_scores",
    "PatientAggregate",
    "aggregate_by_patient",
]

logger = logging.getLogger(__name__)

Undefined = Literal["raise", "nan"]


class UndefinedMetricError(ValueError):
    """A metric that cannot be computed from the given labels (e.g. AUC with one class present)."""


# --- input handling ------------------------------------------------------------------------------


def _labels_1d(y_true: Sequence | np.ndarray) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if y.dtype.kind == "b":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        if np.any(np.isnan(y)) or np.any(y != np.round(y)):
            raise ValueError("labels must be integers (use -1 for unknown)")
        return y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    return y.astype(np.int64)


def _known(y_true: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Drop entries whose true label is negative (unknown), keeping arrays aligned."""
    keep = y_true >= 0
    for o in others:
        if len(o) != len(y_true):
            raise ValueError(f"length mismatch: {len(y_true)} labels, {len(o)} predictions")
    if keep.all():
        return (y_true, *others)
    return (y_true[keep], *(o[keep] for o in others))


def _scores_1d(y_score: Sequence | np.ndarray) -> np.ndarray:
    s = np.asarray(y_score, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1:
        raise ValueError(f"binary scores must be 1-D, got shape {s.shape}")
    if np.any(~np.isfinite(s)):
        raise ValueError("scores contain NaN or infinity")
    return s


def _undefined(message: str, undefined: Undefined) -> float:
    if undefined == "nan":
        return float("nan")
    if undefined != "raise":
        raise ValueError(f"undefined must be 'raise' or 'nan', got {undefined!r}")
    raise UndefinedMetricError(message)


def _check_binary(y: np.ndarray) -> None:
    if y.size and (y.min() < 0 or y.max() > 1):
        raise ValueError("binary labels must be 0 or 1 (and -1 for unknown)")


# --- ROC -----------------------------------------------------------------------------------------


def binary_auc(
    y_true: Sequence | np.ndarray, y_score: Sequence | np.ndarray, *, undefined: Undefined = "raise"
) -> float:
    """Area under the ROC curve of a binary problem.

    Computed as the Mann-Whitney U statistic: the probability that a random positive scores higher
    than a random negative, ties counting one half (equal to the trapezoidal area under
    :func:`roc_curve`).

    Args:
        y_true: ``(N,)`` labels 0/1; negative entries (unknown) are dropped.
        y_score: ``(N,)`` scores, larger = more likely positive.
        undefined: ``"raise"`` or ``"nan"`` when only one class is present.

    Returns:
        AUC in ``[0, 1]`` (or nan, see ``undefined``).

    Raises:
        UndefinedMetricError: Only one class present and ``undefined="raise"``.
        ValueError: Malformed input.
    """
    y, s = _known(_labels_1d(y_true), _scores_1d(y_score))
    _check_binary(y)
    n_pos = int(y.sum())
    n_neg = int(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return _undefined(
            f"ROC AUC is undefined with only one class present ({n_pos} positive, {n_neg} negative)",
            undefined,
        )
    ranks = _average_ranks(s)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_v = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_v)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(values)]))
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def per_class_auc(
    y_true: Sequence | np.ndarray, probs: Sequence | np.ndarray, *, n_classes: int | None = None
) -> np.ndarray:
    """One-vs-rest ROC AUC of every class.

    Args:
        y_true: ``(N,)`` class indices ``0..K-1``; negative entries (unknown) are dropped.
        probs: ``(N, K)`` class scores (probabilities or logits: only their ranking counts).
        n_classes: ``K``; defaults to ``probs.shape[1]``.

    Returns:
        ``(K,)`` float64: the AUC of class ``k`` against the rest, nan where class ``k`` is absent
        or is the only class present.
    """
    y, p = _known_multiclass(y_true, probs, n_classes)
    out = np.full(p.shape[1], np.nan)
    for k in range(p.shape[1]):
        out[k] = binary_auc((y == k).astype(np.int64), p[:, k], undefined="nan")
    return out


def _known_multiclass(
    y_true: Sequence | np.ndarray, probs: Sequence | np.ndarray, n_classes: int | None
) -> tuple[np.ndarray, np.ndarray]:
    y = _labels_1d(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"class scores must be (N, K), got shape {p.shape}")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(f"scores have {p.shape[1]} columns, expected {n_classes}")
    if np.any(~np.isfinite(p)):
        raise ValueError("scores contain NaN or infinity")
    y, p = _known(y, p)
    if y.size and y.max() >= p.shape[1]:
        raise ValueError(f"label {int(y.max())} out of range for {p.shape[1]} classes")
    return y, p


def macro_auc_ovr(
    y_true: Sequence | np.ndarray,
    probs: Sequence | np.ndarray,
    *,
    n_classes: int | None = None,
    undefined: Undefined = "raise",
) -> float:
    """Macro-averaged one-vs-rest ROC AUC (the multi-class AUC of seed 000, section 4.4).

    The unweighted mean of :func:`per_class_auc` over the classes present in ``y_true`` (a class
    with no example has no AUC and is skipped). With probabilities that sum to one over all
    classes present this equals scikit-learn's ``roc_auc_score(multi_class="ovr",
    average="macro")``.

    Args:
        y_true: ``(N,)`` class indices; negative entries (unknown) are dropped.
        probs: ``(N, K)`` class scores.
        n_classes: ``K``; defaults to ``probs.shape[1]``.
        undefined: ``"raise"`` or ``"nan"`` when fewer than two classes are present.

    Returns:
        Macro AUC.

    Raises:
        UndefinedMetricError: Fewer than two classes present and ``undefined="raise"``.
    """
    per = per_class_auc(y_true, probs, n_classes=n_classes)
    if np.all(np.isnan(per)):
        return _undefined("macro one-vs-rest AUC is undefined with fewer than two classes present", undefined)
    return float(np.nanmean(per))


def roc_auc(
    y_true: Sequence | np.ndarray,
    y_score: Sequence | np.ndarray,
    *,
    undefined: Undefined = "raise",
) -> float:
    """ROC AUC: binary for ``(N,)`` scores, macro one-vs-rest for ``(N, K)`` scores (``K >= 2``).

    An ``(N, 2)`` score matrix is treated as the two-class case of the macro average, which equals
    the binary AUC of its second column when the rows sum to one.

    Args:
        y_true: ``(N,)`` labels; negative entries (unknown) are dropped.
        y_score: ``(N,)`` or ``(N, K)`` scores.
        undefined: ``"raise"`` or ``"nan"`` when the AUC is undefined.

    Returns:
        AUC.
    """
    s = np.asarray(y_score)
    if s.ndim == 2 and s.shape[1] >= 2:
        return macro_auc_ovr(y_true, s, undefined=undefined)
    return binary_auc(y_true, s, undefined=undefined)


def roc_curve(
    y_true: Sequence | np.ndarray, y_score: Sequence | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve points at every distinct score threshold (for plotting).

    Args:
        y_true: ``(N,)`` labels 0/1; negative entries (unknown) are dropped.
        y_score: ``(N,)`` scores.

    Returns:
        ``(fpr, tpr, thresholds)``, each ``(M + 1,)``: the first point is ``(0, 0)`` at threshold
        ``+inf``; point ``i`` counts the scores ``>= thresholds[i]`` as positive; the last point is
        ``(1, 1)``. The trapezoidal area under ``(fpr, tpr)`` equals :func:`binary_auc`.

    Raises:
        UndefinedMetricError: Only one class present (a rate would divide by zero).
    """
    y, s = _known(_labels_1d(y_true), _scores_1d(y_score))
    _check_binary(y)
    n_pos = int(y.sum())
    n_neg = int(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise UndefinedMetricError(f"ROC curve needs both classes ({n_pos} positive, {n_neg} negative)")
    tps, fps, thr = _cumulative_counts(y, s)
    fpr = np.concatenate(([0.0], fps / n_neg))
    tpr = np.concatenate(([0.0], tps / n_pos))
    return fpr, tpr, np.concatenate(([np.inf], thr))


def _cumulative_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True/false positives when everything with score >= each distinct threshold is positive."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    last_of_run = np.concatenate((np.flatnonzero(np.diff(s_sorted)), [len(s_sorted) - 1]))
    tps = np.cumsum(y_sorted)[last_of_run].astype(np.float64)
    fps = (last_of_run + 1 - tps).astype(np.float64)
    return tps, fps, s_sorted[last_of_run]


# --- precision-recall ----------------------------------------------------------------------------


def precision_recall_curve(
    y_true: Sequence | np.ndarray, y_score: Sequence | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score threshold, from the highest threshold down.

    Args:
        y_true: ``(N,)`` labels 0/1; negative entries (unknown) are dropped.
        y_score: ``(N,)`` scores.

    Returns:
        ``(precision, recall, thresholds)``, each ``(M,)``, thresholds decreasing (recall
        non-decreasing). Unlike scikit-learn no artificial ``(recall 0, precision 1)`` point is added.

    Raises:
        UndefinedMetricError: No positive example (recall would divide by zero).
    """
    y, s = _known(_labels_1d(y_true), _scores_1d(y_score))
    _check_binary(y)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise UndefinedMetricError("precision-recall curve needs at least one positive example")
    tps, fps, thr = _cumulative_counts(y, s)
    return tps / (tps + fps), tps / n_pos, thr


def pr_auc(
    y_true: Sequence | np.ndarray,
    y_score: Sequence | np.ndarray,
    *,
    n_classes: int | None = None,
    undefined: Undefined = "raise",
) -> float:
    """Area under the precision-recall curve as average precision (seed 003's PR-AUC).

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct thresholds (step interpolation, no
    trapezoids: the trapezoidal rule over-states the area between points). Equal to
    scikit-learn's ``average_precision_score``. ``(N, K)`` scores give the macro average of the
    one-vs-rest AP of the classes present in ``y_true``.

    Args:
        y_true: ``(N,)`` labels (0/1, or class indices for ``(N, K)`` scores); negative entries
            (unknown) are dropped.
        y_score: ``(N,)`` or ``(N, K)`` scores.
        n_classes: ``K`` for ``(N, K)`` scores; defaults to the number of columns.
        undefined: ``"raise"`` or ``"nan"`` when there is no positive example (or, for the macro
            version, no class present).

    Returns:
        Average precision in ``[0, 1]``.
    """
    s = np.asarray(y_score)
    if s.ndim == 2 and s.shape[1] >= 2:
        y, p = _known_multiclass(y_true, s, n_classes)
        per = [
            pr_auc((y == k).astype(np.int64), p[:, k], undefined="nan") for k in range(p.shape[1])
        ]
        if np.all(np.isnan(per)):
            return _undefined("macro PR-AUC is undefined with no class present", undefined)
        return float(np.nanmean(per))
    y, sc = _known(_labels_1d(y_true), _scores_1d(s))
    _check_binary(y)
    if int(y.sum()) == 0:
        return _undefined("PR-AUC is undefined without a positive example", undefined)
    prec, rec, _ = precision_recall_curve(y, sc)
    steps = np.diff(np.concatenate(([0.0], rec)))
    return float(np.sum(steps * prec))


# --- thresholded metrics -------------------------------------------------------------------------


def confusion_matrix(
    y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray, *, n_classes: int | None = None
) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class.

    Args:
        y_true: ``(N,)`` class indices; negative entries (unknown) are dropped.
        y_pred: ``(N,)`` predicted class indices (all ``>= 0``).
        n_classes: ``K``; defaults to ``max(label, prediction) + 1``.

    Returns:
        ``(K, K)`` int64 counts.
    """
    y, p = _known(_labels_1d(y_true), _labels_1d(y_pred))
    if p.size and p.min() < 0:
        raise ValueError("predictions must be class indices >= 0")
    if n_classes is None:
        k = max(int(y.max(initial=0)), int(p.max(initial=0))) + 1
    elif n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    else:
        k = n_classes
    if y.size and max(int(y.max()), int(p.max())) >= k:
        raise ValueError(f"class index out of range for {k} classes")
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    return cm


def accuracy(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> float:
    """Share of correct predictions among entries with a known label.

    Raises:
        UndefinedMetricError: No entry with a known label.
    """
    y, p = _known(_labels_1d(y_true), _labels_1d(y_pred))
    if y.size == 0:
        raise UndefinedMetricError("accuracy of an empty set is undefined")
    return float(np.mean(y == p))


def per_class_precision_recall_f1(
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    *,
    n_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support of every class (zero division gives 0.0).

    Returns:
        ``(precision, recall, f1, support)``, each ``(K,)``; support = number of true examples.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes=n_classes)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(predicted > 0, tp / predicted, 0.0)
        rec = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    return prec, rec, f1, support


def _average(
    values: np.ndarray,
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    average: str,
    pos_label: int,
    labels: Sequence[int] | None,
) -> float:
    if average == "binary":
        return float(values[pos_label]) if pos_label < len(values) else 0.0
    if average == "macro":
        if labels is None:
            y, p = _known(_labels_1d(y_true), _labels_1d(y_pred))
            labels = sorted(set(y.tolist()) | set(p.tolist()))
        if not labels:
            raise UndefinedMetricError("macro average over no class")
        return float(np.mean([values[k] if k < len(values) else 0.0 for k in labels]))
    raise ValueError(f"average must be 'binary' or 'macro', got {average!r}")


def precision(
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    *,
    average: Literal["binary", "macro"] = "binary",
    pos_label: int = 1,
    labels: Sequence[int] | None = None,
) -> float:
    """Precision TP / (TP + FP) of ``pos_label`` (``"binary"``) or its macro average.

    Args:
        y_true: ``(N,)`` class indices; negative entries (unknown) are dropped.
        y_pred: ``(N,)`` predicted classes.
        average: ``"binary"`` (the positive class only) or ``"macro"`` (unweighted class mean).
        pos_label: The positive class for ``"binary"``.
        labels: Classes to average for ``"macro"``; default: those in ``y_true`` or ``y_pred``
            (as scikit-learn).

    Returns:
        Precision; 0.0 when the class is never predicted.
    """
    n = _n_needed(y_true, y_pred, pos_label, labels)
    prec, _, _, _ = per_class_precision_recall_f1(y_true, y_pred, n_classes=n)
    return _average(prec, y_true, y_pred, average, pos_label, labels)


def recall(
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    *,
    average: Literal["binary", "macro"] = "binary",
    pos_label: int = 1,
    labels: Sequence[int] | None = None,
) -> float:
    """Recall (sensitivity) TP / (TP + FN); arguments as :func:`precision`."""
    n = _n_needed(y_true, y_pred, pos_label, labels)
    _, rec, _, _ = per_class_precision_recall_f1(y_true, y_pred, n_classes=n)
    return _average(rec, y_true, y_pred, average, pos_label, labels)


def f1_score(
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    *,
    average: Literal["binary", "macro"] = "binary",
    pos_label: int = 1,
    labels: Sequence[int] | None = None,
) -> float:
    """F1 = 2PR / (P + R); arguments as :func:`precision`."""
    n = _n_needed(y_true, y_pred, pos_label, labels)
    _, _, f1, _ = per_class_precision_recall_f1(y_true, y_pred, n_classes=n)
    return _average(f1, y_true, y_pred, average, pos_label, labels)


def f1_macro(
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    *,
    n_classes: int | None = None,
) -> float:
    """Macro-averaged F1 (seed 000, section 4.4): the unweighted mean of the per-class F1.

    Args:
        y_true: ``(N,)`` class indices; negative entries (unknown) are dropped.
        y_pred: ``(N,)`` predicted classes.
        n_classes: Average over classes ``0..K-1`` (a class never true nor predicted scores 0);
            default: over the classes that occur in ``y_true`` or ``y_pred`` (scikit-learn's
            default ``labels``).

    Returns:
        F1-macro.
    """
    labels = list(range(n_classes)) if n_classes is not None else None
    return f1_score(y_true, y_pred, average="macro", labels=labels)


def _n_needed(
    y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray, pos_label: int, labels: Sequence[int] | None
) -> int:
    y, p = _known(_labels_1d(y_true), _labels_1d(y_pred))
    top = max(int(y.max(initial=0)), int(p.max(initial=0)), pos_label, max(labels or (), default=0))
    return top + 1


def specificity(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> float:
    """TN / (TN + FP) of a binary problem; 0.0 when there is no negative example."""
    cm = confusion_matrix(y_true, y_pred, n_classes=2)
    negatives = cm[0].sum()
    return float(cm[0, 0] / negatives) if negatives else 0.0


def binary_report(
    y_true: Sequence | np.ndarray,
    y_score: Sequence | np.ndarray,
    *,
    threshold: float = 0.5,
) -> dict[str, float | int | list]:
    """Every binary metric at once (the model card's and the viewer's summary).

    Args:
        y_true: ``(N,)`` labels 0/1; negative entries (unknown) are dropped.
        y_score: ``(N,)`` scores (probabilities for a meaningful ``threshold``).
        threshold: Scores ``>= threshold`` are predicted positive.

    Returns:
        ``{"n", "n_positive", "auc", "pr_auc", "accuracy", "precision", "recall", "specificity",
        "f1", "f1_macro", "confusion_matrix"}``; AUC and PR-AUC are nan when undefined.
    """
    y, s = _known(_labels_1d(y_true), _scores_1d(y_score))
    _check_binary(y)
    pred = (s >= threshold).astype(np.int64)
    out: dict[str, float | int | list] = {
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "auc": binary_auc(y, s, undefined="nan"),
        "pr_auc": pr_auc(y, s, undefined="nan"),
        "accuracy": accuracy(y, pred) if y.size else float("nan"),
        "precision": precision(y, pred),
        "recall": recall(y, pred),
        "specificity": specificity(y, pred),
        "f1": f1_score(y, pred),
        "f1_macro": f1_macro(y, pred, n_classes=2) if y.size else float("nan"),
        "confusion_matrix": confusion_matrix(y, pred, n_classes=2).tolist(),
    }
    return out


def multiclass_report(
    y_true: Sequence | np.ndarray,
    probs: Sequence | np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
) -> dict[str, float | int | list | dict]:
    """Every multi-class metric at once; the prediction is the arg-max class.

    Args:
        y_true: ``(N,)`` class indices; negative entries (unknown) are dropped.
        probs: ``(N, K)`` class scores.
        class_names: ``K`` names for the per-class entries (default ``"0"``, ``"1"``, ...).

    Returns:
        ``{"n", "auc_macro", "pr_auc_macro", "accuracy", "f1_macro", "per_class":
        {name: {"auc", "precision", "recall", "f1", "support"}}, "confusion_matrix"}``;
        undefined AUCs are nan. ``f1_macro`` averages over all ``K`` classes.
    """
    y, p = _known_multiclass(y_true, probs, None)
    k = p.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} classes")
    pred = np.argmax(p, axis=1) if y.size else np.zeros(0, dtype=np.int64)
    prec, rec, f1, support = per_class_precision_recall_f1(y, pred, n_classes=k)
    aucs = per_class_auc(y, p)
    return {
        "n": int(y.size),
        "auc_macro": macro_auc_ovr(y, p, undefined="nan"),
        "pr_auc_macro": pr_auc(y, p, undefined="nan") if y.size else float("nan"),
        "accuracy": accuracy(y, pred) if y.size else float("nan"),
        "f1_macro": float(np.mean(f1)) if y.size else float("nan"),
        "per_class": {
            names[i]: {
                "auc": float(aucs[i]),
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in range(k)
        },
        "confusion_matrix": confusion_matrix(y, pred, n_classes=k).tolist(),
    }


# --- masks ---------------------------------------------------------------------------------------


def _mask(a: np.ndarray | Sequence) -> np.ndarray:
    m = np.asarray(a)
    if m.dtype.kind == "b":
        return m
    return m > 0.5  # {0,1} labels, 0/255 PNG masks and probabilities alike


def _pair(pred: np.ndarray | Sequence, target: np.ndarray | Sequence) -> tuple[np.ndarray, np.ndarray]:
    p, t = _mask(pred), _mask(target)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {t.shape}")
    return p, t


def dice(pred: np.ndarray | Sequence, target: np.ndarray | Sequence, *, empty: float = 1.0) -> float:
    """Dice coefficient ``2 |P ∩ T| / (|P| + |T|)`` of two binary masks (seed 004, Table 2).

    Args:
        pred: Predicted mask (bool, ``{0, 1}``, ``{0, 255}`` or probabilities: values > 0.5 are in).
        target: True mask, same shape.
        empty: Value when both masks are empty (a correct "no lesion"): 1.0 by default.

    Returns:
        Dice in ``[0, 1]``.
    """
    p, t = _pair(pred, target)
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return float(empty)
    return float(2.0 * np.logical_and(p, t).sum() / denom)


def iou(pred: np.ndarray | Sequence, target: np.ndarray | Sequence, *, empty: float = 1.0) -> float:
    """Intersection over union ``|P ∩ T| / |P ∪ T|`` of two binary masks (foreground only).

    Args:
        pred: Predicted mask (as :func:`dice`).
        target: True mask, same shape.
        empty: Value when both masks are empty.

    Returns:
        IoU in ``[0, 1]``.
    """
    p, t = _pair(pred, target)
    union = int(np.logical_or(p, t).sum())
    if union == 0:
        return float(empty)
    return float(np.logical_and(p, t).sum() / union)


def mean_iou(pred: np.ndarray | Sequence, target: np.ndarray | Sequence) -> float:
    """Mean IoU over the two classes of a binary mask, background and lesion (semantic mIoU).

    ``(IoU(lesion) + IoU(background)) / 2``; a class absent from both masks is skipped, so two
    empty masks score 1.0. This is the usual segmentation mIoU (seed 004 reports "mIoU" beside
    Dice); the foreground-only number is :func:`iou`.

    Args:
        pred: Predicted mask (as :func:`dice`).
        target: True mask, same shape.

    Returns:
        mIoU in ``[0, 1]``.
    """
    p, t = _pair(pred, target)
    values = []
    for a, b in ((p, t), (~p, ~t)):
        union = int(np.logical_or(a, b).sum())
        if union:
            values.append(np.logical_and(a, b).sum() / union)
    return float(np.mean(values)) if values else 1.0


def segmentation_scores(
    preds: Sequence[np.ndarray], targets: Sequence[np.ndarray]
) -> dict[str, float]:
    """Dice, foreground IoU and mIoU averaged over images (each image weighs the same).

    Args:
        preds: Predicted masks, one per image (shapes may differ between images).
        targets: True masks, same order and shapes.

    Returns:
        ``{"n", "dice", "iou", "miou"}``.

    Raises:
        UndefinedMetricError: No image given.
    """
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    if not preds:
        raise UndefinedMetricError("segmentation scores of no image are undefined")
    d = [dice(p, t) for p, t in zip(preds, targets)]
    j = [iou(p, t) for p, t in zip(preds, targets)]
    m = [mean_iou(p, t) for p, t in zip(preds, targets)]
    return {"n": float(len(d)), "dice": float(np.mean(d)), "iou": float(np.mean(j)), "miou": float(np.mean(m))}


# --- patient level -------------------------------------------------------------------------------


class PatientAggregate(NamedTuple):
    """Per-patient predictions.

    Attributes:
        patient_ids: ``(P,)`` the distinct ids, in order of first appearance.
        scores: ``(P,)`` or ``(P, K)`` aggregated scores.
        labels: ``(P,)`` the worst (largest) known label of the patient, -1 when all are unknown;
            None when no labels were given.
        counts: ``(P,)`` how many entries each patient had.
    """

    patient_ids: list
    scores: np.ndarray
    labels: np.ndarray | None
    counts: np.ndarray


def aggregate_by_patient(
    patient_ids: Sequence,
    scores: Sequence | np.ndarray,
    labels: Sequence | np.ndarray | None = None,
    *,
    how: Literal["max", "mean", "vote"] = "max",
) -> PatientAggregate:
    """Combine image- or breast-level predictions into one prediction per patient.

    - ``"max"``: the most suspicious entry (a patient is positive when any breast is); for
      ``(N, K)`` scores, the column-wise maximum (one-vs-rest scores, not renormalised).
    - ``"mean"``: the average score (probabilities stay probabilities).
    - ``"vote"``: majority vote of the per-entry decisions (seed 002, patient-level voting over
      several ultrasound images). Binary scores vote with ``score >= 0.5``; the result is the share
      of positive votes, with a tie (0.5) counted as positive. ``(N, K)`` scores vote with their
      arg-max; the result is each class's vote share, a tie going to the highest (most severe) class,
      which receives an extra 1e-9 so that ``argmax`` picks it.

    Args:
        patient_ids: ``(N,)`` patient id of each entry (any hashable).
        scores: ``(N,)`` or ``(N, K)`` scores.
        labels: ``(N,)`` labels; the patient's label is its largest known one (worst: malignant
            over benign over normal), -1 when none is known.
        how: ``"max"``, ``"mean"`` or ``"vote"``.

    Returns:
        A :class:`PatientAggregate`.
    """
    ids = list(patient_ids)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim not in (1, 2) or len(s) != len(ids):
        raise ValueError(f"scores of shape {s.shape} for {len(ids)} patient ids")
    index: dict = {}
    inverse = np.empty(len(ids), dtype=np.int64)
    for i, pid in enumerate(ids):
        inverse[i] = index.setdefault(pid, len(index))
    n_p = len(index)
    counts = np.bincount(inverse, minlength=n_p)
    out_shape = (n_p,) + s.shape[1:]
    if how == "mean":
        agg = np.zeros(out_shape)
        np.add.at(agg, inverse, s)
        agg /= counts.reshape((-1,) + (1,) * (s.ndim - 1))
    elif how == "max":
        agg = np.full(out_shape, -np.inf)
        np.maximum.at(agg, inverse, s)
    elif how == "vote":
        if s.ndim == 1:
            agg = np.zeros(n_p)
            np.add.at(agg, inverse, (s >= 0.5).astype(np.float64))
            agg /= counts
        else:
            k = s.shape[1]
            votes = np.zeros((n_p, k))
            np.add.at(votes, (inverse, np.argmax(s, axis=1)), 1.0)
            agg = votes / counts[:, None]
            top = agg.max(axis=1, keepdims=True)
            tied = agg == top
            worst = k - 1 - np.argmax(tied[:, ::-1], axis=1)
            multi = tied.sum(axis=1) > 1
            agg[np.flatnonzero(multi), worst[multi]] += 1e-9
    else:
        raise ValueError(f"how must be 'max', 'mean' or 'vote', got {how!r}")
    agg_labels = None
    if labels is not None:
        y = _labels_1d(labels)
        if len(y) != len(ids):
            raise ValueError(f"{len(y)} labels for {len(ids)} patient ids")
        agg_labels = np.full(n_p, -1, dtype=np.int64)
        np.maximum.at(agg_labels, inverse, y)
    pid_list = [None] * n_p
    for pid, j in index.items():
        pid_list[j] = pid
    return PatientAggregate(pid_list, agg, agg_labels, counts)
