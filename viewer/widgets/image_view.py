"""ImageViewWidget: one image of the study with its overlays, driven entirely by the ViewerState.

The widget draws what the state says and writes the reader's gestures back through the state's
setters: a wheel turn or a pan becomes a new :class:`~viewer.imaging.Viewport` of its group (the
four mammography slots share one, which is the synchronised, mirrored zoom), a window/level drag
goes through ``state.drag_window``, a ruler line through ``state.add_measurement``. It never calls
the engine.

Layers, bottom to top: the mammogram (``uint8`` rendered from the stored values at the pyramid
level closest to the screen resolution, only the region in view plus a margin), the Grad-CAM
heatmap (a second, RGBA ``ImageItem`` stretched over the image), the breast outline and the AI
contours (``PlotCurveItem``), ruler lines, and a badge widget in a corner that does not cover
tissue (view name and the view's attention weight).

Mouse: wheel = zoom about the cursor; left drag = the current tool (pan, window/level, ruler);
middle drag = pan; right drag = window/level; double click = fit.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, QTimer
from PySide6.QtGui import QFont, QPainter
from PySide6.QtWidgets import QFrame, QLabel, QProgressBar, QVBoxLayout, QWidget

from viewer.imaging import (
    Region,
    Viewport,
    WindowSetting,
    choose_level,
    fit_viewport,
    pan_viewport,
    render_region,
    u_of_x,
    view_ranges,
    zoom_viewport,
)
from viewer.overlays import (
    attention_percentages,
    breast_outline,
    contour_path,
    heatmap_rgba,
    join_paths,
    label_corner,
    ruler_text,
)
from viewer.state import Measurement

if TYPE_CHECKING:
    from viewer.imaging import PreparedImage
    from viewer.state import ViewerState

__all__ = ["ImageViewWidget", "ViewBadge"]

logger = logging.getLogger(__name__)

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

#: Extra rendered area around the visible region, as a fraction of its size on each side, so that
#: a pan does not re-render at every frame; a window/level change renders the visible region only
#: (it re-renders at every frame anyway).
_RENDER_MARGIN = 0.35
_RENDER_MARGIN_WL = 0.02
#: Wheel: zoom factor per 120 units (one notch).
_WHEEL_NOTCH = 1.25

_BREAST_PEN = pg.mkPen((90, 200, 255, 200), width=1.5, style=Qt.PenStyle.DashLine)
_LESION_PEN = pg.mkPen((255, 230, 40, 255), width=2)
_RULER_PEN = pg.mkPen((80, 255, 120, 255), width=2)


class ViewBadge(QFrame):
    """The corner box of a view: its name and, once the AI ran, its attention weight."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ViewBadge")
        self.setStyleSheet(
            "#ViewBadge { background: rgba(0, 0, 0, 150); border-radius: 4px; }"
            "QLabel { color: #f0f0f0; background: transparent; }"
            "QProgressBar { background: rgba(255,255,255,40); border: none; border-radius: 2px; }"
            "QProgressBar::chunk { background: #ffb000; border-radius: 2px; }"
        )
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 3, 6, 4)
        lay.setSpacing(2)
        self.title = QLabel(title)
        f = QFont(self.title.font())
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() * 1.15)
        self.title.setFont(f)
        self.attention = QLabel("")
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(5)
        lay.addWidget(self.title)
        lay.addWidget(self.attention)
        lay.addWidget(self.bar)
        self.set_attention(None)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)

    def set_attention(self, percent: int | None) -> None:
        """Show ``"AI weight 32 %"`` and the bar, or hide both (None)."""
        if percent is None:
            self.attention.hide()
            self.bar.hide()
        else:
            self.attention.setText(f"AI weight {percent} %")
            self.bar.setValue(int(percent))
            self.attention.show()
            self.bar.show()
        self.adjustSize()

    @property
    def percent(self) -> int | None:
        """The attention percentage shown, or None."""
        return self.bar.value() if self.bar.isVisibleTo(self) else None


