"""The Engine API: scores, attention, missing views, targets, cancel/progress, bundled models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _inference_toys import ToyConfig, ToyFourView, build_toy, make_study, toy_card

import engine
from engine.errors import Cancelled, EmptyStudyError, ModelError, UnknownModelError
from engine.inference import CamTarget, Engine, resolve_device
from engine.study import STANDARD_VIEWS, Study
from engine.weights import save_model

IN = 64
SHAPE = (180, 140)


@pytest.fixture(scope="module")
def toy() -> ToyFourView:
    torch.manual_seed(0)
    return ToyFourView(ToyConfig()).eval()


@pytest.fixture(scope="module")
def eng(toy) -> Engine:
    return Engine.from_module(toy, toy_card(toy, in_size=IN), device="cpu")


@pytest.fixture()
def study(tmp_path: Path) -> Study:
    return make_study(tmp_path / "case-7", SHAPE, dots={"L-CC": ((70, 30),), "R-MLO": ((90, 110),)})


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_scores_are_the_model_heads_on_the_preprocessed_study(eng, toy, study) -> None:
    result = eng.score(study, gradcam=False)
    prep = eng.preprocessor(study)
    with torch.inference_mode():
        out = toy(torch.from_numpy(prep.images[None]), torch.from_numpy(prep.missing[None]))
    for side in ("R", "L"):
        p_mal = _softmax(out[f"malignancy_{side}"][0].double().numpy())
        p_bir = _softmax(out[f"birads_{side}"][0].double().numpy())
        sr = result.sides[side]
        assert sr.p_malignant == pytest.approx(p_mal[1], abs=1e-6)
        assert list(sr.p_birads.values()) == pytest.approx(list(p_bir), abs=1e-6)
        assert sr.birads_pred == [1, 2, 3, 4, 5][int(np.argmax(p_bir))]
    alpha = out["attention"][0].numpy()
    assert [result.attention[v] for v in STANDARD_VIEWS] == pytest.approx(list(alpha), abs=1e-7)
    assert sum(result.attention.values()) == pytest.approx(1.0, abs=1e-6)
    assert result.heatmaps == {} or len(result.heatmaps) == 0
    assert result.contours == {} and result.target is None and result.timings["gradcam"] == 0.0


def test_gradcam_run_gives_the_same_scores(eng, study) -> None:
    plain = eng.score(study, gradcam=False)
    cam = eng.score(study)
    for side in ("R", "L"):
        assert cam.sides[side].p_malignant == pytest.approx(plain.sides[side].p_malignant, abs=1e-6)
    assert len(cam.heatmaps) == 4
    for view in STANDARD_VIEWS:
        assert cam.heatmaps[view].shape == SHAPE
        assert cam.view_targets[view] == f"malignancy_{view[0]}:malignant"
    # a classification model draws no contours: a Grad-CAM outline is not a lesion outline
    assert cam.contours == {} and cam.contour_source is None


def test_missing_views_get_zero_attention_and_no_heatmap(eng, tmp_path: Path) -> None:
    study = make_study(tmp_path / "one-breast", SHAPE, views=("L-CC", "L-MLO"))
    r = eng.score(study)
    assert r.missing == ["R-CC", "R-MLO"]
    assert r.attention["R-CC"] == 0.0 and r.attention["R-MLO"] == 0.0
    assert r.attention["L-CC"] + r.attention["L-MLO"] == pytest.approx(1.0, abs=1e-6)
    assert list(r.heatmaps) == ["L-CC", "L-MLO"]
    assert not r.sides["R"].available and r.sides["R"].p_malignant is None
    assert r.sides["R"].p_birads == {} and r.sides["R"].birads_pred is None
    assert r.sides["L"].available and r.sides["L"].p_malignant is not None


def test_all_views_missing_is_a_typed_error_naming_the_folder(eng, tmp_path: Path) -> None:
    study = Study(path=tmp_path / "empty-study", study_id="empty-study")
    with pytest.raises(EmptyStudyError) as info:
        eng.score(study)
    assert str(info.value).startswith("empty-study:") and "\n" not in str(info.value)


def test_targets(eng, study) -> None:
    r = eng.gradcam_for(study, "birads:L:4")
    assert r.target == "birads:L:4"
    assert set(r.view_targets.values()) == {"birads_L:4"}
    r = eng.score(study, target=CamTarget("birads"))
    assert r.view_targets["R-CC"] == "birads_R:5" and r.view_targets["L-CC"] == "birads_L:5"
    r = eng.score(study, target="malignancy:R")
    assert set(r.view_targets.values()) == {"malignancy_R:malignant"}
    with pytest.raises(ValueError, match="no class 7"):
        eng.score(study, target="birads:L:7")
    with pytest.raises(ValueError, match="no head"):
        eng.score(study, target="density")
    assert CamTarget.parse("birads:R:5") == CamTarget("birads", "R", 5)
    assert str(CamTarget.parse("birads:R:5")) == "birads:R:5"
    assert CamTarget.parse(None) == CamTarget()
    offered = [str(t) for t in eng.targets()]
    assert "malignancy" in offered and "birads:L:3" in offered and "malignancy:R" in offered


def test_gradcam_for_reuses_the_preprocessing(eng, study, monkeypatch) -> None:
    eng.score(study)
    calls = []
    real = eng.preprocessor.__class__.__call__
    monkeypatch.setattr(
        eng.preprocessor.__class__, "__call__", lambda self, *a, **k: calls.append(1) or real(self, *a, **k)
    )
    eng.gradcam_for(study, "birads:3")
    assert calls == []
    other = make_study(study.path.parent / "other", SHAPE)
    eng.score(other)
    assert calls == [1]


def test_cancel_and_progress(eng, study) -> None:
    seen: list[tuple[float, str]] = []
    eng.score(study, progress=lambda f, s: seen.append((f, s)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert {s for _, s in seen} >= {"preprocess", "inference", "gradcam", "done"}
    polls = []

    def cancel() -> bool:
        polls.append(1)
        return len(polls) >= 3

    with pytest.raises(Cancelled) as info:
        eng.score(make_study(study.path.parent / "fresh", SHAPE), cancel=cancel)
    assert str(info.value).startswith("fresh:")
    assert not isinstance(info.value, engine.StudyError)


def test_score_many_matches_single_scores(eng, tmp_path: Path) -> None:
    a = make_study(tmp_path / "a", SHAPE, seed=1)
    b = make_study(tmp_path / "b", SHAPE, views=("R-CC", "L-CC"), seed=2)
    batch = eng.score_many([a, b], gradcam=True)
    for study, r in zip((a, b), batch):
        single = eng.score(study)
        assert r.study_id == study.study_id
        for side in ("R", "L"):
            assert r.sides[side].p_malignant == pytest.approx(single.sides[side].p_malignant, abs=1e-5)
        for view in single.cams:
            np.testing.assert_allclose(r.cams[view], single.cams[view], atol=1e-4)
    assert batch[1].missing == ["R-MLO", "L-MLO"]


def test_segmentation_outputs_give_mask_contours(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ToyFourView(ToyConfig(with_masks=True))
    with torch.no_grad():  # a mask head that fires where the image is bright (the breast)
        model.mask_head.bias.fill_(-3.0)
        model.encoder[0].weight.fill_(0.05)
        model.encoder[0].bias.fill_(0.0)
        model.encoder[2].weight.fill_(0.02)
        model.encoder[2].bias.fill_(0.0)
        model.mask_head.weight.fill_(1.0)
    eng = Engine.from_module(model, toy_card(model, in_size=IN), device="cpu")
    r = eng.score(make_study(tmp_path / "seg", SHAPE), gradcam=False)
    assert r.contour_source == "segmentation"
    assert set(r.contours) == set(STANDARD_VIEWS)
    assert all(len(r.contours[v]) >= 1 for v in STANDARD_VIEWS)
    # the right breast's outline is on the right-hand half of its original image (flip undone)
    assert r.contours["R-CC"][0][:, 0].mean() > SHAPE[1] / 2
    assert r.contours["L-CC"][0][:, 0].mean() < SHAPE[1] / 2


def test_devices() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA"):
            resolve_device("cuda")


def test_bundled_model_by_name(tmp_path: Path, monkeypatch, study) -> None:
    torch.manual_seed(0)
    model = ToyFourView(ToyConfig())
    save_model(model, toy_card(model, "toy-bundled", in_size=IN), tmp_path / "toy-bundled")
    monkeypatch.setattr("engine.weights.build_from_architecture", build_toy)
    eng = engine.Engine(model="toy-bundled", device="cpu", models_dir=tmp_path)
    r = eng.score(study, gradcam=False)
    assert r.model == "toy-bundled" and r.model_version == "0.0.1"
    ref = Engine.from_module(model, toy_card(model, "ref", in_size=IN), device="cpu")
    assert r.sides["L"].p_malignant == pytest.approx(ref.score(study, gradcam=False).sides["L"].p_malignant)
    with pytest.raises(UnknownModelError, match="toy-bundled"):
        engine.Engine(model="nope", models_dir=tmp_path)
    assert eng.info()["in_size"] == [IN, IN] and "cpu" in repr(eng)


def test_real_small_preset_end_to_end(tmp_path: Path, study) -> None:
    """A real hybrid CNN-VSSM (shrunk) exported, loaded by name through the registry, scored."""
    registry = pytest.importorskip("engine.models.registry")
    cfg = registry.get_preset(
        "hybrid-vssm-shared",
        in_size=IN,
        cut_stage=1,
        vssm_depths=(1,),
        vssm_dims=(32,),
        d_state=4,
        fusion_hidden=8,
        birads_classes=(1, 3, 5),
    )
    torch.manual_seed(0)
    model = registry.create_model(cfg, pretrained=False)
    from engine.preprocess import StudyPreprocessor

    card = {
        "name": "tiny-hybrid",
        "version": "0.1.0",
        "architecture": cfg.to_dict(),
        "input": StudyPreprocessor(IN).spec(),
        "classes": {"malignancy": ["normal_or_benign", "malignant"], "birads": [1, 3, 5]},
        "training": {"config": {"epochs": 0}, "command": "pytest"},
    }
    save_model(model, card, tmp_path / "tiny-hybrid")
    eng = Engine("tiny-hybrid", device="cpu", models_dir=tmp_path)
    study.views.pop("R-MLO")
    r = eng.score(study, target="birads:L:3")
    assert r.attention["R-MLO"] == 0.0
    assert sum(r.attention.values()) == pytest.approx(1.0, abs=1e-6)
    assert list(r.sides["L"].p_birads) == [1, 3, 5]
    assert set(r.view_targets.values()) == {"birads_L:3"}
    assert list(r.heatmaps) == ["R-CC", "L-CC", "L-MLO"]
    assert all(r.heatmaps[v].shape == SHAPE for v in r.heatmaps)
    assert all(np.isfinite(r.heatmaps[v]).all() for v in r.heatmaps)
