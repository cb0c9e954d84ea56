"""Base classifiers of DNN-RAB (rab.nets): shapes, heads, losses, Opacus compatibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus.validators import ModuleValidator
from torch import nn

from rab.architectures import ARCHITECTURES
from rab.nets import (
    build_model,
    classification_loss,
    logits_to_class,
    logits_to_proba,
    num_outputs,
)

SHAPES = {"mnist_cnn": (1, 28, 28), "preact_resnet": (3, 32, 32), "mlp": (57,),
          "resnet18": (3, 64, 64)}


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("num_classes", [2, 5])
def test_every_architecture_builds_with_the_right_head(arch: str, num_classes: int) -> None:
    torch.manual_seed(0)
    model = build_model(arch, SHAPES[arch], num_classes).eval()
    logits = model(torch.zeros(3, *SHAPES[arch]))
    assert logits.shape == (3, 1 if num_classes == 2 else num_classes)


def test_mnist_cnn_has_the_authors_layers() -> None:
    # conv5x5(1->16) + conv5x5(16->32) + FC(32*4*4 -> 512) + FC(512 -> 1), weights and biases.
    expected = (16 * 25 + 16) + (32 * 16 * 25 + 32) + (512 * 512 + 512) + (512 + 1)
    model = build_model("mnist_cnn", (1, 28, 28), 2)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_preact_resnet_has_three_stages_of_five_blocks() -> None:
    model = build_model("preact_resnet", (3, 32, 32), 2)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    # stem + 15 blocks x 2 convs + 1x1 projections entering stages 2 and 3
    assert len(convs) == 1 + 15 * 2 + 2
    assert {c.out_channels for c in convs} == {16, 32, 64}
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 1)


@pytest.mark.parametrize("arch", ["preact_resnet", "resnet18"])
def test_group_norm_variant_is_opacus_compatible(arch: str) -> None:
    batch = build_model(arch, SHAPES[arch], 2, norm="batch")
    group = build_model(arch, SHAPES[arch], 2, norm="group")
    assert ModuleValidator.validate(batch, strict=False)
    assert ModuleValidator.validate(group, strict=False) == []
    assert not any(isinstance(m, nn.BatchNorm2d) for m in group.modules())


def test_binary_head_matches_two_class_softmax() -> None:
    # One logit z is the two-class softmax with logits (0, z): same loss, same probabilities.
    z = torch.tensor([[-3.0], [0.2], [4.0]])
    y = torch.tensor([0, 1, 1])
    two = torch.cat([torch.zeros_like(z), z], dim=1)
    torch.testing.assert_close(classification_loss(z, y, 2),
                               torch.nn.functional.cross_entropy(two, y))
    torch.testing.assert_close(logits_to_proba(z, 2), torch.softmax(two, dim=1))
    assert logits_to_class(z, 2).tolist() == [0, 1, 1]


def test_multiclass_head_probabilities_and_argmax() -> None:
    logits = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    proba = logits_to_proba(logits, 4)
    np.testing.assert_allclose(proba.sum(1).numpy(), 1.0, rtol=1e-6)
    assert torch.equal(logits_to_class(logits, 4), proba.argmax(1))


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("vgg", (1, 28, 28), 2)
    with pytest.raises(ValueError, match="norm"):
        build_model("preact_resnet", (3, 32, 32), 2, norm="layer")
    with pytest.raises(ValueError, match="at least 16x16"):
        build_model("mnist_cnn", (1, 8, 8), 2)
    with pytest.raises(ValueError, match="at least 2"):
        num_outputs(1)
