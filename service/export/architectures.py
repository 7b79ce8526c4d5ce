"""The model zoo: every exportable architecture, its weight sets and how to feed it.

Torchvision-style registry: one :class:`Architecture` per name, duplicate names refused,
so ``resnet-serve export NAME`` can never pick one of two silently. The metadata that
the service needs (labels, resize/crop, mean/std) comes from the weight set itself
(torchvision's ``weights.transforms()`` and ``meta["categories"]``), never from a
hard-coded table that could drift from the weights it describes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torchvision import models as tv_models
from torchvision.models import WeightsEnum

from service.export import cifar_resnet
from service.repository import Preprocessing

Family = Literal["imagenet", "cifar10"]

#: Upstream release of the CIFAR checkpoints (the commit the shared README names). The
#: hub cache file name is the URL's last part, so the shared ``resnet20-12fca82f.th``
#: copied into ``$TORCH_HOME/hub/checkpoints/`` is found offline, and the 8-hex suffix
#: is checked against the file's sha256 by ``torch.hub``.
CIFAR_WEIGHTS_URL = (
    "https://github.com/akamaster/pytorch_resnet_cifar10/raw/"
    "d5489e8995e81e91ce6b1d69dcc98ad579b0b153/pretrained_models/{file}"
)
CIFAR_WEIGHT_FILES = {
    "resnet20": "resnet20-12fca82f.th",
    "resnet32": "resnet32-d509ac18.th",
    "resnet44": "resnet44-014dd654.th",
    "resnet56": "resnet56-4bfd9763.th",
}
CIFAR_WEIGHTS_NAME = "CIFAR10_AKAMASTER"

IMAGENET_ARCHITECTURES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
)


@dataclass(frozen=True)
class WeightSpec:
    """One pretrained weight set: where it comes from and the metadata it implies."""

    name: str
    url: str
    labels: tuple[str, ...]
    preprocessing: Preprocessing
    #: Reads the state dict through the torch hub cache (downloading when allowed).
    #: Takes ``progress``; raises OSError when the file is neither cached nor reachable.
    fetch: Callable[[bool], dict[str, Any]] = field(repr=False)


@dataclass(frozen=True)
class Architecture:
    """An exportable architecture; ``build`` returns a randomly initialised model."""

    name: str
    family: Family
    build: Callable[[int], nn.Module] = field(repr=False)
    #: Attribute holding the final ``nn.Linear`` (its out_features is the class count).
    classifier: str
    #: Labels and preprocessing for weights that carry none (random, checkpoints).
    labels: tuple[str, ...]
    preprocessing: Preprocessing
    weights: dict[str, WeightSpec]
    default_weights: str | None

    @property
    def input_size(self) -> int:
        return self.preprocessing.crop_size

    def weight_spec(self, name: str) -> WeightSpec:
        """The weight set called ``name`` ("DEFAULT" allowed); ValueError lists the rest."""
        wanted = self.default_weights if name == "DEFAULT" else name
        if wanted is None or wanted not in self.weights:
            known = ", ".join(["DEFAULT", *self.weights]) if self.weights else "none"
            raise ValueError(
                f"{self.name} has no pretrained weight set {name!r}; known: {known}. "
                f"Use --checkpoint FILE for your own weights or --weights random"
            )
        return self.weights[wanted]


_REGISTRY: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> Architecture:
    """Add ``arch``; a second architecture under the same name is a programming error."""
    if arch.name in _REGISTRY:
        raise ValueError(f"an architecture named {arch.name!r} is already registered")
    _REGISTRY[arch.name] = arch
    return arch


def get_architecture(name: str) -> Architecture:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(_REGISTRY)}") from None


def list_architectures() -> Iterator[Architecture]:
    return iter(_REGISTRY.values())


def count_parameters(arch: Architecture, num_classes: int | None = None) -> int:
    """Parameter count, built on the meta device: no memory, milliseconds even for 1202."""
    with torch.device("meta"):
        model = arch.build(num_classes or len(arch.labels))
    return sum(p.numel() for p in model.parameters())


def preprocessing_from_transforms(transforms: Any) -> Preprocessing:
    """Read torchvision's ``ImageClassification`` preset into our schema.

    Reading the preset (not copying numbers) matters: ResNet-50 V1 resizes to 256 and
    V2 to 232, and a mismatch costs accuracy without any error.
    """
    resize = transforms.resize_size
    crop = transforms.crop_size
    return Preprocessing(
        resize_size=int(resize[0] if isinstance(resize, (list, tuple)) else resize),
        crop_size=int(crop[0] if isinstance(crop, (list, tuple)) else crop),
        interpolation=transforms.interpolation.value,
        mean=_three(transforms.mean),
        std=_three(transforms.std),
    )


def _three(values: Any) -> tuple[float, float, float]:
    red, green, blue = (float(v) for v in values)
    return red, green, blue


def _torchvision_weight(member: WeightsEnum) -> WeightSpec:
    def fetch(progress: bool) -> dict[str, Any]:
        return member.get_state_dict(progress=progress, check_hash=True)

    return WeightSpec(
        name=member.name,
        url=member.url,
        labels=tuple(member.meta["categories"]),
        preprocessing=preprocessing_from_transforms(member.transforms()),
        fetch=fetch,
    )


def _register_torchvision(name: str) -> None:
    builder = tv_models.get_model_builder(name)
    enum = tv_models.get_model_weights(name)
    default = enum.DEFAULT
    weights = {member.name: _torchvision_weight(member) for member in enum}
    register_architecture(
        Architecture(
            name=name,
            family="imagenet",
            build=lambda num_classes: builder(weights=None, num_classes=num_classes),
            classifier="fc",
            labels=weights[default.name].labels,
            preprocessing=weights[default.name].preprocessing,
            weights=weights,
            default_weights=default.name,
        )
    )


CIFAR_PREPROCESSING = Preprocessing(
    # Test-time upstream is ToTensor + Normalize on 32x32 images: resize/crop to 32 is
    # the identity for them and makes other images the size the model was trained on.
    resize_size=cifar_resnet.CIFAR_INPUT_SIZE,
    crop_size=cifar_resnet.CIFAR_INPUT_SIZE,
    interpolation="bilinear",
    mean=cifar_resnet.CIFAR_MEAN,
    std=cifar_resnet.CIFAR_STD,
)


def _cifar_weight(file: str) -> WeightSpec:
    url = CIFAR_WEIGHTS_URL.format(file=file)

    def fetch(progress: bool) -> dict[str, Any]:
        # Saved from CUDA tensors: map_location is required on CPU-only machines.
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=progress, check_hash=True, weights_only=True
        )

    return WeightSpec(
        name=CIFAR_WEIGHTS_NAME,
        url=url,
        labels=cifar_resnet.CIFAR10_LABELS,
        preprocessing=CIFAR_PREPROCESSING,
        fetch=fetch,
    )


def _register_cifar(name: str, builder: Callable[..., nn.Module]) -> None:
    file = CIFAR_WEIGHT_FILES.get(name)
    weights = {CIFAR_WEIGHTS_NAME: _cifar_weight(file)} if file else {}
    register_architecture(
        Architecture(
            name=name,
            family="cifar10",
            build=lambda num_classes: builder(num_classes=num_classes),
            classifier="linear",
            labels=cifar_resnet.CIFAR10_LABELS,
            preprocessing=CIFAR_PREPROCESSING,
            weights=weights,
            default_weights=CIFAR_WEIGHTS_NAME if file else None,
        )
    )


for _name in IMAGENET_ARCHITECTURES:
    _register_torchvision(_name)
for _builder in (
    cifar_resnet.resnet20,
    cifar_resnet.resnet32,
    cifar_resnet.resnet44,
    cifar_resnet.resnet56,
    cifar_resnet.resnet110,
    cifar_resnet.resnet1202,
):
    _register_cifar(_builder.__name__, _builder)
