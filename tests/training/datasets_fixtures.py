"""Tiny fixtures in the published layouts of the public datasets, written into ``tmp_path``.

Every file is made here (pydicom DICOMs of 8 x 6 pixels, Pillow PNG/JPEG, CSV tables); nothing is
downloaded. The real layouts are described in ``../shared/DATASETS.md`` and each adapter module.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

__all__ = [
    "write_dicom",
    "write_png",
    "write_csv",
    "make_cmmd",
    "make_tompei",
    "make_vindr",
    "make_cbis",
    "make_cdd_cesm",
    "make_mias",
    "make_busi",
]

_VIEW_CODES = {"CC": ("R-10242", "cranio-caudal"), "MLO": ("R-10226", "medio-lateral oblique")}


def write_dicom(
    path: Path,
    *,
    side: str | None = None,
    view: str | None = None,
    view_position: bool = True,
    view_code: bool = False,
    age: str | None = None,
    shape: tuple[int, int] = (8, 6),
    modality: str = "MG",
    image_type: list[str] | None = None,
) -> Path:
    """A minimal MG DICOM with the identity tags a dataset uses (pixels are a ramp)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.ImageType = image_type or ["ORIGINAL", "PRIMARY"]
    if side is not None:
        ds.ImageLaterality = side
    if view is not None and view_position:
        ds.ViewPosition = view
    if view is not None and view_code:
        item = Dataset()
        item.CodeValue, item.CodeMeaning = _VIEW_CODES[view]
        item.CodingSchemeDesignator = "SRT"
        ds.ViewCodeSequence = Sequence([item])
    if age is not None:
        ds.PatientAge = age
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = (np.arange(shape[0] * shape[1]) % 256).astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_png(path: Path, shape: tuple[int, int] = (8, 6), value: int = 100) -> Path:
    """A small grayscale PNG or JPEG (by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[object]], *, pre: list[list[object]] = ()) -> Path:
    """A CSV with optional extra rows above the header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        for r in pre:
            w.writerow(r)
        w.writerow(header)
        w.writerows(rows)
    return path


# --- CMMD / TOMPEI -------------------------------------------------------------------------------


