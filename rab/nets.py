"""Base classifiers for DNN-RAB (paper section 6.1; REFERENCE section 5).

- ``mnist_cnn``: the authors' MNIST CNN, conv5x5(16) - maxpool - conv5x5(32) - maxpool - FC 512 -
  FC out (their ``mnist_cnn_model.py``), generalised to any (C, H, W) input with H, W >= 16.
- ``preact_resnet``: the authors' CIFAR pre-activation ResNet (``cifar10_cnn_model.py``): a 3x3 stem
  with 16 channels, three stages of 5 blocks with 16 / 32 / 64 channels (strides 1 / 2 / 2), a final
  norm + ReLU, global average pooling and a linear head.
- ``mlp``: a fully connected network for tabular data (not in the paper; the authors ran only K-NN
  on Spambase).
- ``resnet18``: torchvision's ResNet-18 for large images, randomly initialised (the authors
  fine-tuned ImageNet-pretrained weights, which this offline library does not download).

Heads: a binary task (``num_classes == 2``) has one logit trained with binary cross-entropy, as in
the authors' code; more classes have one logit per class trained with softmax cross-entropy.
``norm="group"`` replaces every BatchNorm by GroupNorm, which makes the ResNets Opacus-compatible
for DP-SGD (section 6.2): per-sample gradients are undefined when a batch statistic mixes samples.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as nnf
import torchvision
from torch import nn

from rab.architectures import ARCHITECTURES, check_input_shape


def num_outputs(num_classes: int) -> int:
    """Number of logits: one for a binary task (BCE head), ``num_classes`` otherwise."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return 1 if num_classes == 2 else num_classes


def classification_loss(
    logits: torch.Tensor, y: torch.Tensor, num_classes: int, reduction: str = "mean"
) -> torch.Tensor:
    """BCE-with-logits (binary, one logit) or softmax cross-entropy (multi-class), averaged
    over the batch (``reduction="none"``: one loss per sample)."""
    if num_classes == 2:
        return nnf.binary_cross_entropy_with_logits(logits.reshape(-1), y.to(logits.dtype),
                                                    reduction=reduction)
    return nnf.cross_entropy(logits, y, reduction=reduction)


def logits_to_proba(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class probabilities (B, C): ``[1 - sigmoid(z), sigmoid(z)]`` if binary, else softmax."""
    if num_classes == 2:
        p1 = torch.sigmoid(logits.reshape(-1))
        return torch.stack((1.0 - p1, p1), dim=1)
    return torch.softmax(logits, dim=1)


def logits_to_class(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Hard prediction (B,) int64 from logits: ``z > 0`` for binary, argmax otherwise.

    Taken from the logits rather than the probabilities so that saturated sigmoids cannot tie.
    """
    if num_classes == 2:
        return (logits.reshape(-1) > 0).long()
    return logits.argmax(dim=1)


def _norm_layer(norm: str) -> Callable[[int], nn.Module]:
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "group":
        # Opacus' ModuleValidator.fix uses the same replacement: GroupNorm(min(32, C), C).
        return lambda channels: nn.GroupNorm(min(32, channels), channels)
    raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")


class MnistCNN(nn.Module):
    """conv5x5(16) - maxpool2 - conv5x5(32) - maxpool2 - FC 512 - FC out, ReLU activations."""

    def __init__(self, input_shape: tuple[int, ...], out_features: int) -> None:
        super().__init__()
        check_input_shape("mnist_cnn", input_shape)
        channels, height, width = input_shape
        self.conv1 = nn.Conv2d(channels, 16, kernel_size=5)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5)
        side_h = ((height - 4) // 2 - 4) // 2
        side_w = ((width - 4) // 2 - 4) // 2
        self.fc = nn.Linear(32 * side_h * side_w, 512)
        self.output = nn.Linear(512, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nnf.max_pool2d(nnf.relu(self.conv1(x)), 2)
        x = nnf.max_pool2d(nnf.relu(self.conv2(x)), 2)
        x = nnf.relu(self.fc(x.flatten(1)))
        return self.output(x)


class PreActBlock(nn.Module):
    """Pre-activation residual block (norm-ReLU-conv twice) with a 1x1 projection when striding.

    ``activate_before_residual`` takes the shortcut after the first norm-ReLU, as the authors'
    first block of the first stage does.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        activate_before_residual: bool,
        norm: Callable[[int], nn.Module],
    ) -> None:
        super().__init__()
        self.activate_before_residual = activate_before_residual
        self.norm1 = norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.norm2 = norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride), norm(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = nnf.relu(self.norm1(x))
        residual = activated if self.activate_before_residual else x
        out = self.conv2(nnf.relu(self.norm2(self.conv1(activated))))
        return out + self.shortcut(residual)


class PreActResNet(nn.Module):
    """The authors' CIFAR pre-activation ResNet: 16/32/64 channels, ``blocks`` blocks per stage."""

    def __init__(
        self, input_shape: tuple[int, ...], out_features: int, norm: str = "batch", blocks: int = 5
    ) -> None:
        super().__init__()
        check_input_shape("preact_resnet", input_shape)
        make_norm = _norm_layer(norm)
        self.stem = nn.Conv2d(input_shape[0], 16, 3, padding=1)
        stages = []
        for in_ch, out_ch, stride, first_act in ((16, 16, 1, True), (16, 32, 2, False),
                                                 (32, 64, 2, False)):
            layers = [PreActBlock(in_ch, out_ch, stride, first_act, make_norm)]
            layers += [PreActBlock(out_ch, out_ch, 1, False, make_norm) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.out_norm = make_norm(64)
        self.output = nn.Linear(64, out_features)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        x = nnf.relu(self.out_norm(x))
        return self.output(nnf.adaptive_avg_pool2d(x, 1).flatten(1))


class MLP(nn.Module):
    """Fully connected ReLU network on flattened inputs."""

    def __init__(
        self, input_shape: tuple[int, ...], out_features: int, hidden: tuple[int, ...] = (256, 256)
    ) -> None:
        super().__init__()
        width = 1
        for side in input_shape:
            width *= side
        layers: list[nn.Module] = [nn.Flatten()]
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _resnet18(input_shape: tuple[int, ...], out_features: int, norm: str) -> nn.Module:
    check_input_shape("resnet18", input_shape)
    model = torchvision.models.resnet18(
        weights=None, num_classes=out_features, norm_layer=_norm_layer(norm)
    )
    if input_shape[0] != 3:
        model.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def build_model(
    arch: str, input_shape: tuple[int, ...], num_classes: int, *, norm: str = "batch"
) -> nn.Module:
    """A freshly initialised base classifier (draws from torch's global RNG: seed it first).

    ``norm`` applies to the normalised architectures (``preact_resnet``, ``resnet18``); the MNIST
    CNN and the MLP have no normalisation layers and are Opacus-compatible as they are.
    """
    out = num_outputs(num_classes)
    shape = tuple(int(s) for s in input_shape)
    if arch == "mnist_cnn":
        return MnistCNN(shape, out)
    if arch == "preact_resnet":
        return PreActResNet(shape, out, norm=norm)
    if arch == "mlp":
        return MLP(shape, out)
    if arch == "resnet18":
        return _resnet18(shape, out, norm)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
