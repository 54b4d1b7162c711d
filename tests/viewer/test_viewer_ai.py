"""The AI side of the window, with two tiny models written by the fixtures (pytest-qt, offscreen)."""

from __future__ import annotations

import json
import shutil
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPointF, QTimer
from PySide6.QtGui import QImage

import engine
from study_factory import write_study
from viewer.app import ScreenshotOnReady
from viewer.overlays import attention_percentages, format_probability

SLOTS = ("R-CC", "L-CC", "R-MLO", "L-MLO")
REPO = Path(__file__).resolve().parents[2]


def open_and_score(qtbot, window, path: Path) -> None:
    with qtbot.waitSignal(window.controller.ai_finished, timeout=120000):
        window.open_study(path)
    assert window.state.ai_status == "done", window.state.ai_message
    window.grid.render_now()


def grab_rgb(widget) -> np.ndarray:
    img = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    w, h = img.width(), img.height()
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(h, img.bytesPerLine())[:, : 3 * w]
    return arr.reshape(h, w, 3).astype(np.int32)


def widget_xy(view, x: float, y: float) -> tuple[int, int]:
    p = view.mapFromScene(view.vb.mapViewToScene(QPointF(x, y)))
    return p.x(), p.y()


def test_scores_bars_and_attention_badges(make_window, models_dir, study_dir, qtbot):
    w = make_window()
    open_and_score(qtbot, w, study_dir)
    r = w.state.result
    assert r.model == "tiny-a" and w.state.model_name == "tiny-a"
    for side in ("R", "L"):
        card = w.ai_panel.cards[side]
        assert card.malignancy.text() == format_probability(r.sides[side].p_malignant)
        assert [b.objectName() for b in card.shown_bars] == [f"BI-RADS {k}" for k in (1, 2, 3, 4, 5)]
        assert [b.value() for b in card.shown_bars] == [round(1000 * p) for p in r.sides[side].p_birads.values()]
    badges = {k: w.grid.views[k].badge.percent for k in SLOTS}
    assert sum(badges.values()) == 100
    assert badges == attention_percentages(r.attention, list(SLOTS))
    panel = w.ai_panel.attention_texts()
    assert sum(int(panel[k].split()[0]) for k in SLOTS) == 100
    assert "tiny-a" in w.ai_panel.model_info.text() and "CPU" in w.ai_panel.model_info.text()


def test_removed_view_shows_zero_attention(make_window, models_dir, tmp_path, qtbot):
    w = make_window()
    open_and_score(qtbot, w, write_study(tmp_path / "three", views=("R-CC", "L-CC", "R-MLO")))
    badges = {k: w.grid.views[k].badge.percent for k in SLOTS}
    assert badges["L-MLO"] == 0 and w.state.result.attention["L-MLO"] == 0.0
    assert sum(badges.values()) == 100 and min(badges[k] for k in ("R-CC", "L-CC", "R-MLO")) > 0
    assert w.ai_panel.attention_texts()["L-MLO"] == "0 %  (missing)"
    assert w.grid.views["L-MLO"].empty_label.text() == "L-MLO missing"


def test_heatmap_overlay_where_the_map_is_high_and_toggles_hide(make_window, models_dir, study_dir, qtbot):
    w = make_window()
    open_and_score(qtbot, w, study_dir)
    s = w.state
    maps = s.heatmap_maps
    assert set(maps) == set(SLOTS)
    key = max(maps, key=lambda k: float(maps[k].max()))
    view = w.grid.views[key]
    m = maps[key]
    rows, cols = view.prepared.shape
    mh, mw = m.shape
    iy, ix = np.unravel_index(np.argmax(m), m.shape)
    ly, lx = np.unravel_index(np.argmin(m), m.shape)
    assert m[iy, ix] > 0.9 and m[ly, lx] < 0.1
    hi = widget_xy(view, (ix + 0.5) * cols / mw, (iy + 0.5) * rows / mh)
    lo = widget_xy(view, (lx + 0.5) * cols / mw, (ly + 0.5) * rows / mh)
    s.set_heatmap_opacity(0.6)
    on = grab_rgb(view)
    s.set_heatmap_visible(False)
    off = grab_rgb(view)

    def patch(a, xy):
        x, y = xy
        return a[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).mean(axis=0)

    assert np.abs(patch(on, hi) - patch(off, hi)).sum() > 60  # coloured where the map is high
    assert np.abs(patch(on, lo) - patch(off, lo)).sum() < 3  # untouched where it is ~0
    s.set_heatmap_visible(True)
    s.set_heatmap_opacity(0.0)
    assert np.abs(grab_rgb(view) - off).max() == 0  # opacity 0 = no overlay


