"""Raster images and the file-name convention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import NotDicomError, TruncatedFileError
from engine.io.raster import name_info_for, parse_name, read_raster


@pytest.mark.parametrize(
    ("name", "laterality", "view", "kind", "cesm_kind"),
    [
        ("case1_L_CC.png", "L", "CC", None, None),
        ("R-MLO.png", "R", "MLO", None, None),
        ("LCC.tif", "L", "CC", None, None),
        ("p7.rmlo.PNG", "R", "MLO", None, None),
        ("x_left_cc.jpg", "L", "CC", None, None),
        ("P_00001_RIGHT_MLO.png", "R", "MLO", None, None),
        ("LEFTCC.png", "L", "CC", None, None),
        ("L_ML.png", "L", "ML", None, None),  # ML is not MLO
        ("RML.png", "R", "ML", None, None),
        ("R_LM.png", "R", "LM", None, None),  # LM is a view, never L + M
        ("L_XCCL.png", "L", "XCCL", None, None),
        ("L_US_1.png", "L", None, "US", None),
        ("P12_L_DM_CC.jpg", "L", "CC", "CESM", "low_energy"),
        ("P12_R_CM_MLO.jpg", "R", "MLO", "CESM", "recombined"),
        ("mdb001.png", None, None, None, None),  # mini-MIAS
        ("benign (2).png", None, None, None, None),  # BUSI
        ("L_R_CC.png", None, "CC", None, None),  # disagreeing lateralities -> unknown
        ("calcium.png", None, None, None, None),  # letters inside words are not tokens
    ],
)
def test_name_convention(name, laterality, view, kind, cesm_kind):
    info = parse_name(name)
    assert (info.laterality, info.view, info.kind, info.cesm_kind) == (laterality, view, kind, cesm_kind)


def test_conflicts_and_modifiers():
    assert parse_name("L_R_CC.png").conflicts == ("laterality",)
    assert parse_name("L_CC_SPOT.png").modifiers == ("spot compression",)
    assert parse_name("R_MLO_mag.png").modifiers == ("magnification",)


def test_folder_names_fill_gaps(tmp_path):
    path = tmp_path / "Mass-Training_P_00001_LEFT_CC" / "1.3.6" / "1-1.dcm"
    info = name_info_for(path, tmp_path)
    assert (info.laterality, info.view) == ("L", "CC")
    # the file name wins over its folder
    info = name_info_for(tmp_path / "R_CC" / "L_MLO.png", tmp_path)
    assert (info.laterality, info.view) == ("L", "MLO")
    us = name_info_for(tmp_path / "US" / "img7.png", tmp_path)
    assert us.kind == "US"


def test_png_8_bit(tmp_path):
    arr = (np.arange(64 * 32).reshape(64, 32) % 256).astype(np.uint8)
    path = tmp_path / "study_R_CC.png"
    Image.fromarray(arr).save(path)
    image = read_raster(path)
    assert image.kind == "MG" and image.key == "R-CC"
    assert (image.laterality_from, image.view_from) == ("filename", "filename")
    assert image.stored.dtype == np.uint8 and image.bits_stored == 8
    np.testing.assert_array_equal(image.stored, arr)
    np.testing.assert_array_equal(image.display, arr)  # 8-bit: displayed as stored
    assert image.pixel_spacing_mm is None and not image.spacing_calibrated


def test_png_16_bit_full_range(tmp_path):
    arr = np.linspace(1000, 5000, 50 * 40).round().astype(np.uint16).reshape(50, 40)
    path = tmp_path / "L-MLO.png"
    Image.fromarray(arr).save(path)
    image = read_raster(path)
    assert image.key == "L-MLO" and image.stored.dtype == np.uint16 and image.bits_stored == 16
    np.testing.assert_array_equal(image.stored, arr)
    preset = image.voi_presets[0]
    assert (preset.function, preset.center, preset.width) == ("LINEAR_EXACT", 3000.0, 4000.0)
    # LINEAR_EXACT (PS3.3 C.11.2.1.3.2) with c = 3000, w = 4000 maps 1000..5000 onto 0..255
    want = np.rint(((arr.astype(np.float64) - 3000) / 4000 + 0.5) * 255).astype(np.uint8)
    np.testing.assert_array_equal(image.display, want)


def test_tiff_16_bit_and_jpeg(tmp_path):
    arr = (np.arange(30 * 20).reshape(30, 20) * 50).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "RCC.tif")
    tif = read_raster(tmp_path / "RCC.tif")
    np.testing.assert_array_equal(tif.stored, arr)
    gray = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    Image.fromarray(gray).save(tmp_path / "P3_L_CM_CC.jpg", quality=95)
    jpg = read_raster(tmp_path / "P3_L_CM_CC.jpg")
    assert (jpg.kind, jpg.cesm_kind, jpg.key) == ("CESM", "recombined", "L-CC")
    assert np.abs(jpg.stored.astype(int) - gray).max() <= 4  # lossy, but the same picture


def test_colour_png_becomes_luminance(tmp_path):
    rgb = np.zeros((10, 12, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 200, 90
    Image.fromarray(rgb).save(tmp_path / "L_US_2.png")
    image = read_raster(tmp_path / "L_US_2.png")
    assert image.kind == "US" and image.laterality == "L"
    assert int(image.stored[0, 0]) == round(0.299 * 10 + 0.587 * 200 + 0.114 * 90)  # 130
    assert any("luminance" in w for w in image.warnings)


def test_kind_hint_us(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "benign (1).png")
    assert read_raster(tmp_path / "benign (1).png").kind == "MG"
    assert read_raster(tmp_path / "benign (1).png", kind_hint="US").kind == "US"


def test_bad_rasters(tmp_path):
    path = tmp_path / "R_CC.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedFileError) as info:
        read_raster(path)
    assert str(info.value).startswith("R_CC.png: ")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"definitely not a png" * 10)
    with pytest.raises(NotDicomError) as info:
        read_raster(Path(junk))
    assert str(info.value).startswith("junk.png: ") and "\n" not in str(info.value)
