"""``mammo-viewer``: the reading workstation's entry point, and its screenshot mode.

::

    mammo-viewer [STUDY_PATH] [--demo] [--model NAME] [--device auto|cpu|cuda]
                 [--screenshot PNG] [--quit-after-screenshot]

``--screenshot`` saves a PNG of the main window once the AI result is shown (or once the study is
loaded when no model is installed, or when loading/scoring failed, so the message is in the
picture); it works with ``QT_QPA_PLATFORM=offscreen``. ``--demo`` opens the bundled demo study
(``resources/samples/demo/<study_id>/``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

__all__ = ["main", "demo_study_path", "build_parser", "ScreenshotOnReady"]

logger = logging.getLogger(__name__)

#: The repository's resources folder (next to the ``viewer`` package).
RESOURCES = Path(__file__).resolve().parents[1] / "resources"


def demo_study_path(resources: Path = RESOURCES) -> Path | None:
    """The bundled demo study folder, or None when it is not installed.

    ``resources/samples/demo/`` holds one study folder (named in its ``README.md``) next to the
    phantom's ``masks/`` and CSV files; the first sub-folder in name order that holds DICOM files
    (``*.dcm``) and is not ``masks`` is the study.
    """
    demo = resources / "samples" / "demo"
    if not demo.is_dir():
        return None
    for sub in sorted(p for p in demo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if sub.name != "masks" and any(sub.glob("*.dcm")):
            return sub
    return None


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (SPEC section 3)."""
    p = argparse.ArgumentParser(
        prog="mammo-viewer",
        description="Breast imaging reading workstation with AI overlays.",
    )
    p.add_argument("study", nargs="?", help="study folder (or a single image file) to open")
    p.add_argument("--demo", action="store_true", help="open the bundled demo study")
    p.add_argument("--model", default=None, help="bundled model to use (default: the saved choice or the first)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs")
    p.add_argument("--screenshot", metavar="PNG", default=None, help="save a PNG of the window once the AI result is shown")
    p.add_argument("--quit-after-screenshot", action="store_true", help="exit after saving --screenshot")
    p.add_argument("--size", default=None, metavar="WxH", help="window size, e.g. 1600x1000")
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    return p


class ScreenshotOnReady:
    """Saves the window once the study is on screen and the AI is done (or not available).

    Args:
        window: The main window.
        path: PNG to write.
        quit_after: Quit the application after saving.
    """

    def __init__(self, window, path: str | Path, quit_after: bool) -> None:
        from PySide6.QtCore import QTimer

        self.window = window
        self.path = Path(path)
        self.quit_after = quit_after
        self.saved = False
        self.error: str | None = None
        self._timer = QTimer(window)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)  # let the last overlays paint
        self._timer.timeout.connect(self._save)
        window.controller.ai_finished.connect(self._timer.start)
        window.controller.load_failed.connect(lambda _msg: self._timer.start())

    def _save(self) -> None:
        from PySide6.QtWidgets import QApplication

        try:
            self.window.export_screenshot(self.path, whole_window=True)
            self.saved = True
            logger.info("screenshot saved to %s", self.path)
        except OSError as err:
            self.error = str(err)
            logger.error("screenshot failed: %s", err)
        if self.quit_after:
            self.window.close()
            QApplication.instance().exit(0 if self.saved else 1)


def main(argv: list[str] | None = None) -> int:
    """Run the viewer; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.quit_after_screenshot and not args.screenshot:
        parser.error("--quit-after-screenshot needs --screenshot")
    study: str | None = args.study
    if args.demo:
        demo = demo_study_path()
        if demo is None:
            parser.exit(2, "mammo-viewer: the demo study is not installed (resources/samples/demo)\n")
        study = str(demo)
    if study is not None and not Path(study).exists():
        parser.exit(2, f"mammo-viewer: {study}: no such file or folder\n")

    import pyqtgraph as pg
    from PySide6.QtWidgets import QApplication

    from viewer.main_window import APPLICATION, ORGANIZATION, MainWindow

    pg.setConfigOptions(imageAxisOrder="row-major")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setStyle("Fusion")
    _dark_palette(app)
    size = (1600, 1000) if args.screenshot else None  # a reproducible picture, whatever was saved
    if args.size:
        try:
            size = tuple(int(v) for v in args.size.lower().split("x"))  # type: ignore[assignment]
            if len(size) != 2:
                raise ValueError
        except ValueError:
            parser.exit(2, f"mammo-viewer: bad --size {args.size!r} (use WxH)\n")
    window = MainWindow(device=args.device, model=args.model)
    if size is not None:
        window.resize(*size)
    shot = ScreenshotOnReady(window, args.screenshot, args.quit_after_screenshot) if args.screenshot else None
    window.show()
    if study is not None:
        window.open_study(study)
    elif shot is not None:
        from PySide6.QtCore import QTimer

        QTimer.singleShot(200, shot._save)
    code = app.exec()
    if shot is not None and not shot.saved:
        return 1
    return int(code)


def _dark_palette(app) -> None:
    """A dark palette: mammograms are read in a dim room on a dark surround."""
    from PySide6.QtGui import QColor, QPalette

    pal = QPalette()
    base, text = QColor(37, 37, 38), QColor(230, 230, 230)
    pal.setColor(QPalette.ColorRole.Window, QColor(45, 45, 48))
    pal.setColor(QPalette.ColorRole.WindowText, text)
    pal.setColor(QPalette.ColorRole.Base, base)
    pal.setColor(QPalette.ColorRole.AlternateBase, QColor(50, 50, 52))
    pal.setColor(QPalette.ColorRole.Text, text)
    pal.setColor(QPalette.ColorRole.Button, QColor(55, 55, 58))
    pal.setColor(QPalette.ColorRole.ButtonText, text)
    pal.setColor(QPalette.ColorRole.ToolTipBase, base)
    pal.setColor(QPalette.ColorRole.ToolTipText, text)
    pal.setColor(QPalette.ColorRole.Highlight, QColor(0, 120, 215))
    pal.setColor(QPalette.ColorRole.HighlightedText, QColor(255, 255, 255))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor(130, 130, 130))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor(130, 130, 130))
    app.setPalette(pal)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
