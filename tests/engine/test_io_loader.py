"""Folder -> Study: slots, extras, duplicates, US/CESM, ignored files, per-file errors, real data."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import CT_IMAGE, MG_FOR_PROCESSING, make_image, make_mg, make_us, ramp, save
from PIL import Image
from pydicom.uid import RLELossless

import engine
from engine.errors import EmptyStudyError, NotDicomError, StudyError
from engine.study import STANDARD_VIEWS


def _four_views(folder: Path, **attrs) -> None:
    for lat in "RL":
        for view in ("CC", "MLO"):
            save(make_mg(lat, view, WindowCenter=2048, WindowWidth=4096, **attrs), folder / f"img_{lat}{view}.dcm")


def test_four_view_study(tmp_path):
    folder = tmp_path / "case01"
    _four_views(folder)
    study = engine.load_study(folder)
    assert study.study_id == "case01" and study.path == folder.resolve()
    assert list(study.views) == list(STANDARD_VIEWS)
    assert study.missing == [] and study.extras == [] and study.errors == []
    for key, image in study.views.items():
        lat, view = key.split("-")
        assert image.relpath == f"img_{lat}{view}.dcm"
        assert image.display.dtype == np.uint8 and image.display.shape == image.stored.shape


def test_one_breast_only(tmp_path):
    save(make_mg("R", "CC"), tmp_path / "s" / "a.dcm")
    save(make_mg("R", "MLO", laterality_tag="Laterality", view_tag="ViewCodeSequence", scheme="SRT"), tmp_path / "s" / "b.dcm")
    study = engine.load_study(tmp_path / "s")
    assert sorted(study.views) == ["R-CC", "R-MLO"]
    assert study.missing == ["L-CC", "L-MLO"]
    assert study.views["R-MLO"].laterality_from == "Laterality"
    assert study.views["R-MLO"].view_from == "ViewCodeSequence"


def test_extras_with_reasons(tmp_path):
    folder = tmp_path / "s"
    _four_views(folder)
    save(make_mg("L", "ML"), folder / "ml.dcm")
    spot = [("399055006", "SCT", "Spot Compression")]
    save(make_mg("L", "CC", view_tag="ViewCodeSequence", modifiers=spot), folder / "spot.dcm")
    save(make_mg(None, "CC"), folder / "nolat.dcm")
    save(make_mg("R", "CC", ImageType=["ORIGINAL", "PRIMARY", "", "NONE", "HIGH_ENERGY"]), folder / "he.dcm")
    study = engine.load_study(folder)
    assert study.missing == []
    reasons = {e.image.relpath: e.reason for e in study.extras}
    assert reasons == {
        "ml.dcm": "non-standard view ML",
        "spot.dcm": "view modifier: spot compression",
        "nolat.dcm": "laterality unknown",
        "he.dcm": "CESM high-energy image (neither low-energy nor recombined)",
    }
    assert study.views["L-CC"].relpath == "img_LCC.dcm"  # the spot view never takes the slot


def test_duplicates_keep_the_newest(tmp_path):
    folder = tmp_path / "s"
    save(make_mg("L", "CC", AcquisitionDateTime="20240105101500"), folder / "a_new.dcm")
    save(make_mg("L", "CC", AcquisitionDate="20230105", AcquisitionTime="101500"), folder / "b_old.dcm")
    save(make_mg("L", "CC", ContentDate="20220101", ContentTime="080000"), folder / "c_oldest.dcm")
    save(make_mg("R", "CC"), folder / "d_first.dcm")
    save(make_mg("R", "CC"), folder / "e_second.dcm")
    save(make_mg("R", "MLO", AcquisitionDateTime="20250101000000", sop_class=MG_FOR_PROCESSING,
                 PresentationIntentType="FOR PROCESSING"), folder / "f_raw.dcm")  # fmt: skip
    save(make_mg("R", "MLO", AcquisitionDateTime="20240101000000"), folder / "g_processed.dcm")
    study = engine.load_study(folder)
    assert study.views["L-CC"].relpath == "a_new.dcm"
    assert study.views["R-CC"].relpath == "e_second.dcm"  # no times: later in file order
    assert study.views["R-MLO"].relpath == "g_processed.dcm"  # FOR PRESENTATION beats a newer raw image
    reasons = {e.image.relpath: e.reason for e in study.extras}
    assert reasons == {
        "b_old.dcm": "duplicate of L-CC, older",
        "c_oldest.dcm": "duplicate of L-CC, older",
        "d_first.dcm": "duplicate of R-CC, earlier in file order",
        "f_raw.dcm": "duplicate of R-MLO, FOR PROCESSING",
    }
    assert "3 images for L-CC: kept a_new.dcm" in study.warnings
    assert any("f_raw.dcm: FOR PROCESSING" in w for w in study.warnings)


def test_for_processing_alone_fills_the_slot(tmp_path):
    save(make_mg("L", "CC", sop_class=MG_FOR_PROCESSING), tmp_path / "s" / "raw.dcm")
    study = engine.load_study(tmp_path / "s")
    assert study.views["L-CC"].for_processing and study.summary()["views"]["L-CC"]["for_processing"] is True
    assert any("FOR PROCESSING" in w for w in study.warnings)


def test_ultrasound_and_cesm(tmp_path):
    folder = tmp_path / "s"
    save(make_mg("L", "CC"), folder / "mg" / "lcc.dcm")
    save(make_us(ImageLaterality="L"), folder / "us" / "1.dcm")
    save(make_us(ImageLaterality="L"), folder / "us" / "2.dcm")
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(folder / "R_US_1.png")
    save(make_mg("R", "CC", ImageType=["DERIVED", "PRIMARY", "", "SUBTRACTION"]), folder / "cesm" / "rc.dcm")
    save(make_mg("R", "CC", ImageType=["ORIGINAL", "PRIMARY", "", "NONE", "LOW_ENERGY"]), folder / "cesm" / "le.dcm")
    study = engine.load_study(folder)
    summary = study.summary()
    assert summary["ultrasound"] == [
        {"file": "R_US_1.png", "laterality": "R"},
        {"file": "us/1.dcm", "laterality": "L"},
        {"file": "us/2.dcm", "laterality": "L"},
    ]
    assert summary["cesm"] == [
        {"file": "cesm/le.dcm", "laterality": "R", "view": "CC", "kind": "low_energy"},
        {"file": "cesm/rc.dcm", "laterality": "R", "view": "CC", "kind": "recombined"},
    ]
    assert list(study.views) == ["L-CC"] and study.extras == []


def test_png_study_by_file_names(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for name in ("R_CC", "L-CC", "RMLO", "lmlo"):
        Image.fromarray(ramp(40, 30, 16, np.uint16) * 3).save(folder / f"{name}.png")
    Image.fromarray(ramp(20, 20, 8, np.uint8)).save(folder / "mdb001.png")
    study = engine.load_study(folder)
    assert set(study.views) == set(STANDARD_VIEWS)
    assert study.views["L-MLO"].relpath == "lmlo.png" and study.views["L-MLO"].view_from == "filename"
    assert [(e.image.relpath, e.reason) for e in study.extras] == [("mdb001.png", "laterality and view unknown")]


def test_ignored_files_are_quiet(tmp_path):
    folder = tmp_path / "s"
    save(make_mg("L", "CC"), folder / "lcc.dcm")
    (folder / ".DS_Store").write_bytes(b"\0\1junk")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "x.dcm").write_text("junk")
    (folder / "DICOMDIR").write_bytes(b"junk")
    for name in ("labels.csv", "meta.json", "notes.txt", "README.md"):
        (folder / name).write_text("x")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "L_CC_mask.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "benign (4)_mask_1.png")
    (folder / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "masks" / "R_CC.png")
    study = engine.load_study(folder)
    assert study.errors == [] and study.extras == [] and list(study.views) == ["L-CC"]


def test_bad_files_do_not_stop_the_study(tmp_path):
    folder = tmp_path / "s"
    _four_views(folder)
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.dcm").write_text("not dicom at all\n" * 10)
    path = save(make_mg("L", "CC", pixels=ramp(80, 60)), folder / "sub" / "cut.dcm")
    path.write_bytes(path.read_bytes()[:-1000])
    save(make_image(modality="CT", sop_class=CT_IMAGE), folder / "ct.dcm")
    (folder / "empty.dcm").write_bytes(b"")
    study = engine.load_study(folder)
    assert set(study.views) == set(STANDARD_VIEWS)
    errors = {e.relpath: (e.error_type, e.message) for e in study.errors}
    assert set(errors) == {"sub/notes.dcm", "sub/cut.dcm", "ct.dcm", "empty.dcm"}
    assert errors["sub/notes.dcm"][0] == "NotDicomError"
    assert errors["sub/cut.dcm"][0] == "TruncatedFileError"
    assert errors["ct.dcm"][0] == "NotBreastImageError"
    for relpath, (_, message) in errors.items():
        assert message.startswith(f"{relpath}: ") and "\n" not in message
    assert study.summary()["errors"][0] == {"file": "ct.dcm", "message": errors["ct.dcm"][1]}


def test_empty_and_hopeless_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyStudyError) as info:
        engine.load_study(tmp_path / "empty")
    assert str(info.value).startswith("empty: ") and "no DICOM or image files" in str(info.value)

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.dcm").write_text("text")
    save(make_image(modality="CT", sop_class=CT_IMAGE), bad / "b.dcm")
    with pytest.raises(EmptyStudyError) as info:
        engine.load_study(bad)
    text = str(info.value)
    assert text.startswith("bad: ") and "2 file(s) failed" in text and "a.dcm: not a DICOM file" in text

    with pytest.raises(StudyError) as info:
        engine.load_study(tmp_path / "nowhere")
    assert "no such file" in str(info.value)


def test_single_file_is_a_one_image_study(tmp_path):
    path = save(make_mg("R", "MLO"), tmp_path / "one.dcm", RLELossless)
    study = engine.load_study(path)
    assert study.study_id == "one" and list(study.views) == ["R-MLO"]
    assert study.views["R-MLO"].relpath == "one.dcm"
    (tmp_path / "junk.dcm").write_text("junk")
    with pytest.raises(NotDicomError):
        engine.load_study(tmp_path / "junk.dcm")


# --- real data (../shared/realdata), skipped when absent -------------------------------------------


def test_every_mias_image_loads_as_an_unplaced_mammogram(realdata):
    folder = realdata / "mias" / "png"
    files = sorted(folder.glob("mdb*.png"))
    assert len(files) >= 200
    for path in files:
        study = engine.load_study(path)
        assert not study.views, path.name
        (extra,) = study.extras
        image = extra.image
        assert extra.reason == "laterality and view unknown"
        assert image.kind == "MG" and image.shape == (1024, 1024) and image.stored.dtype == np.uint8
        assert image.display is not image.stored and np.array_equal(image.display, image.stored)


def test_busi_loads_as_ultrasound(realdata, tmp_path):
    root = realdata / "busi"
    with open(root / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    colour = [r for r in rows if r["stored_mode"] == "RGB"][:2]
    sample = rows[:: max(1, len(rows) // 25)][:25] + colour
    # 1) a study folder whose files are named with a US token
    folder = tmp_path / "us_study"
    folder.mkdir()
    for i, row in enumerate(sample):
        os.symlink(root / row["file"], folder / f"L_US_{i}.png")
    study = engine.load_study(folder)
    assert len(study.ultrasound) == len(sample) and not study.views and not study.extras
    for image, row in zip(sorted(study.ultrasound, key=lambda im: int(im.relpath.split("_")[2][:-4])), sample):
        assert image.laterality == "L" and image.shape == (int(row["height"]), int(row["width"]))
    # 2) the dataset's own class folder with kind="US": masks ignored, every image is ultrasound
    normal = engine.load_study(root / "normal", kind="US")
    n_normal = sum(r["class"] == "normal" for r in rows)
    assert len(normal.ultrasound) == n_normal and normal.errors == [] and not normal.extras
    # 3) without the hint a BUSI image is an MG-less raster extra
    (extra,) = engine.load_study(root / sample[0]["file"]).extras
    assert extra.image.kind == "MG" and extra.reason == "laterality and view unknown"
