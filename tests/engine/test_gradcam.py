"""Hook-based Grad-CAM: hooks always removed, localisation in original pixels, flip undone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _inference_toys import RegionConfig, RegionModel, ToyConfig, ToyFourView, make_study, toy_card
from torch import nn

from engine.errors import ModelError
from engine.gradcam import CamHooks, grad_cam, normalise_shared
from engine.inference import Engine
from engine.preprocess import StudyPreprocessor
from engine.study import STANDARD_VIEWS

IN = 64
OWN = {v: (f"malignancy_{v[0]}", 1) for v in STANDARD_VIEWS}


def _inputs(b: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 4, 1, IN, IN, generator=g), torch.zeros(b, 4, dtype=torch.bool)


def _no_hooks(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        for m in model.modules()
    )


def test_hooks_removed_and_grad_flags_restored_after_success() -> None:
    torch.manual_seed(0)
    model = ToyFourView(ToyConfig()).eval()
    model.gate[0].weight.requires_grad_(False)  # a frozen parameter stays frozen
    images, missing = _inputs(2)
    run = grad_cam(model, images, missing, OWN)
    assert _no_hooks(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    assert flags.pop("gate.0.weight") is False and all(flags.values())
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated
    assert set(run.cams) == set(STANDARD_VIEWS)
    assert run.cams["L-CC"].shape == (2, IN // 8, IN // 8)
    assert all(np.all(c >= 0) for c in run.cams.values())
    # the Grad-CAM pass gives the same scores as inference
    with torch.inference_mode():
        ref = model(images, missing)
    for k in ref:
        torch.testing.assert_close(run.outputs[k], ref[k], rtol=1e-5, atol=1e-6)


class _Exploding(ToyFourView):
    def forward(self, images, missing):
        out = super().forward(images, missing)
        raise RuntimeError("boom after the taps ran")


def test_hooks_removed_even_when_the_forward_raises() -> None:
    model = _Exploding(ToyConfig()).eval()
    images, missing = _inputs()
    with pytest.raises(RuntimeError, match="boom"):
        grad_cam(model, images, missing, OWN)
    assert _no_hooks(model)
    assert all(p.requires_grad for p in model.parameters())


def test_bad_targets_and_layers_are_typed_errors() -> None:
    model = ToyFourView(ToyConfig()).eval()
    images, missing = _inputs()
    with pytest.raises(ModelError, match="no head"):
        grad_cam(model, images, missing, {"L-CC": ("density_L", 0)})
    with pytest.raises(ModelError, match="classes"):
        grad_cam(model, images, missing, {"L-CC": ("birads_L", 9)})
    assert _no_hooks(model)
    shared = nn.Identity()
    with pytest.raises(ModelError, match="same module"):
        CamHooks(model, {"L-CC": shared, "R-CC": shared})


def test_cam_formula_on_a_two_channel_map() -> None:
    """ReLU(sum_k w_k A_k) with w_k the mean gradient, checked by hand."""
    torch.manual_seed(0)
    model = RegionModel(RegionConfig(pool=8, region=(0, 4, 0, 4))).eval()
    images, missing = _inputs()
    run = grad_cam(model, images, missing, {"L-CC": ("malignancy_L", 1)})
    pooled = nn.functional.avg_pool2d(images[:, 1], 8)[0, 0].numpy()
    # d logit / d channel0 = 1 everywhere, channel 1 does not feed class 1: w = (1, 0)
    expected = np.zeros_like(pooled)
    expected[0:4, 0:4] = pooled[0:4, 0:4]
    np.testing.assert_allclose(run.cams["L-CC"][0], expected, rtol=1e-5, atol=1e-6)


def test_channels_last_maps_are_permuted() -> None:
    torch.manual_seed(0)
    first = ToyFourView(ToyConfig()).eval()
    last = ToyFourView(ToyConfig(channels_last=True)).eval()
    last.load_state_dict(first.state_dict())
    images, missing = _inputs()
    want = grad_cam(first, images, missing, OWN)
    got = grad_cam(last, images, missing, OWN, channels_last=True)
    for v in STANDARD_VIEWS:
        assert want.cams[v].max() > 0
        np.testing.assert_allclose(got.cams[v], want.cams[v], rtol=1e-5, atol=1e-7)


def test_shared_normalisation_keeps_weak_views_dim() -> None:
    cams = {"L-CC": np.array([[0.0, 4.0]]), "L-MLO": np.array([[1.0, 2.0]]), "R-CC": np.ones((1, 2))}
    groups = {"L-CC": "malignancy_L:malignant", "L-MLO": "malignancy_L:malignant", "R-CC": "r"}
    out, scales = normalise_shared(cams, groups)
    assert out["L-CC"].max() == 1.0 and out["L-MLO"].max() == 0.5
    assert out["R-CC"].max() == 1.0
    assert scales == {"malignancy_L:malignant": 4.0, "r": 1.0}
    zero, s = normalise_shared({"L-CC": np.zeros((2, 2))}, {"L-CC": "t"})
    assert np.all(zero["L-CC"] == 0) and s == {"t": 0.0}


def _region_study(tmp_path: Path, shape=(240, 180)):
    """A study whose L-CC and R-CC have a dot inside the model's region and a distractor outside,
    placed through each view's geometry (computed on the dot-free study: dots inside the breast do
    not move the breast box)."""
    cfg = RegionConfig(pool=4, region=(2, 6, 2, 6))  # model pixels 8..23 (rows and columns)
    # the inside dot fills feature cell (3, 3), model pixels 12..15; the distractor is as bright
    plain = make_study(tmp_path / "plain", shape)
    geos = StudyPreprocessor(IN)(plain).geometries
    dots, want = {}, {}
    for key in ("L-CC", "R-CC"):
        inside = geos[key].model_to_original_xy(np.array([[13.5, 13.5]]))[0]
        outside = geos[key].model_to_original_xy(np.array([[30.0, 48.0]]))[0]
        dots[key] = ((round(inside[1]), round(inside[0])), (round(outside[1]), round(outside[0])))
        want[key] = (round(inside[1]), round(inside[0]))
    study = make_study(tmp_path / "dots", shape, dots=dots, dot_radius=9)
    return cfg, study, want, geos


def test_heatmap_peaks_on_the_region_the_logit_depends_on_in_original_pixels(tmp_path: Path) -> None:
    cfg, study, want, geos = _region_study(tmp_path)
    model = RegionModel(cfg)
    eng = Engine.from_module(model, toy_card(model, "region", in_size=IN), device="cpu")
    result = eng.score(study)
    assert _no_hooks(model)
    for key in ("L-CC", "R-CC"):
        heat = result.heatmaps[key]
        assert heat.shape == study.views[key].shape
        r, c = np.unravel_index(np.argmax(heat), heat.shape)
        # within one feature cell (pool model pixels) of the dot
        fr, fc = geos[key].footprint((IN // cfg.pool, IN // cfg.pool))
        assert abs(r - want[key][0]) <= fr and abs(c - want[key][1]) <= fc, (key, (r, c), want[key])
        assert heat.max() == pytest.approx(1.0, abs=0.05)
    # the right view's region is mirrored: its peak is on the chest-wall (right) half
    assert np.unravel_index(np.argmax(result.heatmaps["R-CC"]), (240, 180))[1] > 90
    assert np.unravel_index(np.argmax(result.heatmaps["L-CC"]), (240, 180))[1] < 90


def test_distractor_outside_the_region_is_dark(tmp_path: Path) -> None:
    cfg, study, want, geos = _region_study(tmp_path)
    model = RegionModel(cfg)
    eng = Engine.from_module(model, toy_card(model, "region", in_size=IN), device="cpu")
    result = eng.score(study)
    for key in ("L-CC", "R-CC"):
        (ox, oy), = geos[key].model_to_original_xy(np.array([[30.0, 48.0]]))
        assert result.heatmaps[key][round(oy), round(ox)] == 0.0
        # the heatmap is zero outside the region's cells altogether
        cam = result.cams[key]
        mask = np.zeros_like(cam, bool)
        mask[2:6, 2:6] = True
        assert cam[~mask].max() == 0.0 and cam[mask].max() == 1.0


def _reference_cams(model, images, missing, head, index):
    """Textbook Grad-CAM: full autograd graph, tensor hooks on the tap outputs, loss.backward()."""
    acts, grads, handles = {}, {}, []
    for view, layer in model.cam_layers().items():

        def fwd(module, inp, out, view=view):
            acts[view] = out
            out.register_hook(lambda g, view=view: grads.__setitem__(view, g))

        handles.append(layer.register_forward_hook(fwd))
    try:
        model.zero_grad()
        out = model(images, missing)
        out[head][:, index].sum().backward()
    finally:
        for h in handles:
            h.remove()
    pre = {v: (grads[v].mean(dim=(2, 3), keepdim=True) * acts[v]).sum(1).detach() for v in acts}
    return out, pre


@pytest.mark.parametrize("preset", ["resnet18-shared", "vssm-view"])
def test_real_four_view_models_match_textbook_grad_cam(preset: str) -> None:
    """CNN and VSSM feature maps: the frozen-encoder pass equals full back-propagation."""
    registry = pytest.importorskip("engine.models.registry")
    overrides = {"in_size": IN, "fusion_hidden": 8}
    if preset.startswith("vssm"):
        overrides.update(vssm_depths=(1, 1), vssm_dims=(8, 16), d_state=4)
    torch.manual_seed(0)
    model = registry.create_model(registry.get_preset(preset, **overrides), pretrained=False).eval()
    images, missing = _inputs()
    missing[0, 3] = True
    images[0, 3] = 0
    targets = {v: ("malignancy_L", 1) for v in STANDARD_VIEWS}
    run = grad_cam(model, images, missing, targets)
    assert _no_hooks(model) and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    out, pre = _reference_cams(model, images, missing, "malignancy_L", 1)
    assert _no_hooks(model)
    for v in STANDARD_VIEWS[:3]:
        assert pre[v].abs().max() > 0, v  # a real signal, not two zero maps
        want = torch.relu(pre[v])[0].numpy()
        got = run.cams[v][0]
        assert got.shape == want.shape and got.ndim == 2
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * float(pre[v].abs().max()))
    torch.testing.assert_close(run.outputs["malignancy_L"], out["malignancy_L"].detach())
