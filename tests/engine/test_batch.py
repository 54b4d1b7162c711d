"""Batch scoring in-process: the study rule, the CSV columns and rows, outputs, resume and repair,
cancel, loaders (engine/batch.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from _batch_helpers import save_tiny_model, segmenting_engine, write_studies
from PIL import Image

from engine.contours import polygon_area
from engine.batch import (
    ResultsCsv,
    StudyRef,
    csv_columns,
    engine_columns,
    find_studies,
    lesion_masks,
    read_results,
    run_batch,
)
from engine.errors import MammoError, StudyError
from engine.inference import Engine
from engine.io.loader import load_study
from engine.result import Result

DICM = b"\0" * 128 + b"DICM" + b"\0" * 16


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-vssm")


@pytest.fixture(scope="module")
def eng(model_dir: Path) -> Engine:
    return Engine(model_dir, device="cpu")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five phantom studies, a left-only study and a broken one under site2/, a raster study."""
    root = write_studies(tmp_path_factory.mktemp("in") / "in", 5)
    left = root / "site2" / "P0100"
    shutil.copytree(root / "P0002", left)
    for f in left.glob("MG_R_*.dcm"):
        f.unlink()
    (root / "site2" / "broken").mkdir()
    (root / "site2" / "broken" / "x.dcm").write_bytes(b"not a dicom file")
    raster = root / "raster" / "R0001"
    raster.mkdir(parents=True)
    study = load_study(root / "P0003")
    for key, image in study.views.items():
        Image.fromarray(image.display).save(raster / f"{key.replace('-', '_')}.png")
    return root


IDS = ["P0001", "P0002", "P0003", "P0004", "P0005", "raster/R0001", "site2/P0100", "site2/broken"]


