"""Research > Open results: the pure join/sort/filter/metrics model and the browser window.

The results table below is written by hand so every number is checked by hand. Probabilities are
multiples of 1/16 (exact in binary, so errors and differences tie exactly where they should).

    study side truth        p        error   at 0.5   at 0.6
    S1    R    malignant    0.875    0.125   TP       TP
    S1    L    0            0.25     0.25    TN       TN
    S2    R    malignant    0.375    0.625   FN       FN
    S2    L    benign       0.3125   0.3125  TN       TN
    S3    R    0            0.6875   0.6875  FP       FP
    S3    L    0            0.125    0.125   TN       TN
    S4    R    malignant    0.5625   0.4375  TP       FN
    S4    L    0            0.625    0.625   FP       FP
    S5    R/L  (error rows: the study could not be loaded)
    S6    R    (status missing: breast not imaged)
    S6    L    malignant    0.0625   0.9375  FN       FN
    S7    R    malignant, no results row (unmatched)

AUC by hand: positives 0.875, 0.375, 0.5625, 0.0625 against negatives 0.25, 0.3125, 0.6875,
0.125, 0.625: 5 + 3 + 3 + 0 = 11 pairs ranked right of 20, AUC 0.55.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engine import metrics
from study_factory import write_study
from viewer.results_model import (
    ResultsFileError,
    confusion_data,
    filter_cases,
    guess_studies_root,
    load_cases,
    parse_label,
    read_results_csv,
    roc_data,
    select_cases,
    sort_cases,
)
from viewer.results_state import ResultsState

HEADER = ["study_id", "side", "status", "error", "p_malignant", "birads_pred", "p_birads_1", "attn_RCC",
          "model", "model_version", "device", "seconds"]  # fmt: skip
ROWS = [
    ("S1", "R", "ok", "", "0.875", "5"),
    ("S1", "L", "ok", "", "0.25", "1"),
    ("S2", "R", "ok", "", "0.375", "2"),
    ("S2", "L", "ok", "", "0.3125", "2"),
    ("S3", "R", "ok", "", "0.6875", "4"),
    ("S3", "L", "ok", "", "0.125", "1"),
    ("S4", "R", "ok", "", "0.5625", "4"),
    ("S4", "L", "ok", "", "0.625", "4"),
    ("S5", "R", "error", "x.dcm: not a DICOM file", "", ""),
    ("S5", "L", "error", "x.dcm: not a DICOM file", "", ""),
    ("S6", "R", "missing", "", "", ""),
    ("S6", "L", "ok", "", "0.0625", "1"),
]
TRUTH = [("S1", "R", "1"), ("S1", "L", "0"), ("S2", "R", "1"), ("S2", "L", "benign"), ("S3", "R", "0"),
         ("S3", "L", "0"), ("S4", "R", "1"), ("S4", "L", "0"), ("S5", "R", "0"), ("S5", "L", "1"),
         ("S6", "L", "malignant"), ("S7", "R", "1")]  # fmt: skip

ERROR_ORDER = ["S6L", "S3R", "S2R", "S4L", "S4R", "S2L", "S1L", "S1R", "S3L", "S5R", "S5L", "S6R"]
PROB_ORDER = ["S1R", "S3R", "S4L", "S4R", "S2R", "S2L", "S1L", "S3L", "S6L", "S5R", "S5L", "S6R"]
DISAGREE_ORDER = ["S1R", "S1L", "S3R", "S3L", "S2R", "S2L", "S4R", "S4L", "S5R", "S5L", "S6R", "S6L"]


def write_results(path: Path, model: str = "tiny-b", rows=ROWS) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(HEADER)
        for sid, side, status, err, p, birads in rows:
            w.writerow([sid, side, status, err, p, birads, "", "", model, "0.1.0", "cpu", "0.1"])
    return path


def write_truth(path: Path, column: str = "label") -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["study_id", "side", column, "note"])
        for sid, side, label in TRUTH:
            w.writerow([sid, side, label, "x"])
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return write_results(tmp_path / "results.csv"), write_truth(tmp_path / "truth.csv")


def ids(cases) -> list[str]:
    return [c.study_id + c.side for c in cases]


# --- the pure model ---------------------------------------------------------------------------------


def test_join_counts_and_labels(files) -> None:
    cs = load_cases(*files)
    n = cs.counts()
    assert n == {"breasts": 12, "scored": 9, "evaluable": 9, "malignant": 4, "studies": 6, "error_studies": 1,
                 "missing": 1, "unlabelled": 0, "unmatched_truth": 1}  # fmt: skip
    assert cs.unmatched_truth == [("S7", "R")] and cs.models == ["tiny-b"]
    by = {c.study_id + c.side: c for c in cs.cases}
    assert by["S2L"].label == 0 and by["S2L"].truth == "benign" and by["S6L"].label == 1
    assert by["S5L"].label == 1 and not by["S5L"].evaluable and by["S5L"].error == "x.dcm: not a DICOM file"
    assert by["S1R"].other_p == 0.25 and by["S6L"].other_p is None and by["S6L"].disagreement is None
    assert by["S4R"].abs_error == 0.4375 and by["S1R"].disagreement == 0.625
    assert [parse_label(t) for t in ("1", "TRUE", "Malignant", "0", "normal", "benign", "", "-1", "maybe")] == [
        1, 1, 1, 0, 0, 0, None, None, None]  # fmt: skip


def test_sort_orders(files) -> None:
    cases = load_cases(*files).cases
    assert ids(sort_cases(cases, "error")) == ERROR_ORDER
    assert ids(sort_cases(cases, "probability")) == PROB_ORDER
    assert ids(sort_cases(cases, "disagreement")) == DISAGREE_ORDER
    assert ids(sort_cases(cases, "study"))[:4] == ["S1R", "S1L", "S2R", "S2L"]
    # ascending keeps rows without a value last
    assert ids(sort_cases(cases, "probability", descending=False)) == [*PROB_ORDER[:9][::-1], "S5R", "S5L", "S6R"]
    with pytest.raises(ValueError, match="unknown sort key"):
        sort_cases(cases, "age")


@pytest.mark.parametrize(
    ("threshold", "fn", "fp"),
    [(0.5, ["S6L", "S2R"], ["S3R", "S4L"]), (0.6, ["S6L", "S2R", "S4R"], ["S3R", "S4L"]),
     (0.625, ["S6L", "S2R", "S4R"], ["S3R", "S4L"]), (0.7, ["S6L", "S2R", "S4R"], [])],
)  # fmt: skip
def test_false_negative_and_positive_filters(files, threshold, fn, fp) -> None:
    cases = load_cases(*files).cases
    assert ids(select_cases(cases, kind="false_negatives", threshold=threshold)) == fn
    assert ids(select_cases(cases, kind="false_positives", threshold=threshold)) == fp
    assert len(filter_cases(cases, "misclassified", threshold)) == len(fn) + len(fp)
    assert ids(select_cases(cases, kind="not_scored", key="study")) == ["S5R", "S5L", "S6R"]


def test_roc_and_confusion_match_engine_metrics(files) -> None:
    cs = load_cases(*files)
    roc = roc_data(cs)
    assert roc.auc == pytest.approx(0.55, abs=1e-12)
    y, s = cs.arrays()
    assert roc.auc == metrics.binary_auc(y, s)
    fpr, tpr, _ = metrics.roc_curve(y, s)
    np.testing.assert_array_equal(roc.fpr, fpr)
    np.testing.assert_array_equal(roc.tpr, tpr)
    assert (roc.n_positive, roc.n_negative) == (4, 5)
    cm = confusion_data(cs, 0.5)
    assert cm.matrix.tolist() == [[3, 2], [2, 2]]
    assert (cm.sensitivity, cm.specificity) == (0.5, 0.6)
    cm = confusion_data(cs, 0.6)
    assert (cm.tn, cm.fp, cm.fn, cm.tp) == (3, 2, 3, 1)
    # a click at the curve's corner picks that point's threshold
    assert roc.nearest_threshold(0.0, 0.25) == 0.875


def test_phantom_labels_and_partial_files(tmp_path: Path) -> None:
    """The phantom's labels.csv (pathology column, imaged breasts only) and a file a batch is
    still writing (torn last line)."""
    truth = tmp_path / "labels.csv"
    truth.write_text(
        "study_id,side,pathology,birads\nP1,R,malignant,5\nP1,L,normal,1\nP2,L,benign,3\n", encoding="utf-8"
    )
    res = write_results(tmp_path / "r.csv", rows=[
        ("P1", "R", "ok", "", "0.9", "5"), ("P1", "L", "ok", "", "0.2", "1"),
        ("P2", "R", "missing", "", "", ""), ("P2", "L", "ok", "", "0.7", "3")])  # fmt: skip
    with open(res, "a") as fh:
        fh.write("P3,R,ok,,0.5")  # torn: no newline yet
    cs = load_cases(res, truth)
    assert ids(cs.cases) == ["P1R", "P1L", "P2R", "P2L"]
    assert [c.label for c in cs.cases] == [1, 0, None, 0]
    assert confusion_data(cs, 0.5).matrix.tolist() == [[1, 1], [0, 1]]
    assert roc_data(cs).auc == 1.0
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ResultsFileError, match=r"^bad.csv: not a mammo-score results file"):
        read_results_csv(tmp_path / "bad.csv")
    with pytest.raises(ResultsFileError, match=r"^bad.csv: ground truth needs study_id and side columns$"):
        load_cases(res, tmp_path / "bad.csv")
    (tmp_path / "nolabel.csv").write_text("study_id,side,age\nP1,R,50\n", encoding="utf-8")
    with pytest.raises(ResultsFileError, match=r"^nolabel.csv: no label column \(expected one of label, "):
        load_cases(res, tmp_path / "nolabel.csv")


def test_studies_root_is_guessed(tmp_path: Path, files) -> None:
    root = tmp_path / "batch_input"
    for sid in ("S1", "S2", "S3"):
        (root / sid).mkdir(parents=True)
    assert guess_studies_root(["S1", "S2", "S3", "S4"], [tmp_path / "nope", tmp_path, root]) == root
    assert guess_studies_root(["S1"], [tmp_path / "nope"]) is None


def test_state_signals_without_widgets(files, tmp_path: Path, qtbot) -> None:
    st = ResultsState()
    with qtbot.waitSignal(st.cases_changed):
        st.load(*files)
    assert ids(st.visible_cases()) == ERROR_ORDER
    assert st.message == (
        "6 studies, 9 breasts scored; 9 with ground truth (4 malignant); 1 study failed; "
        "1 labelled breast not in the results"
    )
    st.set_filter("false_negatives")
    with qtbot.waitSignals([st.threshold_changed, st.selection_changed]):
        st.set_threshold(0.6)
    assert ids(st.visible_cases()) == ["S6L", "S2R", "S4R"]
    st.set_threshold(7.0)
    assert st.threshold == 1.0
    assert not st.request_open(st.cases.cases[0]) and "not found" in st.message  # no studies folder


def test_a_guessed_labels_file_that_is_not_ground_truth_is_left_out(tmp_path: Path) -> None:
    res = write_results(tmp_path / "results.csv")
    (tmp_path / "labels.csv").write_text("name,value\na,1\n", encoding="utf-8")
    st = ResultsState()
    st.load(res)
    assert st.cases.truth_path is None and st.roc is None and len(st.cases.cases) == 12
    assert st.message.endswith(
        "no ground truth loaded; 1 study failed (not used: labels.csv: ground truth needs study_id and side columns)"
    )
    with pytest.raises(ResultsFileError, match="^labels.csv: ground truth needs"):
        st.load(res, tmp_path / "labels.csv")  # named explicitly: refused


# --- the browser window --------------------------------------------------------------------------------


def test_browser_table_sorts_filters_and_plots(make_window, no_models, files, qtbot) -> None:
    w = make_window()
    assert w.open_results(*files)
    b = w.results_browser
    assert b.isVisible() and b.windowTitle() == "Results browser - results.csv"
    model = b.table.cases_model
    rows = lambda: [model.text(r, 0) + model.text(r, 1) for r in range(model.rowCount())]  # noqa: E731
    assert rows() == ERROR_ORDER
    assert [model.text(0, c) for c in range(10)] == [
        "S6", "L", "malignant", "0.062", "\u2013", "\u2013", "0.938", "false negative", "1", "ok"]  # fmt: skip
    assert model.text(ERROR_ORDER.index("S5R"), 9) == "x.dcm: not a DICOM file"
    assert model.text(ERROR_ORDER.index("S2L"), 2) == "benign"
    # header clicks sort through the state; a second click reverses
    header = b.table.horizontalHeader()
    header.sectionClicked.emit(3)
    assert b.state.sort_key == "probability" and rows() == PROB_ORDER
    assert b.sort_combo.currentData() == "probability"
    header.sectionClicked.emit(3)
    assert not b.state.descending and rows()[0] == "S6L"
    b.sort_combo.setCurrentIndex(b.sort_combo.findData("disagreement"))
    b.sort_combo.activated.emit(b.sort_combo.currentIndex())
    assert rows() == DISAGREE_ORDER
    # plots: the AUC engine.metrics computes, the confusion matrix at the threshold
    y, s = b.state.cases.arrays()
    assert b.roc.auc_text == f"AUC {metrics.binary_auc(y, s):.3f}" == "AUC 0.550"
    assert b.roc.label.toPlainText() == "AUC 0.550"
    assert b.confusion.counts == {"TN": 3, "FP": 2, "FN": 2, "TP": 2}
    assert b.roc.point == pytest.approx((0.4, 0.5))
    b.threshold_spin.setValue(0.6)
    assert b.state.threshold == pytest.approx(0.6) and b.threshold_slider.value() == 600
    assert b.confusion.counts == {"TN": 3, "FP": 2, "FN": 3, "TP": 1}
    assert b.confusion.cell_texts == ["3\nTN", "2\nFP", "3\nFN", "1\nTP"]
    assert "sensitivity 0.25, specificity 0.60" in b.confusion.getPlotItem().titleLabel.text
    i = b.filter_combo.findData("false_negatives")
    b.filter_combo.setCurrentIndex(i)
    b.filter_combo.activated.emit(i)
    assert sorted(rows()) == ["S2R", "S4R", "S6L"] and b.count_label.text() == "Showing 3 of 12 breasts"
    assert {model.text(r, 7) for r in range(3)} == {"false negative"}
    b.threshold_slider.setValue(500)
    assert sorted(rows()) == ["S2R", "S6L"] and b.threshold_spin.value() == pytest.approx(0.5)


def test_double_click_opens_the_study_in_the_reader_with_its_model(make_window, models_dir, tmp_path, qtbot) -> None:
    root = tmp_path / "batch_input"
    write_study(root / "S6", views=("R-CC", "L-CC", "R-MLO", "L-MLO"))
    for sid in ("S1", "S2", "S3", "S4", "S5"):
        (root / sid).mkdir(parents=True)
    res = write_results(root / "results.csv", model="tiny-b")
    truth = write_truth(root / "labels.csv")
    w = make_window()
    assert w.state.model_name == "tiny-a"
    assert w.open_results(res)  # ground truth (labels.csv) and the studies folder are found
    b = w.results_browser
    assert b.state.cases.truth_path == truth and b.state.studies_root == root
    table = b.table
    rect = table.visualRect(table.model().index(0, 0))  # S6 L: the worst error
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    with qtbot.waitSignal(b.state.study_open_requested) as req, qtbot.waitSignal(w.controller.ai_finished, timeout=120000):
        qtbot.mouseDClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert req.args == [str(root / "S6"), "tiny-b"]
    assert w.state.study_path == str((root / "S6").resolve())
    assert w.state.model_name == "tiny-b" and w.state.result.model == "tiny-b"
    assert w.state.result.heatmaps  # opened with its overlays
    # a case whose folder is missing says so in the browser instead
    b.state.set_studies_root(tmp_path / "elsewhere")
    assert not b.state.request_open(b.state.cases.cases[0])
    assert "S1 not found" in b.message.text()


def test_bad_results_file_is_one_line_in_the_browser(make_window, no_models, tmp_path, qtbot) -> None:
    bad = tmp_path / "notes.csv"
    bad.write_text("hello,world\n", encoding="utf-8")
    w = make_window()
    assert not w.open_results(bad)
    assert w.results_browser.message.text() == (
        "Could not open: notes.csv: not a mammo-score results file (no study_id, side, p_malignant column)"
    )
