"""Tools > Batch score folder: the dialog runs engine.batch in a child process (pytest-qt, offscreen).

The studies are tiny phantom studies; the model is the fixtures' ``tiny-a`` (ResNet-18, 64 px).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QTimer, Qt

from engine.batch import read_results
from viewer.batch_process import BatchRequest, _serve
from viewer.dialogs.batch_dialog import batch_input_for, format_duration, format_rate

IDS = [f"P{i:04d}" for i in range(1, 9)]


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight tiny phantom studies with labels.csv (written once)."""
    from training.phantom import write_dataset

    out = tmp_path_factory.mktemp("phantom") / "studies"
    write_dataset(out, studies=len(IDS), seed=5, size="tiny")
    return out


@pytest.fixture
def inputs(phantom_dir: Path, tmp_path: Path) -> Path:
    """A copy of the phantom studies this test may change."""
    dst = tmp_path / "in"
    shutil.copytree(phantom_dir, dst)
    return dst


def open_dialog(window, input_dir: Path, output: Path):
    window.show_batch_dialog()
    dlg = window.batch_dialog
    dlg.input_edit.setText(str(input_dir))
    dlg.output_edit.setText(str(output))
    return dlg


def test_batch_runs_to_the_end_lists_errors_and_the_event_loop_keeps_ticking(
    make_window, models_dir, inputs: Path, tmp_path: Path, qtbot
):
    broken = inputs / "broken"
    broken.mkdir()
    (broken / "x.dcm").write_bytes(b"this is not a DICOM file")
    out = tmp_path / "results.csv"
    w = make_window()
    dlg = open_dialog(w, inputs, out)
    assert dlg.model_combo.currentText() == "tiny-a" and dlg.device_combo.currentText() == "cpu"
    assert not dlg.existing_row.isVisible()

    ticks: list[float] = []
    timer = QTimer(w)
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    with qtbot.waitSignal(dlg.runner.finished, timeout=120000) as blocker:
        qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
        assert dlg.runner.running and not dlg.start_button.isEnabled() and not dlg.input_edit.isEnabled()
        assert dlg.cancel_button.isEnabled()
    timer.stop()

    outcome = blocker.args[0]
    assert (outcome.found, outcome.scored, outcome.errors, outcome.cancelled) == (9, 8, 1, False)
    table = read_results(out)
    assert table.intact and table.studies == {**dict.fromkeys(IDS, "ok"), "broken": "error"}
    assert [(r["study_id"], r["side"]) for r in table.rows] == [(s, side) for s in [*IDS, "broken"] for side in "RL"]
    assert {r["model"] for r in table.rows} == {"tiny-a"} and {r["device"] for r in table.rows} == {"cpu"}
    assert all(0.0 <= float(r["p_malignant"]) <= 1.0 for r in table.rows if r["status"] == "ok")
    # the dialog: full bar, the error listed with the engine's message, the summary
    assert (dlg.progress.value(), dlg.progress.maximum()) == (9, 9)
    assert dlg.error_tree.topLevelItemCount() == 1
    item = dlg.error_tree.topLevelItem(0)
    assert item.text(0) == "broken" and "x.dcm" in item.text(1)
    assert item.text(1) == table.rows[-1]["error"]
    assert dlg.status.text().startswith("Done: 8 scored, 1 error")
    assert "9 of 9 studies" in dlg.detail.text() and "1 error" in dlg.detail.text()
    assert dlg.start_button.isEnabled() and not dlg.cancel_button.isEnabled() and dlg.input_edit.isEnabled()
    assert dlg.open_results_button.isEnabled()
    assert batch_input_for(w.settings, out) == inputs.resolve()
    # the viewer's event loop never stalled while the child scored
    gaps = np.diff(ticks)
    assert len(ticks) > 20
    assert gaps.max() <= 0.100, f"event loop blocked for {gaps.max() * 1000:.0f} ms"

    # the file exists now: the dialog offers to continue it; continuing finds nothing to do
    dlg._on_form_changed()
    assert dlg.existing_row.isVisibleTo(dlg) and dlg.resume_radio.isChecked()
    with qtbot.waitSignal(dlg.runner.finished, timeout=120000) as blocker:
        dlg.start()
    assert (blocker.args[0].skipped, blocker.args[0].done) == (9, 0)
    assert len(read_results(out).rows) == 18


def test_cancel_mid_run_stops_and_a_second_run_resumes_without_duplicates(
    make_window, models_dir, inputs: Path, tmp_path: Path, qtbot
):
    """Cancel after the first of eight studies (loading in the scoring thread, so each study takes
    a while): the batch stops early, the file holds complete studies only, a second run continues."""
    out = tmp_path / "results.csv"
    w = make_window()
    dlg = open_dialog(w, inputs, out)
    dlg.workers_spin.setValue(0)
    with qtbot.waitSignal(dlg.runner.finished, timeout=120000) as blocker:
        dlg.start()
        qtbot.waitUntil(lambda: dlg.runner.done >= 1, timeout=120000)
        qtbot.mouseClick(dlg.cancel_button, Qt.MouseButton.LeftButton)
        assert dlg.runner.cancelling and not dlg.cancel_button.isEnabled()
        assert dlg.status.text() == "Cancelling\u2026"
    outcome = blocker.args[0]
    assert outcome.cancelled and 1 <= outcome.done < len(IDS)
    assert dlg.status.text().startswith(f"Cancelled: {outcome.scored} scored, 0 errors")
    table = read_results(out)
    assert table.intact and list(table.studies) == IDS[: len(table.studies)]
    assert len(table.studies) == outcome.done and len(table.rows) == 2 * outcome.done

    dlg._on_form_changed()
    assert dlg.existing_row.isVisibleTo(dlg) and dlg.resume_radio.isChecked()
    with qtbot.waitSignal(dlg.runner.finished, timeout=120000) as blocker:
        dlg.start()
    second = blocker.args[0]
    assert (second.skipped, second.scored, second.cancelled) == (outcome.done, len(IDS) - outcome.done, False)
    table = read_results(out)
    assert table.intact and list(table.studies) == IDS
    keys = [(r["study_id"], r["side"]) for r in table.rows]
    assert keys == [(s, side) for s in IDS for side in "RL"]  # nothing twice, nothing lost