def make_cmmd(root: Path) -> Path:
    """Three patients:

    - D1-0001: four views, left malignant (mass), right benign (calcification), age 44.
    - D2-0002: four views, right malignant (both) with subtype; left breast has no clinical row.
    - D1-0003: two views (L only, tags say L), left benign; TOMPEI will move it to R (reversed).
    """
    base = root / "CMMD"
    layout = {
        "D1-0001": [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")],
        "D2-0002": [("R", "CC"), ("R", "MLO"), ("L", "CC"), ("L", "MLO")],
        "D1-0003": [("L", "CC"), ("L", "MLO")],
    }
    for pid, views in layout.items():
        series = base / pid / "07-18-2011-NA-NA-21941" / "1.000000-NA-99533"
        # file order deliberately unrelated to the side
        for i, (side, view) in enumerate(views, start=1):
            write_dicom(series / f"1-{i}.dcm", side=side, view=view, view_position=False, view_code=True)
    write_csv(
        root / "CMMD_clinicaldata_revision.csv",
        ["ID1", "LeftRight", "Age", "number", "abnormality", "classification", "subtype"],
        [
            ["D1-0001", "L", 44, 2, "mass", "Malignant", ""],
            ["D1-0001", "R", 44, 2, "calcification", "Benign", ""],
            ["D2-0002", "R", 61, 2, "both", "Malignant", "Luminal A"],
            ["D1-0003", "L", 50, 2, "mass", "Benign", ""],
        ],
    )
    return root


def make_tompei(root: Path) -> Path:
    """CMMD fixture plus the TOMPEI imaging sheet (CSV export, 2 header rows) and MLO JSON outlines."""
    make_cmmd(root)

    def row(pid, side, age, cls, excl, density, birads, notes=""):
        r = [pid, side, age, cls, excl, density] + [""] * 15 + [birads, notes]
        assert len(r) == 23
        return r

    header = ["ID", "LeftRight", "Age", "classification", "exclusion reason", "density"]
    header += [f"descriptor {i}" for i in range(6, 21)] + ["BI-RADS", "notes"]
    write_csv(
        root / "TOMPEI-CMMD_clinical_data_v01_20250121.csv",
        header,
        [
            row("D1-0001", "L", 44, "Malignant", "", "heterogeneous dense", "5.0"),
            row("D1-0001", "R", 44, "Benign", "", "heterogeneous dense", "3.0"),
            row("D2-0002", "R", 61, "Invisible", "", "extremely dense", "4.0"),
            row("D2-0002", "L", 61, "Exclusion", "CV port", "extremely dense", ""),
            row("D1-0003", "R", 50, "Normal", "", "fatty", "1.0", "reversed left and right"),
        ],
        pre=[["Imaging Diagnosis Details Sheet"]],
    )
    ann = root / "TOMPEI-CMMD_v01_20250123"
    ann.mkdir(parents=True, exist_ok=True)
    lesion = [
        {"cgPoints": [{"x": 10, "y": 20}, {"x": 30, "y": 20}, {"x": 30, "y": 45}], "label": "mass", "type": "Draw"},
        {"cgPoints": [{"x": 1, "y": 2}, {"x": 3, "y": 2}, {"x": 3, "y": 4}], "label": "calc ", "type": "Polyline"},
    ]
    (ann / "D1-0001_MLO_L_AnnotationFile.json").write_text(json.dumps(lesion))
    mac = root / "TOMPEI-CMMD_v01_20250123" / "__MACOSX"
    mac.mkdir()
    (mac / "D1-0001_MLO_R_AnnotationFile.json").write_text("not json")
    return root


# --- VinDr-Mammo ---------------------------------------------------------------------------------


def make_vindr(root: Path) -> Path:
    """Two studies: s1 four views (L BI-RADS 4 density C with a mass box; R BI-RADS 1), training;
    s2 three views (R-MLO missing), test, one finding without a box."""
    studies = {
        "s1": [("L", "CC", "BI-RADS 4", "DENSITY C"), ("L", "MLO", "BI-RADS 4", "DENSITY C"),
               ("R", "CC", "BI-RADS 1", "DENSITY C"), ("R", "MLO", "BI-RADS 1", "DENSITY C")],
        "s2": [("L", "CC", "BI-RADS 2", "DENSITY B"), ("L", "MLO", "BI-RADS 2", "DENSITY B"),
               ("R", "CC", "BI-RADS 3", "DENSITY B")],
    }  # fmt: skip
    split = {"s1": "training", "s2": "test"}
    breast_rows, finding_rows = [], []
    for sid, views in studies.items():
        for i, (side, view, birads, density) in enumerate(views):
            image_id = f"{sid}img{i}"
            age = "053Y" if sid == "s1" else "047Y"
            write_dicom(root / "images" / sid / f"{image_id}.dicom", side=side, view=view, age=age)
            base = [sid, "ser", image_id, side, view, 8, 6, birads, density, split[sid]]
            breast_rows.append(base)
            cats, fb, box = "['No Finding']", "", ["", "", "", ""]
            if sid == "s1" and side == "L" and view == "CC":
                cats, fb, box = "['Mass', 'Suspicious Calcification']", "BI-RADS 4", [1.5, 2.0, 4.5, 6.0]
            if sid == "s2" and side == "R" and view == "CC":
                cats, fb, box = "['Global Asymmetry']", "BI-RADS 3", ["nan", "nan", "nan", "nan"]
            finding_rows.append([sid, "ser", image_id, side, view, 8, 6, birads, density, cats, fb, *box, split[sid]])
    cols = ["study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
            "breast_birads", "breast_density"]  # fmt: skip
    write_csv(root / "breast-level_annotations.csv", cols + ["split"], breast_rows)
    write_csv(
        root / "finding_annotations.csv",
        cols + ["finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax", "split"],
        finding_rows,
    )
    return root


# --- CBIS-DDSM -----------------------------------------------------------------------------------


def make_cbis(root: Path, *, with_metadata: bool = True) -> Path:
    """P_00001: LEFT CC mass (MALIGNANT, assessment 4) + LEFT CC calc (BENIGN_WITHOUT_CALLBACK, 2)
    + LEFT MLO mass (BENIGN, 3); P_00002 (test): RIGHT MLO calc BENIGN density 2.

    Full images are 8 x 6; masks 8 x 6; crops 3 x 3. P_00002's CSV names the crop as its ROI mask
    and the mask as its crop (the "swapped" quirk): the adapter must pick the full-size file.
    New NBIA names (1-1.dcm, descriptive folders) with metadata.csv, or the CSV's own paths without.
    """
    meta_rows = []
    uid_counter = iter(range(1000))

    def series(folder: str, desc: str, files: list[tuple[str, tuple[int, int]]]) -> tuple[str, str, list[str]]:
        study_uid = f"1.2.{next(uid_counter)}"
        series_uid = f"1.3.{next(uid_counter)}"
        if with_metadata:
            loc = Path("CBIS-DDSM") / folder / "07-20-2016-DDSM-74994" / f"1.000000-{desc}-24515"
            names = [f"1-{i + 1}.dcm" for i in range(len(files))]
            windows_location = ".\\" + str(loc).replace("/", "\\")  # NBIA writes Windows separators
            meta_rows.append([series_uid, "CBIS-DDSM", folder, study_uid, desc, len(files), windows_location])
        else:
            loc = Path("CBIS-DDSM") / folder / study_uid / series_uid
            names = [name for name, _ in files]
        for name, (_, shape) in zip(names, files):
            write_dicom(root / loc / name, shape=shape)
        return study_uid, series_uid, [name for name, _ in files]

    def path(folder: str, uids: tuple[str, str, list[str]], k: int) -> str:
        return f"{folder}/{uids[0]}/{uids[1]}/{uids[2][k]}"

    full, crop, mask = (8, 6), (3, 3), (8, 6)
    f1cc = series("Mass-Training_P_00001_LEFT_CC", "full mammogram images", [("000000.dcm", full)])
    r1cc = series("Mass-Training_P_00001_LEFT_CC_1", "ROI mask images", [("000000.dcm", mask), ("000001.dcm", crop)])
    c1cc = series("Calc-Training_P_00001_LEFT_CC", "full mammogram images", [("000000.dcm", full)])
    rc1 = series("Calc-Training_P_00001_LEFT_CC_1", "ROI mask images", [("000000.dcm", crop), ("000001.dcm", mask)])
    f1mlo = series("Mass-Training_P_00001_LEFT_MLO", "full mammogram images", [("000000.dcm", full)])
    r1mlo_c = series("Mass-Training_P_00001_LEFT_MLO_1", "cropped images", [("000000.dcm", crop)])
    r1mlo_m = series("Mass-Training_P_00001_LEFT_MLO_1", "ROI mask images", [("000000.dcm", mask)])
    f2 = series("Calc-Test_P_00002_RIGHT_MLO", "full mammogram images", [("000000.dcm", full)])
    r2 = series("Calc-Test_P_00002_RIGHT_MLO_1", "ROI mask images", [("000000.dcm", crop), ("000001.dcm", mask)])

    mass_cols = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
                 "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
                 "image file path", "cropped image file path", "ROI mask file path"]  # fmt: skip
    calc_cols = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
                 "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
                 "image file path", "cropped image file path", "ROI mask file path"]  # fmt: skip
    write_csv(
        root / "mass_case_description_train_set.csv",
        mass_cols,
        [
            ["P_00001", 3, "LEFT", "CC", 1, "mass", "IRREGULAR", "SPICULATED", 4, "MALIGNANT", 5,
             path("Mass-Training_P_00001_LEFT_CC", f1cc, 0), path("Mass-Training_P_00001_LEFT_CC_1", r1cc, 1),
             path("Mass-Training_P_00001_LEFT_CC_1", r1cc, 0) + "\n"],
            ["P_00001", 3, "LEFT", "MLO", 1, "mass", "OVAL", "CIRCUMSCRIBED", 3, "BENIGN", 4,
             path("Mass-Training_P_00001_LEFT_MLO", f1mlo, 0), path("Mass-Training_P_00001_LEFT_MLO_1", r1mlo_c, 0),
             path("Mass-Training_P_00001_LEFT_MLO_1", r1mlo_m, 0)],
        ],
    )  # fmt: skip
    write_csv(
        root / "calc_case_description_train_set.csv",
        calc_cols,
        [
            ["P_00001", 3, "LEFT", "CC", 1, "calcification", "PLEOMORPHIC", "CLUSTERED", 2, "BENIGN_WITHOUT_CALLBACK", 3,
             path("Calc-Training_P_00001_LEFT_CC", c1cc, 0), path("Calc-Training_P_00001_LEFT_CC_1", rc1, 0),
             path("Calc-Training_P_00001_LEFT_CC_1", rc1, 1)],
        ],
    )  # fmt: skip
    write_csv(
        root / "calc_case_description_test_set.csv",
        calc_cols,
        [
            ["P_00002", 2, "RIGHT", "MLO", 1, "calcification", "ROUND", "SCATTERED", 2, "BENIGN", 2,
             path("Calc-Test_P_00002_RIGHT_MLO", f2, 0), path("Calc-Test_P_00002_RIGHT_MLO_1", r2, 1),
             path("Calc-Test_P_00002_RIGHT_MLO_1", r2, 0)],
        ],
    )  # fmt: skip
    if with_metadata:
        write_csv(
            root / "metadata.csv",
            ["Series UID", "Collection", "Subject ID", "Study UID", "Series Description", "Number of Images",
             "File Location"],  # fmt: skip
            meta_rows,
        )
    return root


