"""CMMD and TOMPEI-CMMD adapters on a tiny TCIA-layout fixture (DICOM headers + CSV exports)."""

from __future__ import annotations

import pytest
from datasets_fixtures import make_cmmd, make_tompei

from training.datasets import CMMD, DatasetLabelError, DatasetLayoutError, TompeiCMMD


def test_cmmd_views_from_headers_and_labels(tmp_path):
    make_cmmd(tmp_path)
    samples = {s.study_id: s for s in CMMD(tmp_path).samples()}
    assert sorted(samples) == ["D1-0001", "D1-0003", "D2-0002"]
    s1 = samples["D1-0001"]
    assert s1.patient_id == "D1-0001"
    assert sorted(s1.images) == ["L-CC", "L-MLO", "R-CC", "R-MLO"]
    # file 1-1 is L-CC and 1-3 is R-CC: the side comes from ImageLaterality, not the file order
    assert s1.images["L-CC"].name == "1-1.dcm" and s1.images["R-CC"].name == "1-3.dcm"
    assert s1.labels["L"].pathology == "malignant" and s1.labels["L"].finding == "mass"
    assert s1.labels["R"].pathology == "benign" and s1.labels["R"].finding == "calcification"
    assert s1.labels["L"].age == 44 and s1.labels["L"].birads is None and s1.labels["L"].density is None
    s2 = samples["D2-0002"]
    assert s2.labels["R"].finding == "calcification;mass" and s2.labels["R"].attributes["subtype"] == "Luminal A"
    # the unlabelled breast: pathology unknown (not guessed), age known
    assert s2.labels["L"].pathology is None and s2.malignant("L") == -1 and s2.labels["L"].age == 61
    s3 = samples["D1-0003"]
    assert sorted(s3.images) == ["L-CC", "L-MLO"] and s3.missing == ["R-CC", "R-MLO"]


def test_cmmd_unlabelled_as_normal_option(tmp_path):
    make_cmmd(tmp_path)
    s2 = {s.study_id: s for s in CMMD(tmp_path, unlabelled_as_normal=True).samples()}["D2-0002"]
    assert s2.labels["L"].pathology == "normal" and s2.malignant("L") == 0


def test_cmmd_layout_errors_name_the_file(tmp_path):
    make_cmmd(tmp_path)
    (tmp_path / "CMMD_clinicaldata_revision.csv").unlink()
    with pytest.raises(DatasetLayoutError) as err:
        CMMD(tmp_path).samples()
    assert str(err.value).startswith("CMMD_clinicaldata_revision.xlsx: clinical table not found")
    (tmp_path / "CMMD_clinicaldata_revision.csv").write_text(
        "ID1,LeftRight,Age,number,abnormality,classification,subtype\nD1-0001,X,44,2,mass,Malignant,\n"
    )
    with pytest.raises(DatasetLabelError, match="row 2: LeftRight must be L or R"):
        CMMD(tmp_path).samples()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetLayoutError, match="^CMMD: image folder"):
        CMMD(empty).samples()


def test_cmmd_xlsx_is_read_when_openpyxl_is_installed(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    make_cmmd(tmp_path)
    csv_path = tmp_path / "CMMD_clinicaldata_revision.csv"
    wb = openpyxl.Workbook()
    for line in csv_path.read_text().splitlines():
        wb.active.append([int(c) if c.isdigit() else (c or None) for c in line.split(",")])
    wb.save(tmp_path / "CMMD_clinicaldata_revision.xlsx")
    csv_path.unlink()
    s1 = {s.study_id: s for s in CMMD(tmp_path).samples()}["D1-0001"]
    assert s1.labels["L"].pathology == "malignant" and s1.labels["L"].age == 44


def test_tompei_labels_sides_and_outlines(tmp_path):
    make_tompei(tmp_path)
    samples = {s.study_id: s for s in TompeiCMMD(tmp_path).samples()}
    s1 = samples["D1-0001"]
    left, right = s1.labels["L"], s1.labels["R"]
    assert (left.pathology, left.birads, left.density, left.age) == ("malignant", 5, "C", 44)
    assert (right.pathology, right.birads) == ("benign", 3)
    assert left.attributes["cmmd_classification"] == "Malignant"
    # outlines on the L-MLO image; "calc " is stripped and mapped; the __MACOSX copy is ignored
    assert [les.finding for les in left.lesions] == ["mass", "calcification"]
    assert left.lesions[0].view == "L-MLO" and left.lesions[0].image == s1.images["L-MLO"]
    assert left.lesions[0].polygon == ((10.0, 20.0), (30.0, 20.0), (30.0, 45.0))
    assert left.lesions[0].bounding_box() == (10.0, 20.0, 30.0, 45.0)
    assert left.finding == "calcification;mass" and right.lesions == ()
    s2 = samples["D2-0002"]
    assert s2.labels["R"].pathology == "malignant"  # Invisible = malignant, not locatable
    assert s2.labels["R"].attributes["tompei_classification"] == "Invisible"
    assert s2.labels["L"].pathology is None and s2.labels["L"].attributes["exclusion_reason"] == "CV port"
    assert s2.labels["L"].birads is None and s2.labels["L"].density == "D"
    # D1-0003: tags say L, TOMPEI says R only -> images move to R (reversed left and right)
    s3 = samples["D1-0003"]
    assert sorted(s3.images) == ["R-CC", "R-MLO"] and set(s3.labels) == {"R"}
    assert s3.labels["R"].pathology == "normal" and s3.labels["R"].density == "A"
    assert s3.labels["R"].attributes["cmmd_classification"] == "Benign"  # CMMD's row followed the tag


def test_tompei_excluded_breasts_can_be_dropped(tmp_path):
    make_tompei(tmp_path)
    s2 = {s.study_id: s for s in TompeiCMMD(tmp_path, include_excluded=False).samples()}["D2-0002"]
    assert set(s2.labels) == {"R"} and "L-CC" in s2.images


def test_tompei_missing_table(tmp_path):
    make_cmmd(tmp_path)
    with pytest.raises(DatasetLayoutError, match="TOMPEI clinical table not found"):
        TompeiCMMD(tmp_path).samples()
