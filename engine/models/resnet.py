"""ResNet-18 / ResNet-50 in plain ``torch.nn`` with torchvision's state-dict key names.

Seed 000 (section 2.1.1) uses ImageNet-pretrained ResNet-18 and ResNet-50 as the CNN baselines,
and the early layers of a ResNet-18 as the local-feature encoder of the hybrid CNN-VSSM
(section 2.1.3). torchvision is not a dependency, so the networks are written here with exactly
torchvision's module names, so that an ImageNet checkpoint saved by torchvision
(``resnet18-f37072fd.pth`` and friends, or the same tensors as ``.safetensors``) loads with
``strict=True``::

    conv1, bn1, layer1.0.conv1, layer1.0.bn1, ..., layer2.0.downsample.0 (conv),
    layer2.0.downsample.1 (bn), ..., fc

Blocks follow torchvision's "ResNet v1.5": in a :class:`Bottleneck` the stride sits on the 3x3
convolution. A network may be cut after any stage (``ResNetConfig.stages``) and may have no
classifier (``num_classes=0``); the keys of what remains are unchanged, and
:func:`checkpoint_filter_fn` drops the checkpoint keys of the parts that were cut off.

Inputs are ``(B, 3, H, W)`` float32 images already normalised with the ImageNet mean/std
(:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`); the four-view models do that normalisation
themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from engine.errors import ModelError, WeightsMismatchError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESNET_LAYERS",
    "BasicBlock",
    "Bottleneck",
    "ResNetConfig",
    "ResNet",
    "build_resnet",
    "resnet18",
    "resnet50",
    "checkpoint_filter_fn",
    "read_state_dict",
    "load_pretrained",
]

logger = logging.getLogger(__name__)

#: ImageNet channel mean / std (RGB) that torchvision's pretrained ResNets expect.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: depth -> (block kind, blocks per stage), as in torchvision.
RESNET_LAYERS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}

_STAGE_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34).

    Args:
        inplanes: Input channels.
        planes: Output channels (expansion 1).
        stride: Stride of the first convolution (1 or 2).
        downsample: Projection of the identity when shape changes (``Sequential(conv1x1, bn)``),
            or None.
    """

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, inplanes, H, W)`` -> ``(B, planes, H/stride, W/stride)``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand (x4), residual (ResNet-50).

    Args:
        inplanes: Input channels.
        planes: Width of the 3x3 convolution; the block outputs ``4 * planes`` channels.
        stride: Stride of the 3x3 convolution.
        downsample: Projection of the identity, or None.
    """

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, inplanes, H, W)`` -> ``(B, 4 * planes, H/stride, W/stride)``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


@dataclass(frozen=True)
class ResNetConfig:
    """Architecture of a (possibly truncated) ResNet.

    Attributes:
        depth: 18, 34 or 50 (block kind and blocks per stage from :data:`RESNET_LAYERS`).
        stages: How many of the four residual stages to keep (1-4). ``2`` keeps
            ``conv1, bn1, layer1, layer2`` (output stride 8): the hybrid encoder's trunk.
        num_classes: Width of the ``fc`` classifier after global average pooling; ``0`` builds no
            classifier (a feature extractor). Needs ``stages == 4`` when non-zero.
    """

    depth: int = 18
    stages: int = 4
    num_classes: int = 1000

    def __post_init__(self) -> None:
        if self.depth not in RESNET_LAYERS:
            raise ModelError(f"resnet: depth {self.depth} not in {sorted(RESNET_LAYERS)}")
        if not 1 <= self.stages <= 4:
            raise ModelError(f"resnet: stages must be 1..4, got {self.stages}")
        if self.num_classes < 0 or (self.num_classes and self.stages != 4):
            raise ModelError("resnet: a classifier (num_classes > 0) needs all 4 stages")

    @property
    def out_channels(self) -> int:
        """Channels of the last kept stage's output map."""
        kind, _ = RESNET_LAYERS[self.depth]
        expansion = 4 if kind == "bottleneck" else 1
        return _STAGE_WIDTHS[self.stages - 1] * expansion

    @property
    def out_stride(self) -> int:
        """Spatial reduction of the last kept stage (4, 8, 16 or 32)."""
        return 2 ** (self.stages + 1)

    def to_dict(self) -> dict:
        """JSON-safe dict."""
        return asdict(self)