def test_contours_drawn_where_given_and_toggles_hide(make_window, no_models, study_dir, qtbot):
    """Lesion contours of a result (segmentation models give them) and the breast outline."""
    from engine.result import Result, SideResult

    w = make_window()
    with qtbot.waitSignal(w.controller.ai_finished, timeout=20000):
        w.open_study(study_dir)
    view = w.grid.views["R-MLO"]  # stored mirrored: the contour must be mirrored too
    rows, cols = view.prepared.shape
    square = np.array([[40, 100], [80, 100], [80, 140], [40, 140], [40, 100]], float)  # original (x, y)
    sides = {s: SideResult(s, True, []) for s in "RL"}
    r = Result("s", str(study_dir), "m", "1", "cpu", sides, {}, [], contours={"R-MLO": [square]}, contour_source="segmentation")
    w.state.set_heatmap_visible(False)
    w.state.set_show_breast_contours(False)
    w.state.set_result(r, {})
    w.grid.render_now()
    with_c = grab_rgb(view)
    # the contour's left edge x = 40 in the stored image is drawn at cols - 40.5 on screen
    x, y = widget_xy(view, cols - 40.5, 120.5)
    assert with_c[y, x - 1 : x + 2].max(axis=0)[0] > 200  # yellow line (red channel high)
    w.state.set_show_lesion_contours(False)
    without = grab_rgb(view)
    assert np.abs(with_c - without).max() > 100 and not view.lesion_curve.isVisible()
    assert w.ai_panel.lesion_check.text().startswith("Lesion contours")
    w.state.set_show_breast_contours(True)
    assert np.abs(grab_rgb(view) - without).max() > 50  # the breast outline appears


def test_event_loop_keeps_running_during_inference(make_window, models_dir, study_dir, qtbot):
    w = make_window()
    ticks: list[float] = []
    timer = QTimer(w)
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    with qtbot.waitSignal(w.controller.ai_finished, timeout=120000):
        w.open_study(study_dir)
        running = []
        w.state.ai_status_changed.connect(lambda: running.append(w.state.ai_status))
    timer.stop()
    assert "running" in running and w.state.ai_status == "done"
    gaps = np.diff(ticks)
    assert len(ticks) > 20
    assert gaps.max() <= 0.100, f"event loop blocked for {gaps.max() * 1000:.0f} ms"


def test_target_and_model_pickers_rescore(make_window, models_dir, study_dir, qtbot):
    w = make_window()
    open_and_score(qtbot, w, study_dir)
    first = w.state.result
    assert "birads:4" in w.state.targets
    with qtbot.waitSignal(w.controller.ai_finished, timeout=120000):
        w.ai_panel.target.setCurrentIndex(w.ai_panel.target.findData("birads:4"))
        w.ai_panel.target.activated.emit(w.ai_panel.target.currentIndex())
    r = w.state.result
    assert r is not first and r.target == "birads:4"
    assert r.sides["L"].p_malignant == pytest.approx(first.sides["L"].p_malignant)
    with qtbot.waitSignal(w.controller.ai_finished, timeout=120000):
        w.state.set_model("tiny-b")
    r = w.state.result
    assert r.model == "tiny-b"
    assert [b.objectName() for b in w.ai_panel.cards["R"].shown_bars] == ["BI-RADS 1", "BI-RADS 3", "BI-RADS 5"]


