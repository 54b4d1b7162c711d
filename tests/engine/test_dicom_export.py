"""DICOM export (engine/dicom_export.py): SEG objects and the Comprehensive SR, re-read with
highdicom/pydicom: segment counts, referenced UIDs, patient/study identity, pixel values within
FRACTIONAL's precision, the TID 1500 content (probabilities, BI-RADS, image regions)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from _batch_helpers import segmenting_engine, write_studies
from PIL import Image

from engine.batch import lesion_masks
from engine.dicom_export import (
    MAX_FRACTIONAL_VALUE,
    DicomExportError,
    NotDicomSourceError,
    export_study,
)
from engine.io.loader import load_study

hd = pytest.importorskip("highdicom", reason="highdicom (the dicom-export extra) is not installed")

VIEWS = ("R-CC", "L-CC", "R-MLO", "L-MLO")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    root = write_studies(tmp_path_factory.mktemp("in") / "in", 1, seed=4)
    study = load_study(root / "P0001")
    eng = segmenting_engine(study)
    result = eng.score(study)  # Grad-CAM heatmaps + segmentation contours
    out = tmp_path_factory.mktemp("out") / "P0001"
    files = export_study(study, result, out)
    return study, result, out, files


def test_files_written(exported) -> None:
    _, result, out, files = exported
    names = [f.name for f in files]
    assert names == [f"seg_{v}.dcm" for v in VIEWS] + [f"seg_lesions_{v}.dcm" for v in VIEWS] + ["sr.dcm"]
    assert all(f.parent == out and f.is_file() for f in files)
    assert not list(out.glob(".*.tmp"))
    assert sum(float(result.heatmaps[v].max()) > 0.5 for v in VIEWS) >= 2  # real maps, not zeros


@pytest.mark.parametrize("view", VIEWS)
def test_heatmap_seg_references_its_source_and_round_trips(exported, view) -> None:
    study, result, out, _ = exported
    image = study.views[view]
    source = pydicom.dcmread(image.path, stop_before_pixels=True)
    seg = hd.seg.segread(out / f"seg_{view}.dcm")
    assert seg.SegmentationType == "FRACTIONAL" and seg.SegmentationFractionalType == "PROBABILITY"
    assert seg.number_of_segments == 1 and seg.MaximumFractionalValue == MAX_FRACTIONAL_VALUE
    assert seg.get_source_image_uids() == [
        (source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID)
    ]
    assert (seg.StudyInstanceUID, seg.PatientID, seg.PatientName) == (
        source.StudyInstanceUID, source.PatientID, source.PatientName,
    )  # fmt: skip
    assert (seg.Rows, seg.Columns) == image.shape and seg.Modality == "SEG"
    assert "FrameOfReferenceUID" not in seg  # MG: no patient coordinate system to invent
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[image.sop_instance_uid], segment_numbers=[1], rescale_fractional=True
    )[0, ..., 0]
    heat = np.asarray(result.heatmaps[view])
    assert np.abs(pixels - heat).max() <= 0.5 / MAX_FRACTIONAL_VALUE + 1e-6


def test_lesion_masks_are_binary_segs(exported) -> None:
    study, result, out, _ = exported
    masks = lesion_masks(result)
    assert sum(int(m.sum()) for m in masks.values()) > 0
    series = set()
    for view in VIEWS:
        seg = hd.seg.segread(out / f"seg_lesions_{view}.dcm")
        assert seg.SegmentationType == "BINARY" and seg.number_of_segments == 1
        series.add(seg.SeriesInstanceUID)
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[study.views[view].sop_instance_uid], segment_numbers=[1]
        )[0, ..., 0]
        assert np.array_equal(pixels.astype(bool), masks[view])
    heat = hd.seg.segread(out / "seg_L-CC.dcm")
    assert series == {heat.SeriesInstanceUID}  # one SEG series per export


def test_sr_is_a_tid1500_report_with_breasts_and_regions(exported) -> None:
    study, result, out, _ = exported
    sr = hd.sr.srread(out / "sr.dcm")
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.StudyInstanceUID == study.views["L-CC"].study_instance_uid
    assert sr.CompletionFlag == "COMPLETE"
    evidence = {
        item.ReferencedSOPInstanceUID
        for study_item in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study_item.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == {study.views[v].sop_instance_uid for v in VIEWS}
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    groups = report.get_image_measurement_groups()
    assert len(groups) == 2
    for group in groups:
        site = group.finding_sites[0]
        side = "R" if site.laterality.value == "24028007" else "L"
        assert site.value.value == "76752008"  # breast
        sr_side = result.sides[side]
        (prob,) = group.get_measurements(name=pydicom.sr.codedict.codes.DCM.ProbabilityOfCancer)
        assert prob.value == pytest.approx(sr_side.p_malignant, rel=1e-6)
        (birads,) = group.get_qualitative_evaluations(name=pydicom.sr.codedict.codes.DCM.AssessmentCategory)
        assert birads.value.meaning.startswith(f"BI-RADS {sr_side.birads_pred} ")
        assert {s.referenced_sop_instance_uid for s in group.source_images} == {
            study.views[v].sop_instance_uid for v in VIEWS if v[0] == side
        }
    regions = report.get_planar_roi_measurement_groups()
    expected = {v: [p for p in result.contours[v] if len(p) >= 4] for v in VIEWS}
    assert len(regions) == sum(len(p) for p in expected.values()) > 0
    uid_view = {study.views[v].sop_instance_uid: v for v in VIEWS}
    seen = {v: 0 for v in VIEWS}
    for roi in regions:
        region = roi.roi
        view = uid_view[region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID]
        poly = expected[view][seen[view]]
        seen[view] += 1
        assert region.GraphicType == "POLYLINE"
        data = region.value
        assert np.array_equal(data[0], data[-1])  # closed
        assert np.allclose(data[:-1], poly[:-1] + 0.5, atol=1e-3)  # DICOM: (0, 0) = pixel corner


def test_raster_study_is_refused_with_the_reason(exported, tmp_path: Path) -> None:
    study, result, _, _ = exported
    folder = tmp_path / "raster"
    folder.mkdir()
    for key, image in study.views.items():
        Image.fromarray(image.display).save(folder / f"{key.replace('-', '_')}.png")
    raster = load_study(folder)
    with pytest.raises(NotDicomSourceError, match="needs DICOM source images; R-CC is R_CC.png, a raster file"):
        export_study(raster, result, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_changed_source_file_is_refused(exported, tmp_path: Path) -> None:
    study, result, _, _ = exported
    copy = tmp_path / "P0001"
    shutil.copytree(study.path, copy)
    moved = load_study(copy)
    shutil.copy(copy / "MG_R_CC.dcm", copy / "MG_L_CC.dcm")  # another image under that name now
    with pytest.raises(NotDicomSourceError, match="MG_L_CC.dcm: file changed since the study was loaded"):
        export_study(moved, result, tmp_path / "out")


def test_without_highdicom_the_error_says_what_to_install(exported, tmp_path: Path, monkeypatch) -> None:
    study, result, _, _ = exported
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(DicomExportError, match="needs the 'highdicom' package.*pip install highdicom"):
        export_study(study, result, tmp_path / "out")