def test_a_child_that_ignores_cancel_is_ended_and_the_file_repaired(
    make_window, models_dir, inputs: Path, tmp_path: Path, qtbot, monkeypatch
):
    """The child is a stand-in (``_stuck_batch_child``) that left a torn row and never answers a
    cancel, as a batch stuck in a long forward pass or a hung read would: Cancel ends it after the
    grace period and cuts the torn row off, as ``--resume`` would."""
    import viewer.batch_process as bp

    here = Path(__file__).resolve().parent
    monkeypatch.setattr(bp, "_CHILD_MODULE", "_stuck_batch_child")
    monkeypatch.setenv("PYTHONPATH", str(here) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "results.csv"
    w = make_window()
    dlg = open_dialog(w, inputs, out)
    with qtbot.waitSignal(dlg.runner.finished, timeout=60000) as blocker:
        dlg.start()
        qtbot.waitUntil(lambda: dlg.runner.done == 1, timeout=60000)
        assert read_results(out).torn_line
        qtbot.mouseClick(dlg.cancel_button, Qt.MouseButton.LeftButton)
    outcome = blocker.args[0]
    assert outcome.cancelled and outcome.killed
    assert (outcome.scored, outcome.errors, outcome.repaired) == (1, 0, ["a torn last line"])
    table = read_results(out)
    assert table.intact and list(table.studies) == ["A"] and len(table.rows) == 2
    assert dlg.status.text().startswith("Cancelled: 1 scored, 0 errors")
    assert dlg.windowTitle() == "Batch score folder - stub 1 on cpu"


class _ScriptedConn:
    """A stand-in for the child's connection: delivers the request, and a cancel once the first
    study is reported done (deterministic: the batch checks it before the next study)."""

    def __init__(self, request: BatchRequest) -> None:
        self.inbox: list[tuple] = [("run", dataclasses.asdict(request))]
        self.sent: list[tuple] = []

    def recv(self):
        return self.inbox.pop(0)

    def poll(self, timeout: float = 0.0) -> bool:
        return bool(self.inbox)

    def send(self, msg: tuple) -> None:
        self.sent.append(msg)
        if msg[0] == "progress" and msg[1]["done"] == 1:
            self.inbox.append(("cancel",))


def test_child_stops_at_the_next_study_when_asked(models_dir, inputs: Path, tmp_path: Path):
    """The child's side of Cancel, run in this process: the engine's cancel() turns True, the
    batch stops before the second study and closes the file cleanly."""
    out = tmp_path / "results.csv"
    conn = _ScriptedConn(BatchRequest(str(inputs), str(out), "tiny-a", "cpu", workers=0))
    _serve(conn)
    kinds = [m[0] for m in conn.sent]
    assert kinds[0] == "status" and kinds[1] == "engine" and kinds[-1] == "done"
    done = conn.sent[-1][1]
    assert done["cancelled"] and (done["scored"], done["errors"], done["found"]) == (1, 0, len(IDS))
    table = read_results(out)
    assert table.intact and list(table.studies) == ["P0001"]


def test_bad_form_and_unknown_model_are_said_in_one_line(make_window, models_dir, inputs: Path, tmp_path: Path, qtbot):
    w = make_window()
    dlg = open_dialog(w, tmp_path / "nowhere", tmp_path / "r.csv")
    assert not dlg.start() and dlg.status.text() == "Choose an existing input folder."
    dlg.input_edit.setText(str(inputs))
    assert dlg.output_edit.text() == str(tmp_path / "r.csv")  # a chosen output is kept
    dlg.model_combo.addItem("no-such-model")
    dlg.model_combo.setCurrentText("no-such-model")
    with qtbot.waitSignal(dlg.runner.finished, timeout=120000) as blocker:
        assert dlg.start()
    assert blocker.args[0] is None
    assert dlg.status.text().startswith("The batch could not run:") and "no-such-model" in dlg.status.text()
    assert "\n" not in dlg.status.text() and dlg.start_button.isEnabled()


def test_output_defaults_into_the_input_folder_and_formats(make_window, no_models, inputs: Path, qtbot):
    w = make_window()
    w.show_batch_dialog()
    dlg = w.batch_dialog
    dlg.output_edit.clear()
    dlg.input_edit.setText(str(inputs))
    assert dlg.output_edit.text() == str(inputs / "results.csv")
    assert not dlg.start_button.isEnabled()  # no model installed
    assert not dlg.start() and dlg.status.text() == "No AI model installed."
    assert format_duration(None) == "?" and format_duration(42.4) == "42 s"
    assert format_duration(185) == "3 min 05 s" and format_duration(3725) == "1 h 02 min"
    assert format_rate(2.345) == "2.3 studies/s" and format_rate(0.25) == "4.0 s/study" and format_rate(0) == ""
