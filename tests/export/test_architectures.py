"""The zoo: registry rules, metadata taken from the weights, and the CIFAR model code."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torchvision.models import get_model_weights

from service.export import cifar_resnet
from service.export.architectures import (
    Architecture,
    count_parameters,
    get_architecture,
    list_architectures,
    register_architecture,
)

EXPECTED = {
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
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet1202",
}


def test_zoo_has_every_documented_architecture() -> None:
    assert {arch.name for arch in list_architectures()} == EXPECTED


def test_registry_refuses_a_duplicate_name() -> None:
    existing = get_architecture("resnet20")
    with pytest.raises(ValueError, match="'resnet20' is already registered"):
        register_architecture(existing)
    assert get_architecture("resnet20") is existing


def test_unknown_architecture_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown architecture 'resnet19'.*resnet18.*resnet20"):
        get_architecture("resnet19")


@pytest.mark.parametrize("name", ["resnet50", "resnext101_64x4d"])
def test_imagenet_weight_sets_carry_torchvision_preprocessing_and_labels(name: str) -> None:
    arch = get_architecture(name)
    enum = get_model_weights(name)
    assert set(arch.weights) == {member.name for member in enum}
    assert arch.default_weights == enum.DEFAULT.name
    for member in enum:
        spec = arch.weight_spec(member.name)
        preset = member.transforms()
        assert spec.preprocessing.resize_size == preset.resize_size[0]
        assert spec.preprocessing.crop_size == preset.crop_size[0]
        assert spec.preprocessing.interpolation == preset.interpolation.value
        assert list(spec.preprocessing.mean) == pytest.approx(preset.mean)
        assert list(spec.preprocessing.std) == pytest.approx(preset.std)
        assert spec.labels == tuple(member.meta["categories"])
        assert spec.url == member.url


def test_resnet50_versions_differ_in_resize_so_they_are_not_hard_coded() -> None:
    arch = get_architecture("resnet50")
    assert arch.weight_spec("IMAGENET1K_V1").preprocessing.resize_size == 256
    assert arch.weight_spec("IMAGENET1K_V2").preprocessing.resize_size == 232
    # Random / checkpoint exports describe themselves with DEFAULT's metadata.
    assert arch.preprocessing == arch.weight_spec("DEFAULT").preprocessing


def test_unknown_weight_set_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"IMAGENET1K_V9.*DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2"):
        get_architecture("resnet50").weight_spec("IMAGENET1K_V9")
    with pytest.raises(ValueError, match="resnet110 has no pretrained weight set 'DEFAULT'"):
        get_architecture("resnet110").weight_spec("DEFAULT")


@pytest.mark.parametrize(
    ("name", "params"),
    # 20-56: the shared README (counted on the checkpoints). 110 and 1202: the same
    # count by hand (stem 464 + blocks + linear 650); He et al. 2015 round them to
    # 1.7 M and 19.4 M.
    [
        ("resnet20", 269_722),
        ("resnet32", 464_154),
        ("resnet44", 658_586),
        ("resnet56", 853_018),
        ("resnet110", 1_727_962),
        ("resnet1202", 19_421_274),
    ],
)
def test_cifar_parameter_counts_match_published(name: str, params: int) -> None:
    assert count_parameters(get_architecture(name)) == params


def test_cifar_metadata_matches_the_upstream_trainer() -> None:
    arch = get_architecture("resnet20")
    spec = arch.preprocessing
    assert (spec.resize_size, spec.crop_size) == (32, 32)
    assert spec.mean == (0.485, 0.456, 0.406)
    assert spec.std == (0.229, 0.224, 0.225)
    assert arch.labels[0] == "airplane"
    assert arch.labels[-1] == "truck"
    assert len(set(arch.labels)) == 10


@pytest.mark.parametrize("depth", [2, 19, 21, 27])
def test_cifar_depth_must_be_6n_plus_2(depth: int) -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        cifar_resnet._cifar_resnet(depth, num_classes=10)


@pytest.mark.parametrize("arch", list(list_architectures()), ids=lambda a: a.name)
def test_classifier_attribute_has_one_output_per_class(arch: Architecture) -> None:
    with torch.device("meta"):
        model = arch.build(7)
    classifier = getattr(model, arch.classifier)
    assert isinstance(classifier, torch.nn.Linear)
    assert classifier.out_features == 7


def test_option_a_shortcut_subsamples_and_pads_channels_on_both_sides() -> None:
    shortcut = cifar_resnet.OptionAShortcut(pad_channels=8)
    x = torch.arange(1 * 16 * 4 * 4, dtype=torch.float32).reshape(1, 16, 4, 4) + 1
    out = shortcut(x)
    assert out.shape == (1, 32, 2, 2)
    assert torch.equal(out[:, :8], torch.zeros(1, 8, 2, 2))
    assert torch.equal(out[:, 24:], torch.zeros(1, 8, 2, 2))
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])


def test_downsampling_blocks_use_option_a_and_others_identity() -> None:
    model = cifar_resnet.resnet20()
    assert isinstance(model.layer1[0].shortcut, torch.nn.Identity)
    assert isinstance(model.layer2[0].shortcut, cifar_resnet.OptionAShortcut)
    assert isinstance(model.layer3[0].shortcut, cifar_resnet.OptionAShortcut)
    assert isinstance(model.layer3[1].shortcut, torch.nn.Identity)
    # Option A has no parameters: the checkpoints carry none for the shortcut.
    assert not any("shortcut" in key for key in model.state_dict())


def test_cifar_model_is_scriptable_and_keeps_eager_logits() -> None:
    torch.manual_seed(0)
    model = cifar_resnet.resnet20().eval()
    x = torch.randn(3, 3, 32, 32)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


def test_registering_the_cli_imports_no_torch() -> None:
    # `resnet-serve serve` registers `export` on every start, on installs without torch.
    code = "import sys, service.export.cli; print(sorted({'torch', 'onnx'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
