"""Turn ``--weights`` / ``--checkpoint`` / ``--labels`` into an eval-mode model.

Every path records where the weights came from in a :class:`WeightsInfo`, because a
service answering with random weights must say so. Random weights are only ever used
when asked for (``--weights random``) or explicitly allowed as a fallback
(``--allow-random-fallback``), and then with a loud warning.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from service.export.architectures import Architecture, WeightSpec
from service.repository import Preprocessing, WeightsInfo, sha256_file

logger = logging.getLogger(__name__)

RANDOM = "random"
#: Fixed so two random exports of one architecture are byte-identical and comparable.
RANDOM_SEED = 0
#: Seconds without a byte before a download gives up. torch.hub sets no timeout, and a
#: firewall that drops packets would otherwise hang ``export`` forever.
DOWNLOAD_TIMEOUT_S = 30.0
#: BatchNorm buffers that checkpoints saved before PyTorch 0.4.1 lack. PyTorch fills
#: them in on load (the state dict carries no version metadata), so their absence is fine.
OPTIONAL_SUFFIXES = ("num_batches_tracked",)
#: torch.hub's convention: ``name-<sha256 prefix>.ext``.
HASH_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")


class WeightsError(Exception):
    """The requested weights cannot be used; the message says what to do instead."""


@dataclass(frozen=True)
class LoadedModel:
    """An eval-mode model plus everything the repository records about it."""

    module: nn.Module
    architecture: Architecture
    weights: WeightsInfo
    labels: tuple[str, ...]
    preprocessing: Preprocessing


def read_labels(path: Path) -> tuple[str, ...]:
    """One label per line; blank lines are dropped, duplicates refused (ambiguous top-k)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise WeightsError(f"cannot read labels file {path}: {exc}") from None
    labels = tuple(line.strip() for line in lines if line.strip())
    if not labels:
        raise WeightsError(f"labels file {path} has no labels (expected one per line)")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise WeightsError(f"labels file {path} repeats labels: {', '.join(duplicates)}")
    return labels


def hub_cache_path(url: str) -> Path:
    """Where torch.hub looks for ``url`` (honours ``$TORCH_HOME`` at call time)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _verify_cached(cache: Path) -> None:
    """Check a cached file against the sha256 prefix in its name.

    torch.hub checks the prefix only while downloading; a file copied into the cache by
    hand (as our error message suggests) or truncated later would load unchecked.
    """
    match = HASH_PREFIX.search(cache.name)
    if not cache.is_file() or match is None:
        return
    digest = sha256_file(cache)
    if not digest.startswith(match.group(1)):
        raise WeightsError(
            f"cached weights {cache} are unusable: sha256 {digest[:12]}... does not start "
            f"with {match.group(1)} as the file name says (corrupt or a different file); "
            f"delete the file and retry"
        )


def fetch_pretrained(arch: Architecture, spec: WeightSpec, *, progress: bool) -> dict[str, Any]:
    """The weight set's state dict from the hub cache, downloading it when possible."""
    cache = hub_cache_path(spec.url)
    _verify_cached(cache)
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return spec.fetch(progress)
    except OSError as exc:  # URLError, HTTPError, timeouts, DNS failures
        raise WeightsError(
            f"pretrained weights {arch.name} {spec.name} are not in the torch hub cache at "
            f"{cache} and could not be downloaded from {spec.url} ({exc}). To fix: connect "
            f"to the network and retry; or copy the file {cache.name} to {cache}; or export "
            f"your own weights with --checkpoint FILE; or use --weights random (or "
            f"--allow-random-fallback) for an untrained model"
        ) from exc
    except RuntimeError as exc:  # torch.hub's hash check, or an unreadable file
        raise WeightsError(
            f"pretrained weights {arch.name} {spec.name} at {cache} are unusable ({exc}); "
            f"delete the file and retry"
        ) from exc


