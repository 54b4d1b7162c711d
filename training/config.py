"""Training configuration: a TOML file (``training/configs/*.toml``) -> :class:`TrainConfig`.

A config has seven tables; every key is optional and the defaults are the recipe of seed 000
(sections 3.1, 4.1 and 4.3), so a config names only what differs::

    [model]                        # a preset of engine.models.registry + FourViewConfig fields
    preset = "hybrid-vssm-shared"
    birads_classes = [1, 2, 3, 4, 5]
    tasks = ["malignancy", "birads"]

    [data]                         # dataset adapter (training.datasets) and patient-level split
    dataset = "phantom"
    split = [0.7, 0.15, 0.15]      # train / validation / test fractions of patients
    options = { studies = 600, seed = 0, size = "demo" }   # adapter keyword options

    [optim]    lr (None = 1e-4; 1e-5 for the pure VSSM), weight_decay = 0.05 (AdamW)
    [schedule] ReduceLROnPlateau: factor = 0.5, patience = 10 on label AUC + BI-RADS AUC
    [loss]     weights = {malignancy = 0.5, birads = 0.5}, class_weighting = "inverse-frequency"
    [train]    epochs = 100, batch_size, grad_clip = 1.0, seed, device, amp, workers, ...
    [augment]  rotation_deg = 10, translate = 0.05, scale = [0.95, 1.05], hflip_p = 0.5

``--set key=value`` overrides any key by its dotted path (``train.epochs=3``,
``data.options.studies=40``, ``model.in_size=256``); the value is read as a TOML value (``3``,
``[1, 5]``, ``true``, ``"text"``) and as a plain string when it is not one.

The resolved config (:meth:`TrainConfig.to_dict`) is what a run records in ``RUN/config.json``
and what an exported model card stores under ``training.config``; :meth:`TrainConfig.from_dict`
reads it back (``mammo-train reproduce``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import MammoError, ModelError

try:
    import tomllib
except ImportError:  # Python 3.10: the same parser from PyPI
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "ConfigError",
    "ModelSection",
    "DataSection",
    "OptimSection",
    "ScheduleSection",
    "LossSection",
    "TrainSection",
    "AugmentSection",
    "TrainConfig",
    "load_config",
    "parse_overrides",
    "apply_overrides",
    "grid_configs",
    "write_grid",
    "CONFIG_DIR",
]

logger = logging.getLogger(__name__)

#: The committed configs (``training/configs``).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(MammoError):
    """A training config that cannot be read or is invalid; ``str(err)`` names the file or key."""


# --- sections ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSection:
    """Which architecture to train.

    Attributes:
        preset: A name of ``engine.models.registry.PRESETS`` (``"hybrid-vssm-shared"``,
            ``"hybrid-vssm-view"``, ``"resnet18-shared"``, ``"resnet50-shared"``,
            ``"vssm-shared"``, ``"vssm-view"``).
        fields: ``FourViewConfig`` fields replacing the preset's (``in_size``, ``tasks``,
            ``birads_classes``, ``dropout``, ``pretrained_path``, ...).
    """

    preset: str = "hybrid-vssm-shared"
    fields: Mapping[str, Any] = field(default_factory=dict)

    def architecture(self) -> Any:
        """The frozen model config (``FourViewConfig``) this section describes.

        Raises:
            ConfigError: Unknown preset or an invalid field.
        """
        from engine.models.registry import get_preset

        try:
            return get_preset(self.preset, **dict(self.fields))
        except ModelError as err:
            raise ConfigError(f"[model]: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"preset": self.preset}
        for k, v in self.fields.items():
            out[k] = list(v) if isinstance(v, tuple) else v
        return out


@dataclass(frozen=True)
class DataSection:
    """Where the studies come from and how they are split.

    Attributes:
        dataset: Adapter name of ``training.datasets.ADAPTERS`` (``"phantom"``, ``"cmmd"``, ...).
        root: Dataset folder (``--data`` overrides it). For the phantom, None (or a folder without
            ``labels.csv``) generates ``options.studies`` studies on the fly (into the cache, or
            into ``root`` when given).
        options: Keyword options of the adapter (phantom: ``studies``, ``seed``, ``size``,
            ``workers``).
        split: Patient fractions of train / validation / test (2 or 3 parts; a 2-part split
            evaluates the test table on the validation part, as seed 000 reports validation).
        split_seed: Seed of :func:`training.datasets.patient_split`.
        outside_birads: A breast whose BI-RADS is outside the model's ``birads_classes``:
            ``"exclude"`` (default; the breast leaves both tasks: the paper's {1,5} and {1,3,5}
            experiments are subsets of the data, seed 000 section 4.2) or ``"ignore-birads"``
            (only its BI-RADS label is ignored).
        crop: Crop each view to its breast box (engine.preprocess).
        cache: Keep preprocessed tensors in a memory-mapped ``.npy`` per split.
        cache_dir: Cache root (default ``$MAMMO_CACHE/tensors`` or
            ``~/.cache/mammo-viewer/tensors``).
        cache_dtype: ``"float16"`` (default) or ``"uint8"`` (half the disk, 8-bit levels).
        preprocess_workers: Processes that build the cache.
    """

    dataset: str = "phantom"
    root: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    split: tuple[float, ...] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    outside_birads: str = "exclude"
    crop: bool = True
    cache: bool = True
    cache_dir: str | None = None
    cache_dtype: str = "float16"
    preprocess_workers: int = 1

    def validate(self) -> None:
        if len(self.split) not in (2, 3) or any(f < 0 for f in self.split) or not math.isclose(
            sum(self.split), 1.0, abs_tol=1e-6
        ):
            raise ConfigError(f"[data] split must be 2 or 3 non-negative fractions summing to 1, got {self.split}")
        if self.outside_birads not in ("exclude", "ignore-birads"):
            raise ConfigError(f"[data] outside_birads must be 'exclude' or 'ignore-birads', got {self.outside_birads!r}")
        if self.cache_dtype not in ("float16", "uint8"):
            raise ConfigError(f"[data] cache_dtype must be 'float16' or 'uint8', got {self.cache_dtype!r}")
        if self.preprocess_workers < 1:
            raise ConfigError("[data] preprocess_workers must be >= 1")


@dataclass(frozen=True)
class OptimSection:
    """AdamW (seed 000, section 4.3).

    Attributes:
        name: ``"adamw"``.
        lr: Learning rate; None = 1e-4, or 1e-5 for the pure VSSM (seed 000, 4.3).
        weight_decay: 0.05.
        betas: Adam betas.
        eps: Adam epsilon.
    """

    name: str = "adamw"
    lr: float | None = None
    weight_decay: float = 0.05
    betas: tuple[float, ...] = (0.9, 0.999)
    eps: float = 1e-8

    def validate(self) -> None:
        if self.name != "adamw":
            raise ConfigError(f"[optim] name must be 'adamw', got {self.name!r}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError("[optim] lr must be positive")
        if len(self.betas) != 2:
            raise ConfigError("[optim] betas must have two values")


@dataclass(frozen=True)
class ScheduleSection:
    """ReduceLROnPlateau on the validation score (seed 000, 4.3).

    Attributes:
        factor: LR multiplier on a plateau (0.5).
        patience: Epochs without improvement before reducing (10).
        threshold: Relative improvement that counts (PyTorch's default 1e-4).
        min_lr: Floor of the learning rate.
    """

    factor: float = 0.5
    patience: int = 10
    threshold: float = 1e-4
    min_lr: float = 0.0

    def validate(self) -> None:
        if not 0 < self.factor < 1:
            raise ConfigError("[schedule] factor must be in (0, 1)")
        if self.patience < 0:
            raise ConfigError("[schedule] patience must be >= 0")


@dataclass(frozen=True)
class LossSection:
    """Multi-task loss (seed 000, 4.1).

    Attributes:
        weights: Task weights (``malignancy`` 0.5, ``birads`` 0.5).
        class_weighting: ``"inverse-frequency"`` (per task, from the training split) or ``"none"``.
    """

    weights: Mapping[str, float] = field(default_factory=lambda: {"malignancy": 0.5, "birads": 0.5})
    class_weighting: str = "inverse-frequency"

    def validate(self) -> None:
        bad = sorted(set(self.weights) - {"malignancy", "birads"})
        if bad:
            raise ConfigError(f"[loss] weights has unknown tasks {bad}")
        if any(float(w) < 0 for w in self.weights.values()):
            raise ConfigError("[loss] weights must be >= 0")
        if self.class_weighting not in ("inverse-frequency", "none"):
            raise ConfigError(f"[loss] class_weighting must be 'inverse-frequency' or 'none', got {self.class_weighting!r}")


@dataclass(frozen=True)
class TrainSection:
    """The loop.

    Attributes:
        epochs: Maximum epochs (100).
        batch_size: Studies per step and per process (global batch = batch_size x processes).
        eval_batch_size: Studies per evaluation step (0 = batch_size).
        seed: Seed of weights, sampling order, dropout and augmentation.
        grad_clip: Max gradient norm (1.0; 0 disables).
        early_stop: Stop after this many epochs without improvement (0 = never; the paper runs
            all epochs and keeps the best checkpoint).
        num_workers: DataLoader worker processes.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        amp: ``"auto"`` (bf16 autocast on CUDA, off on CPU), ``"bf16"`` or ``"off"``.
        channels_last: ``"auto"`` (on CUDA), ``"on"`` or ``"off"``.
        compile: ``torch.compile`` the model.
        deterministic: Deterministic algorithms (bit-identical CPU runs for a seed).
        sync_bn: ``"auto"`` (synchronised BatchNorm when training on several processes, so a
            DDP run sees the statistics of the global batch), ``"on"``, ``"off"``.
        threads: ``torch.set_num_threads`` (0 = leave torch's default).
    """

    epochs: int = 100
    batch_size: int = 8
    eval_batch_size: int = 0
    seed: int = 0
    grad_clip: float = 1.0
    early_stop: int = 0
    num_workers: int = 2
    device: str = "auto"
    amp: str = "auto"
    channels_last: str = "auto"
    compile: bool = False
    deterministic: bool = True
    sync_bn: str = "auto"
    threads: int = 0

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 0:
            raise ConfigError("[train] epochs and batch_size must be >= 1")
        if self.num_workers < 0 or self.threads < 0 or self.early_stop < 0 or self.grad_clip < 0:
            raise ConfigError("[train] num_workers, threads, early_stop and grad_clip must be >= 0")
        if self.amp not in ("auto", "bf16", "off"):
            raise ConfigError(f"[train] amp must be 'auto', 'bf16' or 'off', got {self.amp!r}")
        for key in ("channels_last", "sync_bn"):
            if getattr(self, key) not in ("auto", "on", "off"):
                raise ConfigError(f"[train] {key} must be 'auto', 'on' or 'off'")


@dataclass(frozen=True)
class AugmentSection:
    """Training augmentation (seed 000, 3.1); see :mod:`training.augment`.

    Attributes:
        enabled: Augment the training split (validation and test never are).
        rotation_deg: Rotation range +-degrees (10).
        translate: Translation range +- fraction of the side (0.05).
        scale: Scale range (0.95, 1.05).
        hflip_p: Probability of a horizontal flip (0.5).
        hflip_mode: ``"mirror-study"`` (default: the whole study is mirrored, which in the
            engine's right-flipped layout swaps the left and right views and labels) or
            ``"views"`` (each view's pixels flipped, the literal reading; breaks the
            one-orientation convention). See :class:`training.augment.RandomHorizontalFlip`.
    """

    enabled: bool = True
    rotation_deg: float = 10.0
    translate: float = 0.05
    scale: tuple[float, ...] = (0.95, 1.05)
    hflip_p: float = 0.5
    hflip_mode: str = "mirror-study"

    def validate(self) -> None:
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError("[augment] scale must be [low, high] with 0 < low <= high")
        if not 0 <= self.hflip_p <= 1 or self.rotation_deg < 0 or self.translate < 0:
            raise ConfigError("[augment] hflip_p must be in [0, 1], rotation and translate >= 0")
        if self.hflip_mode not in ("mirror-study", "views"):
            raise ConfigError(f"[augment] hflip_mode must be 'mirror-study' or 'views', got {self.hflip_mode!r}")


_SECTIONS: dict[str, type] = {
    "data": DataSection,
    "optim": OptimSection,
    "schedule": ScheduleSection,
    "loss": LossSection,
    "train": TrainSection,
    "augment": AugmentSection,
}


@dataclass(frozen=True)
class TrainConfig:
    """A whole training config (see the module docstring).

    Attributes:
        model, data, optim, schedule, loss, train, augment: The sections.
        name: Optional run name (the shipped model it produces).
        description: One line for the model card.
        source: The TOML file it was read from (not part of :meth:`to_dict`).
    """

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    loss: LossSection = field(default_factory=LossSection)
    train: TrainSection = field(default_factory=TrainSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    name: str = ""
    description: str = ""
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for sec in (self.data, self.optim, self.schedule, self.loss, self.train, self.augment):
            sec.validate()

    # -- derived ----------------------------------------------------------------------------
    def architecture(self) -> Any:
        """The model config (``FourViewConfig``)."""
        return self.model.architecture()

    def learning_rate(self) -> float:
        """``optim.lr``, or the paper's default: 1e-5 for the pure VSSM, else 1e-4."""
        if self.optim.lr is not None:
            return float(self.optim.lr)
        return 1e-5 if self.architecture().encoder == "vssm" else 1e-4

    # -- dict round trip --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every value (defaults included)."""
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        out["model"] = self.model.to_dict()
        for key in _SECTIONS:
            out[key] = _plain(dataclasses.asdict(getattr(self, key)))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str | Path | None = None) -> TrainConfig:
        """Build from a nested dict (a parsed TOML file or :meth:`to_dict`).

        Raises:
            ConfigError: Unknown table or key, a value of the wrong type, or an invalid value.
        """
        where = Path(source).name if source is not None else "config"
        d = dict(d)
        unknown = sorted(set(d) - {"model", "name", "description", *_SECTIONS})
        if unknown:
            raise ConfigError(f"{where}: unknown table(s) or key(s) {unknown}")
        kwargs: dict[str, Any] = {}
        model = dict(d.get("model") or {})
        if not isinstance(d.get("model", {}), Mapping):
            raise ConfigError(f"{where}: [model] must be a table")
        preset = model.pop("preset", ModelSection.preset)
        kwargs["model"] = ModelSection(str(preset), _model_fields(model, where))
        for key, cls_ in _SECTIONS.items():
            raw = d.get(key) or {}
            if not isinstance(raw, Mapping):
                raise ConfigError(f"{where}: [{key}] must be a table")
            kwargs[key] = _build_section(cls_, raw, f"{where} [{key}]")
        for key in ("name", "description"):
            if key in d:
                if not isinstance(d[key], str):
                    raise ConfigError(f"{where}: {key} must be a string")
                kwargs[key] = d[key]
        try:
            config = cls(**kwargs, source=str(source) if source is not None else None)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        try:
            config.architecture()  # validates the model fields now, not at training time
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        return config

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with whole sections (or name/description) replaced."""
        return dataclasses.replace(self, **changes)

    def fingerprint(self) -> str:
        """Stable JSON text of :meth:`to_dict` (for comparisons)."""
        return json.dumps(self.to_dict(), sort_keys=True)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _model_fields(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    from engine.models.fourview import FourViewConfig

    known = {f.name for f in dataclasses.fields(FourViewConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where} [model]: unknown key(s) {unknown} (FourViewConfig fields: {sorted(known)})")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], where) for v in value)
    if origin in (Mapping, dict) or hint is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        if args and args[1] is float:
            return {str(k): _coerce(v, float, f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    return value


def _build_section(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} (known: {sorted(names)})")
    kwargs = {k: _coerce(v, hints[k], f"{where} {k}") for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


# --- files and overrides -------------------------------------------------------------------------


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: Sequence[str]) -> list[tuple[list[str], Any]]:
    """``["train.epochs=3", ...]`` -> ``[(["train", "epochs"], 3), ...]``.

    Raises:
        ConfigError: An item without ``=`` or with an empty key.
    """
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        path = [p.strip() for p in key.strip().split(".")]
        if not sep or not all(path):
            raise ConfigError(f"--set {item!r}: expected key=value with a dotted key, e.g. train.epochs=3")
        out.append((path, _parse_value(value.strip())))
    return out


def apply_overrides(d: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A deep copy of ``d`` with ``--set`` overrides applied (tables created as needed)."""
    out = json.loads(json.dumps(_plain(d)))
    for path, value in parse_overrides(overrides):
        node = out
        for p in path[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {'.'.join(path)}: {p} is not a table")
            node = nxt
        node[path[-1]] = value
    return out


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a TOML config (or a run's resolved ``config.json``) and apply ``--set`` overrides.

    Args:
        path: The ``.toml`` file, or ``RUN/config.json`` to re-run a run's exact config.
        overrides: ``key=value`` strings.

    Raises:
        ConfigError: Unreadable file, invalid TOML/JSON or an invalid config (the message names
            the file).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror or err})") from err
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path.name}: invalid JSON (line {err.lineno})") from err
    else:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path.name}: invalid TOML ({err})") from err
    return TrainConfig.from_dict(apply_overrides(raw, overrides), source=path)


