"""CasesTableWidget: the failure-case browser's table of breasts (a view of the ResultsState).

The rows are ``ResultsState.visible_cases()``: filtered and sorted by the state, never by the
view, so the table, the sort menu and the tests agree on one order. Clicking a sortable header
(study, probability, disagreement, error) sets the state's sort key; clicking it again flips the
direction. Double-click (or Enter) on a row asks the state to open that study in the reader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QKeyEvent
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView, QWidget

from viewer.results_model import Case

if TYPE_CHECKING:
    from viewer.results_state import ResultsState

__all__ = ["COLUMNS", "SORT_COLUMNS", "CasesTableModel", "CasesTableWidget", "format_p"]

#: Column titles.
COLUMNS: tuple[str, ...] = (
    "Study",
    "Side",
    "Truth",
    "P(malignant)",
    "Other breast",
    "|R \u2212 L|",
    "Error",
    "At threshold",
    "BI-RADS",
    "Status",
)
#: Column index -> sort key of the state.
SORT_COLUMNS: dict[int, str] = {0: "study", 3: "probability", 5: "disagreement", 6: "error"}

_OUTCOME_COLORS = {
    "FN": QColor(200, 60, 60),
    "FP": QColor(210, 140, 30),
    "TP": QColor(70, 150, 90),
    "TN": QColor(90, 110, 130),
}
_PATHOLOGIES = frozenset({"malignant", "benign", "normal"})
_OUTCOME_TEXT = {"FN": "false negative", "FP": "false positive", "TP": "true positive", "TN": "true negative"}


def format_p(p: float | None) -> str:
    """A probability with three decimals, or an en dash."""
    return "\u2013" if p is None else f"{p:.3f}"


class CasesTableModel(QAbstractTableModel):
    """Qt model over the state's visible cases.

    Args:
        state: The browser's state.
        parent: Qt parent.
    """

    def __init__(self, state: ResultsState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.rows: list[Case] = []
        state.cases_changed.connect(self._on_selection_changed)
        state.selection_changed.connect(self._on_selection_changed)
        state.threshold_changed.connect(self._on_threshold_changed)
        self._on_selection_changed()

    def _on_selection_changed(self) -> None:
        self.beginResetModel()
        self.rows = self.state.visible_cases()
        self.endResetModel()

    def _on_threshold_changed(self, _t: float) -> None:
        if self.rows:  # the outcome column depends on the threshold (filtered views reset above)
            col = COLUMNS.index("At threshold")
            self.dataChanged.emit(self.index(0, col), self.index(len(self.rows) - 1, col))

    # -------------------------------------------------------------- Qt model API
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            title = COLUMNS[section]
            if SORT_COLUMNS.get(section) == self.state.sort_key:
                title += "  \u25bc" if self.state.descending else "  \u25b2"
            return title
        if role == Qt.ItemDataRole.ToolTipRole and section in SORT_COLUMNS:
            return f"Sort by {SORT_COLUMNS[section]} (click again to reverse)"
        return None

    def text(self, row: int, col: int) -> str:
        """The text shown in a cell."""
        c = self.rows[row]
        t = self.state.threshold
        if col == 0:
            return c.study_id
        if col == 1:
            return c.side
        if col == 2:
            if c.label is None:
                return c.truth or "\u2013"
            if c.truth.strip().lower() in _PATHOLOGIES:
                return c.truth.strip().lower()
            return "malignant" if c.label else "not malignant"
        if col == 3:
            return format_p(c.p_malignant if c.scored else None)
        if col == 4:
            return format_p(c.other_p)
        if col == 5:
            return format_p(c.disagreement)
        if col == 6:
            return format_p(c.abs_error)
        if col == 7:
            return _OUTCOME_TEXT.get(c.outcome(t), "")
        if col == 8:
            return c.birads_pred
        if col == 9:
            return c.error if c.status == "error" else ("not imaged" if c.status == "missing" else c.status)
        return ""

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self.rows):
            return None
        row, col = index.row(), index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self.text(row, col)
        if role == Qt.ItemDataRole.ToolTipRole and col == 9:
            return self.text(row, col)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (3, 4, 5, 6, 8):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole:
            c = self.rows[row]
            if col == 7:
                color = _OUTCOME_COLORS.get(c.outcome(self.state.threshold))
                return QBrush(color) if color is not None else None
            if c.status == "error":
                return QBrush(QColor(230, 110, 110))
            if not c.scored:
                return QBrush(QColor(140, 140, 140))
        return None

    def case(self, row: int) -> Case | None:
        """The case shown in ``row``."""
        return self.rows[row] if 0 <= row < len(self.rows) else None


class CasesTableWidget(QTableView):
    """The table; header clicks sort through the state, double-click opens the study.

    Signals:
        case_activated(object): A row was double-clicked or Enter was pressed (its ``Case``).
    """

    case_activated = Signal(object)

    def __init__(self, state: ResultsState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.cases_model = CasesTableModel(state, self)
        self.setModel(self.cases_model)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(22)
        header = self.horizontalHeader()
        header.setSectionsClickable(True)
        header.setHighlightSections(False)
        header.setStretchLastSection(True)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        widths = (100, 40, 96, 92, 92, 66, 66, 104, 62)
        for i, w in enumerate(widths):
            self.setColumnWidth(i, w)
        header.sectionClicked.connect(self._on_section_clicked)
        self.doubleClicked.connect(self._on_double_clicked)
        self.case_activated.connect(self.state.request_open)
        state.selection_changed.connect(header.viewport().update)

    def _on_section_clicked(self, section: int) -> None:
        key = SORT_COLUMNS.get(section)
        if key is None:
            return
        s = self.state
        if key == s.sort_key:
            s.set_sort(key, not s.descending)
        else:
            s.set_sort(key)

    def _on_double_clicked(self, index: QModelIndex) -> None:
        case = self.cases_model.case(index.row())
        if case is not None:
            self.case_activated.emit(case)

    def keyPressEvent(self, ev: QKeyEvent) -> None:  # noqa: N802
        if ev.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            case = self.cases_model.case(self.currentIndex().row())
            if case is not None:
                self.case_activated.emit(case)
                return
        super().keyPressEvent(ev)
