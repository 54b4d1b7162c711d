"""Bundled models: model cards, safetensors weights with a sha256 check, and the registry.

A bundled model is a folder ``<models_dir>/<name>/`` with two files:

- ``model.safetensors``: the state dict (safetensors only; pickled checkpoints are never read);
- ``model.json``: the model card, a JSON object with these keys::

    name, version, family, description
    architecture   the config dict of the architecture (engine.models.registry.config_from_dict)
    input          the input spec / preprocessing (engine.preprocess.StudyPreprocessor.spec())
    classes        class names per task, e.g. {"malignancy": ["normal_or_benign", "malignant"],
                   "birads": [1, 2, 3, 4, 5]}
    training       how it was trained: config, command, data (name, licence, citation), date,
                   torch_version, where, seconds
    metrics        metrics on its test split
    weights_file   "model.safetensors"
    sha256         sha256 of the weights file (hex)

Loading checks the sha256 of the weights file against the card, then builds the architecture from
the card and loads the state dict with ``strict=True``: a tampered file, a wrong architecture or a
missing/unexpected key gives :class:`~engine.errors.WeightsMismatchError` (one line naming the
file). The registry (:func:`list_models`) shows only models whose card says how they were trained
(a ``training`` section with at least ``config`` and ``command``). The default models folder is
``<repo>/resources/models`` next to the installed ``engine`` package, overridden by the
``MAMMO_MODELS_DIR`` environment variable or a ``models_dir`` argument.

torch and safetensors are imported only by the functions that load or save weights, so listing
the models (the viewer's model menu) stays cheap.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ModelError, UnknownModelError, WeightsMismatchError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "CARD_FILE",
    "WEIGHTS_FILE",
    "MODELS_DIR_ENV",
    "ModelCard",
    "default_models_dir",
    "sha256_file",
    "read_card",
    "list_models",
    "find_model",
    "load_model",
    "save_model",
    "checkpoint_filter",
    "build_from_architecture",
]

logger = logging.getLogger(__name__)

CARD_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
MODELS_DIR_ENV = "MAMMO_MODELS_DIR"
_CARD_KEYS = (
    "name",
    "version",
    "family",
    "description",
    "architecture",
    "input",
    "classes",
    "training",
    "metrics",
    "weights_file",
    "sha256",
)


@dataclass
class ModelCard:
    """A model card (see the module docstring for the meaning of each field).

    Attributes:
        name: Kebab-case model name (the folder name).
        version: Version string.
        family: Architecture family (``"hybrid_vssm"``, ``"resnet_fourview"``, ...).
        architecture: The architecture config as a dict.
        input: Input spec / preprocessing.
        classes: Class names per task.
        training: Training provenance.
        metrics: Test-split metrics.
        description: One line about the model.
        weights_file: Weights file name inside the model folder.
        sha256: Hex sha256 of the weights file.
        extra: Any other keys of the JSON, kept on a round trip.
        path: The card file this was read from (None when built in memory).
    """

    name: str
    version: str
    family: str
    architecture: dict
    input: dict = field(default_factory=dict)
    classes: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    description: str = ""
    weights_file: str = WEIGHTS_FILE
    sha256: str = ""
    extra: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def folder(self) -> Path | None:
        """The model folder (None when not read from disk)."""
        return self.path.parent if self.path is not None else None

    @property
    def trained(self) -> bool:
        """True when the card records how the model was trained (config and command)."""
        t = self.training
        return isinstance(t, Mapping) and bool(t.get("config")) and bool(t.get("command"))

    def to_dict(self) -> dict:
        """The JSON object written to ``model.json``."""
        d: dict[str, Any] = dict(self.extra)
        d.update(
            name=self.name,
            version=self.version,
            family=self.family,
            description=self.description,
            architecture=self.architecture,
            input=self.input,
            classes=self.classes,
            training=self.training,
            metrics=self.metrics,
            weights_file=self.weights_file,
            sha256=self.sha256,
        )
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: Path | None = None) -> ModelCard:
        """Build from the JSON object; raises :class:`ModelError` naming ``path`` when invalid."""
        where = path.name if path is not None else "model card"
        if not isinstance(d, Mapping):
            raise ModelError(f"{where}: a model card must be a JSON object")
        missing = [k for k in ("name", "version", "architecture") if k not in d]
        if missing:
            raise ModelError(f"{where}: model card lacks {', '.join(missing)}")
        if not isinstance(d["architecture"], Mapping):
            raise ModelError(f"{where}: 'architecture' must be an object")
        arch = dict(d["architecture"])
        return cls(
            name=str(d["name"]),
            version=str(d["version"]),
            family=str(d.get("family") or arch.get("family", "")),
            architecture=arch,
            input=dict(d.get("input") or {}),
            classes=dict(d.get("classes") or {}),
            training=dict(d.get("training") or {}),
            metrics=dict(d.get("metrics") or {}),
            description=str(d.get("description", "")),
            weights_file=str(d.get("weights_file") or WEIGHTS_FILE),
            sha256=str(d.get("sha256", "")).lower(),
            extra={k: v for k, v in d.items() if k not in _CARD_KEYS},
            path=path,
        )


def default_models_dir() -> Path:
    """``$MAMMO_MODELS_DIR`` if set, else ``<repo>/resources/models`` next to the package."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import engine

    return Path(engine.__file__).resolve().parents[1] / "resources" / "models"


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_card(path: str | Path) -> ModelCard:
    """Read a ``model.json`` (or the model folder holding it).

    Raises:
        ModelError: Missing, unreadable or invalid card (the message names the file).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ModelError(f"{path}: cannot read the model card ({err.strerror or err})") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}: model card is not valid JSON (line {err.lineno})") from err
    return ModelCard.from_dict(data, path=path)


def list_models(models_dir: str | Path | None = None) -> list[ModelCard]:
    """The bundled models: cards of ``<models_dir>/*/model.json`` that record their training.

    Folders without a card, with an invalid card, or whose card lacks a ``training`` section with
    ``config`` and ``command`` are skipped (logged at debug level).

    Args:
        models_dir: Folder of model folders; :func:`default_models_dir` when None.

    Returns:
        Cards sorted by name.
    """
    root = Path(models_dir) if models_dir is not None else default_models_dir()
    cards: list[ModelCard] = []
    if not root.is_dir():
        return cards
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        card_path = sub / CARD_FILE
        if not card_path.is_file():
            continue
        try:
            card = read_card(card_path)
        except ModelError as err:
            logger.debug("skipping %s: %s", sub.name, err)
            continue
        if not card.trained:
            logger.debug("skipping %s: its card does not record how it was trained", sub.name)
            continue
        cards.append(card)
    return sorted(cards, key=lambda c: c.name)


def find_model(model: str | Path, models_dir: str | Path | None = None) -> ModelCard:
    """Resolve a model name (registry) or a model folder / card path to its card.

    A name must be listed by :func:`list_models`; a path (an existing folder or ``model.json``)
    is read directly, trained or not (a researcher's own export).

    Raises:
        UnknownModelError: No such name; the message lists the available names.
        ModelError: Invalid card.
    """
    as_path = Path(model)
    if isinstance(model, Path) or as_path.is_dir() or as_path.name == CARD_FILE:
        if as_path.exists():
            return read_card(as_path)
        raise UnknownModelError(f"{as_path}: no model folder or card there")
    cards = list_models(models_dir)
    for card in cards:
        if card.name == model:
            return card
    names = ", ".join(c.name for c in cards) or "none"
    root = Path(models_dir) if models_dir is not None else default_models_dir()
    raise UnknownModelError(f"unknown model {model!r} in {root} (available: {names})")


def checkpoint_filter(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The one place where stored key names are adapted before a strict load.

    Strips the ``module.`` prefix of ``DataParallel``/``DistributedDataParallel`` checkpoints and
    the ``_orig_mod.`` prefix of ``torch.compile`` ones; keys are otherwise unchanged.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def build_from_architecture(architecture: Mapping[str, Any]) -> nn.Module:
    """Build the CPU model an architecture dict describes, with the models registry.

    ImageNet initialisation is skipped (``pretrained=False``): the full weights are loaded next.
    """
    from engine.models.registry import config_from_dict, create_model

    return create_model(config_from_dict(dict(architecture)), pretrained=False)


def load_model(
    model: str | Path | ModelCard,
    models_dir: str | Path | None = None,
    *,
    build: Callable[[Mapping[str, Any]], nn.Module] | None = None,
) -> tuple[nn.Module, ModelCard]:
    """Build a bundled model and load its checked weights (CPU, eval mode).

    Args:
        model: A registry name, a model folder / card path, or a card read from disk.
        models_dir: Where names are looked up (:func:`default_models_dir` when None).
        build: Builds the module from the card's ``architecture``; the models registry
            (:func:`build_from_architecture`) when None.

    Returns:
        ``(module, card)``.

    Raises:
        UnknownModelError: Unknown name.
        WeightsMismatchError: Weights file missing, sha256 different from the card, not a
            safetensors file, or keys/shapes that do not fit the architecture.
        ModelError: Invalid card, or an architecture the registry cannot build.
    """
    card = model if isinstance(model, ModelCard) else find_model(model, models_dir)
    if card.folder is None:
        raise ModelError(f"model card {card.name!r} was not read from disk")
    weights_path = card.folder / card.weights_file
    if weights_path.suffix != ".safetensors":
        raise WeightsMismatchError(f"{weights_path}: only .safetensors weights are loaded")
    if not weights_path.is_file():
        raise WeightsMismatchError(f"{weights_path}: weights file missing")
    if not card.sha256:
        raise WeightsMismatchError(f"{card.path}: model card has no sha256 for {weights_path.name}")
    digest = sha256_file(weights_path)
    if digest != card.sha256:
        raise WeightsMismatchError(
            f"{weights_path}: sha256 {digest[:12]}... does not match the model card "
            f"({card.sha256[:12]}...); the file was changed or belongs to another model"
        )
    build = build or build_from_architecture
    try:
        module = build(card.architecture)
    except ModelError:
        raise
    except Exception as err:  # a config the registry rejects
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelError(f"{card.path}: cannot build the architecture ({msg})") from err

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsMismatchError(f"{weights_path}: not a readable safetensors file") from err
    state = checkpoint_filter(state)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} shape mismatch(es) (e.g. {k}: file {tuple(state[k].shape)}, "
                f"model {tuple(expected[k].shape)})"
            )
        raise WeightsMismatchError(
            f"{weights_path}: weights do not fit the architecture in the card: " + "; ".join(parts)
        )
    module.load_state_dict(state, strict=True)
    module.eval()
    logger.info("loaded model %s %s (%s)", card.name, card.version, card.family)
    return module, card


def save_model(
    model: nn.Module, card: Mapping[str, Any] | ModelCard, out_dir: str | Path
) -> ModelCard:
    """Write ``model.safetensors`` and ``model.json`` (with the sha256) into ``out_dir``.

    The architecture is taken from ``model.config.to_dict()`` when the card has none; tensors are
    written as contiguous CPU copies (tied weights become separate entries, which a strict load
    accepts). Both files are written to temporary names and renamed, so a crash never leaves a card
    that points at half a file.

    Args:
        model: The module (its ``state_dict()`` is saved).
        card: The card fields (``name`` and ``version`` at least); ``sha256`` and
            ``weights_file`` are filled in.
        out_dir: The model folder (created).

    Returns:
        The card as written, with ``path`` set.
    """
    from safetensors.torch import save_file

    data = card.to_dict() if isinstance(card, ModelCard) else dict(card)
    if "architecture" not in data:
        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "to_dict"):
            raise ModelError("save_model: the card has no architecture and the model no config")
        data["architecture"] = config.to_dict()
    data.setdefault("family", data["architecture"].get("family", ""))
    data.setdefault("saved", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    data["weights_file"] = WEIGHTS_FILE
    card_obj = ModelCard.from_dict(data)  # validates the required keys
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    weights_path = out / WEIGHTS_FILE
    tmp_weights = out / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp_weights), metadata={"name": card_obj.name, "version": card_obj.version})
    card_obj.sha256 = sha256_file(tmp_weights)
    os.replace(tmp_weights, weights_path)
    card_path = out / CARD_FILE
    tmp_card = out / (CARD_FILE + ".tmp")
    tmp_card.write_text(json.dumps(card_obj.to_dict(), indent=2, sort_keys=False) + "\n")
    os.replace(tmp_card, card_path)
    card_obj.path = card_path
    logger.info("saved model %s %s to %s", card_obj.name, card_obj.version, out)
    return card_obj
