"""``mammo-phantom``: files on disk, DICOM tags read back with pydicom, label tables, masks,
determinism, the demo study."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from training.phantom.cli import main
from training.phantom.dataset import write_dataset
from training.phantom.plan import plan_studies, plan_study
from training.phantom.render import MAX_VALUE, render_mg

REPO = Path(__file__).resolve().parents[2]
MG_SOP = "1.2.840.10008.5.1.4.1.1.1.2"
US_SOP = "1.2.840.10008.5.1.4.1.1.6.1"


def _seed_covering_options(n: int) -> int:
    """A seed whose first ``n`` studies include MONOCHROME1, SIGMOID, RLE and a lesion."""
    for seed in range(200):
        plans = plan_studies(n, seed)
        if (
            any(p.photometric == "MONOCHROME1" for p in plans)
            and any(p.voi_function == "SIGMOID" for p in plans)
            and any(p.rle for p in plans)
            and any(p.photometric == "MONOCHROME2" and not p.rle for p in plans)
            and sum(b.pathology != "normal" for p in plans for b in p.breasts.values()) >= 2
        ):
            return seed
    raise AssertionError("no seed covers the DICOM options")  # pragma: no cover


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    seed = _seed_covering_options(5)
    out = tmp_path_factory.mktemp("phantom") / "out"
    code = main([str(out), "--studies", "5", "--seed", str(seed), "--size", "tiny", "--with-us", "--with-cesm"])
    assert code == 0
    return out, seed


def test_cli_writes_the_documented_layout(dataset, capsys):
    out, seed = dataset
    labels = _read_csv(out / "labels.csv")
    plans = plan_studies(5, seed)
    assert sorted({r["study_id"] for r in labels}) == [f"P000{i}" for i in range(1, 6)]
    assert len(labels) == sum(len(p.breasts) for p in plans)
    breasts = [(p, s) for p in plans for s in ("R", "L") if s in p.breasts]
    for row, (plan, side) in zip(labels, breasts, strict=True):
        b = plan.breasts[side]
        assert (row["study_id"], row["side"], row["pathology"], int(row["birads"])) == (
            plan.study_id,
            side,
            b.pathology,
            b.birads,
        )
        assert (row["density"], int(row["age"]), row["finding"]) == (plan.density, plan.age, b.finding)
        folder = out / plan.study_id
        for view in ("CC", "MLO"):
            assert (folder / f"MG_{side}_{view}.dcm").exists() == (view in b.views)
            assert (folder / f"CESM_{side}_{view}_LE.dcm").exists() == (view in b.views)
            assert (folder / f"CESM_{side}_{view}_RC.dcm").exists() == (view in b.views)
        assert len(list(folder.glob(f"US_{side}_*.dcm"))) == int(row["n_us"]) == b.n_us
    annotations = _read_csv(out / "annotations.csv")
    assert annotations, "the seed was chosen to include lesions"
    for row in annotations:
        image = pydicom.dcmread(out / row["file"])
        mask = cv2.imread(str(out / row["mask"]), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
        assert mask.shape == (image.Rows, image.Columns)
        x0, y0, x1, y1 = (int(row[k]) for k in ("x0", "y0", "x1", "y1"))
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        assert x0 <= float(row["cx"]) <= x1 and y0 <= float(row["cy"]) <= y1
        assert row["mask"] == f"masks/{row['study_id']}/{Path(row['file']).stem}_mask.png"
        assert image.ImageLaterality == row["side"]
    # every image with a lesion has a mask, and only those
    masks = sorted(p.relative_to(out).as_posix() for p in (out / "masks").rglob("*.png"))
    assert masks == sorted({r["mask"] for r in annotations})
    assert (out / "phantom.json").exists()


def test_mg_and_cesm_dicom_tags(dataset):
    out, seed = dataset
    seen = set()
    for path in sorted(out.glob("P*/*.dcm")):
        if path.name.startswith("US_"):
            continue
        ds = pydicom.dcmread(path)
        _, side, view = path.stem.split("_")[:3]
        assert ds.SOPClassUID == MG_SOP == ds.file_meta.MediaStorageSOPClassUID
        assert ds.Modality == "MG" and ds.PresentationIntentType == "FOR PRESENTATION"
        assert ds.ImageLaterality == side and "Laterality" not in ds
        assert ds.ViewPosition == view
        code = ds.ViewCodeSequence[0]
        assert (code.CodeValue, code.CodingSchemeDesignator) == (
            {"CC": "399162004", "MLO": "399368009"}[view],
            "SCT",
        )
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 14, 13, 0)
        assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == 0.0
        assert len(ds.WindowCenter) == len(ds.WindowWidth) == 2
        assert ds.VOILUTFunction in ("LINEAR", "SIGMOID")
        ps = [float(v) for v in ds.PixelSpacing]
        ips = [float(v) for v in ds.ImagerPixelSpacing]
        mag = float(ds.EstimatedRadiographicMagnificationFactor)
        assert ips == [1.12, 1.12] and np.allclose(ps, np.array(ips) / mag, atol=1e-5)
        assert ds.PatientName == f"PHANTOM^{path.parent.name}" and ds.PatientAge.endswith("Y")
        assert ds.BodyPartExamined == "BREAST" and ds.AcquisitionDate and ds.AcquisitionTime
        arr = ds.pixel_array
        assert arr.shape == (256, 208) and arr.dtype == np.uint16 and arr.max() <= MAX_VALUE
        kind = path.stem.split("_")[-1]
        if path.name.startswith("CESM_"):
            image_type = list(ds.ImageType)
            if kind == "LE":
                assert image_type[0] == "ORIGINAL" and image_type[4] == "LOW_ENERGY"
            else:
                assert image_type[0] == "DERIVED" and image_type[3] == "SUBTRACTION"
        else:
            assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY"]
        # the file's pixels are the rendered image (inverted for MONOCHROME1), RLE is lossless
        if path.name.startswith("MG_"):
            plan = plan_study(seed, int(path.parent.name[1:]) - 1)
            rendered = render_mg(plan, side, view, "tiny").pixels
            if ds.PhotometricInterpretation == "MONOCHROME1":
                assert ds.PresentationLUTShape == "INVERSE"
                assert np.array_equal(MAX_VALUE - arr.astype(np.int32), rendered)
                seen.add("MONOCHROME1")
            else:
                assert ds.PresentationLUTShape == "IDENTITY"
                assert np.array_equal(arr, rendered)
            seen.add(ds.file_meta.TransferSyntaxUID.name)
            seen.add(ds.VOILUTFunction)
    assert {"MONOCHROME1", "RLE Lossless", "Explicit VR Little Endian", "SIGMOID", "LINEAR"} <= seen


def test_monochrome1_windows_show_the_same_picture(dataset):
    out, seed = dataset
    plans = {p.study_id: p for p in plan_studies(5, seed)}
    study = next(s for s, p in plans.items() if p.photometric == "MONOCHROME1")
    ds = pydicom.dcmread(out / study / "MG_R_CC.dcm" if "R" in plans[study].breasts else out / study / "MG_L_CC.dcm")
    c, w = float(ds.WindowCenter[0]), float(ds.WindowWidth[0])
    stored = ds.pixel_array.astype(np.float64)
    plain = MAX_VALUE - stored
    c2 = (MAX_VALUE + 1 - c) if ds.VOILUTFunction == "LINEAR" else (MAX_VALUE - c)
    if ds.VOILUTFunction == "SIGMOID":
        shown_m1 = 1.0 - 1.0 / (1.0 + np.exp(-4.0 * (stored - c) / w))
        shown_m2 = 1.0 / (1.0 + np.exp(-4.0 * (plain - c2) / w))
    else:
        shown_m1 = 1.0 - np.clip((stored - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
        shown_m2 = np.clip((plain - (c2 - 0.5)) / (w - 1) + 0.5, 0, 1)
    assert np.allclose(shown_m1, shown_m2, atol=1e-9)


def test_us_dicom_tags(dataset):
    out, _ = dataset
    paths = sorted(out.glob("P*/US_*.dcm"))
    assert paths
    for path in paths:
        ds = pydicom.dcmread(path)
        side = path.stem.split("_")[1]
        assert ds.SOPClassUID == US_SOP and ds.Modality == "US"
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert (ds.BitsAllocated, ds.BitsStored, ds.SamplesPerPixel) == (8, 8, 1)
        assert ds.ImageLaterality == side == ds.Laterality
        region = ds.SequenceOfUltrasoundRegions[0]
        assert region.PhysicalUnitsXDirection == 3 and region.PhysicalUnitsYDirection == 3
        assert region.PhysicalDeltaX == pytest.approx(0.04) and region.PhysicalDeltaY == pytest.approx(0.04)
        assert ds.pixel_array.shape == (96, 128) and ds.pixel_array.dtype == np.uint8


def test_uids_are_shared_within_a_study_and_unique(dataset):
    out, _ = dataset
    study_uids, sop_uids = {}, set()
    for path in out.glob("P*/*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        study_uids.setdefault(path.parent.name, set()).add(ds.StudyInstanceUID)
        assert ds.SOPInstanceUID not in sop_uids
        sop_uids.add(ds.SOPInstanceUID)
        assert pydicom.uid.UID(ds.SOPInstanceUID).is_valid and len(ds.SOPInstanceUID) <= 64
    assert all(len(v) == 1 for v in study_uids.values())
    assert len({next(iter(v)) for v in study_uids.values()}) == len(study_uids)


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_writes_byte_identical_files(tmp_path):
    a = write_dataset(tmp_path / "a", 2, 3, size="tiny", with_us=True, with_cesm=True)
    b = write_dataset(tmp_path / "b", 2, 3, size="tiny", with_us=True, with_cesm=True, workers=2)
    assert a.studies == b.studies == 2
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert da == db and len(da) > 10
    write_dataset(tmp_path / "c", 2, 4, size="tiny")
    ds_a = pydicom.dcmread(tmp_path / "a" / "P0001" / "MG_L_CC.dcm")
    ds_c = pydicom.dcmread(tmp_path / "c" / "P0001" / "MG_L_CC.dcm")
    assert ds_a.StudyInstanceUID != ds_c.StudyInstanceUID


def test_demo_study(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main([str(out), "--demo-study"]) == 0
    assert "wrote 1 studies" in capsys.readouterr().out
    folder = out / "P0001"
    names = sorted(p.name for p in folder.glob("*.dcm"))
    assert [n for n in names if n.startswith("MG_")] == ["MG_L_CC.dcm", "MG_L_MLO.dcm", "MG_R_CC.dcm", "MG_R_MLO.dcm"]
    assert [n for n in names if n.startswith("US_")] == ["US_L_1.dcm", "US_R_1.dcm"]
    assert len([n for n in names if n.startswith("CESM_")]) == 8
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        if ds.Modality == "MG":
            assert ds.VOILUTFunction == "LINEAR"
            assert (ds.Rows, ds.Columns) == ((1024, 832) if path.name.startswith("MG_") else (512, 416))
    labels = {r["side"]: r for r in _read_csv(out / "labels.csv")}
    assert (labels["L"]["pathology"], labels["L"]["finding"]) == ("malignant", "mass")
    assert (labels["R"]["pathology"], labels["R"]["finding"]) == ("benign", "mass")
    assert "resources/samples/demo/P0001" in (out / "README.md").read_text()
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) < 12e6
    committed = REPO / "resources" / "samples" / "demo" / "labels.csv"
    if committed.exists():  # the committed demo study is what the generator writes today
        assert committed.read_text() == (out / "labels.csv").read_text()
        assert (committed.parent / "annotations.csv").read_text() == (out / "annotations.csv").read_text()


def test_stats_and_bad_arguments(tmp_path, capsys):
    assert main(["--stats", "--studies", "300", "--seed", "2"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("300 studies") and "BI-RADS x pathology" in text
    with pytest.raises(SystemExit) as err:
        main([str(tmp_path / "x"), "--seed", "-1"])
    assert err.value.code == 2
    with pytest.raises(SystemExit):
        main([])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main([str(blocker), "--studies", "1", "--size", "tiny"]) == 2
    assert "not a folder" in capsys.readouterr().err
