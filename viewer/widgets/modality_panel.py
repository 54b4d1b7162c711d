"""ModalityPanel: ultrasound, CESM and other (extra) images, each in its own view.

CESM images are paired per breast and view, low-energy on the left and recombined on the right
(SPEC section 4: ImageType values 4 and 5 tell them apart). Ultrasound images (several per breast
allowed) and extra mammography images (spot, magnification, ML, duplicates) are laid out two per
row. Each view has its own viewport (no synchronisation) but the same reading tools.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QLabel, QWidget

from viewer.widgets.image_view import ImageViewWidget

if TYPE_CHECKING:
    from viewer.state import ViewerState

__all__ = ["ModalityPanel", "panel_layout"]


def panel_layout(state: ViewerState, kind: str) -> list[list[tuple[str, str] | None]]:
    """Rows of ``(image key, title)`` cells for one panel kind (pure; used by the tests too).

    Args:
        state: The viewer state (its study and prepared images).
        kind: ``"cesm"``, ``"ultrasound"`` or ``"extras"``.

    Returns:
        Rows of cells; ``None`` is an empty cell (a CESM pair with one image missing).
    """
    study = state.study
    if study is None:
        return []
    keys = state.images
    if kind == "cesm":
        # one row per view (CC, MLO, others); per breast (right first, as in the hanging) the
        # low-energy image and the recombined image side by side
        pairs: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
        for img in study.cesm:
            if img.relpath not in keys:
                continue
            lat, view = img.laterality or "?", img.view or "?"
            le = img.cesm_kind == "low_energy"
            title = f"{lat}-{view} {'low energy' if le else 'recombined'}"
            pairs.setdefault((view, lat), {})["LE" if le else "RC"] = (img.relpath, title)
        views = sorted({v for v, _ in pairs}, key=lambda v: ({"CC": 0, "MLO": 1}.get(v, 2), v))
        rows: list[list[tuple[str, str] | None]] = []
        for view in views:
            row: list[tuple[str, str] | None] = []
            for lat in sorted({la for v, la in pairs if v == view}, key=lambda la: ({"R": 0, "L": 1}.get(la, 2), la)):
                row += [pairs[(view, lat)].get("LE"), pairs[(view, lat)].get("RC")]
            rows.append(row)
        return rows
    if kind == "ultrasound":
        cells = [(u.relpath, f"US {u.laterality or '?'} - {u.relpath}") for u in study.ultrasound if u.relpath in keys]
    elif kind == "extras":
        cells = [
            (e.image.relpath, f"{e.image.relpath} ({e.reason})") for e in study.extras if e.image.relpath in keys
        ]
    else:
        raise ValueError(f"unknown panel kind {kind!r}")
    return [cells[i : i + 2] for i in range(0, len(cells), 2)]


class ModalityPanel(QWidget):
    """A grid of image views for one kind of secondary images.

    Args:
        state: The viewer state.
        kind: ``"cesm"``, ``"ultrasound"`` or ``"extras"``.
        parent: Qt parent.

    Attributes:
        views: ``{image key: ImageViewWidget}`` currently shown.
    """

    def __init__(self, state: ViewerState, kind: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.kind = kind
        self.views: dict[str, ImageViewWidget] = {}
        self._cells: list[QWidget] = []
        self._layout = QGridLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(2)
        state.study_changed.connect(self._on_study_changed)
        self._on_study_changed()

    @property
    def count(self) -> int:
        """Number of images shown."""
        return len(self.views)

    def _on_study_changed(self) -> None:
        for w in self._cells:
            self._layout.removeWidget(w)
            w.setParent(None)
            w.deleteLater()
        self._cells = []
        self.views = {}
        for r, row in enumerate(panel_layout(self.state, self.kind)):
            for c, cell in enumerate(row):
                if cell is None:
                    w: QWidget = QLabel("not in this study")
                    w.setAlignment(Qt.AlignmentFlag.AlignCenter)
                    w.setStyleSheet("color: #9a9a9a; background: black;")
                else:
                    key, title = cell
                    w = ImageViewWidget(self.state, key, key, title=title, parent=self, anchor_chest_wall=False)
                    self.views[key] = w
                self._layout.addWidget(w, r, c)
                self._cells.append(w)
