"""File > Export DICOM: the engine's SEG + SR export of the study on screen (pytest-qt, offscreen)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from study_factory import breast_pixels

pytest.importorskip("highdicom", reason="DICOM export needs highdicom (the dicom-export extra)")


def open_and_score(qtbot, window, path: Path) -> None:
    with qtbot.waitSignal(window.controller.ai_finished, timeout=120000):
        window.open_study(path)
    assert window.state.ai_status == "done", window.state.ai_message


def test_export_writes_segs_and_sr_that_reference_the_study(make_window, models_dir, tmp_path: Path, qtbot):
    from training.phantom import write_dataset

    write_dataset(tmp_path / "ph", studies=1, seed=3, size="tiny")
    study = tmp_path / "ph" / "P0001"
    w = make_window()
    open_and_score(qtbot, w, study)
    out = tmp_path / "export"
    with qtbot.waitSignal(w.dicom_export_finished, timeout=60000) as done:
        assert w.export_dicom(out) is not None
        assert not w.actions_by_name["export_dicom"].isEnabled()  # one export at a time
    ok, text = done.args
    qtbot.waitUntil(lambda: w.actions_by_name["export_dicom"].isEnabled())
    assert ok, text
    names = sorted(p.name for p in out.iterdir())
    assert names == ["seg_L-CC.dcm", "seg_L-MLO.dcm", "seg_R-CC.dcm", "seg_R-MLO.dcm", "sr.dcm"]
    assert text == f"Exported 5 DICOM file(s) to {out}"
    sources = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in study.glob("*.dcm")}
    seg = pydicom.dcmread(out / "seg_L-CC.dcm")
    assert seg.Modality == "SEG" and seg.SegmentationType == "FRACTIONAL"
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID in sources
    sr = pydicom.dcmread(out / "sr.dcm")
    assert sr.Modality == "SR" and sr.StudyInstanceUID == seg.StudyInstanceUID


def test_raster_study_gets_the_engines_reason_without_a_folder_prompt(make_window, models_dir, tmp_path: Path, qtbot):
    folder = tmp_path / "raster"
    folder.mkdir()
    for i, key in enumerate(("R-CC", "L-CC", "R-MLO", "L-MLO")):
        side, view = key.split("-")
        px = (breast_pixels((320, 256), side, view, seed=i) >> 4).astype(np.uint8)
        cv2.imwrite(str(folder / f"case_{side}_{view}.png"), px)
    w = make_window()
    open_and_score(qtbot, w, folder)
    with qtbot.waitSignal(w.dicom_export_finished, timeout=60000) as done:
        w.choose_dicom_export()  # raster: no folder dialog, the engine says why not
    ok, text = done.args
    assert not ok
    assert text.startswith("No DICOM export: raster: DICOM export needs DICOM source images")
    assert "a raster file" in text and "\n" not in text
    assert w.message_bar.text.endswith(text)


def test_nothing_to_export_before_a_result(make_window, no_models, qtbot):
    w = make_window()
    with qtbot.waitSignal(w.dicom_export_finished) as done:
        assert w.export_dicom(Path("unused")) is None
    assert done.args == [False, "No AI result to export yet."]