def test_new_study_cancels_the_old_run(make_window, models_dir, tmp_path, qtbot):
    a = write_study(tmp_path / "a")
    b = write_study(tmp_path / "b", views=("L-CC", "L-MLO"))
    w = make_window()
    with qtbot.waitSignal(w.controller.ai_finished, timeout=120000):
        w.open_study(a)
        w.open_study(b)
    assert w.state.study.study_id == "b" and w.state.result.study_id == "b"
    assert not w.state.result.sides["R"].available


def test_closing_during_inference_exits_cleanly(make_window, models_dir, study_dir, qtbot):
    w = make_window()
    with qtbot.waitSignal(w.state.ai_status_changed, timeout=60000, check_params_cb=lambda *a: w.state.ai_status == "running"):
        w.open_study(study_dir)
    t0 = time.perf_counter()
    w.close()
    assert not w.controller.busy
    assert time.perf_counter() - t0 < 30


def test_screenshot_after_ai_and_report(make_window, models_dir, study_dir, qtbot, tmp_path):
    w = make_window()
    shot = ScreenshotOnReady(w, tmp_path / "shot.png", quit_after=False)
    with qtbot.waitSignal(w.controller.ai_finished, timeout=120000):
        w.open_study(study_dir)
    qtbot.waitUntil(lambda: shot.saved, timeout=10000)
    img = QImage(str(tmp_path / "shot.png"))
    assert (img.width(), img.height()) == (w.width(), w.height())
    out = w.export_report(tmp_path / "report.json")
    back = engine.Result.from_json(out)
    assert back.sides["L"].p_malignant == w.state.result.sides["L"].p_malignant
    assert json.loads(out.read_text())["attention"] == w.state.result.attention


def test_cli_screenshot_offscreen_without_model(study_dir, tmp_path):
    env = dict(os.environ)
    env.update(
        QT_QPA_PLATFORM="offscreen",
        MAMMO_MODELS_DIR=str(tmp_path / "none"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        HOME=str(tmp_path),
        PYTHONPATH=str(REPO),
    )
    out = tmp_path / "cli.png"
    proc = subprocess.run(
        [sys.executable, "-m", "viewer.app", str(study_dir), "--screenshot", str(out), "--quit-after-screenshot"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    img = QImage(str(out))
    assert (img.width(), img.height()) == (1600, 1000)
    assert "Traceback" not in proc.stderr


def test_unscorable_study_and_broken_model_show_messages(make_window, models_dir, tmp_path, qtbot, monkeypatch):
    from study_factory import write_cesm_us

    us_only = tmp_path / "us-only"
    us_only.mkdir()
    write_cesm_us(us_only)
    for f in us_only.glob("cesm_*.dcm"):
        f.unlink()
    w = make_window()
    with qtbot.waitSignal(w.controller.ai_finished, timeout=60000):
        w.open_study(us_only)
    assert w.state.ai_status == "error"
    assert "no standard mammography view" in w.message_bar.text
    assert w.panels["ultrasound"].count == 1  # what could be loaded stays on screen
    # a model whose weights do not match its card: the study stays, the window says why
    broken = tmp_path / "broken-models"
    shutil.copytree(models_dir / "tiny-a", broken / "tiny-a")
    data = bytearray((broken / "tiny-a" / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (broken / "tiny-a" / "model.safetensors").write_bytes(bytes(data))
    monkeypatch.setenv("MAMMO_MODELS_DIR", str(broken))
    w2 = make_window()
    with qtbot.waitSignal(w2.controller.ai_finished, timeout=120000):
        w2.open_study(write_study(tmp_path / "ok"))
    assert w2.state.ai_status == "error" and w2.state.result is None
    assert "AI could not score this study" in w2.message_bar.text and "model.safetensors" in w2.message_bar.text
    assert all(w2.grid.views[k].prepared is not None for k in SLOTS)
