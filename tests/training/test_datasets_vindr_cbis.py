"""VinDr-Mammo and CBIS-DDSM adapters on tiny fixtures in their published layouts."""

from __future__ import annotations

import pytest
from datasets_fixtures import make_cbis, make_vindr

from training.datasets import CBISDDSM, DatasetLabelError, DatasetLayoutError, VinDrMammo, official_split
from training.datasets._dicom import read_header

# --- VinDr-Mammo ---------------------------------------------------------------------------------


def test_vindr_studies_labels_boxes_and_split(tmp_path):
    make_vindr(tmp_path)
    samples = {s.study_id: s for s in VinDrMammo(tmp_path).samples()}
    s1, s2 = samples["s1"], samples["s2"]
    assert sorted(s1.images) == ["L-CC", "L-MLO", "R-CC", "R-MLO"] and s1.patient_id == "s1"
    assert s1.images["L-CC"] == tmp_path / "images" / "s1" / "s1img0.dicom"
    left = s1.labels["L"]
    assert (left.pathology, left.birads, left.density, left.age) == (None, 4, "C", 53)
    assert left.malignant == -1  # VinDr has BI-RADS, no pathology
    (les,) = left.lesions
    assert les.box == (1.5, 2.0, 4.5, 6.0) and les.view == "L-CC" and les.birads == 4
    assert les.finding == "mass;calcification" and left.finding == "calcification;mass"
    assert s1.labels["R"].finding == "none" and s1.labels["R"].lesions == ()
    assert s2.missing == ["R-MLO"] and s2.labels["R"].birads == 3 and s2.labels["R"].density == "B"
    (asym,) = s2.labels["R"].lesions
    assert asym.box is None and asym.finding == "global asymmetry"
    assert {k: [s.study_id for s in v] for k, v in official_split(list(samples.values())).items()} == {
        "training": ["s1"], "test": ["s2"]
    }  # fmt: skip


def test_vindr_without_age_reads_no_header_and_missing_image(tmp_path):
    make_vindr(tmp_path)
    s1 = {s.study_id: s for s in VinDrMammo(tmp_path, read_age=False).samples()}["s1"]
    assert s1.labels["L"].age is None
    (tmp_path / "images" / "s2" / "s2img1.dicom").unlink()
    with pytest.raises(DatasetLayoutError) as err:
        VinDrMammo(tmp_path).samples()
    assert str(err.value) == "images/s2/s2img1.dicom: image not found (expected in the vindr layout)"


def test_vindr_bad_values(tmp_path):
    make_vindr(tmp_path)
    p = tmp_path / "breast-level_annotations.csv"
    p.write_text(p.read_text().replace("DENSITY C", "DENSITY Q", 1))
    with pytest.raises(DatasetLabelError, match="row 2: unknown breast density"):
        VinDrMammo(tmp_path).samples()


# --- CBIS-DDSM -----------------------------------------------------------------------------------


@pytest.mark.parametrize("with_metadata", [True, False], ids=["metadata.csv", "csv-paths"])
def test_cbis_patients_breasts_and_masks(tmp_path, with_metadata):
    make_cbis(tmp_path, with_metadata=with_metadata)
    samples = {s.study_id: s for s in CBISDDSM(tmp_path).samples()}
    assert sorted(samples) == ["P_00001", "P_00002"]
    p1 = samples["P_00001"]
    assert sorted(p1.images) == ["L-CC", "L-MLO"] and p1.split == "training"
    assert "Mass-Training_P_00001_LEFT_CC" in p1.images["L-CC"].as_posix()
    # the calc subset's copy of L-CC is kept as an extra image
    (extra,) = p1.extras
    assert "Calc-Training_P_00001_LEFT_CC" in extra.path.as_posix() and extra.side == "L" and extra.view == "CC"
    left = p1.labels["L"]
    assert (left.pathology, left.birads, left.density, left.age) == ("malignant", 4, "C", None)
    assert left.finding == "calcification;mass" and len(left.lesions) == 3
    assert [les.pathology for les in left.lesions] == ["malignant", "benign", "benign"]
    for les in left.lesions:
        (mask,) = les.masks
        assert read_header(mask).rows == 8  # the full-size file, never the 3 x 3 crop
    p2 = samples["P_00002"]
    assert p2.split == "test" and set(p2.labels) == {"R"}
    assert p2.labels["R"].pathology == "benign" and p2.labels["R"].density == "B"
    (mask,) = p2.labels["R"].lesions[0].masks  # CSV names the crop as the mask: swapped, corrected
    assert (read_header(mask).rows, read_header(mask).columns) == (8, 6)


def test_cbis_without_masks_and_errors(tmp_path):
    make_cbis(tmp_path)
    samples = CBISDDSM(tmp_path, resolve_masks=False).samples()
    assert all(les.masks == () for s in samples for lab in s.labels.values() for les in lab.lesions)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetLayoutError, match="^mass_case_description_train_set.csv: no case description CSV"):
        CBISDDSM(empty).samples()
    other = tmp_path / "other"
    make_cbis(other, with_metadata=False)
    full = next((other / "CBIS-DDSM" / "Calc-Test_P_00002_RIGHT_MLO").rglob("*.dcm"))
    full.unlink()
    with pytest.raises(DatasetLayoutError, match="full mammogram not found"):
        CBISDDSM(other).samples()
