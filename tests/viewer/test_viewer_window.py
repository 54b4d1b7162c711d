"""The reading window without AI: hanging, tools, bad input, files, settings (pytest-qt, offscreen)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QImage, QWheelEvent
from PySide6.QtWidgets import QApplication

from study_factory import SLOT_FILES, write_cesm_us, write_study
from viewer.state import MG_GROUP, Measurement

SLOTS = ("R-CC", "L-CC", "R-MLO", "L-MLO")


def open_and_wait(qtbot, window, path: Path) -> None:
    with qtbot.waitSignal(window.controller.study_loaded, timeout=20000):
        window.open_study(path)
    window.grid.render_now()


def grab_gray(widget) -> np.ndarray:
    """The widget as painted, ``(h, w)`` float grey levels."""
    img = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    w, h = img.width(), img.height()
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(h, img.bytesPerLine())[:, : 3 * w].reshape(h, w, 3)
    return arr.astype(np.float64).mean(axis=2)


def widget_point(view, x: float, y: float) -> QPoint:
    """Display coordinates of an image -> the view widget's pixel."""
    return view.mapFromScene(view.vb.mapViewToScene(QPointF(x, y)))


def test_slots_hold_the_right_views(make_window, no_models, study_dir, qtbot):
    w = make_window()
    with qtbot.waitSignal(w.controller.ai_finished, timeout=20000):
        w.open_study(study_dir)
    for key in SLOTS:
        view = w.grid.views[key]
        p = view.prepared
        assert p is not None
        assert (p.image.laterality, p.image.view) == tuple(key.split("-"))
        assert p.image.relpath == SLOT_FILES[key]  # files are named out of slot order
    pos = {k: w.grid.layout().getItemPosition(w.grid.layout().indexOf(v))[:2] for k, v in w.grid.views.items()}
    assert pos == {"R-CC": (0, 0), "L-CC": (0, 1), "R-MLO": (1, 0), "L-MLO": (1, 1)}
    assert w.state.ai_status == "no_model"
    assert "No AI model installed" in w.ai_panel.status.text()


def test_chest_walls_face_each_other(make_window, no_models, study_dir, qtbot):
    """Tissue touches the centre line: the right edge of the R views, the left edge of the L views
    (R-MLO is stored mirrored in this study and must be flipped back)."""
    w = make_window()
    open_and_wait(qtbot, w, study_dir)
    for key in SLOTS:
        g = grab_gray(w.grid.views[key])
        h, wd = g.shape
        band = g[int(0.3 * h) : int(0.7 * h)]  # rows clear of the corner badges
        cols = np.where((band > 40).mean(axis=0) > 0.5)[0]
        assert cols.size > 0.2 * wd
        if key.startswith("R"):
            assert cols.max() >= wd - 3, key  # chest wall on the centre line
            assert cols.min() > 0.2 * wd, key  # nipple side toward the outside
        else:
            assert cols.min() <= 2, key
            assert cols.max() < 0.8 * wd, key


def test_missing_view_is_an_explicit_empty_slot(make_window, no_models, tmp_path, qtbot):
    study = write_study(tmp_path / "three", views=("R-CC", "L-CC", "R-MLO"))
    w = make_window()
    open_and_wait(qtbot, w, study)
    view = w.grid.views["L-MLO"]
    assert view.prepared is None
    assert view.empty_label.isVisible() and view.empty_label.text() == "L-MLO missing"
    assert not w.grid.views["L-CC"].empty_label.isVisible()