# --- CDD-CESM ------------------------------------------------------------------------------------


def make_cdd_cesm(root: Path) -> Path:
    """P1: L malignant (BIRADS "4$5", density C on DM rows, mass), R normal; four views each as DM + CM.
    P2: R benign only (CC views), stray spaces in one file name and in the segmentation CSV."""
    le = root / "Low energy images of CDD-CESM"
    rc = root / "Subtracted images of CDD-CESM"
    rows = []
    for side in ("L", "R"):
        for view in ("CC", "MLO"):
            for kind, folder in (("DM", le), ("CM", rc)):
                name = f"P1_{side}_{kind}_{view}"
                write_png(folder / f"{name}.jpg")
                mal = side == "L"
                rows.append([name, 1, side, "DM" if kind == "DM" else "CESM", 52, "C" if kind == "DM" else "_",
                             "4$5" if mal else "1", "mass" if mal else "", view, "", "Hologic",
                             "Malignant" if mal else "Normal"])  # fmt: skip
    for kind, folder in (("DM", le), ("CM", rc)):
        name = f"P2_R_{kind}_CC"
        fname = f"{name} .jpg" if kind == "CM" else f"{name}.jpg"
        write_png(folder / fname)
        rows.append([name, 2, "R", "DM" if kind == "DM" else "CESM", 38, "B" if kind == "DM" else "_", "3",
                     "mass$calcification", "CC", "", "GE", "Benign"])  # fmt: skip
    write_csv(
        root / "Radiology manual annotations.csv",
        ["Image_name", "Patient_ID", "Side", "Type", "Age", "Breast density (ACR)", "BIRADS", "Findings", "View",
         "Tags", "Machine", "Pathology Classification/ Follow up"],
        rows,
    )  # fmt: skip
    seg = [
        ["P1_L_CM_CC.jpg", 1000, "{}", 2, 0, json.dumps({"name": "polygon", "all_points_x": [1, 4, 4], "all_points_y": [2, 2, 6]}), "{}"],
        ["P1_L_CM_CC.jpg", 1000, "{}", 2, 1, json.dumps({"name": "ellipse", "cx": 10, "cy": 20, "rx": 4, "ry": 2, "theta": 0}), "{}"],
        ["P1_L_DM_MLO.jpg", 1000, "{}", 1, 0, json.dumps({"name": "circle", "cx": 3, "cy": 4, "r": 2}), "{}"],
        ["P1_R_DM_CC.jpg", 1000, "{}", 0, 0, "{}", "{}"],
        ["P2_R_CM_CC .jpg", 1000, "{}", 1, 0, json.dumps({"name": "point", "cx": 5, "cy": 6}), "{}"],
    ]  # fmt: skip
    write_csv(
        root / "Radiology_hand_drawn_segmentations_v2.csv",
        ["#filename", "file_size", "file_attributes", "region_count", "region_id", "region_shape_attributes",
         "region_attributes"],  # fmt: skip
        seg,
    )
    return root


