"""MessageBar: the window's strip of messages (unreadable files, AI failures, study remarks).

Bad input is reported here, in the window, as plain one-line messages; never as a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

if TYPE_CHECKING:
    from viewer.state import ViewerState

__all__ = ["MessageBar"]

_STYLE = {
    "error": "#5a1d1d",
    "warning": "#4d3d12",
    "info": "#1d3550",
}


class MessageBar(QFrame):
    """Shows ``state.messages``; hidden when there are none. The close button clears them."""

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.setObjectName("MessageBar")
        outer = QHBoxLayout(self)
        outer.setContentsMargins(8, 4, 4, 4)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(self.label.textInteractionFlags())
        self.close_button = QToolButton()
        self.close_button.setText("\u2715")
        self.close_button.setToolTip("Dismiss")
        self.close_button.clicked.connect(state.clear_messages)
        col = QVBoxLayout()
        col.addWidget(self.label)
        outer.addLayout(col, 1)
        outer.addWidget(self.close_button)
        state.messages_changed.connect(self._on_messages_changed)
        self._on_messages_changed()

    @property
    def text(self) -> str:
        """The plain text shown (one line per message)."""
        return "\n".join(m.text for m in self.state.messages)

    def _on_messages_changed(self) -> None:
        msgs = self.state.messages
        if not msgs:
            self.hide()
            return
        level = "info"
        for m in msgs:
            if m.level == "error":
                level = "error"
                break
            if m.level == "warning":
                level = "warning"
        self.setStyleSheet(f"#MessageBar {{ background: {_STYLE[level]}; }} QLabel {{ color: #f2f2f2; }}")
        self.label.setText(self.text)
        self.show()
