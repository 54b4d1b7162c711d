"""ViewerState and Worker without any widget."""

from __future__ import annotations

import threading

import pytest

import engine
from study_factory import write_study
from viewer.imaging import Viewport, WindowSetting, prepare_study, window_center_width
from viewer.state import MG_GROUP, Measurement, ViewerState
from viewer.workers import Worker, WorkerPool


@pytest.fixture
def loaded_state(qapp, tmp_path):
    folder = write_study(tmp_path / "s", views=("R-CC", "L-CC", "R-MLO"))
    study = engine.load_study(folder)
    state = ViewerState()
    state.set_study(study, prepare_study(study))
    return state


def test_set_study_resets_everything(loaded_state, qtbot):
    s = loaded_state
    s.set_invert(True)
    s.set_viewport(MG_GROUP, Viewport(10, 20, 2.0))
    s.add_measurement(Measurement("R-CC", 0, 0, 5, 5))
    s.set_result(object(), {"R-CC": 1})
    with qtbot.waitSignals([s.study_changed, s.result_changed, s.windows_changed]):
        s.set_study(s.study, dict(s.images))
    assert s.viewport(MG_GROUP) is None and s.measurements == [] and s.result is None
    assert s.heatmap_maps == {}
    assert s.windows == {k: WindowSetting() for k in ("R-CC", "L-CC", "R-MLO")}
    assert s.slot_keys == ["R-CC", "L-CC", "R-MLO"]


def test_window_drag_moves_the_four_slots_together(loaded_state, qtbot):
    s = loaded_state
    s.images["extra.dcm"] = s.images["R-CC"]  # an image outside the hanging
    s.windows["extra.dcm"] = WindowSetting()
    starts = {k: window_center_width(s.images[k].image, s.windows[k]) for k in s.slot_keys}
    s.begin_window_drag("L-CC")
    with qtbot.waitSignal(s.windows_changed):
        s.drag_window(50, -25)
    for k in s.slot_keys:
        c0, w0 = starts[k]
        c, w = window_center_width(s.images[k].image, s.windows[k])
        assert w == pytest.approx(w0 * 1.6487212707, rel=1e-6)  # exp(0.5)
        assert c == pytest.approx(c0 - 0.1 * w0)
    assert s.windows["extra.dcm"] == WindowSetting()
    s.apply_preset(1)
    assert all(s.windows[k] == WindowSetting(preset_index=1) for k in s.slot_keys)


def test_setters_emit_only_on_change(qapp, qtbot):
    s = ViewerState()
    with qtbot.waitSignal(s.invert_changed):
        s.set_invert(True)
    with qtbot.assertNotEmitted(s.invert_changed):
        s.set_invert(True)
    with qtbot.waitSignal(s.overlays_changed):
        s.set_heatmap_opacity(2.0)
    assert s.heatmap_opacity == 1.0
    with qtbot.assertNotEmitted(s.overlays_changed):
        s.set_heatmap_opacity(1.5)
    with pytest.raises(ValueError):
        s.set_colormap("rainbow")
    with pytest.raises(ValueError):
        s.set_tool("scissors")
    with pytest.raises(ValueError):
        s.set_target("nonsense")
    s.set_target("birads:L:4")
    assert s.target == "birads:L:4"


def test_models_choice(qapp):
    s = ViewerState()
    s.set_models(["b", "a"])
    assert s.model_name == "b"
    s.set_model("a")
    s.set_models(["a", "c"])
    assert s.model_name == "a"
    s.set_models([])
    assert s.model_name is None
    with pytest.raises(ValueError):
        s.set_model("zzz")


def test_reset_display(loaded_state):
    s = loaded_state
    s.set_invert(True)
    s.apply_preset(1)
    s.set_viewport(MG_GROUP, Viewport(1, 2, 3))
    s.reset_display()
    assert not s.invert and s.viewport(MG_GROUP) is None
    assert all(w == WindowSetting() for w in s.windows.values())


def test_worker_result_error_and_cancel(qapp, qtbot):
    pool = WorkerPool(2)

    def ok(x, *, cancel, progress):
        progress(0.5, "half")
        return x * 2

    w = Worker(ok, 21)
    got, progress = [], []
    w.signals.result.connect(got.append)
    w.signals.progress.connect(lambda f, what: progress.append((f, what)))
    with qtbot.waitSignal(w.signals.finished):
        pool.start(w)
    assert got == [42] and progress == [(0.5, "half")]

    def bad(*, cancel, progress):
        raise engine.EmptyStudyError("/x/study", "no images")

    w = Worker(bad)
    with qtbot.waitSignal(w.signals.error) as blocker:
        pool.start(w)
    assert isinstance(blocker.args[0], engine.EmptyStudyError)

    gate, running = threading.Event(), threading.Event()
    seen = []

    def slow(*, cancel, progress):
        running.set()
        gate.wait(5)
        seen.append(cancel())
        return "late"

    w = Worker(slow)
    results = []
    w.signals.result.connect(results.append)
    with qtbot.waitSignal(w.signals.finished):
        pool.start(w)
        assert running.wait(5)
        w.cancel()
        gate.set()
    assert seen == [True] and results == []  # a cancelled worker's result is dropped

    w = Worker(slow)
    w.cancel()  # cancelled while queued: the function never runs
    seen.clear()
    with qtbot.waitSignal(w.signals.finished):
        pool.start(w)
    assert seen == []
    assert pool.wait(5000) and pool.active == []


def test_viewer_uses_the_engine_api_and_never_imports_torch():
    """torch stays out of the viewer's interpreter (it runs in the AI child process), and the
    viewer reaches the engine only through ``engine`` (and ``engine.display`` for window/level)."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    code = (
        "import viewer.app, viewer.main_window, viewer.controller, viewer.ai_process\n"
        "import json, sys; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'safetensors', 'training'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    allowed = {"engine", "engine.display"}
    for f in (repo / "viewer").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "engine":
                assert node.module in allowed, f"{f.name}: from {node.module} import ..."
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "engine":
                        assert a.name in allowed, f"{f.name}: import {a.name}"