def test_window_level_and_invert_change_pixels(make_window, no_models, study_dir, qtbot):
    w = make_window()
    open_and_wait(qtbot, w, study_dir)
    view = w.grid.views["R-CC"]
    p = view.prepared
    rows, cols = p.shape
    c = widget_point(view, cols * 0.8, rows * 0.5)
    patch = (slice(c.y() - 5, c.y() + 5), slice(c.x() - 5, c.x() + 5))
    before = grab_gray(view)[patch].mean()
    # a right-button drag downwards raises the window centre: the breast gets darker
    vp = view.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.RightButton, pos=c)
    for dy in (10, 30, 60):
        qtbot.mouseMove(vp, QPoint(c.x(), c.y() + dy))
    qtbot.mouseRelease(vp, Qt.MouseButton.RightButton, pos=QPoint(c.x(), c.y() + 60))
    assert w.state.windows["R-CC"].interactive and w.state.windows["L-MLO"].interactive
    w.grid.render_now()
    darker = grab_gray(view)[patch].mean()
    assert darker < before - 10
    qtbot.keyClick(w, Qt.Key.Key_I)
    assert w.state.invert
    w.grid.render_now()
    inverted = grab_gray(view)[patch].mean()
    assert inverted == pytest.approx(255 - darker, abs=3.0)  # screen pixels, bilinear scaling
    arr = view.image_item.image
    qtbot.keyClick(w, Qt.Key.Key_I)
    w.grid.render_now()
    np.testing.assert_array_equal(view.image_item.image, 255 - arr)  # the rendered image exactly
    qtbot.keyClick(w, Qt.Key.Key_R)  # reset
    w.grid.render_now()
    assert not w.state.invert and grab_gray(view)[patch].mean() == pytest.approx(before, abs=0.5)
    qtbot.keyClick(w, Qt.Key.Key_W)  # the file's second VOI preset (2600 / 1400: narrower, higher)
    w.grid.render_now()
    assert all(s.preset_index == 1 and not s.interactive for s in w.state.windows.values())
    assert grab_gray(view)[patch].mean() < before - 10
    assert "C 2600  W 1400" in w.window_label.text()


