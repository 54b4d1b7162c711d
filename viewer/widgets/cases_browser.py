"""CasesBrowserWidget: Research > Open results, the window where a researcher hunts failure cases.

Top: the results file, its ground truth and the studies folder (each can be changed). Then the
sort order, the filter (false negatives / false positives at the threshold, ...) and the
threshold. Left: the table of breasts (:mod:`viewer.widgets.cases_table`); right: the ROC curve
with its AUC and the confusion matrix at the threshold (:mod:`viewer.widgets.cases_plots`).
Double-clicking a row opens that study in the reader with the model that scored it. Every control
writes through the :class:`~viewer.results_state.ResultsState`; nothing here keeps a copy.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from viewer.results_model import ResultsFileError
from viewer.results_state import ResultsState
from viewer.widgets.cases_plots import ConfusionMatrixWidget, RocPlotWidget
from viewer.widgets.cases_table import CasesTableWidget

__all__ = ["SORT_TITLES", "FILTER_TITLES", "CasesBrowserWidget"]

logger = logging.getLogger(__name__)

#: Sort menu entries: key -> title.
SORT_TITLES: dict[str, str] = {
    "error": "Error |truth \u2212 p|",
    "probability": "Probability of malignancy",
    "disagreement": "Disagreement between breasts",
    "study": "Study",
}
#: Filter menu entries: kind -> title.
FILTER_TITLES: dict[str, str] = {
    "all": "All breasts",
    "false_negatives": "False negatives (malignant, p < threshold)",
    "false_positives": "False positives (not malignant, p \u2265 threshold)",
    "misclassified": "False negatives and false positives",
    "not_scored": "Not scored (errors, breasts not imaged)",
}


def _elide(path: Path | None, empty: str) -> str:
    if path is None:
        return empty
    parts = path.parts
    return str(path) if len(parts) <= 4 else str(Path("\u2026", *parts[-3:]))


class CasesBrowserWidget(QWidget):
    """The results browser window.

    Args:
        state: The browser's state (default: a new one).
        settings: Where the last folders are remembered (the main window's settings).
        parent: The main window (the browser is its own top-level window).
    """

    def __init__(
        self, state: ResultsState | None = None, settings: QSettings | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.state = state if state is not None else ResultsState(self)
        self.settings = settings
        self.setWindowTitle("Results browser")
        self.setObjectName("CasesBrowser")
        self.resize(1400, 820)
        s = self.state

        outer = QVBoxLayout(self)
        outer.setContentsMargins(8, 8, 8, 6)
        files = QGridLayout()
        files.setHorizontalSpacing(8)
        files.setVerticalSpacing(3)
        self.results_label = QLabel()
        self.truth_label = QLabel()
        self.root_label = QLabel()
        self.open_button = QPushButton("Open results\u2026")
        self.truth_button = QPushButton("Ground truth\u2026")
        self.root_button = QPushButton("Studies folder\u2026")
        self.reload_button = QPushButton("Reload")
        self.reload_button.setToolTip("Read the results file again (a batch may have added rows)")
        for row, (title, label, button) in enumerate(
            (
                ("Results", self.results_label, self.open_button),
                ("Ground truth", self.truth_label, self.truth_button),
                ("Studies", self.root_label, self.root_button),
            )
        ):
            files.addWidget(QLabel(f"<b>{title}</b>"), row, 0)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            files.addWidget(label, row, 1)
            files.addWidget(button, row, 2)
        files.addWidget(self.reload_button, 0, 3)
        files.setColumnStretch(1, 1)
        outer.addLayout(files)

        controls = QHBoxLayout()
        controls.addWidget(QLabel("Sort by"))
        self.sort_combo = QComboBox()
        for key, title in SORT_TITLES.items():
            self.sort_combo.addItem(title, key)
        controls.addWidget(self.sort_combo)
        self.direction = QToolButton()
        self.direction.setToolTip("Reverse the order")
        controls.addWidget(self.direction)
        controls.addSpacing(16)
        controls.addWidget(QLabel("Show"))
        self.filter_combo = QComboBox()
        for kind, title in FILTER_TITLES.items():
            self.filter_combo.addItem(title, kind)
        controls.addWidget(self.filter_combo)
        controls.addSpacing(16)
        controls.addWidget(QLabel("Threshold"))
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setDecimals(3)
        self.threshold_spin.setSingleStep(0.01)
        self.threshold_spin.setToolTip("A breast is called malignant when p(malignant) \u2265 threshold")
        controls.addWidget(self.threshold_spin)
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, 1000)
        self.threshold_slider.setMinimumWidth(160)
        controls.addWidget(self.threshold_slider, 1)
        outer.addLayout(controls)

        split = QSplitter(Qt.Orientation.Horizontal)
        self.table = CasesTableWidget(s)
        split.addWidget(self.table)
        plots = QSplitter(Qt.Orientation.Vertical)
        self.roc = RocPlotWidget(s)
        self.confusion = ConfusionMatrixWidget(s)
        plots.addWidget(self.roc)
        plots.addWidget(self.confusion)
        plots.setSizes([470, 330])
        split.addWidget(plots)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([860, 520])
        outer.addWidget(split, 1)

        status = QHBoxLayout()
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.count_label = QLabel()
        status.addWidget(self.message, 1)
        status.addWidget(self.count_label)
        outer.addLayout(status)

        self.open_button.clicked.connect(self.choose_results)
        self.truth_button.clicked.connect(self.choose_truth)
        self.root_button.clicked.connect(self.choose_root)
        self.reload_button.clicked.connect(self._reload)
        self.sort_combo.activated.connect(lambda i: s.set_sort(self.sort_combo.itemData(i)))
        self.direction.clicked.connect(lambda: s.set_sort(s.sort_key, not s.descending))
        self.filter_combo.activated.connect(lambda i: s.set_filter(self.filter_combo.itemData(i)))
        self.threshold_spin.valueChanged.connect(s.set_threshold)
        self.threshold_slider.valueChanged.connect(lambda v: s.set_threshold(v / 1000.0))
        s.cases_changed.connect(self._on_cases_changed)
        s.studies_root_changed.connect(self._on_cases_changed)
        s.selection_changed.connect(self._on_selection_changed)
        s.threshold_changed.connect(self._on_threshold_changed)
        s.message_changed.connect(lambda: self.message.setText(s.message))
        self._on_cases_changed()
        self._on_selection_changed()
        self._on_threshold_changed(s.threshold)
        self.message.setText(s.message or "Open a results file (mammo-score CSV) and its ground truth.")

    # ------------------------------------------------------------------ loading
    def open_results(
        self,
        results: str | Path,
        truth: str | Path | None = None,
        studies_root: str | Path | None = None,
        *,
        root_hints: list[str | Path] | None = None,
    ) -> bool:
        """Load a results file (see :meth:`ResultsState.load`); a bad file becomes the status line.

        Returns:
            True when it loaded.
        """
        try:
            self.state.load(results, truth, studies_root, root_hints=root_hints)
        except ResultsFileError as exc:
            self.state.set_message(f"Could not open: {exc}")
            return False
        self._remember("research/last_folder", Path(results).parent)
        return True

    def _remember(self, key: str, folder: Path) -> None:
        if self.settings is not None:
            self.settings.setValue(key, str(folder))

    def _start_folder(self) -> str:
        cases = self.state.cases
        if cases is not None and cases.results_path is not None:
            return str(cases.results_path.parent)
        if self.settings is not None:
            return str(self.settings.value("research/last_folder", str(Path.home())))
        return str(Path.home())

    def choose_results(self) -> None:
        """Pick a results CSV (ground truth and studies folder are guessed)."""
        path, _ = QFileDialog.getOpenFileName(self, "Open results", self._start_folder(), "CSV (*.csv);;All files (*)")
        if path:
            self.open_results(path)

    def choose_truth(self) -> None:
        """Pick the ground-truth CSV for the loaded results."""
        if self.state.cases is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Ground truth", self._start_folder(), "CSV (*.csv);;All files (*)")
        if path:
            try:
                self.state.set_truth(path)
            except ResultsFileError as exc:
                self.state.set_message(f"Could not use the ground truth: {exc}")

    def choose_root(self) -> None:
        """Pick the folder the study ids are relative to (the batch's input folder)."""
        start = str(self.state.studies_root or self._start_folder())
        path = QFileDialog.getExistingDirectory(self, "Studies folder (the batch's input folder)", start)
        if path:
            self.state.set_studies_root(path)

    def _reload(self) -> None:
        try:
            self.state.reload()
        except ResultsFileError as exc:
            self.state.set_message(f"Could not reload: {exc}")

    # ------------------------------------------------------------------ state -> widgets
    def _on_cases_changed(self) -> None:
        s = self.state
        cases = s.cases
        self.results_label.setText(_elide(cases.results_path if cases else None, "none"))
        no_truth = "none: choose a CSV with study_id, side, label"
        self.truth_label.setText(_elide(cases.truth_path if cases else None, no_truth))
        self.root_label.setText(_elide(s.studies_root, "not found: choose the folder that was scored"))
        self.truth_button.setEnabled(cases is not None)
        self.root_button.setEnabled(cases is not None)
        self.reload_button.setEnabled(cases is not None)
        name = cases.results_path.name if cases is not None and cases.results_path is not None else ""
        self.setWindowTitle(f"Results browser - {name}" if name else "Results browser")
        self._on_selection_changed()

    def _on_selection_changed(self) -> None:
        s = self.state
        i = self.sort_combo.findData(s.sort_key)
        if i != self.sort_combo.currentIndex():
            self.sort_combo.setCurrentIndex(i)
        self.direction.setText("\u25bc largest first" if s.descending else "\u25b2 smallest first")
        if s.sort_key == "study":
            self.direction.setText("\u25bc Z\u2192A" if s.descending else "\u25b2 A\u2192Z")
        j = self.filter_combo.findData(s.filter)
        if j != self.filter_combo.currentIndex():
            self.filter_combo.setCurrentIndex(j)
        total = len(s.cases.cases) if s.cases is not None else 0
        self.count_label.setText(f"Showing {self.table.cases_model.rowCount()} of {total} breasts")

    def _on_threshold_changed(self, t: float) -> None:
        if abs(self.threshold_spin.value() - t) > 5e-4:
            self.threshold_spin.blockSignals(True)
            self.threshold_spin.setValue(t)
            self.threshold_spin.blockSignals(False)
        v = int(round(t * 1000))
        if self.threshold_slider.value() != v:
            self.threshold_slider.blockSignals(True)
            self.threshold_slider.setValue(v)
            self.threshold_slider.blockSignals(False)
