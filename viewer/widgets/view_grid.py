"""ViewGridWidget: the standard screening hanging of the four mammography views.

::

    R-CC  | L-CC
    ------+------
    R-MLO | L-MLO

Right-breast views sit in the left column with their chest wall on their right edge, left-breast
views in the right column with their chest wall on their left edge, so the chest walls meet back
to back at the centre line (``viewer.imaging`` measures the chest-wall side on the pixels and
mirrors an image stored the other way round). The four views share one viewport group: zoom and pan
are synchronised with mirror semantics. A slot without an image says so ("L-MLO missing").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QGridLayout, QWidget

from viewer.state import MG_GROUP
from viewer.widgets.image_view import ImageViewWidget

if TYPE_CHECKING:
    from viewer.state import ViewerState

__all__ = ["GRID_POSITIONS", "ViewGridWidget"]

#: Slot -> (row, column) of the hanging.
GRID_POSITIONS: dict[str, tuple[int, int]] = {
    "R-CC": (0, 0),
    "L-CC": (0, 1),
    "R-MLO": (1, 0),
    "L-MLO": (1, 1),
}


class ViewGridWidget(QWidget):
    """The 2 x 2 hanging of the four standard views.

    Args:
        state: The viewer state.
        parent: Qt parent.

    Attributes:
        views: ``{slot: ImageViewWidget}``.
    """

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ViewGrid")
        self.setStyleSheet("#ViewGrid { background: #303030; }")
        lay = QGridLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setHorizontalSpacing(2)
        lay.setVerticalSpacing(2)
        self.views: dict[str, ImageViewWidget] = {}
        for key, (row, col) in GRID_POSITIONS.items():
            view = ImageViewWidget(state, key, MG_GROUP, title=key, parent=self)
            lay.addWidget(view, row, col)
            self.views[key] = view
        for i in range(2):
            lay.setRowStretch(i, 1)
            lay.setColumnStretch(i, 1)

    def render_now(self) -> None:
        """Render every view immediately (screenshots and benchmarks)."""
        for v in self.views.values():
            v.render_now()
