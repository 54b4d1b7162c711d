"""ViewerState: the one place the viewer's truth lives (QtCore only, no widgets).

Widgets write through the setters and redraw when the matching signal fires; they keep no copy of
what is here. The controller (``viewer.controller``) fills in the study and the AI result from its
worker threads. Every setter emits only when the value actually changes, so a widget that writes a
value back in reaction to a signal cannot start a loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from viewer.imaging import Viewport, WindowSetting, drag_window, window_center_width

if TYPE_CHECKING:
    from engine import Study
    from viewer.imaging import PreparedImage

__all__ = [
    "MG_GROUP",
    "TOOLS",
    "AI_STATUSES",
    "COLORMAPS",
    "Message",
    "Measurement",
    "ViewerState",
]

logger = logging.getLogger(__name__)

#: Viewport group of the four synchronised mammography slots.
MG_GROUP = "MG"
#: Left-button tools.
TOOLS: tuple[str, ...] = ("pan", "window", "ruler")
#: What the AI is doing.
AI_STATUSES: tuple[str, ...] = ("idle", "no_model", "running", "done", "error", "cancelled")
#: Heatmap colour maps (names understood by ``viewer.overlays.colormap_table``).
COLORMAPS: tuple[str, ...] = ("jet", "inferno", "viridis", "hot")


@dataclass(frozen=True)
class Message:
    """A line in the window's message bar.

    Attributes:
        level: ``"info"``, ``"warning"`` or ``"error"``.
        text: One human line (no patient data).
    """

    level: str
    text: str


@dataclass(frozen=True)
class Measurement:
    """A ruler line on one image, in display coordinates (full-resolution pixels)."""

    key: str
    x0: float
    y0: float
    x1: float
    y1: float


class ViewerState(QObject):
    """Study, display settings, AI result and overlay settings, with change signals.

    Signals (past tense; slots are named ``_on_<signal>``):
        study_changed: The study (and its prepared images) was replaced or cleared.
        loading_changed(bool): A study load started (True) or ended (False).
        messages_changed: The message bar's lines changed.
        windows_changed: One or more images' window settings changed.
        invert_changed(bool): The invert toggle changed.
        viewport_changed(str): A viewport group changed (``MG_GROUP`` or an image key).
        tool_changed(str): The left-button tool changed.
        magnifier_changed(bool): The magnifier was shown or hidden.
        cursor_changed: The image point under the mouse changed.
        measurements_changed: A ruler line was added or the lines were cleared.
        ai_status_changed: AI status, progress or message changed.
        result_changed: The AI result was replaced or cleared.
        overlays_changed: Heatmap visibility, opacity or colour map, or a contour toggle changed.
        target_changed: The Grad-CAM target changed.
        models_changed: The list of installed models, the chosen model or the device changed.
    """

    study_changed = Signal()
    loading_changed = Signal(bool)
    messages_changed = Signal()
    windows_changed = Signal()
    invert_changed = Signal(bool)
    viewport_changed = Signal(str)
    tool_changed = Signal(str)
    magnifier_changed = Signal(bool)
    cursor_changed = Signal()
    measurements_changed = Signal()
    ai_status_changed = Signal()
    result_changed = Signal()
    overlays_changed = Signal()
    target_changed = Signal()
    models_changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.study: Study | None = None
        self.images: dict[str, PreparedImage] = {}
        self.study_path: str | None = None
        self.loading: bool = False
        self.loading_path: str | None = None
        self.messages: list[Message] = []
        self.windows: dict[str, WindowSetting] = {}
        self.invert: bool = False
        self.viewports: dict[str, Viewport | None] = {}
        self.tool: str = "pan"
        self.magnifier: bool = False
        self.cursor: tuple[str, float, float] | None = None
        self.measurements: list[Measurement] = []
        self.ai_status: str = "idle"
        self.ai_message: str = ""
        self.ai_progress: float = -1.0
        self.result: Any = None
        self.heatmap_maps: dict[str, Any] = {}
        self.heatmap_visible: bool = True
        self.heatmap_opacity: float = 0.45
        self.colormap: str = "jet"
        self.show_breast_contours: bool = True
        self.show_lesion_contours: bool = True
        self.target: str = "malignancy"
        self.targets: list[str] = ["malignancy"]
        self.models: list[str] = []
        self.model_name: str | None = None
        self.device: str = "auto"
        self._drag_start: dict[str, tuple[float, float]] = {}

    # ----------------------------------------------------------------- study
    def set_loading(self, path: str | None) -> None:
        """A load of ``path`` started (``None``: the load ended)."""
        self.loading_path = path
        loading = path is not None
        if loading != self.loading:
            self.loading = loading
            self.loading_changed.emit(loading)

    def set_study(self, study: Study | None, images: dict[str, PreparedImage] | None = None) -> None:
        """Replace the study; resets windows, viewports, measurements and the AI result.

        Args:
            study: The loaded study, or None to clear.
            images: Its prepared images keyed by viewer key (see ``viewer.imaging``).
        """
        self.study = study
        self.images = dict(images or {})
        self.study_path = str(study.path) if study is not None else None
        self.windows = {k: WindowSetting() for k in self.images}
        self.viewports = {}
        self.measurements = []
        self.cursor = None
        self._drag_start = {}
        self.result = None
        self.heatmap_maps = {}
        self.study_changed.emit()
        self.windows_changed.emit()
        self.measurements_changed.emit()
        self.result_changed.emit()

    @property
    def slot_keys(self) -> list[str]:
        """Keys of the standard slots that hold an image."""
        from engine import STANDARD_VIEWS

        return [k for k in STANDARD_VIEWS if k in self.images]

    # -------------------------------------------------------------- messages
    def set_messages(self, messages: list[Message]) -> None:
        """Replace the message bar's lines."""
        if list(messages) != self.messages:
            self.messages = list(messages)
            self.messages_changed.emit()

    def add_message(self, level: str, text: str) -> None:
        """Append one line to the message bar."""
        self.messages = [*self.messages, Message(level, text)]
        self.messages_changed.emit()

    def clear_messages(self) -> None:
        """Empty the message bar."""
        self.set_messages([])

    # ------------------------------------------------------- window / level
    def set_window(self, key: str, setting: WindowSetting) -> None:
        """Set one image's window."""
        if self.windows.get(key) != setting:
            self.windows[key] = setting
            self.windows_changed.emit()

    def set_windows(self, settings: dict[str, WindowSetting]) -> None:
        """Set several images' windows with one signal."""
        changed = False
        for key, setting in settings.items():
            if self.windows.get(key) != setting:
                self.windows[key] = setting
                changed = True
        if changed:
            self.windows_changed.emit()

    def apply_preset(self, index: int) -> None:
        """Show every image with its ``index``-th VOI preset (clamped per image)."""
        self.set_windows({k: WindowSetting(preset_index=int(index)) for k in self.images})

    def linked_keys(self, key: str) -> list[str]:
        """Images whose window moves together with ``key``'s: the four slots move together."""
        slots = self.slot_keys
        return slots if key in slots else [key]

    def begin_window_drag(self, key: str) -> None:
        """Remember the windows of ``key`` and its linked images at the start of a drag."""
        self._drag_start = {}
        for k in self.linked_keys(key):
            img = self.images.get(k)
            if img is not None:
                self._drag_start[k] = window_center_width(img.image, self.windows.get(k, WindowSetting()))

    def drag_window(self, dx_px: float, dy_px: float) -> None:
        """Window/level drag: displacement since :meth:`begin_window_drag` in screen pixels."""
        new: dict[str, WindowSetting] = {}
        for k, start in self._drag_start.items():
            img = self.images.get(k)
            if img is None:
                continue
            lo, hi = img.value_range
            center, width = drag_window(start, dx_px, dy_px, value_range=max(hi - lo, 1.0))
            old = self.windows.get(k, WindowSetting())
            new[k] = WindowSetting(preset_index=old.preset_index, center=center, width=width)
        self.set_windows(new)

    def set_invert(self, invert: bool) -> None:
        """Set the reader's invert toggle (applied on top of the file's own inversion)."""
        invert = bool(invert)
        if invert != self.invert:
            self.invert = invert
            self.invert_changed.emit(invert)

    def reset_display(self) -> None:
        """Default presets, no inversion, every view fitted, rulers cleared."""
        self.apply_preset(0)
        self.set_invert(False)
        for group in list(self.viewports):
            self.set_viewport(group, None)
        self.clear_measurements()

    # ------------------------------------------------------------- viewport
    def viewport(self, group: str = MG_GROUP) -> Viewport | None:
        """The viewport of a group; None means fitted."""
        return self.viewports.get(group)

    def set_viewport(self, group: str, vp: Viewport | None) -> None:
        """Set a group's viewport (None = fit)."""
        if self.viewports.get(group, None) != vp or group not in self.viewports:
            self.viewports[group] = vp
            self.viewport_changed.emit(group)

    # ---------------------------------------------------------------- tools
    def set_tool(self, tool: str) -> None:
        """Choose the left-button tool (one of :data:`TOOLS`)."""
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}; known: {TOOLS}")
        if tool != self.tool:
            self.tool = tool
            self.tool_changed.emit(tool)

    def set_magnifier(self, on: bool) -> None:
        """Show or hide the magnifier."""
        on = bool(on)
        if on != self.magnifier:
            self.magnifier = on
            self.magnifier_changed.emit(on)

    def set_cursor(self, cursor: tuple[str, float, float] | None) -> None:
        """The image point under the mouse: ``(key, x, y)`` in display coordinates, or None."""
        if cursor != self.cursor:
            self.cursor = cursor
            self.cursor_changed.emit()

    def add_measurement(self, m: Measurement) -> None:
        """Add a ruler line."""
        self.measurements = [*self.measurements, m]
        self.measurements_changed.emit()

    def clear_measurements(self) -> None:
        """Remove every ruler line."""
        if self.measurements:
            self.measurements = []
            self.measurements_changed.emit()

    # -------------------------------------------------------------------- AI
    def set_ai_status(self, status: str, message: str = "", progress: float = -1.0) -> None:
        """AI status (one of :data:`AI_STATUSES`), a one-line message and progress in [0, 1]."""
        if status not in AI_STATUSES:
            raise ValueError(f"unknown AI status {status!r}")
        new = (status, message, float(progress))
        if new != (self.ai_status, self.ai_message, self.ai_progress):
            self.ai_status, self.ai_message, self.ai_progress = new
            self.ai_status_changed.emit()

    def set_result(self, result: Any, heatmap_maps: dict[str, Any] | None = None) -> None:
        """Replace the AI result (an ``engine.Result``) or clear it with None.

        Args:
            result: The result, or None.
            heatmap_maps: ``{view key: float map}`` reduced for display and mirrored like the
                view (``viewer.overlays.heatmap_display_map``), built in the worker thread.
        """
        if result is not self.result or (heatmap_maps or {}) is not self.heatmap_maps:
            self.result = result
            self.heatmap_maps = dict(heatmap_maps or {}) if result is not None else {}
            self.result_changed.emit()

    def set_heatmap_visible(self, on: bool) -> None:
        """Show or hide the Grad-CAM heatmaps."""
        if bool(on) != self.heatmap_visible:
            self.heatmap_visible = bool(on)
            self.overlays_changed.emit()

    def set_heatmap_opacity(self, opacity: float) -> None:
        """Heatmap opacity in [0, 1]."""
        opacity = float(min(max(opacity, 0.0), 1.0))
        if abs(opacity - self.heatmap_opacity) > 1e-6:
            self.heatmap_opacity = opacity
            self.overlays_changed.emit()

    def set_colormap(self, name: str) -> None:
        """Heatmap colour map (one of :data:`COLORMAPS`)."""
        if name not in COLORMAPS:
            raise ValueError(f"unknown colour map {name!r}; known: {COLORMAPS}")
        if name != self.colormap:
            self.colormap = name
            self.overlays_changed.emit()

    def set_show_breast_contours(self, on: bool) -> None:
        """Show or hide the breast outlines."""
        if bool(on) != self.show_breast_contours:
            self.show_breast_contours = bool(on)
            self.overlays_changed.emit()

    def set_show_lesion_contours(self, on: bool) -> None:
        """Show or hide lesion contours."""
        if bool(on) != self.show_lesion_contours:
            self.show_lesion_contours = bool(on)
            self.overlays_changed.emit()

    def set_target(self, target: str) -> None:
        """Grad-CAM target in ``engine.CamTarget`` text form: ``"malignancy"`` (each view's own
        breast), ``"malignancy:L"``, ``"birads:4"``, ``"birads:R:5"``, ..."""
        parts = [p for p in str(target).split(":") if p]
        if not parts or parts[0].lower() not in ("malignancy", "birads"):
            raise ValueError(f"unknown Grad-CAM target {target!r}")
        if target != self.target:
            self.target = target
            self.target_changed.emit()

    def set_targets(self, targets: list[str]) -> None:
        """The targets the current model offers (the picker's entries)."""
        if list(targets) != self.targets:
            self.targets = list(targets)
            self.target_changed.emit()

    def set_models(self, models: list[str]) -> None:
        """The installed models (names); keeps the chosen one when it is still there."""
        models = list(models)
        chosen = self.model_name if self.model_name in models else (models[0] if models else None)
        if models != self.models or chosen != self.model_name:
            self.models = models
            self.model_name = chosen
            self.models_changed.emit()

    def set_model(self, name: str | None) -> None:
        """Choose the model that scores the study."""
        if name is not None and name not in self.models:
            raise ValueError(f"model {name!r} is not installed")
        if name != self.model_name:
            self.model_name = name
            self.models_changed.emit()

    def set_device(self, device: str) -> None:
        """``"auto"``, ``"cpu"`` or ``"cuda"``."""
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"unknown device {device!r}")
        if device != self.device:
            self.device = device
            self.models_changed.emit()
