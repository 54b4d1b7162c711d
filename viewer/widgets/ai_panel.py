"""AiPanel: what the AI thinks and why, and the overlay controls.

Per breast (right on the left, as in the hanging): the malignancy probability and the predicted
BI-RADS category with every category's probability as a bar. Per view: the gated attention weight
(seed 000, section 2.2: alpha = softmax(MLP(concat v_i)); 0 for a missing view) as a percentage
and a bar. Then the Grad-CAM overlay (toggle, opacity, colour map, target), the contour toggles,
and the model in use with a picker listing the bundled models. The panel only reads the state and
writes the reader's choices through its setters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from engine import STANDARD_VIEWS
from viewer.overlays import attention_percentages, birads_bars, format_probability, target_label
from viewer.state import COLORMAPS

if TYPE_CHECKING:
    from viewer.state import ViewerState

__all__ = ["AiPanel", "SideCard"]

_BAR_STYLE = (
    "QProgressBar { border: 1px solid #555; border-radius: 3px; background: #262626; color: #eee;"
    " text-align: left; padding-left: 4px; min-height: 16px; max-height: 16px; }"
    "QProgressBar::chunk { background: %s; border-radius: 2px; }"
)


def _bar(color: str = "#3f7fbf") -> QProgressBar:
    b = QProgressBar()
    b.setRange(0, 1000)
    b.setStyleSheet(_BAR_STYLE % color)
    return b


class SideCard(QGroupBox):
    """One breast: malignancy probability and BI-RADS probabilities."""

    def __init__(self, side: str, parent: QWidget | None = None) -> None:
        super().__init__("Right breast" if side == "R" else "Left breast", parent)
        self.side = side
        lay = QVBoxLayout(self)
        lay.setSpacing(3)
        self.caption = QLabel("Malignancy")
        self.malignancy = QLabel("")
        f = QFont(self.malignancy.font())
        f.setPointSizeF(f.pointSizeF() * 1.6)
        f.setBold(True)
        self.malignancy.setFont(f)
        lay.addWidget(self.caption)
        self.malignancy_bar = _bar("#d04040")
        self.birads = QLabel("")
        self.birads.setWordWrap(True)
        lay.addWidget(self.malignancy)
        lay.addWidget(self.malignancy_bar)
        lay.addWidget(self.birads)
        self.bars_box = QVBoxLayout()
        self.bars_box.setSpacing(2)
        lay.addLayout(self.bars_box)
        lay.addStretch(1)
        self.bars: list[QProgressBar] = []

    def _bars_for(self, n: int) -> list[QProgressBar]:
        """``n`` class bars, reusing the ones already built (styling a new widget is slow)."""
        while len(self.bars) < n:
            b = _bar("#3f7fbf")
            b._predicted = False
            self.bars_box.addWidget(b)
            self.bars.append(b)
        for i, b in enumerate(self.bars):
            b.setVisible(i < n)
        return self.bars[:n]

    def show_side(self, side_result) -> None:
        """Fill from an ``engine.SideResult`` (or clear with None)."""
        if side_result is None or not side_result.available:
            self._bars_for(0)
            self.malignancy.setText("\u2013" if side_result is None else "not imaged")
            self.malignancy_bar.hide()
            self.birads.setText("" if side_result is None else "Both views of this breast are missing.")
            return
        p = side_result.p_malignant
        self.malignancy.setText(format_probability(p))
        self.malignancy_bar.setVisible(p is not None)
        self.malignancy_bar.setValue(int(round(1000 * (p or 0.0))))
        self.malignancy_bar.setFormat(f"p = {p:.3f}" if p is not None else "")
        if side_result.p_birads:
            self.birads.setText(f"Predicted BI-RADS {side_result.birads_pred}")
            items = birads_bars(side_result.p_birads)
            for b, (name, prob) in zip(self._bars_for(len(items)), items):
                pred = name == f"BI-RADS {side_result.birads_pred}"
                if pred != b._predicted:
                    b.setStyleSheet(_BAR_STYLE % ("#e0a020" if pred else "#3f7fbf"))
                    b._predicted = pred
                b.setValue(int(round(1000 * prob)))
                b.setFormat(f"{name}   {format_probability(prob)}")
                b.setObjectName(name)
        else:
            self._bars_for(0)
            self.birads.setText("This model has no BI-RADS head.")

    @property
    def shown_bars(self) -> list[QProgressBar]:
        """The class bars currently shown."""
        return [b for b in self.bars if not b.isHidden()]


class AiPanel(QWidget):
    """The AI dock's content.

    Args:
        state: The viewer state.
        parent: Qt parent.
    """

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.setMinimumWidth(300)
        lay = QVBoxLayout(self)

        model_box = QGroupBox("Model")
        mf = QFormLayout(model_box)
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("Bundled models; choosing another one re-scores the study")
        self.model_combo.activated.connect(self._on_model_picked)
        mf.addRow("Model", self.model_combo)
        self.model_info = QLabel("")
        self.model_info.setWordWrap(True)
        mf.addRow(self.model_info)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.busy = QProgressBar()
        self.busy.setMaximumHeight(10)
        self.busy.setTextVisible(False)
        mf.addRow(self.status)
        mf.addRow(self.busy)
        lay.addWidget(model_box)

        sides = QHBoxLayout()
        self.cards = {"R": SideCard("R"), "L": SideCard("L")}
        sides.addWidget(self.cards["R"])
        sides.addWidget(self.cards["L"])
        lay.addLayout(sides)

        att_box = QGroupBox("View attention (weight of each view in the decision)")
        af = QFormLayout(att_box)
        self.attention_bars: dict[str, QProgressBar] = {}
        for v in STANDARD_VIEWS:
            b = _bar("#ffb000")
            b.setRange(0, 100)
            b.setFormat("")
            self.attention_bars[v] = b
            af.addRow(v, b)
        lay.addWidget(att_box)

        cam_box = QGroupBox("Grad-CAM heatmap")
        cf = QFormLayout(cam_box)
        self.heat_check = QCheckBox("Show heatmap  (H)")
        self.heat_check.toggled.connect(state.set_heatmap_visible)
        cf.addRow(self.heat_check)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.valueChanged.connect(lambda v: state.set_heatmap_opacity(v / 100.0))
        cf.addRow("Opacity", self.opacity)
        self.colormap = QComboBox()
        self.colormap.addItems(list(COLORMAPS))
        self.colormap.currentTextChanged.connect(self._on_colormap_picked)
        cf.addRow("Colour map", self.colormap)
        self.target = QComboBox()
        self.target.setToolTip("Which output the heatmaps explain")
        self.target.activated.connect(self._on_target_picked)
        cf.addRow("Explains", self.target)
        lay.addWidget(cam_box)

        ct_box = QGroupBox("Contours")
        cl = QVBoxLayout(ct_box)
        self.breast_check = QCheckBox("Breast outline  (B)")
        self.breast_check.toggled.connect(state.set_show_breast_contours)
        self.lesion_check = QCheckBox("Lesion contours  (C)")
        self.lesion_check.toggled.connect(state.set_show_lesion_contours)
        cl.addWidget(self.breast_check)
        cl.addWidget(self.lesion_check)
        lay.addWidget(ct_box)
        lay.addStretch(1)

        state.ai_status_changed.connect(self._on_ai_status_changed)
        state.result_changed.connect(self._on_result_changed)
        state.overlays_changed.connect(self._on_overlays_changed)
        state.target_changed.connect(self._on_target_changed)
        state.models_changed.connect(self._on_models_changed)
        state.study_changed.connect(self._on_result_changed)
        self._on_models_changed()
        self._on_target_changed()
        self._on_overlays_changed()
        self._on_ai_status_changed()
        self._on_result_changed()

    # ------------------------------------------------------------------ writes
    def _on_model_picked(self, index: int) -> None:
        name = self.model_combo.itemData(index)
        if name:
            self.state.set_model(name)

    def _on_colormap_picked(self, name: str) -> None:
        if name in COLORMAPS:
            self.state.set_colormap(name)

    def _on_target_picked(self, index: int) -> None:
        t = self.target.itemData(index)
        if t:
            self.state.set_target(t)

    # ------------------------------------------------------------------ reads
    def _on_models_changed(self) -> None:
        s = self.state
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for name in s.models:
            self.model_combo.addItem(name, name)
        if s.model_name in s.models:
            self.model_combo.setCurrentIndex(s.models.index(s.model_name))
        self.model_combo.setEnabled(bool(s.models))
        if not s.models:
            self.model_combo.addItem("No AI model installed", None)
        self.model_combo.blockSignals(False)

    def _on_target_changed(self) -> None:
        s = self.state
        self.target.blockSignals(True)
        self.target.clear()
        targets = list(s.targets)
        if s.target not in targets:
            targets.insert(0, s.target)
        for t in targets:
            self.target.addItem(target_label(t), t)
        self.target.setCurrentIndex(targets.index(s.target))
        self.target.blockSignals(False)

    def _on_overlays_changed(self) -> None:
        s = self.state
        for w, value in (
            (self.heat_check, s.heatmap_visible),
            (self.breast_check, s.show_breast_contours),
            (self.lesion_check, s.show_lesion_contours),
        ):
            if w.isChecked() != value:
                w.blockSignals(True)
                w.setChecked(value)
                w.blockSignals(False)
        v = int(round(s.heatmap_opacity * 100))
        if self.opacity.value() != v:
            self.opacity.blockSignals(True)
            self.opacity.setValue(v)
            self.opacity.blockSignals(False)
        if self.colormap.currentText() != s.colormap:
            self.colormap.blockSignals(True)
            self.colormap.setCurrentText(s.colormap)
            self.colormap.blockSignals(False)

    def _on_ai_status_changed(self) -> None:
        s = self.state
        self.status.setText(s.ai_message)
        running = s.ai_status == "running"
        self.busy.setVisible(running)
        if running:
            if s.ai_progress < 0:
                self.busy.setRange(0, 0)  # indeterminate: the busy indicator
            else:
                self.busy.setRange(0, 100)
                self.busy.setValue(int(round(100 * s.ai_progress)))
        colour = {"error": "#ff8080", "no_model": "#e0c060"}.get(s.ai_status, "")
        self.status.setStyleSheet(f"color: {colour};" if colour else "")

    def _on_result_changed(self) -> None:
        r = self.state.result
        for side, card in self.cards.items():
            card.show_side(r.sides.get(side) if r is not None else None)
        if r is not None and r.attention:
            pct = attention_percentages(r.attention, list(STANDARD_VIEWS))
            for v, b in self.attention_bars.items():
                b.setValue(pct[v])
                b.setFormat(f"{pct[v]} %" + ("  (missing)" if v in r.missing else ""))
        else:
            for b in self.attention_bars.values():
                b.setValue(0)
                b.setFormat("")
        if r is not None:
            self.model_info.setText(f"{r.model} v{r.model_version}  \u2022  {r.device.upper()}")
            if r.contours and any(len(p) for p in r.contours.values()):
                name = "Lesion contours" if r.contour_source == "segmentation" else "AI contours"
                self.lesion_check.setText(f"{name}  (C)")
            else:
                self.lesion_check.setText("Lesion contours: none from this model  (C)")
        else:
            self.model_info.setText("")

    def attention_texts(self) -> dict[str, str]:
        """``{view: "32 %"}`` as the bars show them (for tests and screen readers)."""
        return {v: b.format() for v, b in self.attention_bars.items()}
