"""CDD-CESM and generic-manifest adapters on tiny fixtures."""

from __future__ import annotations

import pytest
from datasets_fixtures import make_cdd_cesm, write_csv, write_png

from training.datasets import CDDCESM, DatasetLabelError, DatasetLayoutError, Manifest
from training.datasets.cdd_cesm import region_lesion

# --- CDD-CESM ------------------------------------------------------------------------------------


def test_cdd_cesm_images_labels_and_regions(tmp_path):
    make_cdd_cesm(tmp_path)
    samples = {s.study_id: s for s in CDDCESM(tmp_path).samples()}
    assert sorted(samples) == ["P1", "P2"]
    p1 = samples["P1"]
    assert sorted(p1.images) == ["L-CC", "L-MLO", "R-CC", "R-MLO"]
    assert p1.images["L-CC"].name == "P1_L_DM_CC.jpg"
    assert len(p1.cesm) == 8
    assert p1.cesm[("L-CC", "recombined")].name == "P1_L_CM_CC.jpg"
    assert p1.cesm[("L-CC", "low_energy")] == p1.images["L-CC"]
    left, right = p1.labels["L"], p1.labels["R"]
    # BIRADS "4$5" -> 5; density only on DM rows ("_" on CESM rows); worst pathology
    assert (left.pathology, left.birads, left.density, left.age, left.finding) == ("malignant", 5, "C", 52, "mass")
    assert (right.pathology, right.birads, right.finding) == ("normal", 1, "none")
    shapes = sorted(
        (les.view, les.image.name, "polygon" if les.polygon else "circle" if les.radius else "ellipse")
        for les in left.lesions
    )
    assert shapes == [
        ("L-CC", "P1_L_CM_CC.jpg", "ellipse"),
        ("L-CC", "P1_L_CM_CC.jpg", "polygon"),
        ("L-MLO", "P1_L_DM_MLO.jpg", "circle"),
    ]
    assert all(les.pathology == "malignant" for les in left.lesions)
    assert right.lesions == ()  # the "{}" region is empty
    p2 = samples["P2"]
    # "P2_R_CM_CC .jpg" (stray space) is matched; P2 has CC views only
    assert sorted(p2.images) == ["R-CC"] and p2.cesm[("R-CC", "recombined")].name == "P2_R_CM_CC .jpg"
    assert p2.labels["R"].finding == "calcification;mass" and p2.labels["R"].density == "B"
    (point,) = p2.labels["R"].lesions
    assert point.centre == (5.0, 6.0) and point.pathology == "benign"


def test_cdd_cesm_low_energy_only_in_cesm_when_asked(tmp_path):
    make_cdd_cesm(tmp_path)
    p1 = {s.study_id: s for s in CDDCESM(tmp_path, low_energy_as_mammograms=False).samples()}["P1"]
    assert p1.images == {} and len(p1.cesm) == 8


def test_region_shapes():
    import math

    e = region_lesion({"name": "ellipse", "cx": 0, "cy": 0, "rx": 4, "ry": 2, "theta": math.pi / 2}, None, None)
    assert e.box == pytest.approx((-2, -4, 2, 4))
    r = region_lesion({"name": "rect", "x": 1, "y": 2, "width": 3, "height": 4}, None, "L-CC")
    assert r.box == (1, 2, 4, 6)
    assert region_lesion({}, None, None) is None
    with pytest.raises(ValueError, match="unknown region shape"):
        region_lesion({"name": "star"}, None, None)


def test_cdd_cesm_missing_image_is_named(tmp_path):
    make_cdd_cesm(tmp_path)
    (tmp_path / "Subtracted images of CDD-CESM" / "P1_R_CM_MLO.jpg").unlink()
    with pytest.raises(DatasetLayoutError) as err:
        CDDCESM(tmp_path).samples()
    assert str(err.value) == "Subtracted images of CDD-CESM/P1_R_CM_MLO.jpg: image listed in the spreadsheet not found"


# --- manifest ------------------------------------------------------------------------------------


def _manifest(tmp_path, rows, extra_cols=()):
    cols = ["study_id", "side", "view", "path", "patient_id", "pathology", "birads", "density", "age", "finding",
            "split", "kind", "cesm_kind", "mask", *extra_cols]  # fmt: skip
    for r in rows:
        write_png(tmp_path / r[3])
        if r[13]:
            write_png(tmp_path / r[13])
    return write_csv(tmp_path / "manifest.csv", cols, rows)


def test_manifest_combines_rows_per_breast(tmp_path):
    rows = [
        ["st1", "L", "CC", "a/L_CC.png", "pat1", "benign", 3, "B", 50, "mass", "train", "", "", "", "x"],
        ["st1", "L", "MLO", "a/L_MLO.png", "pat1", "malignant", 5, "B", 50, "calcification", "train", "", "", "a/m.png", "y"],
        ["st1", "R", "CC", "a/R_CC.png", "pat1", "normal", 1, "B", 50, "", "train", "", "", "", ""],
        ["st1", "L", "", "a/L_US.png", "pat1", "", "", "", "", "", "train", "US", "", "", ""],
        ["st2", "R", "CC", "b/R_CC_RC.png", "pat1", "", "", "", "", "", "val", "CESM", "recombined", "", ""],
        ["st3", "", "MLO", "c/img.png", "", "benign", "", "", "", "", "", "", "", "", ""],
    ]  # fmt: skip
    _manifest(tmp_path, rows, extra_cols=["site"])
    samples = {s.study_id: s for s in Manifest(tmp_path).samples()}
    st1 = samples["st1"]
    assert sorted(st1.images) == ["L-CC", "L-MLO", "R-CC"] and st1.patient_id == "pat1" and st1.split == "train"
    left = st1.labels["L"]
    assert (left.pathology, left.birads, left.density, left.age) == ("malignant", 5, "B", 50)
    assert left.finding == "calcification;mass" and left.attributes == {"site": "x"}
    (les,) = left.lesions
    assert les.view == "L-MLO" and les.masks == (tmp_path / "a" / "m.png",) and les.pathology == "malignant"
    assert [u.path.name for u in st1.ultrasound] == ["L_US.png"]
    assert samples["st2"].cesm == {("R-CC", "recombined"): tmp_path / "b" / "R_CC_RC.png"}
    st3 = samples["st3"]
    assert st3.patient_id == "st3" and set(st3.labels) == {"U"} and st3.extras[0].side is None
    # the manifest path itself works as root too
    assert len(Manifest(tmp_path / "manifest.csv").samples()) == 3


def test_manifest_rejects_conflicts(tmp_path):
    rows = [
        ["st1", "L", "CC", "L_CC.png", "", "", "", "B", "", "", "", "", "", "", ],
        ["st1", "L", "MLO", "L_MLO.png", "", "", "", "C", "", "", "", "", "", "", ],
    ]  # fmt: skip
    _manifest(tmp_path, rows)
    with pytest.raises(DatasetLabelError, match="row 3: density differs"):
        Manifest(tmp_path).samples()
    rows[1][2] = "CC"
    rows[1][7] = "B"
    _manifest(tmp_path, rows)
    with pytest.raises(DatasetLabelError, match="row 3: second L-CC image"):
        Manifest(tmp_path).samples()
    (tmp_path / "manifest.csv").write_text("study_id,side,view,path\nst1,L,CC,missing.png\n")
    with pytest.raises(DatasetLayoutError, match="^missing.png: image not found"):
        Manifest(tmp_path).samples()
