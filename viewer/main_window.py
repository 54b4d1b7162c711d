"""MainWindow: menus, docks, shortcuts and settings; wires the ViewerState to the widgets.

Layout: a message bar on top, then tabs (the four-view hanging, and CESM / ultrasound / other
images when the study has them), the AI panel docked on the right, a status bar with the pixel
readout and the window in use. Every tool and toggle is a ``QAction`` with a shortcut, listed in
Help > Shortcuts from the actions themselves. Settings (overlay opacity, colour map, toggles, last
folder, recent studies, window geometry, model) persist in ``QSettings``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QByteArray, QPoint, QPointF, QSettings, Qt, QUrl, Signal
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QProgressBar,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

import engine
from viewer.controller import StudyController, installed_models, sibling_studies
from viewer.imaging import WindowSetting, pixel_readout, window_center_width
from viewer.state import COLORMAPS, MG_GROUP, ViewerState
from viewer.widgets.ai_panel import AiPanel
from viewer.widgets.magnifier import MagnifierWidget
from viewer.widgets.message_bar import MessageBar
from viewer.widgets.modality_panel import ModalityPanel
from viewer.widgets.view_grid import ViewGridWidget
from viewer.workers import Worker, WorkerPool

__all__ = ["ORGANIZATION", "APPLICATION", "MainWindow", "default_settings"]

logger = logging.getLogger(__name__)

ORGANIZATION = "mammo-viewer"
APPLICATION = "mammo-viewer"
_MAX_RECENT = 10


def default_settings() -> QSettings:
    """The user's settings store (organisation and application ``mammo-viewer``)."""
    return QSettings(ORGANIZATION, APPLICATION)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value]


def _as_bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)


