"""The in-project CIFAR ResNet-20 with the shared checkpoint: real accuracy, real data.

These tests prove the model code is faithful to the one the weights were trained with;
a plausible-looking bug (padding side, label order, normalisation) loads without error
and only shows as lost accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the alias every PyTorch model uses

from service.export import cifar_resnet
from service.export.architectures import get_architecture
from service.export.parity import load_image
from service.export.weights import load_model

#: The README measures 81.03 % on the full 10,000-image JPEG test set; the 300-image
#: sample lands within a few points of it (81.3 % when this was written).
MIN_ACCURACY = 0.70


def accuracy_per_class(
    checkpoint: Path, images: list[tuple[Path, int]]
) -> tuple[float, torch.Tensor]:
    model = load_model(get_architecture("resnet20"), checkpoint=checkpoint)
    batch = torch.stack([load_image(path, model.preprocessing) for path, _ in images])
    truth = torch.tensor([label for _, label in images])
    with torch.inference_mode():
        predicted = model.module(batch).argmax(dim=1)
    correct = (predicted == truth).float()
    per_class = torch.stack([correct[truth == c].mean() for c in range(10)])
    return correct.mean().item(), per_class


def test_resnet20_reaches_the_published_accuracy(
    cifar_checkpoint: Path, cifar_labelled_images: list[tuple[Path, int]]
) -> None:
    accuracy, _ = accuracy_per_class(cifar_checkpoint, cifar_labelled_images)
    assert accuracy >= MIN_ACCURACY, f"top-1 {accuracy:.1%} on the CIFAR-10 sample"


def test_every_class_is_recognised_so_label_order_is_right(
    cifar_checkpoint: Path, cifar_labelled_images: list[tuple[Path, int]]
) -> None:
    # README: 68-95 % per class with the right order; a swap collapses both classes.
    _, per_class = accuracy_per_class(cifar_checkpoint, cifar_labelled_images)
    worst = per_class.argmin().item()
    assert per_class.min().item() >= 0.4, (
        f"class {cifar_resnet.CIFAR10_LABELS[worst]} at {per_class[worst]:.0%}"
    )


def test_padding_zeros_only_at_the_end_collapses_accuracy(
    cifar_checkpoint: Path,
    cifar_labelled_images: list[tuple[Path, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The symmetric padding is load-bearing: the asymmetric variant must fail the bar.

    Guards the accuracy test itself: if this wrong variant also passed MIN_ACCURACY, the
    test above could not tell a correct shortcut from a broken one.
    """

    def pad_at_end(self: cifar_resnet.OptionAShortcut, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, 2 * self.pad_channels))

    monkeypatch.setattr(cifar_resnet.OptionAShortcut, "forward", pad_at_end)
    accuracy, _ = accuracy_per_class(cifar_checkpoint, cifar_labelled_images)
    assert accuracy < 0.3, f"asymmetric padding still scores {accuracy:.1%}"