def _wheel(view, pos: QPoint, notches: int) -> None:
    vp = view.viewport()
    ev = QWheelEvent(
        QPointF(pos),
        QPointF(vp.mapToGlobal(pos)),
        QPoint(0, 0),
        QPoint(0, 120 * notches),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(vp, ev)


def _x_ranges(w):
    out = {}
    for key in SLOTS:
        v = w.grid.views[key]
        (x0, x1), (y0, y1) = v.vb.viewRange()
        out[key] = (x0, x1, y0, y1, v.prepared.shape[1])
    return out


def test_synchronised_zoom_and_pan_are_mirrored(make_window, no_models, study_dir, qtbot):
    w = make_window()
    open_and_wait(qtbot, w, study_dir)
    rcc = w.grid.views["R-CC"]
    rows, cols = rcc.prepared.shape
    fit_scale = rcc.current_viewport().scale
    anchor = widget_point(rcc, cols * 0.7, rows * 0.4)
    _wheel(rcc, anchor, 3)
    vp = w.state.viewport(MG_GROUP)
    assert vp is not None and vp.scale == pytest.approx(fit_scale * 1.25**3)
    # the point under the mouse stays under the mouse
    moved = widget_point(rcc, cols * 0.7, rows * 0.4)
    assert abs(moved.x() - anchor.x()) <= 1 and abs(moved.y() - anchor.y()) <= 1
    r = _x_ranges(w)
    for right, left in (("R-CC", "L-CC"), ("R-MLO", "L-MLO")):
        rx0, rx1, ry0, ry1, rc = r[right]
        lx0, lx1, ly0, ly1, lc = r[left]
        assert (rc - rx1, rc - rx0) == (pytest.approx(lx0, abs=1e-6), pytest.approx(lx1, abs=1e-6))
        assert (ry0, ry1) == (pytest.approx(ly0), pytest.approx(ly1))
    # pan the right view's content toward the centre line (its chest wall): the left view's
    # content moves toward its chest wall too, i.e. the mirror image
    before = r
    center = widget_point(rcc, cols * 0.6, rows * 0.5)
    vpw = rcc.viewport()
    qtbot.mousePress(vpw, Qt.MouseButton.LeftButton, pos=center)
    for dx in (10, 25, 40):
        qtbot.mouseMove(vpw, QPoint(center.x() + dx, center.y()))
    qtbot.mouseRelease(vpw, Qt.MouseButton.LeftButton, pos=QPoint(center.x() + 40, center.y()))
    after = _x_ranges(w)
    assert after["R-CC"][0] < before["R-CC"][0] - 1  # R content moved right: range moved left
    assert after["L-CC"][0] > before["L-CC"][0] + 1  # L content moved left: range moved right
    assert after["R-CC"][4] - after["R-CC"][1] == pytest.approx(after["L-CC"][0], abs=1e-6)
    qtbot.keyClick(w, Qt.Key.Key_F)  # fit again
    assert w.state.viewport(MG_GROUP) is None
    (x0, x1), _ = rcc.vb.viewRange()
    assert x1 == pytest.approx(cols)  # fitted with the chest wall on the centre line


def test_one_to_one_and_fit(make_window, no_models, study_dir, qtbot):
    w = make_window()
    open_and_wait(qtbot, w, study_dir)
    view = w.grid.views["L-CC"]
    qtbot.keyClick(w, Qt.Key.Key_1)
    (x0, x1), _ = view.vb.viewRange()
    assert (x1 - x0) == pytest.approx(view.vb.boundingRect().width() * view.devicePixelRatioF(), rel=1e-6)


def test_ruler_in_mm_and_uncalibrated(make_window, no_models, tmp_path, qtbot):
    w = make_window()
    open_and_wait(qtbot, w, write_study(tmp_path / "cal", spacing_mm=0.1))
    view = w.grid.views["L-CC"]
    w.state.add_measurement(Measurement("L-CC", 10, 10, 40, 50))
    texts = [it.textItem.toPlainText() for it in view._ruler_items if hasattr(it, "textItem")]
    assert texts == ["5.0 mm"]
    open_and_wait(qtbot, w, write_study(tmp_path / "uncal", spacing_mm=None))
    w.state.add_measurement(Measurement("L-CC", 10, 10, 40, 50))
    view = w.grid.views["L-CC"]
    texts = [it.textItem.toPlainText() for it in view._ruler_items if hasattr(it, "textItem")]
    assert texts == ["50 px (uncalibrated)"]


def test_broken_study_shows_a_message(make_window, no_models, tmp_path, qtbot):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.dcm").write_bytes(b"DICM" + b"\x00" * 50)
    w = make_window()
    with qtbot.waitSignal(w.controller.load_failed, timeout=20000) as blocker:
        w.open_study(bad)
    assert "bad" in blocker.args[0]
    assert w.message_bar.isVisible() and w.message_bar.text.startswith("Could not open bad:")
    assert w.state.study is None
    # a study with one unreadable file keeps what could be loaded on screen
    good = write_study(tmp_path / "partial")
    (good / "zz_truncated.dcm").write_bytes((good / SLOT_FILES["L-CC"]).read_bytes()[:2000])
    open_and_wait(qtbot, w, good)
    assert all(w.grid.views[k].prepared is not None for k in SLOTS)
    assert "zz_truncated.dcm" in w.message_bar.text and w.message_bar.isVisible()
    empty = tmp_path / "empty"
    empty.mkdir()
    with qtbot.waitSignal(w.controller.load_failed, timeout=20000):
        w.open_study(empty)
    assert "Could not open empty" in w.message_bar.text
    with qtbot.waitSignal(w.controller.load_failed, timeout=20000):
        w.open_study(tmp_path / "does-not-exist")
    assert w.message_bar.text.startswith("Could not open does-not-exist:")
    assert "Traceback" not in w.message_bar.text


def test_cesm_and_ultrasound_panels(make_window, no_models, study_dir, qtbot):
    write_cesm_us(study_dir)
    w = make_window()
    open_and_wait(qtbot, w, study_dir)
    cesm = w.panels["cesm"]
    assert w.tabs.isTabVisible(w.tabs.indexOf(cesm)) and cesm.count == 2
    lay = cesm.layout()
    le = lay.getItemPosition(lay.indexOf(cesm.views["cesm_low_energy.dcm"]))[:2]
    rc = lay.getItemPosition(lay.indexOf(cesm.views["cesm_recombined.dcm"]))[:2]
    assert le == (0, 0) and rc == (0, 1)  # low energy and recombined side by side
    assert w.panels["ultrasound"].count == 1
    assert not w.tabs.isTabVisible(w.tabs.indexOf(w.panels["extras"]))


def test_files_recent_next_previous_and_drop(make_window, no_models, tmp_path, qtbot):
    root = tmp_path / "batch"
    a = write_study(root / "case-a")
    b = write_study(root / "case-b", views=("L-CC", "L-MLO"))
    w = make_window()
    open_and_wait(qtbot, w, a)
    with qtbot.waitSignal(w.controller.study_loaded, timeout=20000):
        qtbot.keyClick(w, Qt.Key.Key_PageDown)
    assert w.state.study.study_id == "case-b"
    with qtbot.waitSignal(w.controller.study_loaded, timeout=20000):
        qtbot.keyClick(w, Qt.Key.Key_PageUp)
    assert w.state.study.study_id == "case-a"
    assert w.recent[:2] == [str(a.resolve()), str(b.resolve())]
    assert w.settings.value("files/last_folder") == str(root.resolve())
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(b))])
    drop = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(w.controller.study_loaded, timeout=20000):
        w.dropEvent(drop)
    assert w.state.study.study_id == "case-b"


