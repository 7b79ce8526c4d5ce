"""Write one export into the model repository, all or nothing.

Artifacts are written into a hidden staging folder ``models/.export-<name>-*`` (same
file system, so the final rename is atomic) and renamed to ``models/<name>/<version>/``
only after every artifact passed its parity check and ``version.json`` is written. The
repository skips folders starting with ".", so a server scanning during a long export
sees nothing half-made, and the staging folder is removed on any error. A new model's
folder and ``config.json`` appear only at publish time, just before its first version.
"""

from __future__ import annotations

import json
import logging
import platform
import secrets
import shutil
from importlib import metadata
from pathlib import Path
from types import TracebackType

from pydantic import ValidationError

from service.gate import record_artifacts
from service.repository import (
    ARTIFACT_FILE,
    CONFIG_FILE,
    VERSION_FILE,
    ArtifactFormat,
    ModelConfig,
    ParityReport,
    VersionInfo,
    WeightsInfo,
    artifact_info,
    next_version,
    write_json,
)

logger = logging.getLogger(__name__)

#: Packages whose versions decide what an artifact contains; recorded per version so
#: a numerical difference between two versions can be traced to an upgrade.
TOOL_PACKAGES = ("torch", "torchvision", "onnx", "onnxscript", "onnxruntime")


class ExportError(Exception):
    """The export cannot be written; the message says why and what to do."""


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in TOOL_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def check_compatible(model_dir: Path, config: ModelConfig) -> ModelConfig | None:
    """The existing config of ``model_dir`` (None if new); refuse an incompatible export.

    All versions of a model share one config, so a new version with other labels or
    preprocessing would be fed and labelled wrongly by the server.
    """
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        existing = ModelConfig.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError) as exc:
        raise ExportError(
            f"{path} exists but is not a valid model config ({exc}); fix or remove it"
        ) from None
    differences = [
        f"{field}: existing {getattr(existing, field)!r} vs new {getattr(config, field)!r}"
        for field in ("architecture", "preprocessing")
        if getattr(existing, field) != getattr(config, field)
    ]
    if existing.labels != config.labels:
        differences.append(
            f"labels: existing {len(existing.labels)} ({', '.join(existing.labels[:3])}, ...) "
            f"vs new {len(config.labels)} ({', '.join(config.labels[:3])}, ...)"
        )
    if differences:
        raise ExportError(
            f"{path} describes a different model, so this export cannot become a new version "
            f"of {config.name!r}: {'; '.join(differences)}. Export under another --name, or "
            f"remove {model_dir} to start over"
        )
    return existing


class VersionWriter:
    """Context manager: ``artifact_path(fmt)`` to write into, then ``publish(...)``."""

    def __init__(self, repository: Path, config: ModelConfig) -> None:
        self.repository = repository
        self.model_dir = repository / config.name
        self.config = config
        # Checked before the (slow) export, so an incompatible name fails in a second.
        self._existing = check_compatible(self.model_dir, config)
        self._staging: Path | None = None
        self.published: Path | None = None

    def __enter__(self) -> VersionWriter:
        self.repository.mkdir(parents=True, exist_ok=True)
        # Not tempfile.mkdtemp: its 0700 mode would end up on the published version
        # folder; mkdir honours the umask like every other folder in the repository.
        staging = self.repository / f".export-{self.config.name}-{secrets.token_hex(4)}"
        staging.mkdir()
        self._staging = staging
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._staging is not None and self._staging.exists():
            shutil.rmtree(self._staging, ignore_errors=True)

    def artifact_path(self, fmt: ArtifactFormat) -> Path:
        if self._staging is None:
            raise RuntimeError("VersionWriter used outside its `with` block")
        return self._staging / ARTIFACT_FILE[fmt]

    def publish(
        self,
        *,
        weights: WeightsInfo,
        parity: dict[ArtifactFormat, ParityReport],
        tools: dict[str, str],
    ) -> tuple[int, Path]:
        """Checksum the artifacts, record the golden set, write version.json (and
        config.json if new), rename."""
        if self._staging is None:
            raise RuntimeError("VersionWriter used outside its `with` block")
        artifacts = {
            fmt: artifact_info(self._staging / file)
            for fmt, file in ARTIFACT_FILE.items()
            if (self._staging / file).is_file()
        }
        # What the serving engine answers on the golden images, checked at every load.
        golden = record_artifacts(
            self._staging,
            self.config.preprocessing,
            {fmt: self._staging / info.file for fmt, info in artifacts.items()},
            precision="fp32",
        )
        version = next_version(self.model_dir)
        target = self.model_dir / str(version)
        if target.exists():  # next_version saw it: only a concurrent export gets here
            raise ExportError(f"{target} appeared during the export; run the export again")
        info = VersionInfo(
            version=version,
            weights=weights,
            artifacts=artifacts,
            parity=parity,
            tools=tools,
            golden=golden,
        )
        write_json(self._staging / VERSION_FILE, info)
        if self._existing is None:
            # Re-checked: another export may have created the model meanwhile.
            self._existing = check_compatible(self.model_dir, self.config)
        if self._existing is None:
            self.model_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.model_dir / CONFIG_FILE, self.config)
        self._staging.rename(target)
        self.published = target
        logger.info("wrote %s", target)
        return version, target