# --- the paper's experiment grid -----------------------------------------------------------------

_GRID_HEADER = """\
# Seed 000 experiment grid (section 4.2): {arch}, BI-RADS {classes}, {task_text}.
# Generated by `mammo-train grid` from engine.models.registry.paper_grid(); edit the generator,
# not this file. Everything not named here is the paper's recipe (training/config.py defaults).
"""


def grid_configs() -> dict[str, str]:
    """TOML text of every configuration of seed 000's grid, by file name.

    Architectures (hybrid shared / view-specific, ResNet-18, ResNet-50, VSSM shared /
    view-specific) x BI-RADS sets {1,5}, {1,3,5}, {1..5} x multi-task / malignancy only /
    BI-RADS only, named like ``hybrid-vssm-shared__b135__multi.toml``.
    """
    from engine.models.registry import BIRADS_SETS, PRESETS, TASK_SETS

    out: dict[str, str] = {}
    for arch in PRESETS:
        for bname, classes in BIRADS_SETS.items():
            for tname, tasks in TASK_SETS.items():
                task_text = "multi-task" if tname == "multi" else f"single-task ({tname})"
                lines = [
                    _GRID_HEADER.format(arch=arch, classes=list(classes), task_text=task_text),
                    f'name = "{arch}__{bname}__{tname}"',
                    "",
                    "[model]",
                    f'preset = "{arch}"',
                    f"birads_classes = {list(classes)}",
                    "tasks = [" + ", ".join(f'"{t}"' for t in tasks) + "]",
                    "",
                ]
                out[f"{arch}__{bname}__{tname}.toml"] = "\n".join(lines)
    return out


def write_grid(out_dir: str | Path) -> list[Path]:
    """Write :func:`grid_configs` into ``out_dir`` (created); returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in grid_configs().items():
        p = out / name
        p.write_text(text, encoding="utf-8")
        written.append(p)
    return written