@pytest.fixture(scope="module")
def full_run(inputs: Path, eng: Engine, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("out")
    seen = []
    summary = run_batch(
        inputs, out / "results.csv", eng, workers=0, heatmaps_dir=out / "hm", json_dir=out / "js",
        dicom_dir=out / "dcm", progress=seen.append,
    )  # fmt: skip
    return out, summary, read_results(out / "results.csv"), seen


# --- what is a study -------------------------------------------------------------------------------


def _touch(path: Path, data: bytes = DICM) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_study_is_the_topmost_folder_that_directly_holds_images(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _touch(root / "labels.csv", b"study_id\n")
    _touch(root / "phantom.json", b"{}")
    _touch(root / "masks" / "P1" / "MG_L_CC_mask.png")
    _touch(root / "P1" / "MG_L_CC.dcm")
    _touch(root / "P1" / "us" / "US_L_1.dcm")  # part of P1, not a study of its own
    _touch(root / "site" / "P2" / "IM0001")  # suffix-less DICOM (DICM marker)
    _touch(root / "site" / "P3" / "scan_L_CC.png")
    _touch(root / "site" / "notes" / "readme.txt", b"text")
    _touch(root / "site" / "P5" / "IM0002", b"no marker")  # neither suffix nor marker
    _touch(root / "site" / "P6" / "MG_L_CC_heatmap.png")  # our own output is not an image
    _touch(root / ".hidden" / "P4" / "x.dcm")
    _touch(root / "out" / "dcm" / "P1" / "sr.dcm")  # the batch's own DICOM output
    found = find_studies(root, exclude=[root / "out"])
    assert found == [
        StudyRef("P1", (root / "P1").resolve()),
        StudyRef("site/P2", (root / "site" / "P2").resolve()),
        StudyRef("site/P3", (root / "site" / "P3").resolve()),
    ]
    assert [r.study_id for r in find_studies(root)] == ["P1", "out/dcm/P1", "site/P2", "site/P3"]
    # a folder that itself holds images is one study named after itself
    assert find_studies(root / "P1") == [StudyRef("P1", (root / "P1").resolve())]
    assert find_studies(root / "site" / "notes") == []
    with pytest.raises(StudyError, match="no such folder"):
        find_studies(tmp_path / "nope")


# --- columns ---------------------------------------------------------------------------------------


TAIL = ["attn_RCC", "attn_LCC", "attn_RMLO", "attn_LMLO", "model", "model_version", "device", "seconds"]
HEAD = ["study_id", "side", "status", "error"]


@pytest.mark.parametrize(
    ("tasks", "classes", "middle"),
    [
        (("malignancy", "birads"), {"malignancy": ["normal_or_benign", "malignant"], "birads": [1, 2, 3, 4, 5]},
         ["p_malignant", "birads_pred", "p_birads_1", "p_birads_2", "p_birads_3", "p_birads_4", "p_birads_5"]),
        (("malignancy", "birads"), {"malignancy": ["normal", "benign", "malignant"], "birads": [1, 3, 5]},
         ["p_malignant", "p_normal", "p_benign", "birads_pred", "p_birads_1", "p_birads_3", "p_birads_5"]),
        (("birads",), {"birads": [1, 5]}, ["p_malignant", "birads_pred", "p_birads_1", "p_birads_5"]),
        (("malignancy",), {"malignancy": ["normal_or_benign", "malignant"]}, ["p_malignant", "birads_pred"]),
    ],
)  # fmt: skip
def test_columns_follow_the_model_outputs(tasks, classes, middle) -> None:
    assert csv_columns(tasks, classes) == HEAD + middle + TAIL


def test_three_class_rows_fill_every_pathology_column() -> None:
    from engine.batch import result_rows
    from engine.result import SideResult

    classes = {"malignancy": ["normal", "benign", "malignant"], "birads": [1, 3, 5]}
    cols = csv_columns(("malignancy", "birads"), classes)
    pathology = {"normal": 0.1, "benign": 0.2, "malignant": 0.7}
    left = SideResult("L", True, ["L-CC"], p_malignant=0.7, p_pathology=pathology,
                      p_birads={1: 0.05, 3: 0.15, 5: 0.8}, birads_pred=5)  # fmt: skip
    attention = {"R-CC": 0.0, "L-CC": 1.0, "R-MLO": 0.0, "L-MLO": 0.0}
    result = Result(study_id="x", study_path="/x", model="m", model_version="1", device="cpu",
                    sides={"R": SideResult("R", False), "L": left}, attention=attention,
                    missing=["R-CC", "R-MLO", "L-MLO"])  # fmt: skip
    right, row = result_rows(result, cols, study_id="site/x", seconds=1.23456)
    assert row == {
        "study_id": "site/x", "side": "L", "status": "ok", "error": "", "p_malignant": "0.7", "p_normal": "0.1",
        "p_benign": "0.2", "birads_pred": "5", "p_birads_1": "0.05", "p_birads_3": "0.15", "p_birads_5": "0.8",
        "attn_RCC": "0", "attn_LCC": "1", "attn_RMLO": "0", "attn_LMLO": "0", "model": "m", "model_version": "1",
        "device": "cpu", "seconds": "1.235",
    }  # fmt: skip
    assert right["status"] == "missing" and right["p_normal"] == "" and right["attn_LCC"] == "1"


# --- a full batch ----------------------------------------------------------------------------------


def test_one_row_per_study_and_side_with_the_engine_numbers(full_run, inputs: Path, eng: Engine) -> None:
    out, summary, table, _ = full_run
    assert table.columns == engine_columns(eng) and table.intact
    assert [r["study_id"] for r in table.rows] == [i for i in IDS for _ in (0, 1)]
    assert [r["side"] for r in table.rows] == ["R", "L"] * len(IDS)
    assert (summary.found, summary.scored, summary.errors, summary.skipped) == (8, 7, 1, 0)
    rows = {(r["study_id"], r["side"]): r for r in table.rows}
    ref = eng.score(load_study(inputs / "P0003"), gradcam=False)
    for side in ("R", "L"):
        row, sr = rows[("P0003", side)], ref.sides[side]
        assert row["status"] == "ok" and row["error"] == ""
        assert float(row["p_malignant"]) == pytest.approx(sr.p_malignant, rel=1e-7)
        assert row["birads_pred"] == str(sr.birads_pred)
        for k, p in sr.p_birads.items():
            assert float(row[f"p_birads_{k}"]) == pytest.approx(p, rel=1e-7)
        for view, col in (("R-CC", "attn_RCC"), ("L-MLO", "attn_LMLO")):
            assert float(row[col]) == pytest.approx(ref.attention[view], rel=1e-7)
        assert (row["model"], row["model_version"], row["device"]) == ("tiny-vssm", "0.0.1", "cpu")
        assert float(row["seconds"]) > 0


def test_broken_study_gets_two_error_rows_and_the_batch_goes_on(full_run) -> None:
    _, _, table, _ = full_run
    broken = [r for r in table.rows if r["study_id"] == "site2/broken"]
    assert [r["status"] for r in broken] == ["error", "error"]
    assert "x.dcm" in broken[0]["error"] and "no loadable breast image" in broken[0]["error"]
    assert broken[0]["p_malignant"] == "" and broken[0]["model"] == "tiny-vssm"
    assert table.studies["site2/broken"] == "error" and table.studies["site2/P0100"] == "ok"


def test_breast_without_images_is_missing(full_run) -> None:
    _, _, table, _ = full_run
    right, left = [r for r in table.rows if r["study_id"] == "site2/P0100"]
    assert right["status"] == "missing" and right["p_malignant"] == "" and right["birads_pred"] == ""
    assert left["status"] == "ok" and 0.0 < float(left["p_malignant"]) < 1.0
    assert float(left["attn_RCC"]) == 0.0 and float(left["attn_LCC"]) + float(left["attn_LMLO"]) == pytest.approx(1.0)


def test_heatmaps_are_16_bit_in_the_original_grid(full_run, inputs: Path, eng: Engine) -> None:
    out, _, _, _ = full_run
    study = load_study(inputs / "P0001")
    result = eng.score(study)
    names = sorted(p.name for p in (out / "hm" / "P0001").iterdir())
    assert names == ["MG_L_CC_heatmap.png", "MG_L_MLO_heatmap.png", "MG_R_CC_heatmap.png", "MG_R_MLO_heatmap.png"]
    png = cv2.imread(str(out / "hm" / "P0001" / "MG_L_CC_heatmap.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == study.views["L-CC"].shape
    expected = np.round(np.clip(result.heatmaps["L-CC"], 0, 1) * 65535)
    assert np.abs(png.astype(np.float64) - expected).max() <= 1.0
    assert (out / "hm" / "site2" / "P0100" / "MG_L_CC_heatmap.png").is_file()
    assert not (out / "hm" / "site2" / "P0100" / "MG_R_CC_heatmap.png").exists()


def test_json_results_round_trip_and_match_the_csv(full_run) -> None:
    out, _, table, _ = full_run
    rows = {(r["study_id"], r["side"]): r for r in table.rows}
    for sid in ("P0002", "site2/P0100"):
        result = Result.from_json(out / "js" / f"{sid}.json")
        assert result.study_id == sid
        assert float(rows[(sid, "L")]["p_malignant"]) == pytest.approx(result.sides["L"].p_malignant, rel=1e-7)
    assert not (out / "js" / "site2" / "broken.json").exists()


def test_dicom_export_per_study_and_raster_studies_are_said_why_not(full_run) -> None:
    out, summary, _, _ = full_run
    names = sorted(p.name for p in (out / "dcm" / "P0004").iterdir())
    assert names == ["seg_L-CC.dcm", "seg_L-MLO.dcm", "seg_R-CC.dcm", "seg_R-MLO.dcm", "sr.dcm"]
    assert not (out / "dcm" / "raster").exists()
    assert any("raster/R0001" in w and "raster file" in w for w in summary.warnings)


def test_progress_counts_to_the_end(full_run) -> None:
    _, _, _, seen = full_run
    assert seen[0].done == 0 and seen[0].study_id is None and seen[0].total == 8
    assert [p.done for p in seen[1:]] == list(range(1, 9))
    assert seen[-1].eta == 0.0 and seen[-1].errors == 1 and seen[-1].rate > 0
    assert [p.status for p in seen[1:]].count("error") == 1
    _, summary, _, _ = full_run
    assert set(summary.timings) == {"load_wait", "score", "outputs", "write"}
    assert summary.timings["score"] > 0 and summary.timings["outputs"] > 0
    assert sum(summary.timings.values()) <= summary.seconds


# --- resume and repair -----------------------------------------------------------------------------


def _small_input(tmp_path: Path, inputs: Path, ids=("P0001", "P0002", "P0003")) -> Path:
    root = tmp_path / "in"
    for sid in ids:
        shutil.copytree(inputs / sid, root / sid)
    return root


def test_resume_skips_studies_and_never_writes_a_row_twice(tmp_path: Path, inputs: Path, eng: Engine) -> None:
    root = _small_input(tmp_path, inputs)
    csv_path = tmp_path / "r.csv"
    first = run_batch(root, csv_path, eng, workers=0)
    data = csv_path.read_bytes()
    again = run_batch(root, csv_path, eng, resume=True, workers=0)
    assert (first.scored, again.scored, again.skipped) == (3, 0, 3)
    assert csv_path.read_bytes() == data
    with pytest.raises(MammoError, match="already exists; pass --resume"):
        run_batch(root, csv_path, eng, workers=0)
    shutil.copytree(inputs / "P0004", root / "P0004")
    more = run_batch(root, csv_path, eng, resume=True, workers=0)
    table = read_results(csv_path)
    assert (more.scored, more.skipped) == (1, 3)
    assert list(table.studies) == ["P0001", "P0002", "P0003", "P0004"] and len(table.rows) == 8
    assert csv_path.read_bytes().count(b"study_id,side") == 1
    replaced = run_batch(root, csv_path, eng, overwrite=True, workers=0)
    assert replaced.scored == 4 and len(read_results(csv_path).rows) == 8


@pytest.mark.parametrize(
    ("tail", "repaired"),
    [
        (b'P0009,R,ok,,0.5,2,0.2,0.2,0.2,0.2,0.2,0.25,0.25,0.25,0.25,tiny-vssm,0.0.1,cpu,0.1\nP0009,L,o',
         ["incomplete rows of study P0009", "a torn last line"]),
        (b"P0009,R,ok,,0.5,2,0.2,0.2,0.2,0.2,0.2,0.25,0.25,0.25,0.25,tiny-vssm,0.0.1,cpu,0.1\n",
         ["incomplete rows of study P0009"]),
        (b"P0009,R,ok,,0.5", ["a torn last line"]),
    ],
)  # fmt: skip
def test_resume_cuts_off_what_a_kill_left_half_written(tmp_path, inputs, eng, tail, repaired) -> None:
    root = _small_input(tmp_path, inputs, ids=("P0001", "P0002"))
    csv_path = tmp_path / "r.csv"
    run_batch(root, csv_path, eng, workers=0)
    good = csv_path.read_bytes()
    csv_path.write_bytes(good + tail)
    torn = read_results(csv_path)
    assert not torn.intact and torn.complete_bytes == len(good) and list(torn.studies) == ["P0001", "P0002"]
    with ResultsCsv(csv_path, engine_columns(eng), resume=True) as results:
        assert results.repaired == repaired and set(results.done) == {"P0001", "P0002"}
    assert csv_path.read_bytes() == good


def test_torn_header_is_written_again(tmp_path: Path, eng: Engine) -> None:
    csv_path = tmp_path / "r.csv"
    csv_path.write_bytes(b"study_id,si")
    with ResultsCsv(csv_path, engine_columns(eng), resume=True) as results:
        assert results.repaired == ["a torn last line"] and results.done == {}
    assert csv_path.read_text().splitlines() == [",".join(engine_columns(eng))]


def test_damage_before_the_last_study_or_another_header_is_refused(tmp_path: Path, eng: Engine) -> None:
    cols = engine_columns(eng)
    row = "{sid},{side},ok,,0.5,2,0.2,0.2,0.2,0.2,0.2,0.25,0.25,0.25,0.25,tiny-vssm,0.0.1,cpu,0.1\n"
    csv_path = tmp_path / "r.csv"
    csv_path.write_text(",".join(cols) + "\n" + row.format(sid="A", side="R") + row.format(sid="B", side="R")
                        + row.format(sid="B", side="L"))  # fmt: skip
    with pytest.raises(MammoError, match="line 2: incomplete or malformed rows for study 'A'"):
        ResultsCsv(csv_path, cols, resume=True)
    other = tmp_path / "other.csv"
    other.write_text("study_id,side,status,error,p_malignant\n")
    with pytest.raises(MammoError, match="other columns"):
        ResultsCsv(other, cols, resume=True)
    with ResultsCsv(tmp_path / "locked.csv", cols) as results:
        with pytest.raises(MammoError, match="another batch is writing"):
            ResultsCsv(tmp_path / "locked.csv", cols, resume=True)
        results.append([dict.fromkeys(cols, "") | {"study_id": "A", "side": s, "status": "ok"} for s in ("R", "L")])
    assert read_results(tmp_path / "locked.csv").studies == {"A": "ok"}


def test_resume_with_another_model_is_refused(tmp_path: Path, inputs: Path, eng: Engine, model_dir: Path) -> None:
    root = _small_input(tmp_path, inputs, ids=("P0001",))
    csv_path = tmp_path / "r.csv"
    run_batch(root, csv_path, eng, workers=0)
    other = save_tiny_model(tmp_path / "other", name="other-vssm")
    with pytest.raises(MammoError, match="holds results of model tiny-vssm 0.0.1"):
        run_batch(root, csv_path, Engine(other, device="cpu"), resume=True, workers=0)


def test_retry_errors_scores_fixed_studies_again(tmp_path: Path, inputs: Path, eng: Engine) -> None:
    root = _small_input(tmp_path, inputs, ids=("P0001",))
    broken = root / "P0002"
    broken.mkdir()
    (broken / "MG_L_CC.dcm").write_bytes(b"truncated")
    csv_path = tmp_path / "r.csv"
    run_batch(root, csv_path, eng, workers=0)
    assert read_results(csv_path).studies == {"P0001": "ok", "P0002": "error"}
    shutil.rmtree(broken)
    shutil.copytree(inputs / "P0002", broken)
    assert run_batch(root, csv_path, eng, resume=True, workers=0).skipped == 2
    again = run_batch(root, csv_path, eng, resume=True, retry_errors=True, workers=0)
    table = read_results(csv_path)
    assert (again.scored, again.skipped) == (1, 1)
    assert table.studies == {"P0001": "ok", "P0002": "ok"} and len(table.rows) == 4


def test_cancel_stops_and_leaves_a_resumable_file(tmp_path: Path, inputs: Path, eng: Engine) -> None:
    root = _small_input(tmp_path, inputs, ids=("P0001", "P0002", "P0003", "P0004"))
    csv_path = tmp_path / "r.csv"
    done: list[int] = []
    summary = run_batch(root, csv_path, eng, workers=1, cancel=lambda: len(done) >= 2,
                        progress=lambda p: done.append(p.done) if p.study_id else None)  # fmt: skip
    assert summary.cancelled and summary.scored == 2
    table = read_results(csv_path)
    assert table.intact and list(table.studies) == ["P0001", "P0002"]
    rest = run_batch(root, csv_path, eng, resume=True, workers=1)
    assert (rest.scored, rest.skipped) == (2, 2) and len(read_results(csv_path).rows) == 8


@pytest.mark.parametrize(("workers", "loader"), [(2, "thread"), (1, "process")])
def test_parallel_loaders_give_the_same_rows(tmp_path, inputs, eng, full_run, workers, loader) -> None:
    _, _, reference, _ = full_run
    summary = run_batch(inputs, tmp_path / "r.csv", eng, workers=workers, loader=loader)
    table = read_results(tmp_path / "r.csv")
    assert summary.done == 8

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(table.rows) == strip(reference.rows)


# --- masks -----------------------------------------------------------------------------------------


def test_masks_only_from_models_that_segment(tmp_path: Path, inputs: Path, eng: Engine) -> None:
    root = _small_input(tmp_path, inputs, ids=("P0001",))
    summary = run_batch(root, tmp_path / "a.csv", eng, workers=0, masks_dir=tmp_path / "none")
    assert not (tmp_path / "none").exists()
    assert summary.warnings == ["model tiny-vssm gives no lesion masks (it does not segment): no mask files written"]

    study = load_study(root / "P0001")
    seg = segmenting_engine(study)
    run_batch(root, tmp_path / "b.csv", seg, workers=0, masks_dir=tmp_path / "mk")
    result = seg.score(study, gradcam=False)
    assert result.contour_source == "segmentation"
    masks = lesion_masks(result)
    for view, stem in (("L-CC", "MG_L_CC"), ("R-MLO", "MG_R_MLO")):
        png = np.asarray(Image.open(tmp_path / "mk" / "P0001" / f"{stem}_mask.png"))
        assert png.shape == study.views[view].shape and set(np.unique(png)) <= {0, 255}
        assert np.array_equal(png == 255, masks[view])
        # a pixel is in when its centre is (even-odd): the count is the outlines' net area
        assert masks[view].sum() == pytest.approx(_net_area(result.contours[view]), rel=0.03)
        # and the outline is where the model's mask is (probability >= 0.5, original grid; the
        # coarse 8 x 8 map is traced and resized differently, hence not an exact match)
        prob = result.geometries[view].to_original(1.0 / (1.0 + np.exp(-_mask_logits(seg, study, view))))
        inside = prob >= 0.5
        assert inside.mean() > 0.02
        assert (inside & masks[view]).sum() / (inside | masks[view]).sum() > 0.6


def _net_area(polys: list[np.ndarray]) -> float:
    """Area inside an odd number of the polygons (an outline within an outline is a hole)."""
    from skimage.measure import points_in_poly

    total = 0.0
    for i, poly in enumerate(polys):
        depth = sum(bool(points_in_poly(poly[:1], other)[0]) for j, other in enumerate(polys) if j != i)
        total += polygon_area(poly) * (-1) ** depth
    return total


def _mask_logits(seg: Engine, study, view: str) -> np.ndarray:
    """The model's mask logits of one view, model space ``(h, w)``."""
    import torch

    prep = seg.preprocessor(study)
    with torch.inference_mode():
        out = seg.model(torch.from_numpy(prep.images[None]), torch.from_numpy(prep.missing[None]))
    return out["masks"][0, ["R-CC", "L-CC", "R-MLO", "L-MLO"].index(view)].double().numpy()


def test_json_dir_layout_uses_study_ids(full_run) -> None:
    out, _, _, _ = full_run
    listed = sorted(str(p.relative_to(out / "js")) for p in (out / "js").rglob("*.json"))
    assert listed == ["P0001.json", "P0002.json", "P0003.json", "P0004.json", "P0005.json",
                      "raster/R0001.json", "site2/P0100.json"]  # fmt: skip
    assert json.loads((out / "js" / "P0001.json").read_text())["format"] == "mammo-result"
