"""mini-MIAS and BUSI adapters: tiny fixtures in both layouts, and the real copies when present."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from datasets_fixtures import make_busi, make_mias
from PIL import Image

from training.datasets import BUSI, MIAS, DatasetLabelError, DatasetLayoutError, patient_kfold
from training.datasets.mias import mias_pair_id
from training.datasets.splits import check_disjoint

# --- mini-MIAS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("info_txt", [False, True], ids=["labels.csv", "Info.txt"])
def test_mias_fixture(tmp_path, info_txt):
    make_mias(tmp_path, info_txt=info_txt)
    samples = {s.study_id: s for s in MIAS(tmp_path).samples()}
    assert sorted(samples) == ["mdb001", "mdb002", "mdb003", "mdb004"]
    s1 = samples["mdb001"]
    assert s1.images == {} and set(s1.labels) == {"U"}
    (img,) = s1.extras
    assert img.kind == "MG" and img.side is None and img.view == "MLO"
    lab = s1.labels["U"]
    assert lab.pathology == "benign" and lab.finding == "mass" and lab.density is None and lab.birads is None
    (les,) = lab.lesions
    assert les.centre == (535.0, 1024.0 - 425.0) and les.radius == 197.0  # bottom-left origin -> row
    assert samples["mdb002"].labels["U"].pathology == "normal" and samples["mdb002"].labels["U"].lesions == ()
    calc = samples["mdb003"].labels["U"]
    assert calc.pathology == "malignant" and calc.lesions[0].centre is None  # no centre given
    mixed = samples["mdb004"].labels["U"]
    assert mixed.pathology == "malignant" and len(mixed.lesions) == 2
    assert mixed.attributes["classes"] == "CIRC;SPIC"
    # the two films of one woman share a patient
    assert s1.patient_id == samples["mdb002"].patient_id == "mias-pair-001"
    assert samples["mdb003"].patient_id == samples["mdb004"].patient_id == "mias-pair-002"


def test_mias_pairs_and_errors(tmp_path):
    assert [mias_pair_id(f"mdb{i:03d}") for i in (1, 2, 3, 322)] == [
        "mias-pair-001", "mias-pair-001", "mias-pair-002", "mias-pair-161"
    ]  # fmt: skip
    make_mias(tmp_path)
    (tmp_path / "png" / "mdb003.png").unlink()
    with pytest.raises(DatasetLayoutError) as err:
        MIAS(tmp_path).samples()
    assert str(err.value) == "png/mdb003.png: image listed in the labels but not found"
    (tmp_path / "labels.csv").write_text("ref,tissue,abnormality_class,severity,x,y,radius\nmdb001,G,BLOB,B,1,2,3\n")
    with pytest.raises(DatasetLabelError, match="row 2: unknown abnormality class"):
        MIAS(tmp_path).samples()


@pytest.mark.realdata
def test_mias_realdata_counts_and_centres(realdata):
    ds = MIAS(realdata / "mias")
    samples = ds.samples()
    assert len(samples) == 238
    assert Counter(s.labels["U"].pathology for s in samples) == {"normal": 154, "benign": 48, "malignant": 36}
    assert len({s.patient_id for s in samples}) == 119  # complete pairs
    by_id = {s.study_id: s for s in samples}
    # mdb001: CIRC B 535 425 197 -> centre (x=535, row=599)
    les = by_id["mdb001"].labels["U"].lesions[0]
    assert les.centre == (535.0, 599.0) and les.radius == 197.0
    # every centre lies inside the 1024 x 1024 image
    centres = [les.centre for s in samples for les in s.labels["U"].lesions if les.centre]
    assert centres and all(0 <= x < 1024 and 0 <= y < 1024 for x, y in centres)
    assert by_id["mdb001"].extras[0].path.is_file()
    folds = patient_kfold(samples, k=5, seed=0)
    for train, test in folds:
        check_disjoint([train, test])
    assert sum(len(t) for _, t in folds) == 238


@pytest.mark.realdata
def test_mias_realdata_centre_lands_on_brighter_tissue(realdata):
    """The converted centre of mdb028 (a dense malignant mass) is brighter than the mirrored row."""
    s = {x.study_id: x for x in MIAS(realdata / "mias").samples()}["mdb028"]
    les = s.labels["U"].lesions[0]
    img = np.asarray(Image.open(s.extras[0].path), dtype=np.float32)
    x, y, r = int(les.centre[0]), int(les.centre[1]), int(les.radius)
    inside = img[y - r // 2 : y + r // 2, x - r // 2 : x + r // 2].mean()
    mirrored = img[1024 - y - r // 2 : 1024 - y + r // 2, x - r // 2 : x + r // 2].mean()
    assert inside > mirrored


# --- BUSI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("labels_csv", [True, False], ids=["labels.csv", "class-folders"])
def test_busi_fixture(tmp_path, labels_csv):
    make_busi(tmp_path, labels_csv=labels_csv)
    samples = {s.study_id: s for s in BUSI(tmp_path).samples()}
    assert sorted(samples) == ["benign (1)", "benign (2)", "malignant (1)", "normal (1)"]
    b1 = samples["benign (1)"]
    (us,) = b1.extras
    assert us.kind == "US" and us.side is None and b1.images == {}
    (les,) = b1.labels["U"].lesions
    assert [m.name for m in les.masks] == ["benign (1)_mask.png", "benign (1)_mask_1.png"]
    assert samples["normal (1)"].labels["U"].lesions == () and samples["normal (1)"].labels["U"].finding == "none"
    assert samples["malignant (1)"].malignant("U") == 1 and b1.malignant("U") == 0
    if labels_csv:
        assert samples["benign (2)"].group_id == samples["malignant (1)"].group_id is not None
        assert b1.group_id is None
    else:
        assert all(s.group_id is None for s in samples.values())


def test_busi_nested_original_folder_and_missing_mask(tmp_path):
    make_busi(tmp_path / "Dataset_BUSI_with_GT", labels_csv=False)
    assert len(BUSI(tmp_path).samples()) == 4
    make_busi(tmp_path / "copy")
    (tmp_path / "copy" / "benign" / "benign (1)_mask_1.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"^benign/benign \(1\)_mask_1.png: mask not found"):
        BUSI(tmp_path / "copy").samples()


@pytest.mark.realdata
def test_busi_realdata_counts_groups_and_folds(realdata):
    samples = BUSI(realdata / "busi").samples()
    assert len(samples) == 591
    assert Counter(s.labels["U"].pathology for s in samples) == {"benign": 337, "malignant": 155, "normal": 99}
    by_id = {s.study_id: s for s in samples}
    # near-duplicate chains form one group: (203)~(289), (273)~(289), (203)~(273)
    assert by_id["benign (203)"].group_id == by_id["benign (289)"].group_id == by_id["benign (273)"].group_id
    assert by_id["benign (203)"].group_id is not None and by_id["benign (2)"].group_id is None
    # (the cross-class pairs, e.g. benign (433) / malignant (145), were held out together)
    assert "benign (433)" not in by_id and "malignant (145)" not in by_id
    assert len(by_id["benign (195)"].labels["U"].lesions[0].masks) == 3
    # 17 images of the full set have several masks; 12 of them are in this copy (labels.csv n_masks)
    assert sum(1 for s in samples for les in s.labels["U"].lesions if len(les.masks) > 1) == 12
    folds = patient_kfold(samples, k=5, seed=0)
    held = Counter(s.study_id for _, t in folds for s in t)
    assert len(held) == 591 and set(held.values()) == {1}
    for train, test in folds:
        check_disjoint([train, test])
        groups_test = {s.group_id for s in test if s.group_id}
        assert not groups_test & {s.group_id for s in train if s.group_id}
