"""Weights: checkpoints in their common shapes, pretrained via the hub cache, fallbacks."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from service.export import cifar_resnet
from service.export.architectures import get_architecture
from service.export.weights import WeightsError, hub_cache_path, load_model, read_labels
from service.repository import sha256_file

RESNET20 = get_architecture("resnet20")


def _state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return cifar_resnet.resnet20().state_dict()


def _logits(module: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        return module(x)


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda sd: sd, id="raw"),
        pytest.param(lambda sd: {"state_dict": sd, "epoch": 3}, id="state_dict"),
        pytest.param(lambda sd: {"model": sd}, id="model"),
        pytest.param(
            lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}}, id="module."
        ),
        pytest.param(
            lambda sd: {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")},
            id="no-num_batches_tracked",
        ),
    ],
)
def test_checkpoint_layouts_load_the_same_weights(tmp_path: Path, wrap: object) -> None:
    state = _state_dict(seed=3)
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(state), path)  # type: ignore[operator]
    loaded = load_model(RESNET20, checkpoint=path)
    reference = cifar_resnet.resnet20()
    reference.load_state_dict(state)
    torch.testing.assert_close(_logits(loaded.module), _logits(reference.eval()))
    assert loaded.weights.origin == "checkpoint"
    assert loaded.weights.checkpoint == "ckpt.pth"
    assert loaded.weights.sha256 == sha256_file(path)


def test_checkpoint_with_wrong_keys_names_them(tmp_path: Path) -> None:
    state = _state_dict()
    state["fc.weight"] = state.pop("linear.weight")
    state["fc.bias"] = state.pop("linear.bias")
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        load_model(RESNET20, checkpoint=path)
    message = str(info.value)
    assert "missing keys: linear.weight, linear.bias" in message
    assert "unexpected keys: fc.weight, fc.bias" in message
    assert "num_batches_tracked" not in message


def test_checkpoint_of_another_depth_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "resnet32.pth"
    torch.save(cifar_resnet.resnet32().state_dict(), path)
    with pytest.raises(WeightsError, match=r"unexpected keys: layer1\.3\.conv1\.weight"):
        load_model(RESNET20, checkpoint=path)


def test_checkpoint_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError, match="expected a state dict"):
        load_model(RESNET20, checkpoint=path)


def test_labels_file_rebuilds_the_classifier(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n\nbird\n", encoding="utf-8")
    loaded = load_model(RESNET20, weights="random", labels_file=labels)
    assert loaded.labels == ("cat", "dog", "bird")
    assert loaded.module.linear.out_features == 3
    assert _logits(loaded.module).shape == (2, 3)


def test_fine_tuned_checkpoint_with_its_labels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    (tmp_path / "labels.txt").write_text("yes\nno\n", encoding="utf-8")
    torch.save(cifar_resnet.resnet20(num_classes=2).state_dict(), tmp_path / "ft.pth")
    loaded = load_model(
        RESNET20, checkpoint=tmp_path / "ft.pth", labels_file=tmp_path / "labels.txt"
    )
    assert loaded.labels == ("yes", "no")
    # Without --labels the 2-class head does not fit the 10-class default.
    with pytest.raises(WeightsError, match=r"shape mismatches: linear\.weight"):
        load_model(RESNET20, checkpoint=tmp_path / "ft.pth")


@pytest.mark.parametrize(
    ("text", "problem"), [("\n\n", "has no labels"), ("a\nb\na\n", "repeats labels: a")]
)
def test_bad_labels_files_are_refused(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(WeightsError, match=problem):
        read_labels(path)


def test_labels_with_pretrained_weights_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(WeightsError, match="--labels replaces the classifier"):
        load_model(RESNET20, weights="DEFAULT", labels_file=path)


def test_random_weights_are_seeded_and_recorded() -> None:
    first = load_model(get_architecture("resnet20"), weights="random")
    second = load_model(get_architecture("resnet20"), weights="random")
    torch.testing.assert_close(_logits(first.module), _logits(second.module))
    assert first.weights.origin == "random"
    assert first.weights.display == "random (untrained)"


def test_uncached_pretrained_weights_fail_with_instructions(offline_hub: Path) -> None:
    with pytest.raises(WeightsError) as info:
        load_model(get_architecture("resnet18"), weights="DEFAULT")
    message = str(info.value)
    cache = offline_hub / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert f"not in the torch hub cache at {cache}" in message
    assert "could not be downloaded" in message
    assert "network disabled in tests" in message
    for advice in ("connect to the network", f"copy the file {cache.name}", "--checkpoint"):
        assert advice in message
    assert "--weights random" in message


def test_random_fallback_is_loud_and_recorded(caplog: pytest.LogCaptureFixture) -> None:
    arch = get_architecture("resnet50")
    with caplog.at_level(logging.WARNING):
        loaded = load_model(arch, weights="IMAGENET1K_V1", allow_random_fallback=True)
    assert loaded.weights.origin == "random"
    assert "FALLING BACK TO RANDOM WEIGHTS" in caplog.text
    # The asked-for set's metadata (V1 resizes to 256), so the real weights exported
    # later under the same name pass the compatibility check.
    assert loaded.preprocessing.resize_size == 256


def test_pretrained_cifar_weights_are_read_from_the_hub_cache(
    offline_hub: Path, cifar_checkpoint: Path
) -> None:
    # The advice in the error message, followed: copy the file into the cache.
    spec = RESNET20.weight_spec("DEFAULT")
    cache = hub_cache_path(spec.url)
    assert cache.parent == offline_hub / "hub" / "checkpoints"
    cache.parent.mkdir(parents=True)
    shutil.copyfile(cifar_checkpoint, cache)
    pretrained = load_model(RESNET20)
    assert pretrained.weights.origin == "pretrained"
    assert pretrained.weights.name == "CIFAR10_AKAMASTER"
    from_file = load_model(RESNET20, checkpoint=cifar_checkpoint)
    torch.testing.assert_close(_logits(pretrained.module), _logits(from_file.module))


def test_corrupt_cached_file_is_reported(offline_hub: Path, tmp_path: Path) -> None:
    cache = hub_cache_path(RESNET20.weight_spec("DEFAULT").url)
    cache.parent.mkdir(parents=True)
    torch.save(_state_dict(), cache)  # right name, wrong content: sha256 prefix mismatch
    with pytest.raises(WeightsError, match="unusable"):
        load_model(RESNET20)
