"""DICOM reading: pixel pipeline, view identity, spacing, CESM/US, compressed data, bad input."""

from __future__ import annotations

import logging
import math
import struct

import numpy as np
import pytest
from dicom_factory import (
    CT_IMAGE,
    MG_FOR_PROCESSING,
    code_item,
    make_image,
    make_mg,
    make_us,
    ramp,
    save,
)
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless, RLELossless

from engine.display import render
from engine.errors import (
    MissingDecoderError,
    NoPixelDataError,
    NotBreastImageError,
    NotDicomError,
    StudyError,
    TruncatedFileError,
    UnsupportedPhotometricError,
)
from engine.io.dicom import acquisition_datetime, read_dicom

WINDOW = {"WindowCenter": 2048, "WindowWidth": 4096}


def _read(tmp_path, ds, name="img.dcm", syntax=None):
    return read_dicom(save(ds, tmp_path / name, syntax))


# --- grayscale pipeline ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("photometric", "shape", "inverted"),
    [
        ("MONOCHROME2", None, False),
        ("MONOCHROME2", "IDENTITY", False),
        ("MONOCHROME1", None, True),
        ("MONOCHROME1", "INVERSE", True),  # one inversion stated twice: never inverted twice
        ("MONOCHROME1", "IDENTITY", True),
        ("MONOCHROME2", "INVERSE", True),
    ],
)
def test_inversion_is_applied_once(tmp_path, photometric, shape, inverted):
    ds = make_mg(photometric=photometric, PresentationLUTShape=shape, **WINDOW)
    image = _read(tmp_path, ds)
    assert image.inverted_for_display is inverted
    # stored 0 (first pixel) and 4095 (last): LINEAR c=2048 w=4096 gives 0 and 255
    first, last = int(image.display[0, 0]), int(image.display[-1, -1])
    assert (first, last) == ((255, 0) if inverted else (0, 255))
    # the middle value 2048: 127.53 -> 128, inverted 127.47 -> 127
    mid = np.argwhere(image.stored == 2048)
    if len(mid):
        assert int(image.display[tuple(mid[0])]) == (127 if inverted else 128)