def unwrap_state_dict(raw: Any, source: str) -> dict[str, torch.Tensor]:
    """Accept a state dict, ``{'state_dict': ...}`` or ``{'model': ...}``; drop ``module.``.

    ``module.`` prefixes come from ``nn.DataParallel`` / DDP training scripts (the
    shared CIFAR checkpoints have them on every key).
    """
    state = raw
    if isinstance(raw, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(raw.get(key), Mapping):
                state = raw[key]
                break
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise WeightsError(
            f"{source}: expected a state dict (name -> tensor), or a dict holding one "
            f"under 'state_dict' or 'model'; got {type(raw).__name__}"
        )
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def load_into(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with a message naming every missing and unexpected key."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {'; '.join(shapes)}")
        raise WeightsError(
            f"{source} does not fit this architecture: {'; '.join(parts)}. Check the "
            f"architecture name, and --labels (the classifier gets one output per label)"
        )
    # strict=False only tolerates the OPTIONAL_SUFFIXES buffers we let through above.
    module.load_state_dict(state, strict=False)


def _checkpoint_model(
    arch: Architecture, checkpoint: Path, labels: tuple[str, ...] | None
) -> LoadedModel:
    if not checkpoint.is_file():
        raise WeightsError(f"checkpoint {checkpoint} does not exist")
    try:
        raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, unsafe globals, truncated zip: all one message
        raise WeightsError(
            f"cannot read checkpoint {checkpoint} with torch.load(weights_only=True): {exc}"
        ) from exc
    labels = labels or arch.labels
    module = arch.build(len(labels))
    load_into(module, unwrap_state_dict(raw, str(checkpoint)), f"checkpoint {checkpoint}")
    info = WeightsInfo(
        origin="checkpoint", checkpoint=checkpoint.name, sha256=sha256_file(checkpoint)
    )
    return LoadedModel(module.eval(), arch, info, labels, arch.preprocessing)


def _random_model(
    arch: Architecture, labels: tuple[str, ...] | None, spec: WeightSpec | None = None
) -> LoadedModel:
    """Seeded random init; metadata from ``spec`` when one was asked for, else DEFAULT's.

    Keeping the asked-for set's metadata means a later export of the real weights under
    the same name passes the config compatibility check.
    """
    labels = labels or (spec.labels if spec else arch.labels)
    preprocessing = spec.preprocessing if spec else arch.preprocessing
    torch.manual_seed(RANDOM_SEED)
    module = arch.build(len(labels))
    return LoadedModel(module.eval(), arch, WeightsInfo(origin="random"), labels, preprocessing)


def load_model(
    arch: Architecture,
    *,
    weights: str | None = None,
    checkpoint: Path | None = None,
    labels_file: Path | None = None,
    allow_random_fallback: bool = False,
    progress: bool = True,
) -> LoadedModel:
    """Build ``arch`` with the requested weights; see the module docstring for the rules.

    ``weights`` None means the architecture's DEFAULT weight set (or the checkpoint's
    weights when ``checkpoint`` is given). ``labels_file`` replaces the classifier, so
    it goes with a checkpoint or random weights, never with a pretrained set.
    """
    labels = read_labels(labels_file) if labels_file else None
    if checkpoint is not None:
        if weights is not None:
            raise WeightsError("give either --weights or --checkpoint, not both")
        return _checkpoint_model(arch, checkpoint, labels)
    weights = weights or "DEFAULT"
    if weights == RANDOM:
        return _random_model(arch, labels)
    if labels is not None:
        raise WeightsError(
            f"--labels replaces the classifier, so it needs your own weights "
            f"(--checkpoint FILE) or --weights random; pretrained {arch.name} weights "
            f"predict their own {len(arch.labels)} classes"
        )
    spec: WeightSpec | None = None
    try:
        spec = arch.weight_spec(weights)
        state = fetch_pretrained(arch, spec, progress=progress)
    except (ValueError, WeightsError) as exc:
        if not allow_random_fallback:
            raise WeightsError(str(exc)) from exc
        logger.warning(
            "!!! %s. FALLING BACK TO RANDOM WEIGHTS (--allow-random-fallback): the exported "
            "model is UNTRAINED and its predictions are meaningless; it is recorded as "
            "'random' in version.json !!!",
            exc,
        )
        return _random_model(arch, None, spec)
    module = arch.build(len(spec.labels))
    load_into(module, unwrap_state_dict(state, spec.url), f"weights {spec.name}")
    info = WeightsInfo(origin="pretrained", name=spec.name)
    return LoadedModel(module.eval(), arch, info, spec.labels, spec.preprocessing)
