"""ROC curve and confusion matrix of the failure-case browser (pyqtgraph), drawn from the state.

Both plots only draw what :mod:`viewer.results_model` computed with :mod:`engine.metrics`:
:class:`RocPlotWidget` the curve, the chance diagonal, the AUC and the operating point at the
state's threshold (clicking near the curve moves the threshold to that point);
:class:`ConfusionMatrixWidget` the 2 x 2 counts at the threshold, each cell shaded by its share
of its true class, with sensitivity and specificity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QWidget

if TYPE_CHECKING:
    from viewer.results_state import ResultsState

__all__ = ["RocPlotWidget", "ConfusionMatrixWidget", "CLASS_NAMES"]

#: Class names on the confusion matrix axes (index = class).
CLASS_NAMES: tuple[str, str] = ("not malignant", "malignant")

_BACKGROUND = (30, 30, 32)
_CURVE = (80, 180, 255)
_POINT = (255, 190, 40)


def _own_menus(widget: pg.PlotWidget) -> None:
    """Disable the plot's context menus and make the menu pyqtgraph always builds a child of the
    widget, so it goes with the window (a parentless QMenu would outlive it)."""
    pi = widget.getPlotItem()
    pi.setMenuEnabled(False)
    if pi.ctrlMenu is not None:
        pi.ctrlMenu.setParent(widget, pi.ctrlMenu.windowFlags())


def _plot_font(scale: float = 1.0, bold: bool = False) -> QFont:
    f = QFont()
    f.setPointSizeF(max(f.pointSizeF(), 9.0) * scale)
    f.setBold(bold)
    return f


class RocPlotWidget(pg.PlotWidget):
    """The ROC curve with its AUC and the operating point at the state's threshold.

    Attributes:
        auc_text: The AUC as shown (``"AUC 0.873"``; ``""`` when undefined).
        point: ``(fpr, tpr)`` of the operating point, or None.
    """

    def __init__(self, state: ResultsState, parent: QWidget | None = None) -> None:
        super().__init__(parent, background=_BACKGROUND, viewBox=pg.ViewBox(enableMenu=False))
        self.state = state
        self.auc_text = ""
        self.point: tuple[float, float] | None = None
        _own_menus(self)
        pi = self.getPlotItem()
        pi.hideButtons()
        pi.showGrid(x=True, y=True, alpha=0.15)
        pi.setLabel("bottom", "False positive rate (1 \u2212 specificity)")
        pi.setLabel("left", "True positive rate (sensitivity)")
        pi.setXRange(0, 1, padding=0.02)
        pi.setYRange(0, 1, padding=0.02)
        pi.setMouseEnabled(x=False, y=False)
        pi.addItem(pg.PlotDataItem([0, 1], [0, 1], pen=pg.mkPen((130, 130, 130), width=1, style=Qt.PenStyle.DashLine)))
        self.curve = pg.PlotDataItem([], [], pen=pg.mkPen(_CURVE, width=2.5))
        pi.addItem(self.curve)
        self.marker = pg.ScatterPlotItem([], [], size=12, brush=pg.mkBrush(_POINT), pen=pg.mkPen((20, 20, 20), width=1))
        pi.addItem(self.marker)
        self.label = pg.TextItem("", color=(235, 235, 235), anchor=(1, 1))
        self.label.setFont(_plot_font(1.25, bold=True))
        pi.addItem(self.label)
        self.label.setPos(0.98, 0.03)
        self.point_label = pg.TextItem("", color=_POINT, anchor=(0, 1))
        pi.addItem(self.point_label)
        self.scene().sigMouseClicked.connect(self._on_mouse_clicked)
        state.cases_changed.connect(self._on_cases_changed)
        state.threshold_changed.connect(self._on_threshold_changed)
        self._on_cases_changed()

    def _on_cases_changed(self) -> None:
        roc = self.state.roc
        pi = self.getPlotItem()
        if roc is None:
            self.curve.setData([], [])
            self.auc_text = ""
            if self.state.cases is None:
                pi.setTitle("ROC curve")
            else:
                pi.setTitle("ROC curve: needs malignant and non-malignant breasts with ground truth")
        else:
            self.curve.setData(roc.fpr, roc.tpr)
            self.auc_text = f"AUC {roc.auc:.3f}"
            pi.setTitle(f"ROC curve: {roc.n_positive} malignant, {roc.n_negative} not malignant")
        self.label.setText(self.auc_text)
        self._on_threshold_changed(self.state.threshold)

    def _on_threshold_changed(self, _t: float) -> None:
        cm = self.state.confusion()
        if self.state.roc is None or cm is None or cm.sensitivity is None or cm.specificity is None:
            self.point = None
            self.marker.setData([], [])
            self.point_label.setText("")
            return
        self.point = (1.0 - cm.specificity, cm.sensitivity)
        self.marker.setData([self.point[0]], [self.point[1]])
        self.point_label.setText(f"  p \u2265 {cm.threshold:.3f}  ")
        # keep the label inside the plot: left of the point near the right edge, below it near the top
        self.point_label.setAnchor((1 if self.point[0] > 0.7 else 0, 0 if self.point[1] > 0.85 else 1))
        self.point_label.setPos(self.point[0], self.point[1])

    def _on_mouse_clicked(self, ev) -> None:  # noqa: ANN001 - pyqtgraph's MouseClickEvent
        roc = self.state.roc
        if roc is None or ev.button() != Qt.MouseButton.LeftButton:
            return
        vb = self.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(ev.scenePos()):
            return
        p: QPointF = vb.mapSceneToView(ev.scenePos())
        self.state.set_threshold(roc.nearest_threshold(p.x(), p.y()))
        ev.accept()


class ConfusionMatrixWidget(pg.PlotWidget):
    """The 2 x 2 confusion matrix at the state's threshold.

    Rows are the truth (top: not malignant), columns the prediction (left: not malignant).

    Attributes:
        counts: ``{"TN", "FP", "FN", "TP"}`` as drawn (empty before anything is loaded).
        cell_texts: The four cells' texts, row by row.
    """

    def __init__(self, state: ResultsState, parent: QWidget | None = None) -> None:
        super().__init__(parent, background=_BACKGROUND, viewBox=pg.ViewBox(enableMenu=False))
        self.state = state
        self.counts: dict[str, int] = {}
        self.cell_texts: list[str] = []
        _own_menus(self)
        pi = self.getPlotItem()
        pi.hideButtons()
        pi.setMouseEnabled(x=False, y=False)
        vb = pi.getViewBox()
        vb.invertY(True)
        vb.setAspectLocked(True)
        pi.setXRange(0, 2, padding=0.02)
        pi.setYRange(0, 2, padding=0.02)
        pi.setLabel("bottom", "Predicted")
        pi.setLabel("left", "Truth")
        ticks = [[(0.5, CLASS_NAMES[0]), (1.5, CLASS_NAMES[1])]]
        pi.getAxis("bottom").setTicks(ticks)
        pi.getAxis("left").setTicks(ticks)
        pi.getAxis("left").setWidth(110)
        self.image = pg.ImageItem(axisOrder="row-major")
        pi.addItem(self.image)
        self.texts: list[pg.TextItem] = []
        for r in range(2):
            for c in range(2):
                t = pg.TextItem("", color=(245, 245, 245), anchor=(0.5, 0.5))
                t.setFont(_plot_font(1.3, bold=True))
                t.setPos(c + 0.5, r + 0.5)
                pi.addItem(t)
                self.texts.append(t)
        state.cases_changed.connect(self._redraw)
        state.threshold_changed.connect(self._redraw)
        self._redraw()

    def _redraw(self, *_args) -> None:
        cm = self.state.confusion()
        pi = self.getPlotItem()
        if cm is None:
            self.counts = {}
            self.cell_texts = ["", "", "", ""]
            self.image.clear()
            for t in self.texts:
                t.setText("")
            pi.setTitle("Confusion matrix")
            return
        # shade: the share of its true class a cell holds (correct cells blue, errors red)
        m = cm.matrix.astype(np.float64)
        share = m / np.maximum(m.sum(axis=1, keepdims=True), 1.0)
        rgb = np.zeros((2, 2, 3), np.float64)
        correct = np.array([[1, 0], [0, 1]], bool)
        base = np.array([38, 38, 42], np.float64)
        good = np.array([40, 110, 200], np.float64)
        bad = np.array([200, 60, 50], np.float64)
        for r in range(2):
            for c in range(2):
                target = good if correct[r, c] else bad
                rgb[r, c] = base + (target - base) * share[r, c]
        self.image.setImage(rgb.astype(np.uint8), autoLevels=False, levels=(0, 255))
        self.image.setRect(0, 0, 2, 2)
        self.counts = {"TN": cm.tn, "FP": cm.fp, "FN": cm.fn, "TP": cm.tp}
        names = (("TN", "FP"), ("FN", "TP"))
        self.cell_texts = []
        for r in range(2):
            for c in range(2):
                n = int(cm.matrix[r, c])
                text = f"{n}\n{names[r][c]}"
                self.cell_texts.append(text)
                self.texts[2 * r + c].setText(text)
        sens = "\u2013" if cm.sensitivity is None else f"{cm.sensitivity:.2f}"
        spec = "\u2013" if cm.specificity is None else f"{cm.specificity:.2f}"
        pi.setTitle(f"At p \u2265 {cm.threshold:.3f}: sensitivity {sens}, specificity {spec}")
