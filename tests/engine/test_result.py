"""Result objects: public names, lazy original-grid heatmaps, compact JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _inference_toys import ToyConfig, ToyFourView, make_study, toy_card

from engine.inference import Engine
from engine.result import Result, SideResult
from engine.study import STANDARD_VIEWS

SHAPE = (210, 170)


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> Result:
    torch.manual_seed(0)
    model = ToyFourView(ToyConfig())
    eng = Engine.from_module(model, toy_card(model, in_size=64), device="cpu")
    folder = tmp_path_factory.mktemp("r") / "study-1"
    study = make_study(folder, SHAPE, views=("R-CC", "L-CC", "L-MLO"), dots={"L-CC": ((80, 40),)})
    return eng.score(study)


def test_public_names(result: Result) -> None:
    assert result.model == "toy-four-view" and result.model_version == "0.0.1"
    assert result.device == "cpu" and result.study_id == "study-1"
    assert result.missing == ["R-MLO"] and result.views == ["R-CC", "L-CC", "L-MLO"]
    assert set(result.timings) == {"preprocess", "inference", "gradcam", "total"}
    assert all(v >= 0 for v in result.timings.values())
    assert result.timings["total"] >= result.timings["preprocess"]
    left = result.sides["L"]
    assert isinstance(left, SideResult) and left.available and left.views == ["L-CC", "L-MLO"]
    assert 0.0 <= left.p_malignant <= 1.0
    assert list(left.p_birads) == [1, 2, 3, 4, 5]
    assert sum(left.p_birads.values()) == pytest.approx(1.0, abs=1e-12)
    assert left.birads_pred == max(left.p_birads, key=left.p_birads.get)
    assert left.p_pathology["malignant"] == left.p_malignant
    assert result.target == "malignancy"
    assert result.view_targets["L-MLO"] == "malignancy_L:malignant"


def test_heatmaps_are_lazy_original_grid_maps(result: Result) -> None:
    maps = result.heatmaps
    assert list(maps) == ["R-CC", "L-CC", "L-MLO"] and len(maps) == 3
    assert "R-MLO" not in maps
    with pytest.raises(KeyError):
        maps["R-MLO"]
    for view in maps:
        m = maps[view]
        assert m.shape == SHAPE and m.dtype == np.float32
        assert m.min() >= 0.0 and m.max() <= 1.0 + 1e-6
        assert not m.flags.writeable
        assert maps[view] is m  # cached
    # the shared scale: the strongest view of each breast's target reaches 1 in model space
    assert max(result.cams["L-CC"].max(), result.cams["L-MLO"].max()) == pytest.approx(1.0)


def test_json_round_trip_same_heatmaps_and_identical_scalars(result: Result, tmp_path: Path) -> None:
    text = result.to_json()
    back = Result.from_json(text)
    for name in ("study_id", "study_path", "model", "model_version", "device", "missing",
                 "target", "view_targets", "attention", "cam_scales", "timings", "created",
                 "contour_source"):
        assert getattr(back, name) == getattr(result, name), name
    for side in ("R", "L"):
        assert back.sides[side] == result.sides[side]
    assert back.geometries == result.geometries
    assert list(back.heatmaps) == list(result.heatmaps)
    for view in result.heatmaps:
        np.testing.assert_allclose(back.heatmaps[view], result.heatmaps[view], atol=1e-3)
        assert np.array_equal(back.heatmaps[view], result.heatmaps[view])
    assert set(back.contours) == set(result.contours)
    for view, polys in result.contours.items():
        assert len(back.contours[view]) == len(polys)
        for a, b in zip(polys, back.contours[view]):
            assert np.array_equal(a, b)
    # through a file as well
    path = tmp_path / "r.json"
    result.to_json(path)
    again = Result.from_json(path)
    assert again.sides["L"].p_malignant == result.sides["L"].p_malignant


def test_json_is_compact(result: Result) -> None:
    text = result.to_json()
    full_bytes = sum(result.heatmaps[v].nbytes for v in result.heatmaps)
    assert len(text) < 0.1 * full_bytes
    data = json.loads(text)
    assert data["format"] == "mammo-result"
    assert set(data["heatmaps"]["views"]) == {"R-CC", "L-CC", "L-MLO"}
    assert data["sides"]["L"]["p_birads"].keys() == {"1", "2", "3", "4", "5"}


def test_result_without_heatmaps_and_unavailable_side_round_trip() -> None:
    r = Result(
        study_id="s",
        study_path="/x/s",
        model="m",
        model_version="1",
        device="cpu",
        sides={
            "R": SideResult("R", False),
            "L": SideResult("L", True, ["L-CC"], 0.25, {"normal_or_benign": 0.75, "malignant": 0.25},
                            {1: 0.1, 5: 0.9}, 5),
        },
        attention={v: (1.0 if v == "L-CC" else 0.0) for v in STANDARD_VIEWS},
        missing=["R-CC", "R-MLO", "L-MLO"],
    )
    back = Result.from_json(r.to_json())
    assert back.sides == r.sides and back.attention == r.attention
    assert len(back.heatmaps) == 0 and back.contours == {} and back.target is None
    assert back.sides["R"].p_malignant is None and back.sides["L"].birads_pred == 5


def test_from_json_rejects_other_documents() -> None:
    with pytest.raises(ValueError, match="mammo-result"):
        Result.from_json('{"format": "something"}')
