"""Shared pieces of the training tests: one tiny phantom data set and tiny configs.

The phantom (16 studies, ``tiny`` size, seed 5) is generated once per test session into a
temporary folder named the way the phantom adapter's on-the-fly cache names it
(``<cache>/s5-n16-tiny``), so a config that asks for ``studies = 16, seed = 5, size = "tiny"``
with ``cache_dir = <cache>`` reuses it. The configs use a hybrid model reduced to 0.23 M
parameters at 64 x 64 input: a two-epoch run takes a second or two on one core.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import TrainConfig, apply_overrides

__all__ = ["PHANTOM", "phantom_cache", "tiny_config_dict", "tiny_config", "write_tiny_toml", "TINY_TOML"]

#: The phantom's generation parameters.
PHANTOM = {"studies": 16, "seed": 5, "size": "tiny"}

_STATE: dict[str, Path] = {}

#: A tiny config as TOML text (``{cache}`` and ``{tensors}`` are filled in).
TINY_TOML = """\
name = "tiny"
description = "tiny test model"

[model]
preset = "hybrid-vssm-shared"
in_size = 64
cut_stage = 1
vssm_dims = [32, 64]
d_state = 4
fusion_hidden = 32

[data]
dataset = "phantom"
options = {{ studies = 16, seed = 5, size = "tiny", cache_dir = "{cache}" }}
split = [0.5, 0.25, 0.25]
cache_dir = "{tensors}"

[train]
epochs = 2
batch_size = 4
num_workers = 0
threads = 1
"""


def phantom_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The phantom cache folder holding ``s5-n16-tiny`` (generated on first use)."""
    if "cache" not in _STATE:
        from training.datasets import Phantom

        cache = tmp_path_factory.mktemp("phantom-cache")
        Phantom.generate(PHANTOM["studies"], PHANTOM["seed"], size=PHANTOM["size"], cache_dir=cache)
        _STATE["cache"] = cache
        _STATE["tensors"] = tmp_path_factory.mktemp("tensor-cache")
    return _STATE["cache"]


def tiny_config_dict(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny config as a dict (before overrides)."""
    import tomllib

    cache = phantom_cache(tmp_path_factory)
    return tomllib.loads(TINY_TOML.format(cache=cache.as_posix(), tensors=_STATE["tensors"].as_posix()))


def tiny_config(tmp_path_factory: pytest.TempPathFactory, *overrides: str) -> TrainConfig:
    """The tiny config with ``--set`` style overrides."""
    return TrainConfig.from_dict(apply_overrides(tiny_config_dict(tmp_path_factory), overrides))


def write_tiny_toml(tmp_path_factory: pytest.TempPathFactory, path: Path) -> Path:
    """Write the tiny config as a TOML file."""
    cache = phantom_cache(tmp_path_factory)
    path.write_text(TINY_TOML.format(cache=cache.as_posix(), tensors=_STATE["tensors"].as_posix()))
    return path
