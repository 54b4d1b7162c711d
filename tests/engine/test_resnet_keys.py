"""ResNet-18/50 keep torchvision's state-dict layout, so ImageNet checkpoints load strictly."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from engine.errors import ModelError, WeightsMismatchError
from engine.models.fourview import FourViewConfig, build_fourview
from engine.models.resnet import (
    checkpoint_filter_fn,
    load_pretrained,
    resnet18,
    resnet50,
)


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.weight": (c,),
        f"{prefix}.bias": (c,),
        f"{prefix}.running_mean": (c,),
        f"{prefix}.running_var": (c,),
        f"{prefix}.num_batches_tracked": (),
    }


def torchvision_layout(depth: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's ``resnet18()`` / ``resnet50()`` state dict, written out from
    the published layer table (not from engine code)."""
    blocks = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[depth]
    bottleneck = depth == 50
    keys: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    inplanes = 64
    for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        out = planes * (4 if bottleneck else 1)
        for i in range(n):
            p = f"layer{stage}.{i}"
            cin = inplanes if i == 0 else out
            if bottleneck:
                keys[f"{p}.conv1.weight"] = (planes, cin, 1, 1)
                keys.update(_bn(f"{p}.bn1", planes))
                keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                keys.update(_bn(f"{p}.bn2", planes))
                keys[f"{p}.conv3.weight"] = (out, planes, 1, 1)
                keys.update(_bn(f"{p}.bn3", out))
            else:
                keys[f"{p}.conv1.weight"] = (planes, cin, 3, 3)
                keys.update(_bn(f"{p}.bn1", planes))
                keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                keys.update(_bn(f"{p}.bn2", planes))
            if i == 0 and (stage > 1 or cin != out):
                keys[f"{p}.downsample.0.weight"] = (out, cin, 1, 1)
                keys.update(_bn(f"{p}.downsample.1", out))
        inplanes = out
    keys["fc.weight"] = (1000, inplanes)
    keys["fc.bias"] = (1000,)
    return keys


def random_state(depth: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in torchvision_layout(depth).items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7, dtype=torch.long)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        else:
            out[key] = torch.randn(shape, generator=g)
    return out


@pytest.mark.parametrize(
    ("depth", "builder", "n_entries", "n_params"),
    [(18, resnet18, 122, 11_689_512), (50, resnet50, 320, 25_557_032)],
)
def test_state_dict_matches_torchvision(depth, builder, n_entries, n_params):
    model = builder()
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert own == torchvision_layout(depth)
    assert len(own) == n_entries
    assert sum(p.numel() for p in model.parameters()) == n_params  # torchvision's counts
    state = random_state(depth)
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.layer2[0].downsample[0].weight, state["layer2.0.downsample.0.weight"])


def test_forward_shapes():
    model = resnet18().eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
        assert model.forward_features(torch.randn(1, 3, 100, 100)).shape == (1, 512, 4, 4)
    trunk = resnet50(num_classes=0, stages=2).eval()
    with torch.no_grad():
        assert trunk(torch.randn(1, 3, 64, 64)).shape == (1, 512, 8, 8)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_local_file_strict(tmp_path, suffix):
    state = random_state(18, seed=1)
    path = tmp_path / f"resnet18-imagenet{suffix}"
    if suffix == ".pth":
        torch.save({"module." + k: v for k, v in state.items()}, path)  # DataParallel prefix
    else:
        save_file(state, str(path))
    model = resnet18()
    load_pretrained(model, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_truncated_trunk_drops_cut_layers(tmp_path):
    state = random_state(18, seed=2)
    trunk = resnet18(num_classes=0, stages=2)
    filtered = checkpoint_filter_fn(state, trunk)
    assert not any(k.startswith(("layer3", "layer4", "fc")) for k in filtered)
    path = tmp_path / "r18.safetensors"
    save_file(state, str(path))
    load_pretrained(trunk, path)
    assert torch.equal(trunk.layer2[1].conv2.weight, state["layer2.1.conv2.weight"])


def test_wrong_checkpoint_is_refused(tmp_path):
    path = tmp_path / "r50.safetensors"
    save_file(random_state(50), str(path))
    with pytest.raises(WeightsMismatchError, match="r50.safetensors"):
        load_pretrained(resnet18(), path)
    extra = random_state(18)
    extra["head.weight"] = torch.zeros(3)
    path2 = tmp_path / "extra.safetensors"
    save_file(extra, str(path2))
    with pytest.raises(WeightsMismatchError, match="head.weight"):
        load_pretrained(resnet18(), path2)


def test_pickled_objects_are_not_loaded(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "obj": ModelError("x")}, path)
    with pytest.raises(ModelError, match="evil.pth"):
        load_pretrained(resnet18(), path)
    with pytest.raises(ModelError, match="not found"):
        load_pretrained(resnet18(), tmp_path / "absent.pth")


@pytest.mark.parametrize(
    ("encoder", "depth", "prefixes"),
    [("hybrid", 18, ("conv1", "bn1", "layer1", "layer2")), ("resnet50", 50, None)],
)
def test_config_names_local_imagenet_file(tmp_path, encoder, depth, prefixes):
    state = random_state(depth, seed=3)
    path = tmp_path / f"imagenet-r{depth}.pth"
    torch.save(state, path)
    config = FourViewConfig(
        encoder=encoder,
        sharing="view_specific" if encoder == "hybrid" else "shared",
        in_size=64,
        pretrained_path=str(path),
    )
    model = build_fourview(config)
    for enc in model.encoders:
        loaded = enc.resnet.state_dict()
        for key, value in loaded.items():
            if prefixes is not None:
                assert key.startswith(prefixes)
            assert torch.equal(value, state[key]), key
    # the Engine builds without the file, then loads full weights
    assert build_fourview(
        FourViewConfig(encoder=encoder, in_size=64, pretrained_path=str(tmp_path / "gone.pth")),
        pretrained=False,
    ).config.pretrained_path.endswith("gone.pth")
