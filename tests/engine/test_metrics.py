"""engine.metrics: hand-computed values, agreement with scikit-learn, edge cases, patient level."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import metrics as M

# --- ROC AUC -------------------------------------------------------------------------------------

# The classic 4-point ranking: positives 0.35 and 0.8, negatives 0.1 and 0.4 -> 3 of 4 pairs ordered.
Y4 = np.array([0, 0, 1, 1])
S4 = np.array([0.1, 0.4, 0.35, 0.8])


def test_binary_auc_hand_computed():
    assert M.binary_auc(Y4, S4) == pytest.approx(0.75)
    assert M.roc_auc(Y4, S4) == pytest.approx(0.75)
    # ties count one half: pairs (0.5 vs 0.5) = 0.5, the other three = 1 -> 3.5 / 4
    assert M.binary_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    # a perfect and a reversed ranking
    assert M.binary_auc([0, 0, 1], [0.1, 0.2, 0.3]) == 1.0
    assert M.binary_auc([0, 0, 1], [0.3, 0.2, 0.1]) == 0.0


def test_roc_curve_points_and_area():
    fpr, tpr, thr = M.roc_curve(Y4, S4)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert thr[0] == np.inf
    np.testing.assert_allclose(thr[1:], [0.8, 0.4, 0.35, 0.1])
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(M.binary_auc(Y4, S4))


def test_unknown_labels_are_dropped():
    y = np.array([0, -1, 0, 1, -1, 1])
    s = np.array([0.1, 0.99, 0.4, 0.35, 0.0, 0.8])
    assert M.binary_auc(y, s) == pytest.approx(0.75)
    assert M.accuracy(y, [0, 1, 0, 0, 1, 1]) == pytest.approx(0.75)


def test_single_class_raises_or_nan():
    with pytest.raises(M.UndefinedMetricError, match="only one class"):
        M.binary_auc([1, 1, 1], [0.2, 0.5, 0.9])
    assert isinstance(M.UndefinedMetricError("x"), ValueError)
    assert math.isnan(M.binary_auc([0, 0], [0.2, 0.5], undefined="nan"))
    assert math.isnan(M.pr_auc([0, 0], [0.2, 0.5], undefined="nan"))
    with pytest.raises(M.UndefinedMetricError):
        M.pr_auc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(M.UndefinedMetricError):
        M.roc_curve([1, 1], [0.1, 0.2])
    with pytest.raises(M.UndefinedMetricError):
        M.macro_auc_ovr([2, 2, 2], np.eye(3))
    with pytest.raises(ValueError, match="0 or 1"):
        M.binary_auc([0, 2], [0.1, 0.2])


def test_per_class_and_macro_auc_hand_computed():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.3, 0.4, 0.3],  # class 0 scored below a class-1 row on column 0
            [0.4, 0.5, 0.1],
            [0.2, 0.6, 0.2],
            [0.1, 0.3, 0.6],
            [0.2, 0.2, 0.6],
        ]
    )
    per = M.per_class_auc(y, p)
    # column 0: positives 0.7, 0.3 vs negatives 0.4, 0.2, 0.1, 0.2 -> (4 + 3) / 8
    # column 1: positives 0.5, 0.6 vs 0.2, 0.4, 0.3, 0.2 -> 8 / 8
    # column 2: positives 0.6, 0.6 vs 0.1, 0.3, 0.1, 0.2 -> 8 / 8
    np.testing.assert_allclose(per, [0.875, 1.0, 1.0])
    assert M.macro_auc_ovr(y, p) == pytest.approx((0.875 + 1 + 1) / 3)
    assert M.roc_auc(y, p) == pytest.approx((0.875 + 1 + 1) / 3)


def test_macro_auc_skips_absent_class():
    y = np.array([0, 0, 1, 1])
    p = np.column_stack([1 - S4, S4, np.full(4, 0.0)])
    per = M.per_class_auc(y, p)
    assert math.isnan(per[2])
    assert M.macro_auc_ovr(y, p) == pytest.approx(0.75)


# --- PR-AUC --------------------------------------------------------------------------------------


def test_pr_auc_hand_computed():
    # descending: 0.8 (+) P=1 R=.5; 0.4 (-) P=.5; 0.35 (+) P=2/3 R=1; 0.1 (-)
    # AP = 0.5 * 1 + 0.5 * 2/3
    assert M.pr_auc(Y4, S4) == pytest.approx(0.5 + 1 / 3)
    prec, rec, thr = M.precision_recall_curve(Y4, S4)
    np.testing.assert_allclose(prec, [1, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(rec, [0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [0.8, 0.4, 0.35, 0.1])


# --- thresholded ---------------------------------------------------------------------------------

CM = np.array([[5, 1, 0], [2, 3, 1], [0, 2, 6]])


def _from_confusion(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    yt, yp = [], []
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            yt += [i] * int(cm[i, j])
            yp += [j] * int(cm[i, j])
    return np.array(yt), np.array(yp)


def test_confusion_and_f1_macro_hand_computed():
    yt, yp = _from_confusion(CM)
    np.testing.assert_array_equal(M.confusion_matrix(yt, yp), CM)
    # F1_k = 2 TP / (predicted + true): 10/13, 6/12, 12/15
    assert M.f1_macro(yt, yp) == pytest.approx((10 / 13 + 0.5 + 0.8) / 3)
    assert M.accuracy(yt, yp) == pytest.approx(14 / 20)
    prec, rec, f1, support = M.per_class_precision_recall_f1(yt, yp)
    np.testing.assert_allclose(prec, [5 / 7, 3 / 6, 6 / 7])
    np.testing.assert_allclose(rec, [5 / 6, 3 / 6, 6 / 8])
    np.testing.assert_array_equal(support, [6, 6, 8])
    assert M.precision(yt, yp, average="macro") == pytest.approx((5 / 7 + 0.5 + 6 / 7) / 3)
    assert M.recall(yt, yp, average="macro") == pytest.approx((5 / 6 + 0.5 + 0.75) / 3)


def test_binary_precision_recall_and_zero_division():
    y = [0, 0, 1, 1, 1]
    p = [0, 1, 1, 0, 1]
    assert M.precision(y, p) == pytest.approx(2 / 3)
    assert M.recall(y, p) == pytest.approx(2 / 3)
    assert M.specificity(y, p) == pytest.approx(0.5)
    assert M.f1_score(y, p) == pytest.approx(2 / 3)
    assert M.precision(y, [0, 0, 0, 0, 0]) == 0.0  # never predicted positive
    # a class never true nor predicted counts 0 when the class count is fixed
    assert M.f1_macro([0, 1], [0, 1], n_classes=3) == pytest.approx(2 / 3)
    assert M.f1_macro([0, 1], [0, 1]) == 1.0


def test_binary_report_numbers():
    rep = M.binary_report(Y4, S4, threshold=0.38)
    # predicted positive: 0.4 (neg) and 0.8 (pos)
    assert rep["confusion_matrix"] == [[1, 1], [1, 1]]
    assert rep["auc"] == pytest.approx(0.75)
    assert rep["pr_auc"] == pytest.approx(0.5 + 1 / 3)
    assert rep["accuracy"] == rep["precision"] == rep["recall"] == rep["specificity"] == 0.5
    assert rep["n"] == 4 and rep["n_positive"] == 2


def test_multiclass_report_numbers():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.4, 0.5, 0.1], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6]])
    rep = M.multiclass_report(y, p, class_names=["normal", "benign", "malignant"])
    assert rep["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 2]]
    assert rep["accuracy"] == pytest.approx(5 / 6)
    # F1: normal 2*1/(1+2)=2/3, benign 2*2/(3+2)=0.8, malignant 1
    assert rep["f1_macro"] == pytest.approx((2 / 3 + 0.8 + 1) / 3)
    assert rep["per_class"]["normal"]["auc"] == pytest.approx(0.875)
    assert rep["per_class"]["benign"]["support"] == 2


# --- agreement with scikit-learn -----------------------------------------------------------------


def test_matches_sklearn_on_random_data():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    for trial in range(5):
        n = 200
        y = rng.integers(0, 2, n)
        s = np.round(rng.random(n) + 0.3 * y, 2)  # rounding makes ties
        assert M.binary_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
        assert M.pr_auc(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
        fpr, tpr, _ = M.roc_curve(y, s)
        fpr2, tpr2, _ = skm.roc_curve(y, s, drop_intermediate=False)
        np.testing.assert_allclose(fpr, fpr2)
        np.testing.assert_allclose(tpr, tpr2)

        k = 4
        yk = rng.integers(0, k, n)
        logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[yk]
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        assert M.macro_auc_ovr(yk, probs) == pytest.approx(
            skm.roc_auc_score(yk, probs, multi_class="ovr", average="macro"), abs=1e-12
        )
        pred = probs.argmax(axis=1)
        assert M.f1_macro(yk, pred) == pytest.approx(skm.f1_score(yk, pred, average="macro"), abs=1e-12)
        assert M.precision(yk, pred, average="macro") == pytest.approx(
            skm.precision_score(yk, pred, average="macro", zero_division=0), abs=1e-12
        )
        assert M.recall(yk, pred, average="macro") == pytest.approx(
            skm.recall_score(yk, pred, average="macro", zero_division=0), abs=1e-12
        )
        np.testing.assert_array_equal(M.confusion_matrix(yk, pred), skm.confusion_matrix(yk, pred))
        macro_ap = np.mean([skm.average_precision_score(yk == c, probs[:, c]) for c in range(k)])
        assert M.pr_auc(yk, probs) == pytest.approx(macro_ap, abs=1e-12)


# --- masks ---------------------------------------------------------------------------------------


def _squares() -> tuple[np.ndarray, np.ndarray]:
    pred = np.zeros((10, 10), dtype=np.uint8)
    target = np.zeros((10, 10), dtype=np.uint8)
    pred[2:6, 2:6] = 255  # 16 px
    target[4:8, 4:8] = 1  # 16 px, overlap rows 4-5 x cols 4-5 = 4 px
    return pred, target


def test_dice_iou_miou_hand_computed():
    pred, target = _squares()
    assert M.dice(pred, target) == pytest.approx(2 * 4 / 32)
    assert M.iou(pred, target) == pytest.approx(4 / 28)
    # background: 100 - 28 = 72 px shared, union 100 - 4 = 96
    assert M.mean_iou(pred, target) == pytest.approx((4 / 28 + 72 / 96) / 2)
    assert M.dice(target, target) == 1.0
    empty = np.zeros((10, 10), bool)
    assert M.dice(empty, empty) == 1.0 and M.iou(empty, empty) == 1.0 and M.mean_iou(empty, empty) == 1.0
    assert M.dice(empty, target) == 0.0
    probs = np.where(target > 0, 0.9, 0.1)
    assert M.dice(probs, target) == 1.0
    scores = M.segmentation_scores([pred, target], [target, target])
    assert scores["dice"] == pytest.approx((0.25 + 1) / 2)
    assert scores["miou"] == pytest.approx(((4 / 28 + 0.75) / 2 + 1) / 2)
    with pytest.raises(ValueError, match="shapes differ"):
        M.dice(pred, target[:5])


# --- patient level -------------------------------------------------------------------------------


def test_patient_aggregation():
    ids = ["a", "a", "b", "c", "c", "c"]
    s = [0.2, 0.9, 0.4, 0.1, 0.3, 0.6]
    y = [0, 1, 0, -1, -1, 0]
    agg = M.aggregate_by_patient(ids, s, y, how="max")
    assert agg.patient_ids == ["a", "b", "c"]
    np.testing.assert_allclose(agg.scores, [0.9, 0.4, 0.6])
    np.testing.assert_array_equal(agg.labels, [1, 0, 0])
    np.testing.assert_array_equal(agg.counts, [2, 1, 3])
    np.testing.assert_allclose(M.aggregate_by_patient(ids, s, how="mean").scores, [0.55, 0.4, 1 / 3])
    np.testing.assert_allclose(M.aggregate_by_patient(ids, s, how="vote").scores, [0.5, 0.0, 1 / 3])
    assert M.aggregate_by_patient(["x", "x"], [0.1, 0.2], [-1, -1]).labels.tolist() == [-1]
    # patient-level AUC from max aggregation: a (1, 0.9), b (0, 0.4), c (0, 0.6) -> 1.0
    assert M.binary_auc(agg.labels, agg.scores) == 1.0


def test_patient_vote_multiclass_tie_goes_to_worst():
    ids = ["p", "p", "q", "q", "q"]
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    agg = M.aggregate_by_patient(ids, probs, how="vote")
    assert agg.scores.shape == (2, 3)
    assert agg.scores[0].argmax() == 2  # one vote normal, one malignant -> malignant
    np.testing.assert_allclose(agg.scores[1], [2 / 3, 1 / 3, 0])
    mx = M.aggregate_by_patient(ids, probs, how="max")
    np.testing.assert_allclose(mx.scores[1], [0.6, 0.7, 0.1])
    with pytest.raises(ValueError, match="how"):
        M.aggregate_by_patient(ids, probs, how="median")
