"""The model repository: ``models/<name>/config.json`` plus versioned artifact folders.

Layout (Triton-like)::

    models/<name>/config.json            ModelConfig: what the model is and how to feed it
    models/<name>/<version>/version.json VersionInfo: where the weights came from, checksums
    models/<name>/<version>/model.onnx   artifacts written by ``resnet-serve export``
    models/<name>/<version>/model.pt

Both files are validated when read (frozen pydantic models), so a broken folder fails at
start-up with a message naming the file and the field instead of failing on the first
request. Artifact checksums are verified too: a half-copied model must not serve.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.errors import ModelConfigError
from service.golden import GoldenSet

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
VERSION_FILE = "version.json"
SCHEMA_VERSION = 1

EngineName = Literal["onnxruntime", "torchscript"]
ArtifactFormat = Literal["onnx", "torchscript"]
#: Which artifact format each engine runs.
ENGINE_FORMAT: dict[str, ArtifactFormat] = {"onnxruntime": "onnx", "torchscript": "torchscript"}
#: Artifact file name per format inside a version folder.
ARTIFACT_FILE: dict[ArtifactFormat, str] = {"onnx": "model.onnx", "torchscript": "model.pt"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Preprocessing(_Frozen):
    """How an image becomes the model's input: torchvision's ImageClassification recipe.

    ``resize_size`` is the length the shorter side is resized to, then a centred
    ``crop_size`` square is cut; values are scaled to [0, 1] and normalised per channel.
    """

    resize_size: int = Field(gt=0, le=4096)
    crop_size: int = Field(gt=0, le=4096)
    interpolation: Literal["nearest", "bilinear", "bicubic"] = "bilinear"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @field_validator("std")
    @classmethod
    def _std_positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in value):
            raise ValueError("every std value must be > 0")
        return value


class ModelConfig(_Frozen):
    """What a model is and how to serve it; shared by all its versions."""

    schema_version: int = SCHEMA_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    architecture: str
    labels: tuple[str, ...] = Field(min_length=1)
    preprocessing: Preprocessing
    #: None: run the first artifact present, ONNX first (fastest on CPU in our benchmarks).
    engine: EngineName | None = None
    #: None: serve the highest version number as the default.
    default_version: int | None = None
    #: Serve only the newest N versions (Triton's version policy ``latest``), plus a
    #: pinned ``default_version``; None: every version folder serves. With 1, a new
    #: version replaces the old one, which is drained and unloaded.
    serve_latest: int | None = Field(default=None, ge=1)
    #: Per-model override of the service-wide batching limit.
    max_batch_size: int | None = Field(default=None, gt=0, le=1024)
    #: ONNX Runtime execution providers in preference order; None picks from what exists.
    providers: tuple[str, ...] | None = None
    #: "auto" uses a GPU when the engine finds one.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: Run fp16 on GPU (TensorRT / TorchScript CUDA); ignored on CPU.
    fp16: bool = False
    #: ONNX Runtime on CUDA/TensorRT: capture a CUDA graph per fixed batch size (powers of
    #: two up to max_batch_size); batches are zero-padded to the next size, logits sliced.
    cuda_graphs: bool = False
    #: Where images are decoded and resized. "cuda": JPEGs decoded in batches on the GPU
    #: and resized there (changes pixels slightly: see docs/GPU.md for the measured top-1
    #: agreement); other formats still take the exact CPU path.
    preprocess_device: Literal["cpu", "cuda"] = "cpu"
    description: str = ""


class WeightsInfo(_Frozen):
    """Where the weights came from. Random weights are never silent: see ``display``."""

    origin: Literal["pretrained", "random", "checkpoint"]
    #: torchvision weight enum name (e.g. ``IMAGENET1K_V2``) for pretrained weights.
    name: str | None = None
    #: File name (not path) of the checkpoint the weights were read from.
    checkpoint: str | None = None
    sha256: str | None = None

    @property
    def display(self) -> str:
        if self.origin == "random":
            return "random (untrained)"
        if self.origin == "pretrained":
            return f"pretrained: {self.name}"
        digest = f" (sha256 {self.sha256[:12]})" if self.sha256 else ""
        return f"checkpoint: {self.checkpoint}{digest}"


class ArtifactInfo(_Frozen):
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class ParityReport(_Frozen):
    """Export faithfulness: the artifact against PyTorch eager on the same inputs."""

    max_abs_logit_diff: float
    bound: float
    top1_agreement: float = Field(ge=0, le=1)
    inputs: int = Field(gt=0)
    input_source: str = "random"


class VersionInfo(_Frozen):
    """One exported version: artifacts, their checksums, and how they were made."""

    version: int = Field(gt=0)
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    weights: WeightsInfo
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    artifacts: dict[ArtifactFormat, ArtifactInfo] = Field(min_length=1)
    parity: dict[ArtifactFormat, ParityReport] = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict)
    #: Quantization record (method, calibration images, agreement) for int8 versions.
    quantization: dict[str, Any] | None = None
    #: What this version's engine answered on a few images, checked at every load
    #: (:mod:`service.gate`); None in versions written before the gate existed.
    golden: GoldenSet | None = None

    @model_validator(mode="after")
    def _artifact_names(self) -> VersionInfo:
        for fmt, art in self.artifacts.items():
            if "/" in art.file or "\\" in art.file or art.file.startswith("."):
                raise ValueError(
                    f"artifact {fmt!r} file must be a plain file name, got {art.file!r}"
                )
        return self


@dataclass(frozen=True)
class ModelVersion:
    """A version as found on disk."""

    info: VersionInfo
    path: Path

    def artifact_path(self, fmt: str) -> Path:
        return self.path / self.info.artifacts[fmt].file  # type: ignore[index]


@dataclass(frozen=True)
class ModelEntry:
    """A model folder: its config and every valid version, ascending."""

    config: ModelConfig
    path: Path
    versions: tuple[ModelVersion, ...]

    @property
    def default_version(self) -> ModelVersion:
        wanted = self.config.default_version
        if wanted is None:
            return self.versions[-1]
        for v in self.versions:
            if v.info.version == wanted:
                return v
        raise ModelConfigError(
            f"{self.path}: default_version {wanted} has no folder; "
            f"versions found: {[v.info.version for v in self.versions]}"
        )

    @property
    def served_versions(self) -> tuple[ModelVersion, ...]:
        """The versions its ``serve_latest`` policy serves (the pinned default always)."""
        keep = self.config.serve_latest
        if keep is None:
            return self.versions
        default = self.default_version
        return tuple(v for v in self.versions[:-keep] if v is default) + self.versions[-keep:]


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json_model(path: Path, model: type[_Frozen]) -> Any:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelConfigError(f"{path.parent}: missing {path.name}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelConfigError(f"{path}: not readable JSON ({exc})") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ModelConfigError(f"{path}: invalid {model.__name__}: {problems}") from None


def load_version(folder: Path, *, verify_checksums: bool = True) -> ModelVersion:
    info: VersionInfo = _read_json_model(folder / VERSION_FILE, VersionInfo)
    if str(info.version) != folder.name:
        raise ModelConfigError(
            f"{folder}: version.json says version {info.version} but the folder is {folder.name!r}"
        )
    for fmt, art in info.artifacts.items():
        file = folder / art.file
        if not file.is_file():
            raise ModelConfigError(f"{folder}: {fmt} artifact {art.file!r} is missing")
        if verify_checksums and sha256_file(file) != art.sha256:
            raise ModelConfigError(
                f"{folder}: {fmt} artifact {art.file!r} does not match its sha256 in "
                f"{VERSION_FILE} (partial copy or edited file?); re-export the model"
            )
    return ModelVersion(info=info, path=folder)


def load_model(folder: Path, *, verify_checksums: bool = True) -> ModelEntry:
    """Read one ``models/<name>/`` folder; raise :class:`ModelConfigError` naming it."""
    config: ModelConfig = _read_json_model(folder / CONFIG_FILE, ModelConfig)
    if config.name != folder.name:
        raise ModelConfigError(
            f"{folder}: config name {config.name!r} differs from the folder name {folder.name!r}"
        )
    version_dirs = sorted(
        (p for p in folder.iterdir() if p.is_dir() and p.name.isascii() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    if not version_dirs:
        raise ModelConfigError(
            f"{folder}: no version folders (expected {folder}/1/{VERSION_FILE}); "
            f"run `resnet-serve export` to create one"
        )
    versions = tuple(load_version(d, verify_checksums=verify_checksums) for d in version_dirs)
    entry = ModelEntry(config=config, path=folder, versions=versions)
    entry.default_version  # noqa: B018 - validates default_version now, not per request
    return entry


def scan_repository(
    root: Path, *, verify_checksums: bool = True, only: Collection[str] | None = None
) -> list[ModelEntry]:
    """Every model folder under ``root`` (folders starting with '.' or '_' are skipped).

    ``only`` (the ``models`` setting) keeps just those names; the other folders are not
    read at all, so a broken or large model nobody asked for costs nothing. A name with
    no folder is an error naming the models that exist: serving less than was asked for
    would only show up on the first request.
    """
    if not root.is_dir():
        raise ModelConfigError(
            f"model repository {root} does not exist; export a model first, e.g. "
            f"`resnet-serve export resnet50 --repository {root}`"
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name[0] not in "._")
    if only is not None:
        present = {f.name for f in folders}
        missing = [n for n in only if n not in present]
        if missing:
            raise ModelConfigError(
                f"model repository {root} has no model {', '.join(map(repr, missing))} "
                f"(asked for by the models setting); it has: "
                f"{', '.join(sorted(present)) or 'no models'}"
            )
        folders = [f for f in folders if f.name in only]
    return [load_model(f, verify_checksums=verify_checksums) for f in folders]


def next_version(model_dir: Path) -> int:
    """The version number a new export into ``model_dir`` gets (1 for a new model)."""
    if not model_dir.is_dir():
        return 1
    existing = [
        int(p.name)
        for p in model_dir.iterdir()
        if p.is_dir() and p.name.isascii() and p.name.isdigit()
    ]
    return max(existing, default=0) + 1


def write_json(path: Path, model: BaseModel) -> None:
    """Write atomically so a crash never leaves a half-written config behind."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(model.model_dump_json(indent=2, exclude_none=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def artifact_info(path: Path) -> ArtifactInfo:
    return ArtifactInfo(file=path.name, sha256=sha256_file(path), bytes=path.stat().st_size)


def names(entries: Iterable[ModelEntry]) -> list[str]:
    return [e.config.name for e in entries]