# --- mini-MIAS and BUSI --------------------------------------------------------------------------


def make_mias(root: Path, *, info_txt: bool = False) -> Path:
    """mdb001 (CIRC B at x=535, y=425, r=197), mdb002 (NORM), mdb003 (CALC M, no centre) and
    mdb004 (CIRC B + SPIC M: worst = malignant); labels.csv + png/, or Info.txt + .pgm."""
    rows = [
        ["mdb001", "G", "CIRC", "B", 535, 425, 197],
        ["mdb002", "G", "NORM", "", "", "", ""],
        ["mdb003", "D", "CALC", "M", "", "", ""],
        ["mdb004", "F", "CIRC", "B", 100, 1000, 10],
        ["mdb004", "F", "SPIC", "M", 600, 24, 30],
    ]
    refs = sorted({r[0] for r in rows})
    if info_txt:
        lines = ["MIAS header text", "mdbxxx is not a row", "=" * 10]
        for r in rows:
            lines.append(" ".join(str(x) for x in r if x != "") + " ")
        lines[-3] = "mdb003 D CALC M *NOTE 3*"  # the widely distributed calcification note
        (root / "Info.txt").write_text("\n".join(lines) + "\n", encoding="latin-1")
        for ref in refs:
            write_png(root / f"{ref}.pgm")  # Pillow writes binary PGM (P5) for this suffix
    else:
        write_csv(root / "labels.csv", ["ref", "tissue", "abnormality_class", "severity", "x", "y", "radius"], rows)
        for ref in refs:
            write_png(root / "png" / f"{ref}.png")
    return root


