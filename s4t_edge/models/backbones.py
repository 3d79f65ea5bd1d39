"""Backbones returning the four feature maps C2..C5 (strides 4, 8, 16, 32), in a registry.

The ResNets are written here with torchvision's parameter names (conv1, bn1, layer1.0.conv1, ...,
downsample.0/1; ResNet v1.5 with the bottleneck stride on conv2) so that a local torchvision
checkpoint loads with `load_backbone_weights`.  There is no `fc`: the heads sit on the features.
The `tiny` backbone is the same code scaled down, registered like the real ones, so tests and the
CPU demo exercise exactly the paths the real models take.

A backbone exposes `stem(x)` and its stages (`stage_names`) separately because the S4T model runs
them itself, applying residual adapters between stages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from s4t_edge.errors import ArtifactError, ConfigError
from s4t_edge.models.norm import BatchNorm2d
from s4t_edge.models.ops import MaxPool2d

STAGE_NAMES: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")
STAGE_STRIDES: tuple[int, ...] = (4, 8, 16, 32)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, width, stride)
        self.bn1 = BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = BatchNorm2d(width)
        # Not in-place: in-place ops on autograd tensors complicate tracing the gradient.
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, ResNet v1.5), 1x1 expand x4, residual (ResNet-50)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(cin, width)
        self.bn1 = BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = BatchNorm2d(width)
        self.conv3 = _conv1x1(width, width * self.expansion)
        self.bn3 = BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet feature extractor: stem (conv1, bn1, relu, maxpool) and stages layer1..layer4.

    Args:
        block: BasicBlock or Bottleneck.
        layers: blocks per stage.
        widths: base width per stage (output channels are width * block.expansion).
        stem_channels: output channels of conv1.
        stem_kernel: kernel of conv1 (7 in torchvision; 3 for the tiny CNN); stride is always 2.
    """

    stage_names: tuple[str, ...] = STAGE_NAMES
    strides: tuple[int, ...] = STAGE_STRIDES

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_channels: int = 64,
        stem_kernel: int = 7,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            3, stem_channels, stem_kernel, stride=2, padding=stem_kernel // 2, bias=False
        )
        self.bn1 = BatchNorm2d(stem_channels)
        self.relu = nn.ReLU()
        self.maxpool = MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = stem_channels
        channels = []
        for i, (n, width) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            cout = width * block.expansion
            downsample = None
            if stride != 1 or cin != cout:
                downsample = nn.Sequential(_conv1x1(cin, cout, stride), BatchNorm2d(cout))
            blocks = [block(cin, width, stride, downsample)]
            blocks += [block(cout, width) for _ in range(n - 1)]
            self.add_module(STAGE_NAMES[i], nn.Sequential(*blocks))
            cin = cout
            channels.append(cout)
        self.stage_channels: tuple[int, ...] = tuple(channels)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1, bn1, relu, maxpool: image -> stride 4."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def stage(self, name: str) -> nn.Module:
        """The module of stage `name` (layer1..layer4)."""
        return getattr(self, name)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Image -> [C2, C3, C4, C5] (no adapters; the S4T model runs the stages itself)."""
        x = self.stem(x)
        feats = []
        for name in self.stage_names:
            x = self.stage(name)(x)
            feats.append(x)
        return feats


# --------------------------------------------------------------------------- registry
_BACKBONES: dict[str, Callable[[], ResNet]] = {}


def register_backbone(name: str) -> Callable[[Callable[[], ResNet]], Callable[[], ResNet]]:
    """Decorator registering a zero-argument backbone factory under `name`."""

    def deco(fn: Callable[[], ResNet]) -> Callable[[], ResNet]:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} registered twice")
        _BACKBONES[name] = fn
        return fn

    return deco


def list_backbones() -> list[str]:
    """Names of the registered backbones."""
    return sorted(_BACKBONES)


def check_backbone(name: str) -> None:
    """Raise ConfigError unless `name` is a registered backbone."""
    if name not in _BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())}")


def create_backbone(name: str) -> ResNet:
    """A freshly initialised backbone (no pretrained weights; see `load_backbone_weights`)."""
    check_backbone(name)
    return _BACKBONES[name]()


@register_backbone("tiny")
def tiny() -> ResNet:
    """One basic block per stage, 16/32/64/128 channels, 3x3 stem: ~0.3 M parameters."""
    return ResNet(
        BasicBlock, (1, 1, 1, 1), widths=(16, 32, 64, 128), stem_channels=16, stem_kernel=3
    )


@register_backbone("resnet18")
def resnet18() -> ResNet:
    """ResNet-18 (torchvision layout, 11,176,512 parameters without fc)."""
    return ResNet(BasicBlock, (2, 2, 2, 2))


@register_backbone("resnet34")
def resnet34() -> ResNet:
    """ResNet-34 (torchvision layout, 21,284,672 parameters without fc)."""
    return ResNet(BasicBlock, (3, 4, 6, 3))


@register_backbone("resnet50")
def resnet50() -> ResNet:
    """ResNet-50 v1.5 (torchvision layout, 23,508,032 parameters without fc)."""
    return ResNet(Bottleneck, (3, 4, 6, 3))


# --------------------------------------------------------------------------- weights
def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ArtifactError(f"backbone weights {str(path)!r} not found; give an existing file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: object = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure means the same thing to the user
        raise ArtifactError(
            f"cannot read backbone weights {str(path)!r} ({type(e).__name__}: {e}); "
            "give a torchvision checkpoint as .safetensors, .pth or .pt"
        ) from None
    # Training scripts often nest the weights one level down.
    if isinstance(sd, Mapping):
        for key in ("state_dict", "model"):
            if key in sd and isinstance(sd[key], Mapping):
                sd = sd[key]
                break
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ArtifactError(
            f"{str(path)!r} does not hold a state dict of tensors; give a torchvision checkpoint"
        )
    out = dict(sd)
    if out and all(k.startswith("module.") for k in out):  # saved from DataParallel/DDP
        out = {k[len("module.") :]: v for k, v in out.items()}
    return out


def load_backbone_weights(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Load a torchvision-format ResNet checkpoint into a backbone (or an S4T model's backbone).

    `fc.*` (the classifier) is ignored; every other key must match the backbone exactly in name and
    shape, so a checkpoint for the wrong architecture fails loudly instead of half-loading.

    Args:
        model: a backbone from `create_backbone`, or any module with a `backbone` attribute.
        path: .safetensors, or .pth/.pt read with `torch.load(weights_only=True)` (no pickle code).

    Returns:
        {"ignored": [keys skipped, e.g. fc.weight]}.

    Raises:
        ArtifactError: the file is missing or unreadable.
        ConfigError: the checkpoint does not match the backbone's architecture.
    """
    backbone = getattr(model, "backbone", model)
    sd = _read_state_dict(Path(path))
    ignored = sorted(k for k in sd if k.startswith("fc."))
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    # Older torchvision checkpoints predate BatchNorm's num_batches_tracked counter.
    missing = sorted(k for k in set(own) - set(sd) if not k.endswith(".num_batches_tracked"))
    unexpected = sorted(set(sd) - set(own))
    mismatched = sorted(
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(sd) & set(own)
        if sd[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mismatched", mismatched),
        ):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise ConfigError(
            f"backbone weights {str(path)!r} do not fit this backbone: {'; '.join(parts)}; "
            "pass a torchvision checkpoint of the same architecture as the model's backbone"
        )
    with torch.no_grad():
        for k, v in sd.items():
            own[k].copy_(v.to(dtype=own[k].dtype))
    return {"ignored": ignored}
