"""MagnifierWidget: a loupe that follows the mouse and shows full-resolution pixels.

It renders a small full-resolution patch around the cursor (pyramid level 0, the current window
and inversion) and scales it up with nearest-neighbour sampling, so single calcifications are
seen pixel for pixel whatever the zoom of the view below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QLabel, QWidget

from viewer.imaging import Region, WindowSetting, render_region

if TYPE_CHECKING:
    from viewer.state import ViewerState

__all__ = ["MagnifierWidget", "magnifier_patch"]

#: Side of the magnified patch in image pixels and the zoom factor.
PATCH = 80
ZOOM = 3


def magnifier_patch(state: ViewerState, key: str, x: float, y: float, size: int = PATCH) -> np.ndarray | None:
    """The ``uint8`` full-resolution patch centred on display point ``(x, y)`` (zero-padded).

    Returns:
        ``(size, size)`` array, or None when the key has no image or the point is outside it.
    """
    p = state.images.get(key)
    if p is None:
        return None
    rows, cols = p.shape
    cx, cy = int(np.floor(x)), int(np.floor(y))
    if not (0 <= cx < cols and 0 <= cy < rows):
        return None
    half = size // 2
    want = Region(cx - half, cy - half, cx - half + size, cy - half + size)
    clipped = Region(max(0, want.x0), max(0, want.y0), min(cols, want.x1), min(rows, want.y1))
    arr, covered = render_region(p, clipped, 0, state.windows.get(key, WindowSetting()), state.invert)
    out = np.zeros((size, size), np.uint8)
    oy, ox = covered.y0 - want.y0, covered.x0 - want.x0
    out[oy : oy + arr.shape[0], ox : ox + arr.shape[1]] = arr
    return out


class MagnifierWidget(QLabel):
    """The loupe; ``locate(key, x, y)`` maps an image point to this widget's parent coordinates.

    Args:
        state: The viewer state (cursor, magnifier toggle, windows).
        locate: Maps ``(key, x, y)`` to a point in the parent's coordinates, or None.
        parent: The widget the loupe floats over.
    """

    def __init__(
        self,
        state: ViewerState,
        locate: Callable[[str, float, float], QPoint | None],
        parent: QWidget,
    ) -> None:
        super().__init__(parent)
        self.state = state
        self._locate = locate
        side = PATCH * ZOOM
        self.setFixedSize(side + 4, side + 4)
        self.setStyleSheet("border: 2px solid #ffb000; background: black;")
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.hide()
        state.cursor_changed.connect(self._on_cursor_changed)
        state.magnifier_changed.connect(self._on_cursor_changed)
        state.windows_changed.connect(self._on_cursor_changed)
        state.invert_changed.connect(self._on_cursor_changed)

    def _on_cursor_changed(self, *args) -> None:
        s = self.state
        if not s.magnifier or s.cursor is None:
            self.hide()
            return
        key, x, y = s.cursor
        patch = magnifier_patch(s, key, x, y)
        where = self._locate(key, x, y)
        if patch is None or where is None:
            self.hide()
            return
        h, w = patch.shape
        img = QImage(patch.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
        pix = QPixmap.fromImage(img).scaled(
            w * ZOOM, h * ZOOM, Qt.AspectRatioMode.IgnoreAspectRatio, Qt.TransformationMode.FastTransformation
        )
        painter = QPainter(pix)
        painter.setPen(QPen(QColor(255, 176, 0, 160), 1))
        c = w * ZOOM // 2
        painter.drawLine(c - 8, c, c + 8, c)
        painter.drawLine(c, c - 8, c, c + 8)
        painter.end()
        self.setPixmap(pix)
        parent = self.parentWidget()
        pw, ph = parent.width(), parent.height()
        px = where.x() + 24
        py = where.y() + 24
        if px + self.width() > pw:
            px = where.x() - 24 - self.width()
        if py + self.height() > ph:
            py = where.y() - 24 - self.height()
        self.move(max(0, px), max(0, py))
        self.show()
        self.raise_()