def make_busi(root: Path, *, labels_csv: bool = True) -> Path:
    """benign (1) [2 masks], benign (2), malignant (1), normal (1); near-duplicates benign (2) ~
    malignant (1) and malignant (1) ~ benign (3) (benign (3) is not in the copy)."""
    files = {
        "benign": {"benign (1)": 2, "benign (2)": 1},
        "malignant": {"malignant (1)": 1},
        "normal": {"normal (1)": 1},
    }
    rows = []
    for cls, items in files.items():
        for stem, n_masks in items.items():
            write_png(root / cls / f"{stem}.png")
            masks = []
            for k in range(n_masks):
                suffix = "_mask" if k == 0 else f"_mask_{k}"
                write_png(root / cls / f"{stem}{suffix}.png", value=255 if cls != "normal" else 0)
                masks.append(f"{cls}/{stem}{suffix}.png")
            rows.append([f"{cls}/{stem}.png", cls, ";".join(masks), n_masks])
    if labels_csv:
        write_csv(root / "labels.csv", ["file", "class", "mask_files", "n_masks"], rows)
        write_csv(
            root / "near_duplicates_unverified.csv",
            ["thumb_corr", "file_a", "file_b", "cross_class", "pixel_identical"],
            [
                [0.9995, "benign/benign (2).png", "malignant/malignant (1).png", True, False],
                [0.9991, "malignant/malignant (1).png", "benign/benign (3).png", True, False],
            ],
        )
    return root
