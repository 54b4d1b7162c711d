"""Four-view models of seed 000: shape table, every preset on CPU, configs, Grad-CAM taps."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from engine.errors import ModelError, UnknownModelError
from engine.models.fourview import FourViewConfig, build_fourview
from engine.models.hybrid import GrayToImageNet
from engine.models.registry import (
    BIRADS_SETS,
    PRESETS,
    config_from_dict,
    create_model,
    get_preset,
    paper_grid,
)
from engine.study import STANDARD_VIEWS

SIZE = 128


def _inputs(b: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 4, 1, size, size, generator=g)
    missing = torch.zeros(b, 4, dtype=torch.bool)
    missing[0, 1] = True  # L-CC absent in the first study
    images[missing] = 0
    return images, missing


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_runs_on_cpu(name):
    torch.manual_seed(0)
    config = get_preset(name, in_size=SIZE)
    model = create_model(config).eval()
    assert model.config is config
    images, missing = _inputs(2, SIZE)
    with torch.no_grad():
        out = model(images, missing)
    assert set(out) == {"malignancy_R", "malignancy_L", "birads_R", "birads_L", "attention"}
    for side in "RL":
        assert out[f"malignancy_{side}"].shape == (2, 2)
        assert out[f"birads_{side}"].shape == (2, 5)
    assert out["attention"].shape == (2, 4)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())
    assert out["attention"][0, 1] == 0.0
    torch.testing.assert_close(out["attention"].sum(1), torch.ones(2), rtol=0, atol=1e-6)


# (preset, tasks, birads_classes, expected heads with widths)
SHAPE_TABLE = [
    ("hybrid-vssm-shared", ("malignancy", "birads"), (1, 5), {"malignancy": 2, "birads": 2}),
    ("hybrid-vssm-view", ("malignancy", "birads"), (1, 3, 5), {"malignancy": 2, "birads": 3}),
    ("hybrid-vssm-shared", ("birads",), (1, 2, 3, 4, 5), {"birads": 5}),
    ("hybrid-vssm-view", ("malignancy",), (1, 5), {"malignancy": 2}),
    ("resnet18-shared", ("birads",), (1, 3, 5), {"birads": 3}),
    ("resnet50-shared", ("malignancy",), (1, 2, 3, 4, 5), {"malignancy": 2}),
    ("vssm-shared", ("malignancy", "birads"), (1, 3, 5), {"malignancy": 2, "birads": 3}),
    ("vssm-view", ("birads",), (1, 5), {"birads": 2}),
]


@pytest.mark.parametrize(("name", "tasks", "classes", "heads"), SHAPE_TABLE)
def test_shape_table(name, tasks, classes, heads):
    torch.manual_seed(0)
    model = create_model(get_preset(name, in_size=SIZE, tasks=tasks, birads_classes=classes))
    model.eval()
    images, missing = _inputs(3, SIZE, seed=1)
    with torch.no_grad():
        out = model(images, missing)
    expected = {f"{t}_{s}": (3, k) for t, k in heads.items() for s in "RL"}
    expected["attention"] = (3, 4)
    assert {k: tuple(v.shape) for k, v in out.items()} == expected


def test_paper_grid_covers_every_experiment():
    grid = paper_grid()
    assert len(grid) == len(PRESETS) * 3 * 3  # 6 architectures x 3 BI-RADS sets x 3 task sets
    assert {c.birads_classes for c in grid.values()} == set(BIRADS_SETS.values())
    hyb = grid["hybrid-vssm-shared:b135:birads"]
    assert hyb.tasks == ("birads",) and hyb.birads_classes == (1, 3, 5)
    assert {c.encoder for c in grid.values()} == {"hybrid", "resnet18", "resnet50", "vssm"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_round_trip_json(name):
    config = get_preset(name, birads_classes=(1, 3, 5), tasks=("birads",))
    d = json.loads(json.dumps(config.to_dict()))
    assert d["family"] == "fourview" and d["birads_classes"] == [1, 3, 5]
    again = config_from_dict(d)
    assert again == config and isinstance(again.vssm_dims, tuple)
    assert FourViewConfig.from_dict(d) == config


def test_hybrid_matches_paper_block_counts():
    pure, hybrid = PRESETS["vssm-shared"], PRESETS["hybrid-vssm-shared"]
    assert sum(pure.vssm_depths) == 4  # paper 4.2: four successive VSSM blocks
    assert sum(hybrid.vssm_depths) == 2  # half of them in the hybrid
    assert hybrid.cut_stage == 2 and hybrid.in_size == 512 and hybrid.dropout == 0.5
    model = build_fourview(get_preset("hybrid-vssm-shared", in_size=64))
    enc = model.encoders[0]
    assert [k.split(".")[0] for k in enc.resnet.state_dict()][-1] == "layer2"
    n_blocks = sum(1 for m in enc.modules() if type(m).__name__ == "VSSBlock")
    assert n_blocks == 2 and model.feature_dim == 512 and enc.out_stride == 32


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"encoder": "vit"}, "encoder"),
        ({"sharing": "per_view"}, "sharing"),
        ({"tasks": ()}, "tasks"),
        ({"tasks": ("malignancy", "density")}, "tasks"),
        ({"birads_classes": (5, 1)}, "birads_classes"),
        ({"birads_classes": (1, 6)}, "birads_classes"),
        ({"in_size": 500}, "in_size"),
        ({"cut_stage": 4}, "cut_stage"),
        ({"vssm_depths": (1,), "vssm_dims": (256, 512)}, "equal length"),
        ({"encoder": "vssm", "pretrained_path": "r18.pth"}, "pure VSSM"),
    ],
)
def test_invalid_configs_are_refused(bad, match):
    with pytest.raises(ModelError, match=match):
        FourViewConfig(**bad)


def test_registry_errors():
    with pytest.raises(UnknownModelError, match="no-such"):
        get_preset("no-such-model")
    with pytest.raises(UnknownModelError, match="family"):
        config_from_dict({"family": "transformer"})
    with pytest.raises(ModelError, match="unknown keys"):
        config_from_dict({**PRESETS["resnet18-shared"].to_dict(), "depth": 34})
    with pytest.raises(ModelError, match="not_a_field"):
        get_preset("resnet18-shared", not_a_field=1)
    with pytest.raises(UnknownModelError):
        create_model(object())


def test_projection_to_feature_dim():
    model = build_fourview(FourViewConfig(encoder="resnet18", in_size=64, feature_dim=96))
    assert model.heads["malignancy_R"].in_features == 4 * 96
    assert model.fusion.mlp[0].in_features == 4 * 96
    with torch.no_grad():
        out = model.eval()(*_inputs(2, 64))
    assert out["birads_L"].shape == (2, 5)


@pytest.mark.parametrize("name", ["hybrid-vssm-view", "vssm-shared", "resnet18-shared"])
def test_cam_layers_give_each_views_map_on_the_gradient_path(name):
    torch.manual_seed(0)
    model = create_model(get_preset(name, in_size=64)).eval()
    layers = model.cam_layers()
    assert list(layers) == list(STANDARD_VIEWS)
    assert len({id(m) for m in layers.values()}) == 4
    images, missing = _inputs(2, 64, seed=3)
    maps: dict[str, torch.Tensor] = {}

    def keep(key):
        def hook(module, inputs, output):
            output.retain_grad()
            maps[key] = output

        return hook

    handles = [layers[k].register_forward_hook(keep(k)) for k in STANDARD_VIEWS]
    try:
        out = model(images, missing)
        out["malignancy_L"][:, 1].sum().backward()
    finally:
        for h in handles:
            h.remove()
    channels = model.encoders[0].out_channels
    for view, key in enumerate(STANDARD_VIEWS):
        fmap = maps[key]
        assert fmap.shape == (2, channels, 2, 2)  # channels-first, 64 / 32
        assert fmap.grad is not None and fmap.grad[1].abs().sum() > 0
        encoder = model.encoders[0 if len(model.encoders) == 1 or view < 2 else 1]
        with torch.no_grad():
            alone = encoder(images[1:, view])
        torch.testing.assert_close(fmap[1].detach(), alone[0], rtol=1e-4, atol=1e-5)
    assert torch.all(maps["L-CC"][0] == 0)  # missing view: zero map, zero gradient
    assert torch.all(maps["L-CC"].grad[0] == 0)


def test_view_specific_uses_one_encoder_per_projection():
    torch.manual_seed(0)
    model = create_model(get_preset("hybrid-vssm-view", in_size=64)).eval()
    assert len(model.encoders) == 2
    images, missing = _inputs(1, 64, seed=4)
    missing[:] = False
    with torch.no_grad():
        base = model(images, missing)["malignancy_R"]
        for p in model.encoders[1].parameters():  # perturb the MLO encoder only
            p.add_(0.05)
        changed = model(images, missing)["malignancy_R"]
        images_cc_only = missing.clone()
        images_cc_only[:, 2:] = True
        before = model(images, images_cc_only)["malignancy_R"]
        for p in model.encoders[1].parameters():
            p.add_(0.1)
        after = model(images, images_cc_only)["malignancy_R"]
    assert not torch.allclose(base, changed)
    torch.testing.assert_close(before, after)  # MLO encoder unused when MLO views are missing


def test_gray_input_is_replicated_and_imagenet_normalised():
    norm = GrayToImageNet()
    x = torch.tensor([0.485, 0.456, 0.0, 1.0]).view(1, 1, 2, 2)
    out = norm(x)
    assert out.shape == (1, 3, 2, 2)
    assert out[0, 0, 0, 0].abs() < 1e-6 and out[0, 1, 0, 1].abs() < 1e-6
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(out[0, :, 1, 1], (1 - mean) / std)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_bad_inputs_raise():
    model = build_fourview(FourViewConfig(encoder="resnet18", in_size=64)).eval()
    with pytest.raises(ValueError, match=r"\(B, 4, 1, H, W\)"):
        model(torch.rand(1, 4, 3, 64, 64), torch.zeros(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="missing"):
        model(torch.rand(2, 4, 1, 64, 64), torch.zeros(2, 3, dtype=torch.bool))


def test_importing_builds_nothing():
    code = (
        "import torch.nn as nn\n"
        "n = [0]\n"
        "orig = nn.Module.__init__\n"
        "def counting(self, *a, **k):\n"
        "    n[0] += 1\n"
        "    orig(self, *a, **k)\n"
        "nn.Module.__init__ = counting\n"
        "import engine.models.registry, engine.models.fourview, engine.models.hybrid\n"
        "import engine.models.resnet\n"
        "print(n[0])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "0"
