"""The sample interface, value parsing, tables and errors shared by every adapter."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import pytest
from datasets_fixtures import write_csv

from engine.errors import MammoError
from training.datasets import ADAPTERS, open_dataset
from training.datasets.base import (
    BreastLabels,
    DatasetLabelError,
    DatasetLayoutError,
    Lesion,
    SampleImage,
    StudySample,
    normalise_density,
    parse_age,
    parse_birads,
    read_table,
    worst_pathology,
)


def test_malignant_helper_and_pathology_index():
    assert BreastLabels(pathology="malignant").malignant == 1
    assert BreastLabels(pathology="benign").malignant == 0
    assert BreastLabels(pathology="normal").malignant == 0
    assert BreastLabels().malignant == -1
    assert [BreastLabels(pathology=p).pathology_index for p in ("normal", "benign", "malignant", None)] == [0, 1, 2, -1]
    assert worst_pathology(["normal", None, "benign"]) == "benign"
    assert worst_pathology([None, None]) is None


def test_labels_reject_values_outside_the_vocabulary():
    with pytest.raises(ValueError, match="pathology"):
        BreastLabels(pathology="suspicious")
    with pytest.raises(ValueError, match="density"):
        BreastLabels(density="E")
    with pytest.raises(ValueError, match="BI-RADS"):
        BreastLabels(birads=7)
    with pytest.raises(ValueError, match="standard views"):
        StudySample("x", "s", "p", images={"L-ML": Path("a")})
    with pytest.raises(ValueError, match="'L', 'R' or 'U'"):
        StudySample("x", "s", "p", labels={"left": BreastLabels()})


def test_study_sample_helpers(tmp_path):
    s = StudySample(
        dataset="x",
        study_id="s1",
        patient_id="p1",
        images={"L-CC": tmp_path / "lcc", "L-MLO": tmp_path / "lmlo", "R-CC": tmp_path / "rcc"},
        labels={"L": BreastLabels(pathology="malignant"), "R": BreastLabels(pathology="normal")},
        extras=(
            SampleImage(tmp_path / "us1", kind="US", side="L"),
            SampleImage(tmp_path / "le", kind="CESM", side="L", view="CC", cesm_kind="low_energy"),
            SampleImage(tmp_path / "rc", kind="CESM", side="L", view="CC", cesm_kind="recombined"),
            SampleImage(tmp_path / "spot", kind="MG", side="R", view="CC", note="spot"),
        ),
    )
    assert s.missing == ["R-MLO"]
    assert s.malignant("L") == 1 and s.malignant("R") == 0 and s.malignant("U") == -1
    assert s.worst_pathology() == "malignant"
    assert [u.path.name for u in s.ultrasound] == ["us1"]
    assert s.cesm == {("L-CC", "low_energy"): tmp_path / "le", ("L-CC", "recombined"): tmp_path / "rc"}
    assert [p.name for p in s.side_images("R")] == ["rcc", "spot"]
    assert len(s.all_paths()) == 7


def test_lesion_bounding_box_from_each_geometry():
    assert Lesion(box=(1, 2, 3, 4)).bounding_box() == (1, 2, 3, 4)
    assert Lesion(polygon=((1, 5), (4, 2), (3, 9))).bounding_box() == (1, 2, 4, 9)
    assert Lesion(centre=(10, 20), radius=3).bounding_box() == (7, 17, 13, 23)
    assert Lesion(centre=(10, 20)).bounding_box() is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("A", "A"), ("DENSITY C", "C"), ("3", "C"), ("4.0", "D"), ("heterogeneous dense", "C"),
     ("extremely dense", "D"), ("scattered", "B"), ("fatty", "A"), ("_", None), ("", None)],
)  # fmt: skip
def test_density_parsing(text, value):
    assert normalise_density(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("BI-RADS 4", 4), ("4.0", 4), ("4a", 4), ("4$2", 4), ("2$5", 5), ("5", 5), ("", None), ("nan", None)],
)
def test_birads_parsing(text, value):
    assert parse_birads(text) == value


def test_bad_values_raise():
    with pytest.raises(ValueError):
        normalise_density("very dense-ish")
    with pytest.raises(ValueError):
        parse_birads("suspicious")
    assert parse_age("056Y") == 56 and parse_age("44.0") == 44 and parse_age("") is None
    assert parse_age("006M") == pytest.approx(0.5)


def test_read_table_csv_semicolon_and_header_rows(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("title;;\nid;side;x\nD1;L;3\n;;\nD2;R\n", encoding="utf-8")
    header, rows = read_table(p, header_rows=2)
    assert header == ["id", "side", "x"]
    assert rows == [["D1", "L", "3"], ["D2", "R", ""]]


def test_xlsx_without_openpyxl_names_the_file(tmp_path):
    if importlib.util.find_spec("openpyxl") is not None:
        pytest.skip("openpyxl is installed: .xlsx is read")
    p = tmp_path / "CMMD_clinicaldata_revision.xlsx"
    p.write_bytes(b"PK\x03\x04 not really a workbook")
    with pytest.raises(DatasetLayoutError) as err:
        read_table(p, root=tmp_path)
    msg = str(err.value)
    assert msg.startswith("CMMD_clinicaldata_revision.xlsx: ") and "openpyxl" in msg and "CSV" in msg
    assert "\n" not in msg


def test_errors_are_mammo_errors_one_line_relative_and_picklable(tmp_path):
    err = DatasetLabelError(tmp_path / "sub" / "labels.csv", "row 3: unknown class", root=tmp_path)
    assert isinstance(err, MammoError)
    assert str(err) == "sub/labels.csv: row 3: unknown class"
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and type(again) is DatasetLabelError


def test_open_dataset_registry(tmp_path):
    names = {"cmmd", "tompei-cmmd", "vindr", "cbis-ddsm", "cdd-cesm", "mias", "busi", "manifest", "phantom"}
    assert set(ADAPTERS) == names
    for cls in ADAPTERS.values():
        assert cls.citation or cls.name in ("manifest",), cls.name
        assert cls.licence, cls.name
    with pytest.raises(ValueError, match="unknown dataset"):
        open_dataset("inbreast", tmp_path)
    with pytest.raises(DatasetLayoutError, match="folder not found"):
        open_dataset("mias", tmp_path / "nope")
    write_csv(tmp_path / "labels.csv", ["ref"], [["mdb001"]])
    with pytest.raises(DatasetLayoutError, match="missing columns"):
        open_dataset("mias", tmp_path).samples()