def test_voi_lut_sequence_is_the_default_preset(tmp_path):
    table = (np.arange(4096) // 16).astype(np.uint16)  # 8-bit output: a linear ramp over 0..4095
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    item.add_new(0x00283006, "US", table.tolist())  # LUTData as US
    item.LUTExplanation = "NORMAL"
    ds = make_mg(VOILUTSequence=Sequence([item]), **WINDOW)
    image = _read(tmp_path, ds)
    assert [p.function for p in image.voi_presets] == ["LUT", "LINEAR"]
    assert image.voi_presets[0].explanation == "NORMAL"
    # display = table[stored] scaled from 0..255 (8 bits): equal to the table itself
    np.testing.assert_array_equal(image.display, table[image.stored])
    assert image.summary()["voi_presets"][0] == {"center": 2047.5, "width": 4096.0, "function": "LUT"}


def test_voi_lut_as_ow_bytes_and_oversized_entries(tmp_path):
    table = np.linspace(0, 4095, 256).round().astype("<u2")  # 12-bit entries under a "10-bit" descriptor
    item = Dataset()
    item.LUTDescriptor = [256, 1000, 10]
    item.add_new(0x00283006, "OW", table.tobytes())
    ds = make_mg(VOILUTSequence=Sequence([item]))
    image = _read(tmp_path, ds)
    lut = image.voi_presets[0]
    assert lut.bits == 12 and lut.first_mapped == 1000
    assert any("exceed 10 bits" in w for w in image.warnings)
    # stored <= 1000 -> entry 0; >= 1255 -> entry 255 (4095 -> 255)
    assert image.display[image.stored <= 1000].max() == 0
    assert image.display[image.stored >= 1255].min() == 255


def test_several_windows_become_presets(tmp_path):
    ds = make_mg(
        WindowCenter=[2048, 1500, 2500],
        WindowWidth=[4096, 1000, 800],
        WindowCenterWidthExplanation=["NORMAL", "HARDER", "SOFTER"],
    )
    image = _read(tmp_path, ds)
    assert [(p.center, p.width, p.explanation) for p in image.voi_presets] == [
        (2048, 4096, "NORMAL"),
        (1500, 1000, "HARDER"),
        (2500, 800, "SOFTER"),
    ]
    harder = render(image, 1)
    # stored 1000 is the bottom of the 1500/1000 window: x <= 999.5 + ... -> check the formula
    x = image.stored.astype(np.float64)
    want = np.clip(((x - 1499.5) / 999 + 0.5) * 255, 0, 255)
    want = np.where(x <= 1499.5 - 499.5, 0, np.where(x > 1499.5 + 499.5, 255, want))
    np.testing.assert_array_equal(harder, np.rint(want).astype(np.uint8))


@pytest.mark.parametrize("function", ["SIGMOID", "LINEAR_EXACT"])
def test_voi_lut_function_from_file(tmp_path, function):
    ds = make_mg(WindowCenter=1800, WindowWidth=900, VOILUTFunction=function)
    image = _read(tmp_path, ds)
    assert image.voi_presets[0].function == function
    for stored in (0, 1350, 1800, 2000, 2250, 4095):
        where = np.argwhere(image.stored == stored)
        if not len(where):
            continue
        x = float(stored)
        if function == "SIGMOID":
            y = 255 / (1 + math.exp(-4 * (x - 1800) / 900))
        else:
            y = 0 if x <= 1800 - 450 else 255 if x > 1800 + 450 else ((x - 1800) / 900 + 0.5) * 255
        assert int(image.display[tuple(where[0])]) == int(np.rint(y)), stored


def test_rescale_slope_intercept(tmp_path):
    ds = make_mg(RescaleSlope=0.5, RescaleIntercept=-100, WindowCenter=400, WindowWidth=601)
    image = _read(tmp_path, ds)
    values = image.values()
    assert values.dtype == np.float32
    np.testing.assert_allclose(values, image.stored * 0.5 - 100)
    # value 400 (stored 1000) sits at the window centre: ((400 - 399.5) / 600 + 0.5) * 255 = 127.71
    idx = np.argwhere(image.stored == 1000)
    assert len(idx) and int(image.display[tuple(idx[0])]) == 128
    assert int(image.display[image.stored <= 200].max()) == 0  # values <= 0 are black (c - w/2 = 100)


def test_modality_lut_sequence(tmp_path):
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new(0x00283006, "US", (4095 - np.arange(4096)).tolist())  # LUTData: an inverting table
    item.ModalityLUTType = "US"
    ds = make_mg(ModalityLUTSequence=Sequence([item]), **WINDOW)
    image = _read(tmp_path, ds)
    assert image.modality_lut is not None
    np.testing.assert_array_equal(image.values(), 4095 - image.stored.astype(np.float32))
    assert (int(image.display[0, 0]), int(image.display[-1, -1])) == (255, 0)


def test_no_window_gives_full_range(tmp_path):
    image = _read(tmp_path, make_mg())
    preset = image.voi_presets[0]
    assert (preset.function, preset.center, preset.width) == ("LINEAR_EXACT", 2047.5, 4095)
    assert (int(image.display.min()), int(image.display.max())) == (0, 255)


def test_signed_pixels(tmp_path):
    arr = (ramp(bits=12).astype(np.int32) - 2048).astype(np.int16)
    ds = make_mg(pixels=arr, bits_stored=12, WindowCenter=0, WindowWidth=4096)
    image = _read(tmp_path, ds)
    assert image.stored.dtype == np.int16 and int(image.stored.min()) == -2048
    assert (int(image.display[0, 0]), int(image.display[-1, -1])) == (0, 255)


def test_dataset_is_not_kept(tmp_path):
    image = _read(tmp_path, make_mg(**WINDOW))
    assert image.stored.flags.owndata and image.display.flags.owndata
    assert not any(isinstance(v, Dataset) for v in vars(image).values())


# --- compressed pixel data ------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_pixel_data_decodes_losslessly(tmp_path, syntax):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 2**14, size=(96, 80), dtype=np.uint16)
    ds = make_mg(pixels=arr, bits_stored=14, WindowCenter=8000, WindowWidth=9000)
    plain = _read(tmp_path, ds, "plain.dcm")
    packed = _read(tmp_path, ds, "packed.dcm", syntax)
    np.testing.assert_array_equal(packed.stored, arr)
    np.testing.assert_array_equal(packed.display, plain.display)


def test_missing_decoder_names_the_plugin(tmp_path, monkeypatch):
    from pydicom.pixels import get_decoder

    path = save(make_mg(), tmp_path / "j2k.dcm", JPEG2000Lossless)
    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})  # as if no JPEG 2000 plugin were installed
    with pytest.raises(MissingDecoderError) as info:
        read_dicom(path)
    message = str(info.value)
    assert message.startswith("j2k.dcm: ") and "\n" not in message
    assert "pylibjpeg-openjpeg" in message and "pip install" in message
    assert info.value.package == "pylibjpeg-openjpeg"


