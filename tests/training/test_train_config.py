"""Training configs: the committed files parse and build, defaults are seed 000's recipe, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.models.registry import create_model, paper_grid
from training.config import CONFIG_DIR, ConfigError, TrainConfig, grid_configs, load_config, parse_overrides

SHIPPED = ("hybrid-vssm-shared", "hybrid-vssm-view", "resnet18-baseline")


def test_defaults_are_the_paper_recipe():
    c = TrainConfig()
    assert c.model.preset == "hybrid-vssm-shared"
    assert (c.optim.name, c.optim.weight_decay, c.learning_rate()) == ("adamw", 0.05, 1e-4)
    assert (c.schedule.factor, c.schedule.patience) == (0.5, 10)
    assert dict(c.loss.weights) == {"malignancy": 0.5, "birads": 0.5}
    assert c.loss.class_weighting == "inverse-frequency"
    assert (c.train.grad_clip, c.train.epochs) == (1.0, 100)
    a = c.augment
    assert (a.rotation_deg, a.translate, tuple(a.scale), a.hflip_p) == (10.0, 0.05, (0.95, 1.05), 0.5)
    assert c.architecture().dropout == 0.5 and c.architecture().in_size == 512
    vssm = TrainConfig.from_dict({"model": {"preset": "vssm-shared"}})
    assert vssm.learning_rate() == 1e-5  # pure VSSM (seed 000, 4.3)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_parse_and_build(name):
    config = load_config(CONFIG_DIR / f"{name}.toml")
    assert config.name == name
    arch = config.architecture()
    assert arch.tasks == ("malignancy", "birads") and arch.birads_classes == (1, 2, 3, 4, 5)
    assert arch.sharing == ("view_specific" if name == "hybrid-vssm-view" else "shared")
    assert arch.encoder == ("resnet18" if name == "resnet18-baseline" else "hybrid")
    model = create_model(arch, pretrained=False)
    assert sum(p.numel() for p in model.parameters()) > 1_000_000
    # the recorded dict rebuilds the same config (what `mammo-train reproduce` relies on)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_grid_files_match_the_generator_and_the_registry():
    folder = CONFIG_DIR / "grid"
    files = {p.name: p.read_text() for p in folder.glob("*.toml")}
    assert files == grid_configs(), "training/configs/grid is stale: run `mammo-train grid`"
    assert len(files) == 6 * 3 * 3
    registry = paper_grid()
    for name in files:
        config = load_config(folder / name)
        preset, bset, tasks = name[: -len(".toml")].split("__")
        assert config.architecture() == registry[f"{preset}:{bset}:{tasks}"]


def test_every_grid_config_builds_a_model():
    """All 54 grid configs build (on the meta device: the modules without allocating weights)."""
    seen = set()
    for path in sorted((CONFIG_DIR / "grid").glob("*.toml")):
        arch = load_config(path).architecture()
        with torch.device("meta"):
            model = create_model(arch, pretrained=False)
        heads = {k for k in model.heads}
        expected = {f"{t}_{s}" for t in arch.tasks for s in "RL"}
        assert heads == expected
        if "birads" in arch.tasks:
            assert model.heads["birads_R"].out_features == len(arch.birads_classes)
        seen.add((arch.encoder, arch.sharing))
    assert len(seen) == 6


def test_overrides_and_errors(tmp_path):
    assert parse_overrides(["train.epochs=3", "model.birads_classes=[1, 5]", "data.dataset=cmmd"]) == [
        (["train", "epochs"], 3),
        (["model", "birads_classes"], [1, 5]),
        (["data", "dataset"], "cmmd"),
    ]
    p = tmp_path / "c.toml"
    p.write_text('[model]\npreset = "resnet18-shared"\n[data]\noptions = { studies = 10 }\n')
    c = load_config(p, ["train.epochs=3", "data.options.seed=4", "model.tasks=['birads']", "optim.lr=0.001"])
    assert c.train.epochs == 3 and dict(c.data.options) == {"studies": 10, "seed": 4}
    assert c.architecture().tasks == ("birads",) and c.learning_rate() == 1e-3
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(p, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(p, ["train.epochs=three"])
    with pytest.raises(ConfigError, match="preset"):
        load_config(p, ["model.preset=resnet34"])
    with pytest.raises(ConfigError, match="c.toml.*birads_classes"):
        load_config(p, ["model.birads_classes=[5, 1]"])
    with pytest.raises(ConfigError, match="split"):
        load_config(p, ["data.split=[0.5, 0.4]"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.epochs"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Path(tmp_path / "missing.toml"))