class _ReadingViewBox(pg.ViewBox):
    """A ViewBox whose mouse gestures are forwarded to the owning widget (no built-in pan/zoom)."""

    def __init__(self, owner: ImageViewWidget) -> None:
        super().__init__(enableMenu=False, invertY=True, enableMouse=False, defaultPadding=0.0)
        self._owner = owner

    def wheelEvent(self, ev, axis=None):  # noqa: N802 - Qt API
        p = self.mapSceneToView(ev.scenePos())
        self._owner._wheel(ev.delta(), p.x(), p.y())
        ev.accept()

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802
        ev.accept()
        self._owner._drag(ev)

    def mouseClickEvent(self, ev):  # noqa: N802
        ev.accept()
        if ev.double() and ev.button() == Qt.MouseButton.LeftButton:
            self._owner._double_click()


class ImageViewWidget(pg.GraphicsView):
    """One image slot.

    Args:
        state: The viewer state.
        key: The image key in ``state.images`` (a slot such as ``"R-CC"``, or a relative path).
        group: Viewport group (``MG_GROUP`` for the four synchronised slots, else the key).
        title: Badge text (default: the key).
        parent: Qt parent.
        anchor_chest_wall: Fit with the chest wall on the widget edge (the hanging); False centres
            the image (the CESM / ultrasound panels).
    """

    def __init__(
        self,
        state: ViewerState,
        key: str,
        group: str,
        title: str | None = None,
        parent: QWidget | None = None,
        *,
        anchor_chest_wall: bool = True,
    ) -> None:
        super().__init__(parent, background=(0, 0, 0))
        self.anchor_chest_wall = anchor_chest_wall
        self.state = state
        self.key = key
        self.group = group
        self.title = title or key
        self.setObjectName(f"ImageView:{key}")
        # bilinear when the pyramid level is drawn up to 2x smaller than its pixels
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        self.setMinimumSize(120, 120)
        self.vb = _ReadingViewBox(self)
        self.setCentralItem(self.vb)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.heat_item = pg.ImageItem(axisOrder="row-major")
        self.heat_item.setZValue(10)
        self.breast_curve = pg.PlotCurveItem(pen=_BREAST_PEN, connect="finite")
        self.breast_curve.setZValue(20)
        self.lesion_curve = pg.PlotCurveItem(pen=_LESION_PEN, connect="finite")
        self.lesion_curve.setZValue(21)
        self.ruler_live = pg.PlotCurveItem(pen=_RULER_PEN)
        self.ruler_live.setZValue(30)
        for item in (self.image_item, self.heat_item, self.breast_curve, self.lesion_curve, self.ruler_live):
            self.vb.addItem(item)
        self._ruler_items: list = []
        self.badge = ViewBadge(self.title, self)
        self.empty_label = QLabel("", self)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setStyleSheet("color: #9a9a9a; font-size: 16pt; background: transparent;")
        self.empty_label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self._prepared: PreparedImage | None = None
        self._rendered: tuple[int, Region] | None = None
        self._render_pending = False
        self._margin = _RENDER_MARGIN
        self._drag_mode: str | None = None
        self._drag_vp: Viewport | None = None
        self._ruler_start: tuple[float, float] | None = None
        self._heat_map: np.ndarray | None = None
        self._heat_colormap: str | None = None
        self.badge_corner = "top-left"
        self.setMouseTracking(True)
        self.scene().sigMouseMoved.connect(self._on_mouse_moved)

        state.study_changed.connect(self._on_study_changed)
        state.windows_changed.connect(self._on_windows_changed)
        state.invert_changed.connect(self._on_windows_changed)
        state.viewport_changed.connect(self._on_viewport_changed)
        state.result_changed.connect(self._on_result_changed)
        state.overlays_changed.connect(self._on_overlays_changed)
        state.measurements_changed.connect(self._on_measurements_changed)
        self._ready = True
        self._on_study_changed()

    # ------------------------------------------------------------------ helpers
    @property
    def prepared(self) -> PreparedImage | None:
        """The image this view shows (None for an empty slot)."""
        return self._prepared

    def _widget_size(self) -> tuple[float, float]:
        r = self.vb.boundingRect()
        w, h = float(r.width()), float(r.height())
        if w < 2 or h < 2:
            w, h = float(max(self.width(), 2)), float(max(self.height(), 2))
        return w, h

    def _chest_wall(self) -> str:
        p = self._prepared
        return p.chest_wall if (p is not None and p.chest_wall) else "left"

    def current_viewport(self) -> Viewport | None:
        """The viewport in effect: the group's, or this view's own fit."""
        p = self._prepared
        vp = self.state.viewport(self.group)
        if vp is not None or p is None:
            return vp
        return fit_viewport(p.shape, self._widget_size(), self._chest_wall(), anchor=self.anchor_chest_wall)

    def ranges(self) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """``((x0, x1), (y0, y1))`` shown, display coordinates (None for an empty slot)."""
        p = self._prepared
        vp = self.current_viewport()
        if p is None or vp is None:
            return None
        return view_ranges(vp, p.shape, self._widget_size(), self._chest_wall())

    # ------------------------------------------------------------------ state slots
    def _on_study_changed(self) -> None:
        self._prepared = self.state.images.get(self.key)
        self._rendered = None
        self._heat_map = None
        self.image_item.clear()
        self.heat_item.clear()
        self.breast_curve.setData([], [])
        self.lesion_curve.setData([], [])
        p = self._prepared
        if p is None:
            loaded = self.state.study is not None
            self.empty_label.setText(f"{self.title} missing" if loaded else "")
            self.empty_label.show()
            self.badge.setVisible(loaded)
        else:
            self.empty_label.hide()
            self.badge.show()
            xs, ys = join_paths(breast_outline(p.tissue, p.shape))
            self.breast_curve.setData(xs, ys)
        self._on_result_changed()
        self._apply_ranges()
        self._layout_overlays()

    def _on_windows_changed(self, *args) -> None:
        self._rendered = None
        self._margin = _RENDER_MARGIN_WL
        self._schedule_render()

    def _on_viewport_changed(self, group: str) -> None:
        if group == self.group:
            self._apply_ranges()

    def _on_result_changed(self) -> None:
        r = self.state.result
        p = self._prepared
        maps = self.state.heatmap_maps
        self._heat_map = maps.get(self.key) if (r is not None and p is not None) else None
        if r is not None and r.attention and self.key in r.attention:
            pct = attention_percentages(r.attention, list(r.attention))
            self.badge.set_attention(pct.get(self.key, 0))
        else:
            self.badge.set_attention(None)
        if r is not None and p is not None and self.key in r.contours:
            xs, ys = contour_path(r.contours[self.key], p.shape[1], p.flipped)
            self.lesion_curve.setData(xs, ys)
        else:
            self.lesion_curve.setData([], [])
        self._update_heat_image()
        self._on_overlays_changed()
        self._layout_overlays()

    def _update_heat_image(self) -> None:
        p = self._prepared
        if self._heat_map is None or p is None:
            self.heat_item.clear()
            return
        rgba = heatmap_rgba(self._heat_map, self.state.colormap)
        self.heat_item.setImage(rgba, autoLevels=False, levels=None)
        rows, cols = p.shape
        self.heat_item.setRect(QRectF(0, 0, cols, rows))
        self._heat_colormap = self.state.colormap

    def _on_overlays_changed(self) -> None:
        s = self.state
        if self._heat_map is not None and self._heat_colormap != s.colormap:
            self._update_heat_image()
        self.heat_item.setVisible(bool(s.heatmap_visible and self._heat_map is not None))
        self.heat_item.setOpacity(float(s.heatmap_opacity))
        self.breast_curve.setVisible(bool(s.show_breast_contours and self._prepared is not None))
        self.lesion_curve.setVisible(bool(s.show_lesion_contours))

    def _on_measurements_changed(self) -> None:
        for item in self._ruler_items:
            self.vb.removeItem(item)
        self._ruler_items = []
        p = self._prepared
        if p is None:
            return
        img = p.image
        for m in self.state.measurements:
            if m.key != self.key:
                continue
            line = pg.PlotCurveItem([m.x0, m.x1], [m.y0, m.y1], pen=_RULER_PEN)
            line.setZValue(30)
            text = pg.TextItem(
                ruler_text((m.x0, m.y0), (m.x1, m.y1), img.pixel_spacing_mm, img.spacing_calibrated),
                color=(80, 255, 120),
                anchor=(0, 1),
            )
            text.setPos(m.x1, m.y1)
            text.setZValue(31)
            self.vb.addItem(line)
            self.vb.addItem(text)
            self._ruler_items += [line, text]

    # ------------------------------------------------------------------ geometry & render
    def _apply_ranges(self) -> None:
        rng = self.ranges()
        if rng is None:
            return
        (x0, x1), (y0, y1) = rng
        self.vb.setRange(xRange=(x0, x1), yRange=(y0, y1), padding=0, update=True)
        self._schedule_render()
        self._layout_overlays()

    def _schedule_render(self) -> None:
        if not self._render_pending:
            self._render_pending = True
            QTimer.singleShot(0, self._render_now)

    def render_now(self) -> None:
        """Render the visible region immediately (the normal path coalesces via the event loop)."""
        self._render_now()

    def _render_now(self) -> None:
        self._render_pending = False
        p = self._prepared
        rng = self.ranges()
        if p is None or rng is None:
            return
        (x0, x1), (y0, y1) = rng
        rows, cols = p.shape
        w_px, _ = self._widget_size()
        scale = w_px / max(x1 - x0, 1e-6)
        level = choose_level(scale * float(self.devicePixelRatioF()), len(p.pyramid))
        visible = Region(
            max(0, int(math.floor(x0))),
            max(0, int(math.floor(y0))),
            min(cols, int(math.ceil(x1))),
            min(rows, int(math.ceil(y1))),
        )
        if visible.empty:
            return
        if self._rendered is not None:
            r_level, r_region = self._rendered
            if r_level == level and r_region.contains(visible):
                return
        margin = self._margin
        self._margin = _RENDER_MARGIN
        mx = int((visible.x1 - visible.x0) * margin)
        my = int((visible.y1 - visible.y0) * margin)
        want = Region(
            max(0, visible.x0 - mx), max(0, visible.y0 - my), min(cols, visible.x1 + mx), min(rows, visible.y1 + my)
        )
        setting = self.state.windows.get(self.key, WindowSetting())
        arr, covered = render_region(p, want, level, setting, self.state.invert)
        if arr.size == 0:
            return
        self.image_item.setImage(arr, autoLevels=False, levels=None)
        self.image_item.setRect(
            QRectF(covered.x0, covered.y0, covered.x1 - covered.x0, covered.y1 - covered.y0)
        )
        self._rendered = (level, covered)

    def resizeEvent(self, ev):  # noqa: N802
        super().resizeEvent(ev)
        if "_ready" not in self.__dict__:  # called by pyqtgraph during construction
            return
        self.empty_label.setGeometry(0, 0, self.width(), self.height())
        self._apply_ranges()
        self._layout_overlays()

    def _layout_overlays(self) -> None:
        self.badge.adjustSize()
        bw, bh = self.badge.width(), self.badge.height()
        margin = 6
        w, h = self.width(), self.height()
        outer = "left" if self._chest_wall() == "right" else "right"
        inner = "right" if outer == "left" else "left"
        pref = [f"top-{outer}", f"bottom-{outer}", f"top-{inner}", f"bottom-{inner}"]
        p = self._prepared
        rng = self.ranges()
        corner = pref[0]
        if p is not None and rng is not None:
            corner = label_corner(p.tissue, p.shape, rng, (w, h), (bw + 2 * margin, bh + 2 * margin), pref)
        x = margin if corner.endswith("left") else w - bw - margin
        y = margin if corner.startswith("top") else h - bh - margin
        self.badge.move(int(x), int(y))
        self.badge.raise_()
        self.badge_corner = corner

    # ------------------------------------------------------------------ gestures
    def _wheel(self, delta: float, x: float, y: float) -> None:
        p = self._prepared
        vp = self.current_viewport()
        if p is None or vp is None:
            return
        factor = _WHEEL_NOTCH ** (delta / 120.0)
        u = u_of_x(x, p.shape[1], self._chest_wall())
        self.state.set_viewport(self.group, zoom_viewport(vp, factor, u, y))

    def zoom_by(self, factor: float) -> None:
        """Zoom about the view centre (keyboard zoom)."""
        vp = self.current_viewport()
        if vp is None:
            return
        self.state.set_viewport(self.group, zoom_viewport(vp, factor, vp.center_u, vp.center_y))

    def one_to_one(self) -> None:
        """One image pixel per screen pixel, centred on the mouse when it is over this view, else
        on the image centre."""
        p = self._prepared
        if p is None:
            return
        scale = 1.0 / float(self.devicePixelRatioF())
        rows, cols = p.shape
        cur = self.state.cursor
        if cur is not None and cur[0] == self.key and 0 <= cur[1] < cols and 0 <= cur[2] < rows:
            x, y = cur[1], cur[2]
        else:
            x, y = cols / 2.0, rows / 2.0
        self.state.set_viewport(self.group, Viewport(u_of_x(x, cols, self._chest_wall()), y, scale))

    def _double_click(self) -> None:
        self.state.set_viewport(self.group, None)

    def _drag(self, ev) -> None:
        p = self._prepared
        if p is None:
            return
        button = ev.button()
        if ev.isStart():
            if button == Qt.MouseButton.MiddleButton:
                mode = "pan"
            elif button == Qt.MouseButton.RightButton:
                mode = "window"
            else:
                mode = self.state.tool
            self._drag_mode = mode
            if mode == "window":
                self.state.begin_window_drag(self.key)
            elif mode == "ruler":
                q = self.vb.mapSceneToView(ev.buttonDownScenePos())
                self._ruler_start = (q.x(), q.y())
        mode = self._drag_mode
        if mode is None:
            return
        if mode == "pan":
            d = ev.screenPos() - ev.lastScreenPos()
            vp = self.current_viewport()
            if vp is not None:
                du = d.x() if self._chest_wall() == "left" else -d.x()
                self.state.set_viewport(self.group, pan_viewport(vp, du, d.y()))
        elif mode == "window":
            d = ev.screenPos() - ev.buttonDownScreenPos()
            self.state.drag_window(d.x(), d.y())
        elif mode == "ruler" and self._ruler_start is not None:
            q = self.vb.mapSceneToView(ev.scenePos())
            x0, y0 = self._ruler_start
            if ev.isFinish():
                self.ruler_live.setData([], [])
                if math.hypot(q.x() - x0, q.y() - y0) > 0:
                    self.state.add_measurement(Measurement(self.key, x0, y0, q.x(), q.y()))
            else:
                self.ruler_live.setData([x0, q.x()], [y0, q.y()])
        if ev.isFinish():
            self._drag_mode = None
            self._ruler_start = None

    def _on_mouse_moved(self, pos) -> None:
        p = self._prepared
        if p is None:
            return
        q = self.vb.mapSceneToView(pos)
        self.state.set_cursor((self.key, float(q.x()), float(q.y())))

    def leaveEvent(self, ev):  # noqa: N802
        super().leaveEvent(ev)
        if self.state.cursor is not None and self.state.cursor[0] == self.key:
            self.state.set_cursor(None)
