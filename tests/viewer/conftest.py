"""Viewer fixtures: a window factory that cleans up after itself, studies, and tiny models.

``make_window`` follows napari's ``make_napari_viewer``: it records the top-level widgets before
the test, builds windows with their settings in ``tmp_path``, and afterwards closes them (which
cancels and joins their worker threads), deletes them, and fails the test if a top-level widget
was leaked. Every test sees ``MAMMO_MODELS_DIR`` pointing at a folder it controls, so models
bundled in ``resources/models`` never change what a test sees.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from study_factory import write_study  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small four-view models (ResNet-18, 64 px input) with trained-looking cards."""
    import torch

    from engine.models.registry import create_model, get_preset
    from engine.weights import save_model

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    for name, classes in (("tiny-a", (1, 2, 3, 4, 5)), ("tiny-b", (1, 3, 5))):
        cfg = get_preset("resnet18-shared", in_size=64, birads_classes=classes)
        model = create_model(cfg, pretrained=False)
        card = {
            "name": name,
            "version": "0.1.0",
            "description": "test model",
            "training": {"config": {"test": True}, "command": "pytest fixture"},
        }
        save_model(model, card, root / name)
    return root


@pytest.fixture
def models_dir(tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the viewer at the two tiny models."""
    monkeypatch.setenv("MAMMO_MODELS_DIR", str(tiny_models_dir))
    return tiny_models_dir


@pytest.fixture
def no_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the viewer at an empty models folder (no AI installed)."""
    empty = tmp_path / "no-models"
    empty.mkdir()
    monkeypatch.setenv("MAMMO_MODELS_DIR", str(empty))
    return empty


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    """A four-view study in shuffled file order; R-MLO is stored mirrored."""
    return write_study(tmp_path / "studies" / "case-001", mirrored_views=("R-MLO",))


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    """Where the window's QSettings go for this test."""
    return tmp_path / "settings" / "mammo-viewer.ini"


@pytest.fixture
def make_window(qtbot, qapp, settings_file: Path):
    """Factory of MainWindows; closes them, joins their threads and checks for leaked widgets."""
    from PySide6.QtCore import QCoreApplication, QEvent, QSettings
    from PySide6.QtWidgets import QApplication

    from viewer.main_window import MainWindow

    before = set(QApplication.topLevelWidgets())
    windows: list[MainWindow] = []

    def factory(*, show: bool = True, size: tuple[int, int] = (1280, 860), **kwargs) -> MainWindow:
        settings = QSettings(str(settings_file), QSettings.Format.IniFormat)
        kwargs.setdefault("device", "cpu")
        w = MainWindow(settings=settings, **kwargs)
        w.resize(*size)
        windows.append(w)
        if show:
            with qtbot.waitActive(w):
                w.show()
        return w

    yield factory

    for w in windows:
        w.close()
        assert not w.controller.busy, "worker threads still running after close"
        w.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    QCoreApplication.processEvents()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    leaked = [w for w in QApplication.topLevelWidgets() if w not in before]
    assert not leaked, f"leaked top-level widgets: {[type(w).__name__ for w in leaked]}"
