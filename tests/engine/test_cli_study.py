"""``mammo-study``: text summary, ``--json`` shape, ``--png`` output, exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import CT_IMAGE, make_image, make_mg, make_us, save
from PIL import Image

import engine
from engine.cli import study_main

REPO = Path(__file__).resolve().parents[2]

VIEW_KEYS = {
    "file", "laterality_from", "view_from", "rows", "columns", "photometric", "inverted_for_display",
    "voi_presets", "pixel_spacing_mm", "spacing_calibrated", "for_processing",
}  # fmt: skip


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "case7"
    save(make_mg("R", "CC", WindowCenter=[2048, 1000], WindowWidth=[4096, 500], PixelSpacing=[0.07, 0.07],
                 PixelSpacingCalibrationType="GEOMETRY"), folder / "rcc.dcm")  # fmt: skip
    save(make_mg("R", "MLO", photometric="MONOCHROME1", PresentationLUTShape="INVERSE",
                 WindowCenter=2048, WindowWidth=4096), folder / "rmlo.dcm")  # fmt: skip
    save(make_mg("L", "CC", view_tag="ViewCodeSequence", scheme="SNM3", laterality_tag="Laterality"), folder / "lcc.dcm")
    save(make_mg("L", "ML"), folder / "extra" / "lml.dcm")
    save(make_us(ImageLaterality="L"), folder / "us" / "L_US_1.dcm")
    save(make_mg("L", "CC", ImageType=["DERIVED", "PRIMARY", "", "SUBTRACTION"]), folder / "cesm" / "lcc_rc.dcm")
    save(make_image(modality="CT", sop_class=CT_IMAGE), folder / "ct.dcm")
    return folder


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return study_main(argv, stdout=out), out.getvalue()


def test_text_summary(study_dir):
    code, text = _run([str(study_dir)])
    assert code == 0
    lines = text.splitlines()
    assert lines[0].startswith("Study case7")
    rcc = next(line for line in lines if line.strip().startswith("R-CC"))
    assert "rcc.dcm" in rcc and "ImageLaterality" in rcc and "ViewPosition" in rcc and "calibrated" in rcc
    assert "2 VOI presets" in rcc
    lcc = next(line for line in lines if line.strip().startswith("L-CC"))
    assert "Laterality" in lcc and "ViewCodeSequence" in lcc
    rmlo = next(line for line in lines if line.strip().startswith("R-MLO"))
    assert "inverted" in rmlo
    assert any(line.strip() == "L-MLO  missing" for line in lines)
    assert "  extra/lml.dcm: non-standard view ML" in lines
    assert "Missing views: L-MLO" in lines
    assert any("ct.dcm: modality CT" in line for line in lines)
    assert len(lines) < 40  # one screen


def test_json_shape(study_dir):
    code, text = _run([str(study_dir), "--json"])
    assert code == 0
    data = json.loads(text)
    assert {"study_id", "views", "missing", "extras", "ultrasound", "cesm", "errors"} <= set(data)
    assert data["study_id"] == "case7"
    assert list(data["views"]) == ["R-CC", "L-CC", "R-MLO"] and data["missing"] == ["L-MLO"]
    for entry in data["views"].values():
        assert VIEW_KEYS <= set(entry)
    rcc = data["views"]["R-CC"]
    assert rcc["file"] == "rcc.dcm" and (rcc["rows"], rcc["columns"]) == (64, 48)
    assert rcc["voi_presets"] == [
        {"center": 2048.0, "width": 4096.0, "function": "LINEAR"},
        {"center": 1000.0, "width": 500.0, "function": "LINEAR"},
    ]
    assert rcc["pixel_spacing_mm"] == [0.07, 0.07] and rcc["spacing_calibrated"] is True
    assert data["views"]["R-MLO"]["inverted_for_display"] is True
    assert data["views"]["L-CC"]["view_from"] == "ViewCodeSequence"
    assert data["extras"] == [{"file": "extra/lml.dcm", "reason": "non-standard view ML"}]
    assert data["ultrasound"] == [{"file": "us/L_US_1.dcm", "laterality": "L"}]
    assert data["cesm"] == [{"file": "cesm/lcc_rc.dcm", "laterality": "L", "view": "CC", "kind": "recombined"}]
    assert [e["file"] for e in data["errors"]] == ["ct.dcm"]


def test_png_output_is_the_display(study_dir, tmp_path):
    out = tmp_path / "png"
    code, text = _run([str(study_dir), "--png", str(out), "--json"])
    assert code == 0 and json.loads(text)["study_id"] == "case7"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["R-CC.png", "L-CC.png", "R-MLO.png", "L_US_1.png", "lcc_rc.png", "lml.png"])
    study = engine.load_study(study_dir)
    for key in study.views:
        png = np.asarray(Image.open(out / f"{key}.png"))
        assert png.dtype == np.uint8
        np.testing.assert_array_equal(png, study.views[key].display)
    # MONOCHROME1 + INVERSE: dense (high) stored values are white exactly once
    rmlo = np.asarray(Image.open(out / "R-MLO.png"))
    assert (int(rmlo[0, 0]), int(rmlo[-1, -1])) == (255, 0)


def test_png_names_do_not_clash(tmp_path):
    folder = tmp_path / "s"
    for sub in ("a", "b"):
        save(make_mg("L", "ML"), folder / sub / "x.dcm")
    out = tmp_path / "png"
    assert _run([str(folder), "--png", str(out)])[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["b_x.png", "x.png"]


def test_bad_input_exit_code(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert study_main([str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mammo-study: empty: ") and "\n" not in err
    (tmp_path / "x.dcm").write_text("hello")
    assert study_main([str(tmp_path / "x.dcm"), "--json"]) == 1
    assert capsys.readouterr().err.strip().startswith("mammo-study: x.dcm: not a DICOM file")


def test_console_entry_point_runs(study_dir):
    """The ``mammo-study`` entry point (engine.cli:study_main) in a fresh interpreter."""
    text = (REPO / "pyproject.toml").read_text()
    assert 'mammo-study = "engine.cli:study_main"' in text
    code = "import sys; from engine.cli import study_main; sys.exit(study_main())"
    ok = subprocess.run(
        [sys.executable, "-c", code, str(study_dir), "--json"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["missing"] == ["L-MLO"]
    bad = subprocess.run(
        [sys.executable, "-c", code, str(study_dir / "nothing")], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "no such file" in bad.stderr