class ResNet(nn.Module):
    """ResNet with torchvision's module names, optionally cut after a stage.

    Args:
        config: The architecture.

    Attributes:
        config: The architecture.
        out_channels: Channels of :meth:`forward_features`' output.
    """

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        kind, blocks = RESNET_LAYERS[config.depth]
        block: type[BasicBlock] | type[Bottleneck] = (
            Bottleneck if kind == "bottleneck" else BasicBlock
        )
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i in range(config.stages):
            planes = _STAGE_WIDTHS[i]
            stride = 1 if i == 0 else 2
            layer, inplanes = _make_stage(block, inplanes, planes, blocks[i], stride)
            self.add_module(f"layer{i + 1}", layer)
        self.out_channels = inplanes
        if config.num_classes:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(inplanes, config.num_classes)
        _init_weights(self)

    def stages(self) -> list[nn.Module]:
        """The kept residual stages, ``[layer1, ...]``."""
        return [getattr(self, f"layer{i + 1}") for i in range(self.config.stages)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and kept stages.

        Args:
            x: ``(B, 3, H, W)`` float32, ImageNet-normalised.

        Returns:
            ``(B, out_channels, H / out_stride, W / out_stride)`` float32 (sizes rounded up).
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for layer in self.stages():
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)``, or the feature map when there is no classifier.

        Args:
            x: ``(B, 3, H, W)`` float32, ImageNet-normalised.
        """
        feats = self.forward_features(x)
        if not self.config.num_classes:
            return feats
        return self.fc(torch.flatten(self.avgpool(feats), 1))


def _make_stage(
    block: type[BasicBlock] | type[Bottleneck],
    inplanes: int,
    planes: int,
    n_blocks: int,
    stride: int,
) -> tuple[nn.Sequential, int]:
    out = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
        )
    layers: list[nn.Module] = [block(inplanes, planes, stride, downsample)]
    layers += [block(out, planes) for _ in range(n_blocks - 1)]
    return nn.Sequential(*layers), out


def _init_weights(model: nn.Module) -> None:
    """He init for convolutions, BN at identity, last BN of each residual branch at zero.

    Zero-init of the last BN makes every block start as the identity (Goyal et al. 2017), which
    trains from scratch more stably; pretrained weights overwrite all of it.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)
        elif isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)


def build_resnet(config: ResNetConfig) -> ResNet:
    """Build a CPU :class:`ResNet` (random weights)."""
    return ResNet(config)


def resnet18(num_classes: int = 1000, stages: int = 4) -> ResNet:
    """ResNet-18 with torchvision's layout (random weights)."""
    return ResNet(ResNetConfig(depth=18, stages=stages, num_classes=num_classes))


def resnet50(num_classes: int = 1000, stages: int = 4) -> ResNet:
    """ResNet-50 (v1.5) with torchvision's layout (random weights)."""
    return ResNet(ResNetConfig(depth=50, stages=stages, num_classes=num_classes))


def checkpoint_filter_fn(
    state_dict: Mapping[str, torch.Tensor], model: ResNet
) -> dict[str, torch.Tensor]:
    """Adapt an ImageNet ResNet checkpoint's keys to ``model``: the only key renames/drops.

    - A ``"module."`` prefix (checkpoints saved from ``DataParallel``) is removed.
    - Keys of parts the model does not have are dropped: ``fc.*`` when it has no classifier,
      ``layer{k}.*`` for stages cut off. Every other key is kept as
      is, so an unrelated or foreign checkpoint still fails the ``strict=True`` load.
    - ``num_batches_tracked`` buffers missing from older checkpoints are filled with zeros.

    Args:
        state_dict: Tensors as saved by torchvision (or the same names in safetensors).
        model: The network the tensors are for.

    Returns:
        A new dict ready for ``model.load_state_dict(..., strict=True)``.
    """
    own = model.state_dict()
    kept_layers = {f"layer{i + 1}" for i in range(model.config.stages)}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        head = key.split(".", 1)[0]
        if head.startswith("layer") and head[5:].isdigit() and head not in kept_layers:
            continue
        if head == "fc" and not model.config.num_classes:
            continue
        out[key] = value
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = torch.zeros_like(value)
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or ``.pth`` state dict from a local file.

    ``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)`` only (no pickled code
    runs). A ``.pth`` holding ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped.

    Args:
        path: The file.

    Returns:
        Name -> tensor on CPU.

    Raises:
        ModelError: The file is absent, of another suffix, or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path.name}: pretrained weights file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif suffix in (".pth", ".pt", ".bin"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ModelError(f"{path.name}: weights must be .safetensors or .pth")
    except ModelError:
        raise
    except Exception as exc:  # safetensors/pickle errors come in many types
        raise ModelError(f"{path.name}: cannot read weights ({type(exc).__name__})") from exc
    if isinstance(state, Mapping):
        for wrapper in ("state_dict", "model"):
            inner = state.get(wrapper)
            if isinstance(inner, Mapping):
                state = inner
                break
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ModelError(f"{path.name}: not a state dict of tensors")
    return dict(state)


def load_pretrained(model: ResNet, path: str | Path) -> None:
    """Load local ImageNet weights into ``model`` with ``strict=True``.

    Args:
        model: A :class:`ResNet` (possibly cut, possibly without classifier).
        path: ``.safetensors`` or ``.pth`` file with torchvision's key names.

    Raises:
        ModelError: The file cannot be read.
        WeightsMismatchError: Missing/unexpected keys or shape mismatches.
    """
    path = Path(path)
    state = checkpoint_filter_fn(read_state_dict(path), model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0] if first else ""
        raise WeightsMismatchError(
            f"{path.name}: not a ResNet-{model.config.depth} checkpoint ({detail[:160]})"
        ) from exc
    logger.info("loaded pretrained ResNet-%d weights from %s", model.config.depth, path.name)