def test_settings_persist(make_window, no_models, qtbot):
    w = make_window()
    w.state.set_heatmap_opacity(0.8)
    w.state.set_colormap("inferno")
    w.state.set_show_breast_contours(False)
    w.resize(1111, 777)
    w.close()
    w2 = make_window(show=False)
    assert w2.state.heatmap_opacity == pytest.approx(0.8)
    assert w2.state.colormap == "inferno" and not w2.state.show_breast_contours
    assert w2.ai_panel.opacity.value() == 80 and w2.ai_panel.colormap.currentText() == "inferno"


def test_every_tool_and_toggle_has_a_shortcut(make_window, no_models, qtbot):
    w = make_window()
    missing = [a.text() for group in w.action_groups.values() for a in group if not a.shortcuts()]
    assert missing == []
    w.show_shortcuts()
    dlg = w._shortcuts_dialog
    assert dlg.table.rowCount() == sum(len(g) for g in w.action_groups.values())
    dlg.close()
    with qtbot.waitActive(w):
        w.activateWindow()
    qtbot.keyClick(w, Qt.Key.Key_D)
    assert w.state.tool == "ruler"
    qtbot.keyClick(w, Qt.Key.Key_M)
    assert w.state.magnifier
    qtbot.keyClick(w, Qt.Key.Key_H)
    assert not w.state.heatmap_visible
    qtbot.keyClick(w, Qt.Key.Key_D)  # the checked tool stays checked
    assert w.state.tool == "ruler" and w.actions_by_name["tool_ruler"].isChecked()
    qtbot.keyClick(w, Qt.Key.Key_P)
    assert w.state.tool == "pan" and not w.actions_by_name["tool_ruler"].isChecked()


def test_magnifier_and_readout_follow_the_cursor(make_window, no_models, study_dir, qtbot):
    w = make_window()
    open_and_wait(qtbot, w, study_dir)
    w.state.set_magnifier(True)
    view = w.grid.views["L-CC"]
    rows, cols = view.prepared.shape
    w.state.set_cursor(("L-CC", cols * 0.3, rows * 0.5))
    assert w.magnifier.isVisible() and not w.magnifier.pixmap().isNull()
    assert w.readout.text().startswith(f"L-CC  x {int(cols * 0.3)}  y {int(rows * 0.5)}  stored ")
    w.state.set_cursor(None)
    assert not w.magnifier.isVisible()


def test_export_screenshot(make_window, no_models, study_dir, qtbot, tmp_path):
    w = make_window()
    open_and_wait(qtbot, w, study_dir)
    out = w.export_screenshot(tmp_path / "shot.png")
    img = QImage(str(out))
    assert img.width() == w.tabs.currentWidget().width() and img.height() > 100
    with pytest.raises(ValueError):
        w.export_report(tmp_path / "r.json")  # no AI result


def test_corner_labels_do_not_cover_tissue(make_window, no_models, study_dir, qtbot):
    w = make_window()
    open_and_wait(qtbot, w, study_dir)
    for key in SLOTS:
        view = w.grid.views[key]
        p = view.prepared
        badge = view.badge.geometry()
        # the badge's corners in image (display) coordinates
        tl = view.vb.mapSceneToView(view.mapToScene(badge.topLeft()))
        br = view.vb.mapSceneToView(view.mapToScene(badge.bottomRight()))
        rows, cols = p.shape
        sy, sx = p.tissue.shape[0] / rows, p.tissue.shape[1] / cols
        r0, r1 = sorted((int(tl.y() * sy), int(br.y() * sy) + 1))
        c0, c1 = sorted((int(tl.x() * sx), int(br.x() * sx) + 1))
        under = p.tissue[max(0, r0) : max(0, r1), max(0, c0) : max(0, c1)]
        assert under.size == 0 or under.mean() < 0.01, key
        # and it sits on the outer side, away from the centre line
        assert view.badge_corner.endswith("left" if key.startswith("R") else "right"), key


def test_demo_study_opens_in_the_hanging(make_window, no_models, qtbot):
    from viewer.app import demo_study_path

    demo = demo_study_path()
    if demo is None:
        pytest.skip("the demo study is not installed (resources/samples/demo)")
    w = make_window()
    open_and_wait(qtbot, w, demo)
    for key in SLOTS:
        p = w.grid.views[key].prepared
        assert p is not None and (p.image.laterality, p.image.view) == tuple(key.split("-"))
        g = grab_gray(w.grid.views[key])
        h, wd = g.shape
        cols = np.where((g[int(0.3 * h) : int(0.7 * h)] > 20).mean(axis=0) > 0.5)[0]
        assert (cols.max() >= wd - 3) if key.startswith("R") else (cols.min() <= 2), key
