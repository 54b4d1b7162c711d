"""ShortcutsDialog: every action of the window with its key, generated from the actions themselves."""

from __future__ import annotations

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QHeaderView, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

__all__ = ["ShortcutsDialog", "shortcut_rows"]


def shortcut_rows(groups: dict[str, list[QAction]]) -> list[tuple[str, str, str]]:
    """``(menu, action, keys)`` rows for every action that has a shortcut."""
    rows = []
    for menu, actions in groups.items():
        for a in actions:
            keys = ", ".join(s.toString(QKeySequence.SequenceFormat.NativeText) for s in a.shortcuts())
            if keys:
                rows.append((menu, a.text().replace("&", ""), keys))
    return rows


class ShortcutsDialog(QDialog):
    """A table of the keyboard shortcuts.

    Args:
        groups: ``{menu name: [actions]}``.
        parent: The main window.
    """

    def __init__(self, groups: dict[str, list[QAction]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.rows = shortcut_rows(groups)
        lay = QVBoxLayout(self)
        table = QTableWidget(len(self.rows), 3, self)
        table.setHorizontalHeaderLabels(["Menu", "Action", "Keys"])
        for r, row in enumerate(self.rows):
            for c, text in enumerate(row):
                table.setItem(r, c, QTableWidgetItem(text))
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        table.horizontalHeader().setStretchLastSection(True)
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        lay.addWidget(table)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, parent=self)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.table = table
        self.resize(560, 640)