# --- view identity --------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["ImageLaterality", "Laterality", "FrameLaterality"])
def test_laterality_tags(tmp_path, tag):
    image = _read(tmp_path, make_mg("R", "MLO", laterality_tag=tag))
    assert (image.laterality, image.laterality_from, image.key) == ("R", tag, "R-MLO")


def test_image_laterality_wins_over_laterality(tmp_path):
    image = _read(tmp_path, make_mg("L", "CC", Laterality="R"))
    assert (image.laterality, image.laterality_from) == ("L", "ImageLaterality")


@pytest.mark.parametrize("scheme", ["SCT", "SRT", "SNM3"])
@pytest.mark.parametrize("view", ["CC", "MLO"])
def test_view_code_sequence_schemes(tmp_path, scheme, view):
    image = _read(tmp_path, make_mg("L", view, view_tag="ViewCodeSequence", scheme=scheme))
    assert (image.view, image.view_from, image.key) == (view, "ViewCodeSequence", f"L-{view}")


def test_view_code_meaning_fallback(tmp_path):
    ds = make_mg("R", None)
    ds.ViewCodeSequence = Sequence([code_item("X-123", "99LOCAL", "medio-lateral oblique")])
    assert _read(tmp_path, ds).key == "R-MLO"


@pytest.mark.parametrize("view_tag", ["ViewPosition", "ViewCodeSequence"])
def test_ml_is_not_mlo(tmp_path, view_tag):
    image = _read(tmp_path, make_mg("L", "ML", view_tag=view_tag))
    assert image.view == "ML" and image.key is None


def test_spot_compression_modifier(tmp_path):
    spot = ("399055006", "SCT", "Spot Compression")
    inner = _read(tmp_path, make_mg("L", "CC", view_tag="ViewCodeSequence", modifiers=[spot]), "a.dcm")
    top = _read(tmp_path, make_mg("L", "CC", modifiers=[("R-102D6", "SRT", "")]), "b.dcm")
    assert inner.view_modifiers == ("spot compression",) and inner.key == "L-CC"
    assert top.view_modifiers == ("magnification",)


def test_tags_missing_falls_back_to_file_name(tmp_path):
    image = read_dicom(save(make_mg(None, None), tmp_path / "case_RIGHT_MLO.dcm"))
    assert (image.key, image.laterality_from, image.view_from) == ("R-MLO", "filename", "filename")


