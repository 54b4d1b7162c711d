"""Model registry: family name -> (config class, builder), named presets, ``create_model``.

A config is a frozen dataclass with ``to_dict()`` (JSON-safe, carrying ``"family"``) and
``from_dict()``; it goes into the model card, and :func:`config_from_dict` rebuilds it from there.
Presets name every architecture of seed 000's grid (section 4.2); :func:`paper_grid` adds the
BI-RADS class sets and single/multi-task variants of each.

Nothing is built at import: presets are configs, and models exist only after
:func:`create_model`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from engine.errors import ModelError, UnknownModelError
from engine.models.fourview import FourViewConfig, build_fourview

__all__ = [
    "MODEL_FAMILIES",
    "PRESETS",
    "BIRADS_SETS",
    "TASK_SETS",
    "register_family",
    "create_model",
    "config_from_dict",
    "get_preset",
    "paper_grid",
]

logger = logging.getLogger(__name__)

Builder = Callable[..., nn.Module]

#: family -> (config class, builder). Builders take ``(config, *, pretrained=True)``.
MODEL_FAMILIES: dict[str, tuple[type, Builder]] = {
    "fourview": (FourViewConfig, build_fourview),
}

_PURE_VSSM = {"vssm_depths": (1, 1, 1, 1), "vssm_dims": (64, 128, 256, 512), "patch_size": 4}

#: Named architectures of seed 000 (all five BI-RADS classes, both tasks, 512 input).
PRESETS: dict[str, FourViewConfig] = {
    "hybrid-vssm-shared": FourViewConfig(encoder="hybrid", sharing="shared"),
    "hybrid-vssm-view": FourViewConfig(encoder="hybrid", sharing="view_specific"),
    "resnet18-shared": FourViewConfig(encoder="resnet18", sharing="shared"),
    "resnet50-shared": FourViewConfig(encoder="resnet50", sharing="shared"),
    "vssm-shared": FourViewConfig(encoder="vssm", sharing="shared", **_PURE_VSSM),
    "vssm-view": FourViewConfig(encoder="vssm", sharing="view_specific", **_PURE_VSSM),
}

#: The paper's three BI-RADS experiments (section 4.2), by short name.
BIRADS_SETS: dict[str, tuple[int, ...]] = {
    "b15": (1, 5),
    "b135": (1, 3, 5),
    "b12345": (1, 2, 3, 4, 5),
}

#: Multi-task and the two single-task settings.
TASK_SETS: dict[str, tuple[str, ...]] = {
    "multi": ("malignancy", "birads"),
    "malignancy": ("malignancy",),
    "birads": ("birads",),
}


def register_family(name: str, config_cls: type, builder: Builder) -> None:
    """Add a model family (another paper's models) to :data:`MODEL_FAMILIES`.

    Args:
        name: The ``"family"`` value its configs' ``to_dict()`` carry.
        config_cls: Frozen dataclass with ``to_dict``/``from_dict``.
        builder: ``builder(config, *, pretrained=True) -> nn.Module`` on CPU.
    """
    if name in MODEL_FAMILIES and MODEL_FAMILIES[name] != (config_cls, builder):
        raise ModelError(f"model family {name!r} is already registered")
    MODEL_FAMILIES[name] = (config_cls, builder)


def _family_of(config: Any) -> str:
    for name, (cls, _) in MODEL_FAMILIES.items():
        if type(config) is cls:
            return name
    raise UnknownModelError(f"no model family for config type {type(config).__name__}")


def create_model(config: Any, *, pretrained: bool = True) -> nn.Module:
    """Build the CPU model a config describes (``model.config`` is that config).

    Args:
        config: A registered family's config (e.g. :class:`FourViewConfig`).
        pretrained: Load the config's local ImageNet weights when it names any; False when the
            full model's weights are loaded afterwards.

    Raises:
        UnknownModelError: The config's type is not registered.
        ModelError: The config or its pretrained file is unusable.
    """
    _, builder = MODEL_FAMILIES[_family_of(config)]
    model = builder(config, pretrained=pretrained)
    n_params = sum(p.numel() for p in model.parameters())
    logger.debug("built %s model, %d parameters", _family_of(config), n_params)
    return model


def config_from_dict(d: dict[str, Any]) -> Any:
    """Rebuild a config from its ``to_dict()`` (the model card's ``"config"``).

    Raises:
        UnknownModelError: ``d["family"]`` is not registered.
        ModelError: Unknown keys or invalid values.
    """
    family = d.get("family")
    if family not in MODEL_FAMILIES:
        raise UnknownModelError(f"unknown model family {family!r}")
    cls, _ = MODEL_FAMILIES[family]
    return cls.from_dict(d)


def get_preset(name: str, **overrides: Any) -> FourViewConfig:
    """A named preset, optionally with fields replaced.

    Args:
        name: A key of :data:`PRESETS` (e.g. ``"hybrid-vssm-shared"``).
        **overrides: Config fields to change (``birads_classes=(1, 5)``, ``in_size=256``, ...).

    Raises:
        UnknownModelError: No such preset.
        ModelError: An override is not a config field or is invalid.
    """
    if name not in PRESETS:
        raise UnknownModelError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    try:
        return dataclasses.replace(PRESETS[name], **overrides)
    except TypeError as exc:
        raise ModelError(f"preset {name}: {exc}") from exc


def paper_grid() -> dict[str, FourViewConfig]:
    """Every configuration of seed 000's experiments (section 4.2).

    Architectures x BI-RADS sets x {multi-task, malignancy only, BI-RADS only}, named
    ``"<preset>:<birads set>:<tasks>"``, e.g. ``"hybrid-vssm-shared:b135:multi"``.
    """
    grid: dict[str, FourViewConfig] = {}
    for arch in PRESETS:
        for bname, classes in BIRADS_SETS.items():
            for tname, tasks in TASK_SETS.items():
                grid[f"{arch}:{bname}:{tname}"] = get_preset(
                    arch, birads_classes=classes, tasks=tasks
                )
    return grid
