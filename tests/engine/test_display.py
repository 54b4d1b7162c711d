"""The display pipeline against the DICOM formulas (PS3.3 C.11.1, C.11.2.1.2) and itself."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from engine.display import (
    apply_lut,
    full_range_window,
    modality_values,
    render,
    render_array,
    voi_output,
    window_lut,
)
from engine.study import StudyImage, VoiLut, VoiWindow


def _linear(x: float, c: float, w: float) -> float:
    """PS3.3 C.11.2.1.2.1 written out, ymin 0, ymax 255."""
    if x <= c - 0.5 - (w - 1) / 2:
        return 0.0
    if x > c - 0.5 + (w - 1) / 2:
        return 255.0
    return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255


def _linear_exact(x: float, c: float, w: float) -> float:
    if x <= c - w / 2:
        return 0.0
    if x > c + w / 2:
        return 255.0
    return ((x - c) / w + 0.5) * 255


def _sigmoid(x: float, c: float, w: float) -> float:
    return 255 / (1 + math.exp(-4 * (x - c) / w))


@pytest.mark.parametrize(
    ("function", "reference"),
    [("LINEAR", _linear), ("LINEAR_EXACT", _linear_exact), ("SIGMOID", _sigmoid)],
)
@pytest.mark.parametrize(("center", "width"), [(2048.0, 4096.0), (1000.0, 301.0), (40.5, 7.0)])
def test_voi_functions_follow_the_standard(function, reference, center, width):
    x = np.linspace(center - width, center + width, 997)
    got = voi_output(x, VoiWindow(center, width, function))
    want = np.array([reference(v, center, width) for v in x])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_linear_hand_values():
    # c=2048, w=4096: x=0 is the bottom edge, x=4095 the top, x=2048 is 127.53 -> 128
    w = VoiWindow(2048, 4096, "LINEAR")
    got = render_array(np.array([0, 1, 2048, 4095, 4096], dtype=np.uint16), w)
    assert got.tolist() == [0, 0, 128, 255, 255]
    # LINEAR with width 1 is a step at c - 0.5
    step = render_array(np.array([99, 100, 101], dtype=np.uint16), VoiWindow(100, 1, "LINEAR"))
    assert step.tolist() == [0, 255, 255]


def test_linear_exact_and_sigmoid_hand_values():
    x = np.array([90, 100, 110, 120], dtype=np.uint16)
    exact = render_array(x, VoiWindow(100, 20, "LINEAR_EXACT"))
    assert exact.tolist() == [0, 128, 255, 255]  # 127.5 rounds to even (128)
    sig = render_array(x, VoiWindow(100, 20, "SIGMOID"))
    # 255 / (1 + e^2) = 30.40, 127.5, 255 / (1 + e^-2) = 224.60, 255 / (1 + e^-4) = 250.33
    assert sig.tolist() == [30, 128, 225, 250]


def test_invalid_widths_are_refused():
    with pytest.raises(ValueError):
        voi_output(np.zeros(3), VoiWindow(0, 0.5, "LINEAR"))
    with pytest.raises(ValueError):
        voi_output(np.zeros(3), VoiWindow(0, 0, "SIGMOID"))
    with pytest.raises(ValueError):
        voi_output(np.zeros(3), VoiWindow(0, 10, "GAMMA"))


def test_rescale_then_window():
    # stored 0..4095, slope 2, intercept -1000 -> values -1000..7190; window on the values
    stored = np.array([0, 500, 1000, 4095], dtype=np.uint16)
    values = modality_values(stored, slope=2.0, intercept=-1000.0)
    assert values.tolist() == [-1000.0, 0.0, 1000.0, 7190.0]
    out = render_array(stored, VoiWindow(0, 2001, "LINEAR"), slope=2.0, intercept=-1000.0)
    assert out.tolist() == [0, 128, 255, 255]


def test_modality_lut_table_clamps():
    table = np.array([10, 20, 30, 40], dtype=np.uint16)
    stored = np.array([0, 5, 6, 7, 8, 100], dtype=np.uint16)
    assert modality_values(stored, modality_lut=(5, table)).tolist() == [10, 10, 20, 30, 40, 40]


def test_voi_lut_table_scales_by_its_bits():
    lut = VoiLut(first_mapped=100, table=np.array([0, 1023, 4095], dtype=np.uint16), bits=12)
    out = render_array(np.array([0, 100, 101, 102, 9999], dtype=np.uint16), lut)
    # 1023 / 4095 * 255 = 63.7 -> 64
    assert out.tolist() == [0, 0, 64, 255, 255]


def test_inversion_after_voi():
    x = np.array([90, 100, 110, 120], dtype=np.uint16)
    plain = render_array(x, VoiWindow(100, 20, "SIGMOID"))
    inverted = render_array(x, VoiWindow(100, 20, "SIGMOID"), invert=True)
    # rint(255 - y): 224.60 -> 225, 127.5 -> 128, 30.40 -> 30, 4.67 -> 5
    assert inverted.tolist() == [225, 128, 30, 5]
    assert plain.tolist() == [30, 128, 225, 250]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
def test_table_path_equals_float_path(dtype):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    stored = rng.integers(info.min, info.max, size=(37, 41), endpoint=True).astype(dtype)
    preset = VoiWindow(float(info.min) / 3 + 7.25, float(info.max - info.min) / 2, "LINEAR")
    kwargs = dict(slope=1.5, intercept=-3.0, invert=True)
    table = window_lut(dtype, preset, **kwargs)
    assert table.shape == (2 ** (8 * np.dtype(dtype).itemsize),) and table.dtype == np.uint8
    fast = apply_lut(stored, table)
    slow = render_array(stored.astype(np.float32), preset, **kwargs)  # float path
    np.testing.assert_array_equal(fast, slow)


def test_signed_lut_indexes_negative_values():
    stored = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    out = render_array(stored, full_range_window(-32768, 32767, "t"))
    assert out.tolist() == [0, 127, 128, 128, 255]


def test_full_range_window_is_identity_on_8_bit():
    x = np.arange(256, dtype=np.uint8)
    assert np.array_equal(render_array(x, full_range_window(0, 255, "t")), x)


def _image(stored: np.ndarray, **kw) -> StudyImage:
    presets = (VoiWindow(2048, 4096, "LINEAR"), VoiWindow(1000, 500, "SIGMOID"))
    return StudyImage(
        path=Path("x.dcm"), relpath="x.dcm", kind="MG", stored=stored, display=np.zeros(stored.shape, np.uint8),
        voi_presets=presets, **kw,
    )  # fmt: skip


def test_render_presets_and_interactive_window():
    stored = np.array([[0, 1000, 2048, 4095]], dtype=np.uint16)
    image = _image(stored, inverted_for_display=True)
    # LINEAR c=2048 w=4096 gives 0, 62.27, 127.53, 255; inverted: 255, 192.73, 127.47, 0
    assert render(image).tolist() == [[255, 193, 127, 0]]
    assert render(image, 1, invert=False).tolist() == [[0, 128, 255, 255]]
    # interactive window inherits the preset's function unless told
    assert render(image, 1, center=2048, width=4096, invert=False).tolist() == [[30, 67, 128, 225]]
    assert render(image, center=2048, width=4096, function="LINEAR", invert=False).tolist() == [[0, 62, 128, 255]]
    with pytest.raises(ValueError):
        render(image, center=10)