# --- spacing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "spacing", "calibrated", "source"),
    [
        ({"PixelSpacing": [0.07, 0.07], "PixelSpacingCalibrationType": "GEOMETRY"}, (0.07, 0.07), True, "Calibration"),
        ({"PixelSpacing": [0.065, 0.065], "ImagerPixelSpacing": [0.07, 0.07]}, (0.065, 0.065), True, "differs"),
        (
            {"PixelSpacing": [0.1, 0.1], "ImagerPixelSpacing": [0.1, 0.1], "EstimatedRadiographicMagnificationFactor": 1.25},
            (0.08, 0.08),
            True,
            "EstimatedRadiographicMagnificationFactor",
        ),
        ({"PixelSpacing": [0.1, 0.1], "ImagerPixelSpacing": [0.1, 0.1]}, (0.1, 0.1), False, "ImagerPixelSpacing"),
        ({"ImagerPixelSpacing": [0.085, 0.09]}, (0.085, 0.09), False, "ImagerPixelSpacing"),
        ({"PixelSpacing": [0.2, 0.2]}, (0.2, 0.2), False, "no calibration"),
        ({}, None, False, "none"),
    ],
)
def test_spacing_rules(tmp_path, attrs, spacing, calibrated, source):
    image = _read(tmp_path, make_mg(**attrs))
    if spacing is None:
        assert image.pixel_spacing_mm is None
    else:
        np.testing.assert_allclose(image.pixel_spacing_mm, spacing)
    assert image.spacing_calibrated is calibrated
    assert source in image.spacing_source


def _region(min_x, min_y, max_x, max_y, dx, dy, units=3, spatial=1):
    return {
        "RegionSpatialFormat": spatial, "RegionDataType": 1, "RegionFlags": 0,
        "RegionLocationMinX0": min_x, "RegionLocationMinY0": min_y,
        "RegionLocationMaxX1": max_x, "RegionLocationMaxY1": max_y,
        "PhysicalUnitsXDirection": units, "PhysicalUnitsYDirection": units,
        "PhysicalDeltaX": dx, "PhysicalDeltaY": dy,
    }  # fmt: skip


def test_us_regions_spacing(tmp_path):
    regions = [_region(0, 0, 9, 9, 0.5, 0.5), _region(0, 0, 49, 39, 0.01, 0.012), _region(0, 0, 49, 39, 1.0, 1.0, units=4)]
    image = _read(tmp_path, make_us(regions=regions, ImageLaterality="L"))
    assert image.kind == "US" and image.laterality == "L"
    np.testing.assert_allclose(image.pixel_spacing_mm, (0.12, 0.1))  # (row = dY, col = dX) cm -> mm
    assert image.spacing_calibrated and image.spacing_source == "SequenceOfUltrasoundRegions"


def test_us_colour_becomes_luminance(tmp_path):
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    image = _read(tmp_path, make_us(rgb))
    assert image.stored.shape == (20, 30) and image.photometric == "RGB"
    assert int(image.stored[0, 0]) == round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)  # 124
    assert int(image.display[0, 0]) == 124


# --- CESM, FOR PROCESSING, time -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_type", "kind", "cesm_kind", "extra"),
    [
        (["DERIVED", "PRIMARY", "", "SUBTRACTION"], "CESM", "recombined", None),
        (["DERIVED", "PRIMARY", "", "ADDITION", "HIGH_ENERGY"], "CESM", "recombined", None),
        (["ORIGINAL", "PRIMARY", "", "NONE", "LOW_ENERGY"], "CESM", "low_energy", None),
        (["ORIGINAL", "PRIMARY", "", "NONE", "HIGH_ENERGY"], "CESM", None, "high-energy"),
        (["ORIGINAL", "PRIMARY"], "MG", None, None),
    ],
)
def test_cesm_image_type(tmp_path, image_type, kind, cesm_kind, extra):
    image = _read(tmp_path, make_mg("R", "CC", ImageType=image_type))
    assert (image.kind, image.cesm_kind) == (kind, cesm_kind)
    assert (extra is None and image.extra_reason is None) or extra in image.extra_reason


def test_for_processing_is_flagged(tmp_path):
    image = _read(tmp_path, make_mg(sop_class=MG_FOR_PROCESSING, PresentationIntentType="FOR PROCESSING"))
    assert image.for_processing and any("FOR PROCESSING" in w for w in image.warnings)