class MainWindow(QMainWindow):
    """The reading workstation window.

    Args:
        settings: Where settings persist (tests pass an INI file in a temporary folder).
        state: An existing state (default: a new one).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        model: Model to use (default: the saved choice, else the first installed one).

    Signals:
        dicom_export_finished(bool, str): File > Export DICOM ended (success, one-line message).
    """

    dicom_export_finished = Signal(bool, str)

    def __init__(
        self,
        settings: QSettings | None = None,
        state: ViewerState | None = None,
        *,
        device: str = "auto",
        model: str | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings if settings is not None else default_settings()
        self.state = state if state is not None else ViewerState(self)
        self.controller = StudyController(self.state, self)
        self.last_path: str | None = None
        self.batch_dialog = None  # Tools > Batch score folder (viewer.dialogs.batch_dialog), made on first use
        self.results_browser = None  # Research > Open results (viewer.widgets.cases_browser)
        self.export_pool = WorkerPool(1, self)
        self.setWindowTitle("mammo-viewer")
        self.setAcceptDrops(True)
        self.resize(1600, 1000)

        central = QWidget(self)
        central.setObjectName("ReadingArea")
        vbox = QVBoxLayout(central)
        vbox.setContentsMargins(0, 0, 0, 0)
        vbox.setSpacing(0)
        self.message_bar = MessageBar(self.state, central)
        vbox.addWidget(self.message_bar)
        self.tabs = QTabWidget(central)
        self.grid = ViewGridWidget(self.state)
        self.tabs.addTab(self.grid, "Mammography")
        self.panels = {
            "cesm": ModalityPanel(self.state, "cesm"),
            "ultrasound": ModalityPanel(self.state, "ultrasound"),
            "extras": ModalityPanel(self.state, "extras"),
        }
        self._panel_titles = {"cesm": "CESM", "ultrasound": "Ultrasound", "extras": "Other images"}
        for kind, panel in self.panels.items():
            self.tabs.addTab(panel, self._panel_titles[kind])
        vbox.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self.magnifier = MagnifierWidget(self.state, self._locate, self.tabs)

        self.ai_panel = AiPanel(self.state)
        scroll = QScrollArea()
        scroll.setWidget(self.ai_panel)
        scroll.setWidgetResizable(True)
        self.ai_dock = QDockWidget("AI", self)
        self.ai_dock.setObjectName("AiDock")
        self.ai_dock.setWidget(scroll)
        self.ai_dock.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable
        )
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.ai_dock)
        self.resizeDocks([self.ai_dock], [370], Qt.Orientation.Horizontal)

        self.readout = QLabel("")
        self.window_label = QLabel("")
        self.busy = QProgressBar()
        self.busy.setMaximumWidth(120)
        self.busy.setMaximumHeight(12)
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)
        self.busy.hide()
        self.busy_label = QLabel("")
        sb = self.statusBar()
        sb.addWidget(self.readout, 1)
        sb.addPermanentWidget(self.window_label)
        sb.addPermanentWidget(self.busy_label)
        sb.addPermanentWidget(self.busy)

        self.action_groups: dict[str, list[QAction]] = {}
        self.actions_by_name: dict[str, QAction] = {}
        self._build_menus()

        s = self.state
        s.study_changed.connect(self._on_study_changed)
        s.loading_changed.connect(self._on_busy_changed)
        s.ai_status_changed.connect(self._on_busy_changed)
        s.cursor_changed.connect(self._on_cursor_changed)
        s.windows_changed.connect(self._on_cursor_changed)
        s.invert_changed.connect(self._on_invert_changed)
        s.tool_changed.connect(self._on_tool_changed)
        s.magnifier_changed.connect(lambda on: self.actions_by_name["magnifier"].setChecked(on))
        s.overlays_changed.connect(self._on_overlays_changed)
        self.controller.study_loaded.connect(self._on_study_loaded)

        self._restore_settings(model)
        self.state.set_device(device)
        self._on_study_changed()
        self._on_tool_changed(self.state.tool)

    # ------------------------------------------------------------------ actions
    def _action(
        self,
        menu: QMenu,
        group: str,
        name: str,
        text: str,
        keys: str | list[str] | QKeySequence.StandardKey | None,
        slot: Callable[..., Any],
        *,
        checkable: bool = False,
        tip: str = "",
    ) -> QAction:
        a = QAction(text, self)
        if isinstance(keys, QKeySequence.StandardKey):
            a.setShortcuts(keys)
        elif isinstance(keys, list):
            a.setShortcuts([QKeySequence(k) for k in keys])
        elif keys:
            a.setShortcut(QKeySequence(keys))
        a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        a.setCheckable(checkable)
        if tip:
            a.setStatusTip(tip)
        if checkable:
            a.toggled.connect(slot)
        else:
            a.triggered.connect(lambda _checked=False: slot())
        menu.addAction(a)
        self.addAction(a)
        self.action_groups.setdefault(group, []).append(a)
        self.actions_by_name[name] = a
        return a

    def _build_menus(self) -> None:
        mb = self.menuBar()
        s = self.state
        f = mb.addMenu("&File")
        self._action(f, "File", "open", "&Open Study...", "Ctrl+O", self.choose_study)
        self.recent_menu = f.addMenu("Open &Recent")
        self._action(f, "File", "next_study", "&Next Study in Folder", ["PgDown", "Ctrl+Right"], lambda: self.step_study(1))
        self._action(f, "File", "prev_study", "&Previous Study in Folder", ["PgUp", "Ctrl+Left"], lambda: self.step_study(-1))
        f.addSeparator()
        self._action(f, "File", "export_screenshot", "Export &Screenshot...", "Ctrl+E", self.choose_screenshot)
        self._action(f, "File", "export_report", "Export &Report (JSON)...", "Ctrl+Shift+E", self.choose_report)
        self._action(f, "File", "export_dicom", "Export &DICOM (SEG + SR)...", "Ctrl+Shift+D", self.choose_dicom_export)
        f.addSeparator()
        self._action(f, "File", "quit", "&Quit", "Ctrl+Q", self.close)

        v = mb.addMenu("&View")
        self._action(v, "View", "fit", "&Fit to View", "F", lambda: s.set_viewport(MG_GROUP, None))
        self._action(v, "View", "one_to_one", "&1:1 Pixels", "1", lambda: self.grid.views[self._focus_slot()].one_to_one())
        self._action(v, "View", "zoom_in", "Zoom &In", ["+", "="], lambda: self.grid.views[self._focus_slot()].zoom_by(1.25))
        self._action(v, "View", "zoom_out", "Zoom &Out", "-", lambda: self.grid.views[self._focus_slot()].zoom_by(0.8))
        v.addSeparator()
        self._action(v, "View", "invert", "&Invert", "I", s.set_invert, checkable=True)
        self._action(v, "View", "next_preset", "Next &Window Preset", "W", self.next_preset)
        self._action(v, "View", "reset", "&Reset Display", "R", s.reset_display)
        v.addSeparator()
        self._action(v, "View", "magnifier", "&Magnifier", "M", s.set_magnifier, checkable=True)
        v.addSeparator()
        self._action(v, "View", "tab_next", "Next &Tab (CESM / Ultrasound)", "Ctrl+Tab", self.next_tab)

        t = mb.addMenu("&Tools")
        tools = QActionGroup(self)
        tools.setExclusive(True)
        for name, text, key in (
            ("pan", "&Pan (left drag)", "P"),
            ("window", "&Window/Level (left drag)", "L"),
            ("ruler", "&Ruler (left drag)", "D"),
        ):
            act = self._action(t, "Tools", f"tool_{name}", text, key, lambda n=name: s.set_tool(n))
            act.setCheckable(True)
            tools.addAction(act)
        self._action(t, "Tools", "clear_rulers", "&Clear Rulers", "Esc", s.clear_measurements)
        t.addSeparator()
        self._action(t, "Tools", "batch", "&Batch Score Folder...", "Ctrl+Shift+B", self.show_batch_dialog)

        a = mb.addMenu("&AI")
        self._action(a, "AI", "heatmap", "Show &Heatmap", "H", s.set_heatmap_visible, checkable=True)
        self._action(a, "AI", "opacity_up", "Heatmap Opacity &+", "]", lambda: s.set_heatmap_opacity(s.heatmap_opacity + 0.1))
        self._action(a, "AI", "opacity_down", "Heatmap Opacity &-", "[", lambda: s.set_heatmap_opacity(s.heatmap_opacity - 0.1))
        self._action(a, "AI", "colormap", "Next &Colour Map", "K", self.next_colormap)
        self._action(a, "AI", "target", "Next Heatmap &Target", "T", self.next_target)
        self._action(a, "AI", "breast", "&Breast Outline", "B", s.set_show_breast_contours, checkable=True)
        self._action(a, "AI", "lesion", "Lesion &Contours", "C", s.set_show_lesion_contours, checkable=True)
        a.addSeparator()
        self._action(a, "AI", "next_model", "Next &Model", "Ctrl+M", self.next_model)
        self._action(a, "AI", "rescore", "&Re-score Study", "Ctrl+R", self.controller.score)

        r = mb.addMenu("&Research")
        self._action(r, "Research", "open_results", "Open &Results...", "Ctrl+Shift+O", self.choose_results)

        h = mb.addMenu("&Help")
        self._action(h, "Help", "shortcuts", "Keyboard &Shortcuts", ["F1", "?"], self.show_shortcuts)

    # ------------------------------------------------------------------ settings
    def _restore_settings(self, model: str | None) -> None:
        st = self.settings
        s = self.state
        try:
            s.set_heatmap_opacity(float(st.value("overlay/opacity", s.heatmap_opacity)))
        except (TypeError, ValueError):
            pass
        cmap = str(st.value("overlay/colormap", s.colormap))
        if cmap in COLORMAPS:
            s.set_colormap(cmap)
        s.set_heatmap_visible(_as_bool(st.value("overlay/heatmap"), s.heatmap_visible))
        s.set_show_breast_contours(_as_bool(st.value("overlay/breast"), s.show_breast_contours))
        s.set_show_lesion_contours(_as_bool(st.value("overlay/lesion"), s.show_lesion_contours))
        geom = st.value("window/geometry")
        if isinstance(geom, QByteArray) and not geom.isEmpty():
            self.restoreGeometry(geom)
        wstate = st.value("window/state")
        if isinstance(wstate, QByteArray) and not wstate.isEmpty():
            self.restoreState(wstate)
        s.set_models(installed_models())
        wanted = model or st.value("ai/model")
        if wanted and wanted in s.models:
            s.set_model(str(wanted))
        elif model and model not in s.models:
            s.add_message("warning", f"Model {model!r} is not installed; using {s.model_name or 'none'}.")
        self._on_overlays_changed()
        self._refresh_recent()

    def save_settings(self) -> None:
        """Write overlay settings, window geometry and the model choice."""
        st = self.settings
        s = self.state
        st.setValue("overlay/opacity", float(s.heatmap_opacity))
        st.setValue("overlay/colormap", s.colormap)
        st.setValue("overlay/heatmap", bool(s.heatmap_visible))
        st.setValue("overlay/breast", bool(s.show_breast_contours))
        st.setValue("overlay/lesion", bool(s.show_lesion_contours))
        st.setValue("window/geometry", self.saveGeometry())
        st.setValue("window/state", self.saveState())
        if s.model_name:
            st.setValue("ai/model", s.model_name)
        st.sync()

    @property
    def recent(self) -> list[str]:
        """Recently opened studies, newest first."""
        return _as_list(self.settings.value("files/recent"))

    def _remember(self, path: str) -> None:
        recent = [p for p in self.recent if p != path]
        recent.insert(0, path)
        self.settings.setValue("files/recent", recent[:_MAX_RECENT])
        self.settings.setValue("files/last_folder", str(Path(path).parent))
        self.settings.sync()
        self._refresh_recent()

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        for p in self.recent:
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _c=False, p=p: self.open_study(p))
        self.recent_menu.setEnabled(bool(self.recent))

    # ------------------------------------------------------------------ studies
    def open_study(self, path: str | Path) -> None:
        """Open a study folder (or file) in worker threads."""
        self.last_path = str(Path(path).expanduser().resolve())
        self.setWindowTitle(f"mammo-viewer - opening {Path(self.last_path).name}")
        self.controller.open_study(self.last_path)

    def choose_study(self) -> None:
        """File > Open Study: pick a folder."""
        start = str(self.settings.value("files/last_folder", str(Path.home())))
        path = QFileDialog.getExistingDirectory(self, "Open study folder", start)
        if path:
            self.open_study(path)

    def step_study(self, step: int) -> None:
        """Open the next (1) or previous (-1) study folder next to the current one."""
        if not self.last_path:
            return
        current = Path(self.last_path)
        siblings = sibling_studies(current)
        if not siblings:
            return
        names = [p.resolve() for p in siblings]
        if current in names:
            i = names.index(current) + step
        else:
            i = 0 if step > 0 else len(names) - 1
        if 0 <= i < len(names):
            self.open_study(names[i])
        else:
            self.statusBar().showMessage("No more studies in this folder", 3000)

    def _on_study_loaded(self, path: str) -> None:
        self._remember(path)

    def _on_study_changed(self) -> None:
        s = self.state
        study = s.study
        if study is not None:
            self.setWindowTitle(f"mammo-viewer - {study.study_id}")
        elif not s.loading:
            self.setWindowTitle("mammo-viewer")
        for kind, panel in self.panels.items():
            idx = self.tabs.indexOf(panel)
            n = panel.count
            self.tabs.setTabVisible(idx, n > 0)
            self.tabs.setTabText(idx, f"{self._panel_titles[kind]} ({n})")
        if study is None or not self.tabs.isTabVisible(self.tabs.currentIndex()):
            self.tabs.setCurrentIndex(0)
        self._on_cursor_changed()

    # ------------------------------------------------------------------ exports
    def grab_reading_area(self) -> QPixmap:
        """The reading area (the current tab with its overlays) as a pixmap."""
        self.grid.render_now()
        return self.tabs.currentWidget().grab()

    def export_screenshot(self, path: str | Path, *, whole_window: bool = False) -> Path:
        """Save a PNG of the reading area (or the whole window).

        Raises:
            OSError: The file could not be written.
        """
        self.grid.render_now()
        pix = self.grab() if whole_window else self.grab_reading_area()
        path = Path(path)
        if not pix.save(str(path), "PNG"):
            raise OSError(f"could not write {path.name}")
        return path

    def export_report(self, path: str | Path) -> Path:
        """Write the AI result as JSON (``engine.Result.to_json``).

        Raises:
            ValueError: There is no result.
        """
        r = self.state.result
        if r is None:
            raise ValueError("no AI result to export")
        r.to_json(path, indent=2)
        return Path(path)

    def _default_export_name(self, suffix: str) -> str:
        study = self.state.study
        folder = str(self.settings.value("files/export_folder", str(Path.home())))
        stem = study.study_id if study is not None else "mammo-viewer"
        return str(Path(folder) / f"{stem}{suffix}")

    def choose_screenshot(self) -> None:
        """File > Export Screenshot."""
        path, _ = QFileDialog.getSaveFileName(self, "Export screenshot", self._default_export_name(".png"), "PNG (*.png)")
        if path:
            try:
                self.export_screenshot(path)
                self.settings.setValue("files/export_folder", str(Path(path).parent))
                self.statusBar().showMessage(f"Saved {Path(path).name}", 3000)
            except OSError as err:
                self.state.add_message("error", f"Export failed: {err}")

    def choose_report(self) -> None:
        """File > Export Report (JSON)."""
        if self.state.result is None:
            self.state.add_message("warning", "No AI result to export yet.")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export report", self._default_export_name(".json"), "JSON (*.json)")
        if path:
            try:
                self.export_report(path)
                self.settings.setValue("files/export_folder", str(Path(path).parent))
                self.statusBar().showMessage(f"Saved {Path(path).name}", 3000)
            except (OSError, ValueError) as err:
                self.state.add_message("error", f"Export failed: {err}")

    def export_dicom(self, out_dir: str | Path | None) -> Worker | None:
        """File > Export DICOM: ``engine.dicom_export.export_study``, in a child process driven by a
        worker thread (``viewer.dicom_export_job``).

        Writes the DICOM Segmentations and the Comprehensive SR of the current study and result
        into ``out_dir``; ``dicom_export_finished`` says how it went (the engine's own message when
        it cannot, e.g. for a study of raster images). ``out_dir=None`` only asks the engine
        whether it can (into a temporary folder that is removed): how a raster study gets its
        explanation without a folder being chosen first.

        Returns:
            The worker, or None when there is no result to export (a message says so).
        """
        s = self.state
        if s.study is None or s.result is None:
            text = "No AI result to export yet."
            s.add_message("warning", text)
            self.dicom_export_finished.emit(False, text)
            return None
        from viewer.dicom_export_job import export_dicom_job

        target = None if out_dir is None else Path(out_dir)
        w = Worker(export_dicom_job, str(s.study.path), s.result, target, name="DICOM export")
        w.signals.result.connect(self._on_dicom_exported)
        w.signals.error.connect(self._on_dicom_export_error)
        action = self.actions_by_name["export_dicom"]
        action.setEnabled(False)  # one export at a time
        w.signals.finished.connect(lambda: action.setEnabled(True))
        self.statusBar().showMessage("Exporting DICOM...", 0)
        self.export_pool.start(w)
        return w

    def choose_dicom_export(self) -> None:
        """File > Export DICOM: pick a folder (the study's files go in a sub-folder named after it)."""
        s = self.state
        study = s.study
        if study is None or s.result is None:
            self.export_dicom(None)
            return
        views = [study.views[v] for v in engine.STANDARD_VIEWS if v in study.views]
        if any(img.sop_instance_uid is None for img in views):
            self.export_dicom(None)  # raster images: the engine says why not, nothing is written
            return
        start = str(self.settings.value("files/export_folder", str(Path.home())))
        path = QFileDialog.getExistingDirectory(self, "Export DICOM (SEG + SR) into folder", start)
        if path:
            self.settings.setValue("files/export_folder", path)
            self.export_dicom(Path(path) / study.study_id)

    def _on_dicom_exported(self, written: list) -> None:
        folder = Path(written[0]).parent if written else None
        text = f"Exported {len(written)} DICOM file(s) to {folder}" if folder else "Nothing was exported"
        self.statusBar().showMessage(text, 6000)
        self.dicom_export_finished.emit(True, text)

    def _on_dicom_export_error(self, exc: BaseException) -> None:
        if isinstance(exc, engine.MammoError):
            text = f"No DICOM export: {exc}"
        elif isinstance(exc, OSError):
            text = f"No DICOM export: cannot write {Path(exc.filename).name if exc.filename else 'the files'} ({exc.strerror or exc})"
        else:
            logger.error("unexpected error in the DICOM export", exc_info=exc)
            text = f"No DICOM export: unexpected {type(exc).__name__} (details in the log)"
        self.statusBar().clearMessage()
        self.state.add_message("error", text)
        self.dicom_export_finished.emit(False, text)

    # ------------------------------------------------------------------ batch and research
    def show_batch_dialog(self) -> None:
        """Tools > Batch score folder: show the (non-modal) batch dialog."""
        from viewer.dialogs.batch_dialog import BatchDialog

        s = self.state
        if self.batch_dialog is None:
            dlg = BatchDialog(s.models, s.model_name, s.device, settings=self.settings, parent=self)
            dlg.study_open_requested.connect(self._on_batch_study_open_requested)
            dlg.results_open_requested.connect(lambda csv, root: self.open_results(csv, root_hints=[root]))
            # the dialog may be hidden while the batch runs: say in the status bar how it ended
            dlg.runner.finished.connect(lambda _o: self.statusBar().showMessage(f"Batch: {dlg.runner.status}", 15000))
            self.batch_dialog = dlg
        else:
            self.batch_dialog.set_models(s.models, s.model_name)
        self.batch_dialog.show()
        self.batch_dialog.raise_()
        self.batch_dialog.activateWindow()

    def choose_results(self) -> None:
        """Research > Open results: pick a ``mammo-score`` CSV; ground truth and studies are guessed."""
        start = str(self.settings.value("research/last_folder", str(Path.home())))
        path, _ = QFileDialog.getOpenFileName(self, "Open results (mammo-score CSV)", start, "CSV (*.csv);;All files (*)")
        if path:
            self.open_results(path)

    def open_results(
        self,
        results: str | Path,
        truth: str | Path | None = None,
        studies_root: str | Path | None = None,
        *,
        root_hints: list[str | Path] | None = None,
    ) -> bool:
        """Show the results browser with a results file (and its ground truth).

        Returns:
            True when the file loaded (otherwise the browser says why).
        """
        from viewer.dialogs.batch_dialog import batch_input_for
        from viewer.widgets.cases_browser import CasesBrowserWidget

        if self.results_browser is None:
            self.results_browser = CasesBrowserWidget(settings=self.settings, parent=self)
            self.results_browser.state.study_open_requested.connect(self._on_case_open_requested)
        hints = [h for h in [*(root_hints or []), batch_input_for(self.settings, results)] if h]
        ok = self.results_browser.open_results(results, truth, studies_root, root_hints=hints)
        self.results_browser.show()
        self.results_browser.raise_()
        return ok

    def _on_case_open_requested(self, path: str, model: str) -> None:
        """A case double-clicked in the results browser: open it with the model that scored it."""
        s = self.state
        if model and model in s.models:
            if model != s.model_name:
                s.set_model(model)
        elif model:
            self.statusBar().showMessage(f"Model {model} is not installed; scoring with {s.model_name or 'none'}", 6000)
        self.open_study(path)

    def _on_batch_study_open_requested(self, path: str) -> None:
        self.open_study(path)
        self.raise_()
        self.activateWindow()

    # ------------------------------------------------------------------ toggles
    def _focus_slot(self) -> str:
        cur = self.state.cursor
        if cur is not None and cur[0] in self.grid.views:
            return cur[0]
        slots = self.state.slot_keys
        return slots[0] if slots else "R-CC"

    def next_preset(self) -> None:
        """Cycle the DICOM VOI presets (the images' own windows)."""
        s = self.state
        n = max((len(p.image.voi_presets) for p in s.images.values()), default=1)
        cur = max((w.preset_index for w in s.windows.values()), default=0)
        interactive = any(w.interactive for w in s.windows.values())
        s.apply_preset(cur if interactive else (cur + 1) % max(n, 1))

    def next_colormap(self) -> None:
        """Cycle the heatmap colour maps."""
        s = self.state
        s.set_colormap(COLORMAPS[(COLORMAPS.index(s.colormap) + 1) % len(COLORMAPS)])

    def next_target(self) -> None:
        """Cycle the Grad-CAM targets the model offers."""
        s = self.state
        if s.targets:
            i = s.targets.index(s.target) + 1 if s.target in s.targets else 0
            s.set_target(s.targets[i % len(s.targets)])

    def next_model(self) -> None:
        """Switch to the next installed model (re-scores)."""
        s = self.state
        if s.models:
            i = s.models.index(s.model_name) + 1 if s.model_name in s.models else 0
            s.set_model(s.models[i % len(s.models)])

    def next_tab(self) -> None:
        """Show the next visible tab."""
        n = self.tabs.count()
        for k in range(1, n + 1):
            i = (self.tabs.currentIndex() + k) % n
            if self.tabs.isTabVisible(i):
                self.tabs.setCurrentIndex(i)
                return

    def show_shortcuts(self) -> None:
        """Help > Shortcuts."""
        from viewer.dialogs.shortcuts import ShortcutsDialog

        dlg = ShortcutsDialog(self.action_groups, self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.open()
        self._shortcuts_dialog = dlg

    # ------------------------------------------------------------------ state -> widgets
    def _set_checked(self, name: str, on: bool) -> None:
        a = self.actions_by_name[name]
        if a.isChecked() != on:
            a.blockSignals(True)
            a.setChecked(on)
            a.blockSignals(False)

    def _on_overlays_changed(self) -> None:
        s = self.state
        self._set_checked("heatmap", s.heatmap_visible)
        self._set_checked("breast", s.show_breast_contours)
        self._set_checked("lesion", s.show_lesion_contours)

    def _on_invert_changed(self, on: bool) -> None:
        self._set_checked("invert", on)

    def _on_tool_changed(self, tool: str) -> None:
        for t in ("pan", "window", "ruler"):
            self._set_checked(f"tool_{t}", t == tool)
        self.statusBar().showMessage(f"Left drag: {tool.replace('window', 'window/level')}", 2000)

    def _on_busy_changed(self, *args) -> None:
        s = self.state
        if s.loading:
            self.busy.show()
            self.busy_label.setText(f"Opening {Path(s.loading_path or '').name}...")
        elif s.ai_status == "running":
            self.busy.show()
            self.busy_label.setText(s.ai_message)
        else:
            self.busy.hide()
            self.busy_label.setText(s.ai_message if s.ai_status in ("no_model", "error") else "")

    def _on_cursor_changed(self) -> None:
        s = self.state
        cur = s.cursor
        key = cur[0] if cur is not None else (s.slot_keys[0] if s.slot_keys else None)
        text = ""
        if cur is not None and cur[0] in s.images:
            text = pixel_readout(s.images[cur[0]], cur[1], cur[2]) or ""
        self.readout.setText(text)
        if key is not None and key in s.images:
            c, w = window_center_width(s.images[key].image, s.windows.get(key, WindowSetting()))
            self.window_label.setText(f"{key}  C {c:.0f}  W {w:.0f}{'  inverted' if s.invert else ''}")
        else:
            self.window_label.setText("")

    def _locate(self, key: str, x: float, y: float) -> QPoint | None:
        view = self.grid.views.get(key)
        if view is None:
            for panel in self.panels.values():
                view = panel.views.get(key)
                if view is not None:
                    break
        if view is None or not view.isVisible():
            return None
        scene = view.vb.mapViewToScene(QPointF(x, y))
        local = view.mapFromScene(scene)
        return view.mapTo(self.tabs, local)

    # ------------------------------------------------------------------ Qt events
    def dragEnterEvent(self, ev: QDragEnterEvent) -> None:  # noqa: N802
        urls = ev.mimeData().urls() if ev.mimeData().hasUrls() else []
        if any(u.isLocalFile() for u in urls):
            ev.acceptProposedAction()
        else:
            ev.ignore()

    def dropEvent(self, ev: QDropEvent) -> None:  # noqa: N802
        for url in ev.mimeData().urls():
            if isinstance(url, QUrl) and url.isLocalFile():
                self.open_study(url.toLocalFile())
                ev.acceptProposedAction()
                return
        ev.ignore()

    def closeEvent(self, ev: QCloseEvent) -> None:  # noqa: N802
        try:
            self.save_settings()
        finally:
            if self.batch_dialog is not None:
                self.batch_dialog.shutdown()
            self.export_pool.cancel_all()
            self.export_pool.wait()
            self.controller.shutdown()
        super().closeEvent(ev)
