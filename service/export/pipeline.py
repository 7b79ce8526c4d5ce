"""One export from start to finish: weights -> artifacts -> parity -> new version.

The order matters: the repository's compatibility check runs before the slow export,
and :class:`VersionWriter` publishes only after every parity check passed, so a failed
export leaves the repository exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from service.export import DEFAULT_OPSET, DEFAULT_PARITY_BOUND, parity
from service.export.architectures import get_architecture
from service.export.torchscript_export import export_torchscript
from service.export.weights import LoadedModel, WeightsError, load_model
from service.export.writer import ExportError, VersionWriter, tool_versions
from service.repository import ARTIFACT_FILE, ArtifactFormat, ModelConfig, ParityReport


class ExportFailed(Exception):
    """Any expected failure of an export, with a message meant for the user."""


@dataclass(frozen=True)
class ExportRequest:
    arch: str
    name: str
    weights: str | None = None
    checkpoint: Path | None = None
    labels_file: Path | None = None
    formats: tuple[ArtifactFormat, ...] = ("onnx",)
    repository: Path = Path("models")
    parity_images: Path | None = None
    parity_bound: float = DEFAULT_PARITY_BOUND
    allow_random_fallback: bool = False
    opset: int = DEFAULT_OPSET


@dataclass(frozen=True)
class ExportResult:
    model: LoadedModel
    config: ModelConfig
    version: int
    folder: Path
    parity: dict[ArtifactFormat, ParityReport]

    def summary(self) -> str:
        arch = self.model.architecture
        size = self.config.preprocessing.crop_size
        lines = [
            f"exported {self.config.name} version {self.version} -> {self.folder}",
            f"  architecture  {arch.name} ({arch.family}, input 3x{size}x{size}, "
            f"{len(self.config.labels)} labels)",
            f"  weights       {self.model.weights.display}",
        ]
        for i, (fmt, report) in enumerate(self.parity.items()):
            lines.append(f"  {'parity' if i == 0 else '':<13} {parity.describe(fmt, report)}")
        for i, fmt in enumerate(self.parity):
            path = self.folder / ARTIFACT_FILE[fmt]
            size_mb = path.stat().st_size / 1e6
            lines.append(f"  {'artifacts' if i == 0 else '':<13} {path}  ({size_mb:.1f} MB)")
        if self.model.weights.origin == "random":
            lines.append("  WARNING: random (untrained) weights; predictions are meaningless")
        return "\n".join(lines)


def _description(model: LoadedModel) -> str:
    arch = model.architecture
    dataset = "ImageNet-1k" if arch.family == "imagenet" else "CIFAR-10"
    if model.weights.origin == "checkpoint":
        return f"{arch.name}, {len(model.labels)} classes, from {model.weights.checkpoint}"
    return f"{arch.name} ({dataset}), {model.weights.display}"


def export(request: ExportRequest, *, report: Callable[[str], None] = print) -> ExportResult:
    """Run the export; raise :class:`ExportFailed` with a user-facing message on failure."""
    if request.parity_bound <= 0:
        raise ExportFailed(f"--parity-bound must be > 0, got {request.parity_bound}")
    try:
        arch = get_architecture(request.arch)
        model = load_model(
            arch,
            weights=request.weights,
            checkpoint=request.checkpoint,
            labels_file=request.labels_file,
            allow_random_fallback=request.allow_random_fallback,
        )
    except (ValueError, WeightsError) as exc:
        raise ExportFailed(str(exc)) from exc
    try:
        config = ModelConfig(
            name=request.name,
            architecture=arch.name,
            labels=model.labels,
            preprocessing=model.preprocessing,
            description=_description(model),
        )
    except ValidationError as exc:
        raise ExportFailed(
            f"invalid model config for --name {request.name!r}: {exc.errors()[0]['msg']}"
        ) from None
    size = model.preprocessing.crop_size
    try:
        with VersionWriter(request.repository, config) as writer:
            artifacts: dict[ArtifactFormat, Path] = {}
            for fmt in request.formats:
                report(f"exporting {request.name} to {fmt} ...")
                path = writer.artifact_path(fmt)
                if fmt == "onnx":
                    # Imported here: a TorchScript-only export needs no onnx/onnxscript
                    # (a GPU host may have torch and torchvision alone).
                    from service.export.onnx_export import export_onnx

                    export_onnx(model.module, path, input_size=size, opset=request.opset)
                else:
                    export_torchscript(model.module, path, input_size=size)
                artifacts[fmt] = path
            inputs = parity.build_inputs(size, model.preprocessing, request.parity_images)
            reports = parity.compare(model.module, artifacts, inputs, bound=request.parity_bound)
            parity.enforce(reports)
            version, folder = writer.publish(
                weights=model.weights, parity=reports, tools=tool_versions()
            )
    except (ExportError, parity.ParityError) as exc:
        raise ExportFailed(str(exc)) from exc
    return ExportResult(model, config, version, folder, reports)