def test_acquisition_time_order_of_tags():
    ds = Dataset()
    ds.ContentDate, ds.ContentTime = "20200101", "101010"
    assert acquisition_datetime(ds).isoformat() == "2020-01-01T10:10:10"
    ds.AcquisitionDate, ds.AcquisitionTime = "20210202", "0909"
    assert acquisition_datetime(ds).isoformat() == "2021-02-02T09:09:00"
    ds.AcquisitionDateTime = "20220303111213.5+0100"
    assert acquisition_datetime(ds).isoformat() == "2022-03-03T11:12:13.500000"


# --- bad input ------------------------------------------------------------------------------------


def _assert_one_line(err: StudyError, name: str) -> None:
    text = str(err)
    assert text.startswith(f"{name}: ") and "\n" not in text and len(text) < 200
    assert "SECRET-ID-123" not in text and "Patient" not in text


def test_text_file_named_dcm(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("this is not an image\n" * 20)
    with pytest.raises(NotDicomError) as info:
        read_dicom(path)
    _assert_one_line(info.value, "notes.dcm")


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
@pytest.mark.parametrize("syntax", [None, RLELossless])
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_file(tmp_path, syntax, keep):
    path = save(make_mg(pixels=ramp(128, 96)), tmp_path / "cut.dcm", syntax)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(TruncatedFileError) as info:
        read_dicom(path)
    _assert_one_line(info.value, "cut.dcm")


def test_truncated_inside_the_header(tmp_path):
    path = save(make_mg(pixels=ramp(128, 96)), tmp_path / "head.dcm")
    data = path.read_bytes()
    pixel_tag = data.find(struct.pack("<HH", 0x7FE0, 0x0010))
    path.write_bytes(data[: pixel_tag - 5])
    with pytest.raises(TruncatedFileError):
        read_dicom(path)


def test_dicom_without_pixel_data(tmp_path):
    ds = make_image()
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):  # fmt: skip
        delattr(ds, keyword)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.Modality = "SR"
    path = save(ds, tmp_path / "report.dcm")
    with pytest.raises(NoPixelDataError) as info:
        read_dicom(path)
    _assert_one_line(info.value, "report.dcm")
    assert "Basic Text SR" in str(info.value)


@pytest.mark.parametrize(
    ("attrs", "word"),
    [
        ({"modality": "CT", "sop_class": CT_IMAGE, "BodyPartExamined": "CHEST"}, "CT"),
        ({"modality": "MG", "BodyPartExamined": "KNEE"}, "KNEE"),
        ({"modality": "DX", "BodyPartExamined": "CHEST", "sop_class": "1.2.840.10008.5.1.4.1.1.1.1"}, "CHEST"),
        ({"modality": "DX", "ViewPosition": "AP", "sop_class": "1.2.840.10008.5.1.4.1.1.1.1"}, "no sign"),
        ({"modality": "MR", "sop_class": "1.2.840.10008.5.1.4.1.1.4", "BodyPartExamined": "BREAST"}, "MR"),
    ],
)
def test_not_a_breast_image(tmp_path, attrs, word):
    with pytest.raises(NotBreastImageError) as info:
        _read(tmp_path, make_image(**attrs), "other.dcm")
    _assert_one_line(info.value, "other.dcm")
    assert word in str(info.value)


def test_dx_breast_image_loads(tmp_path):
    ds = make_mg("L", "CC", modality="DX", sop_class="1.2.840.10008.5.1.4.1.1.1.1", BodyPartExamined="BREAST")
    assert _read(tmp_path, ds).key == "L-CC"


def test_unsupported_photometric(tmp_path):
    ds = make_mg()
    ds.PhotometricInterpretation = "HSV"
    with pytest.raises(UnsupportedPhotometricError) as info:
        _read(tmp_path, ds, "hsv.dcm")
    _assert_one_line(info.value, "hsv.dcm")


def test_no_patient_data_in_logs_or_warnings(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    image = _read(tmp_path, make_mg(sop_class=MG_FOR_PROCESSING, PresentationIntentType="FOR PROCESSING"))
    text = caplog.text + " ".join(image.warnings) + repr(image.summary())
    assert "SECRET-ID-123" not in text and "Test^Patient" not in text
