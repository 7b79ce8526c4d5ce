"""Quantize one model version of a repository into a new int8 version beside it.

The new version is built in a hidden temporary folder inside the model folder, checked
against the agreement gate, and only then renamed to ``<name>/<n>/``: a refused or
crashed run leaves nothing a server would load, and a server never sees a half-written
version (the rename is atomic on one file system).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.gate import record_artifacts
from service.quantize.calibration import CalibrationReader, ImageSet, load_images
from service.quantize.report import SetReport, check_agreement, evaluate
from service.quantize.static import QuantOptions, quantize_onnx
from service.repository import (
    ModelEntry,
    ModelVersion,
    VersionInfo,
    artifact_info,
    load_model,
    next_version,
    write_json,
)

logger = logging.getLogger(__name__)

DEFAULT_MIN_AGREEMENT = 0.98


class QuantizeError(ValueError):
    """The request cannot be carried out as asked (no such version, wrong engine, ...)."""


@dataclass(frozen=True)
class QuantizeResult:
    model: str
    source_version: int
    version: int
    path: Path
    reports: list[SetReport]
    #: The version a request naming no version gets after this run.
    default_version: int
    record: dict[str, Any] = field(default_factory=dict)


def pick_source(entry: ModelEntry, version: int | None) -> ModelVersion:
    """The fp32 ONNX version to quantize: the one asked for, else the newest fp32 one."""
    candidates = [
        v for v in entry.versions if v.info.precision == "fp32" and "onnx" in v.info.artifacts
    ]
    if version is not None:
        chosen = [v for v in candidates if v.info.version == version]
        if not chosen:
            raise QuantizeError(
                f"model {entry.config.name} has no fp32 ONNX version {version}; fp32 ONNX "
                f"versions: {[v.info.version for v in candidates]}"
            )
        return chosen[0]
    if not candidates:
        raise QuantizeError(
            f"model {entry.config.name} has no fp32 ONNX version to quantize; export one "
            f"with `resnet-serve export ... --format onnx`"
        )
    return candidates[-1]


def _calibration_batch(crop_size: int) -> int:
    """Images per calibration batch: 16, or fewer for inputs above 224 px.

    Histogram calibrators (entropy, percentile) keep a batch's activations in memory
    (~1.6 GB for 16 ResNet-50 images at 224 px), and their result depends slightly on the
    batching (histogram ranges grow batch by batch); 16 is what docs/QUANTIZATION.md's
    figures were measured with.
    """
    return max(1, min(16, (16 * 224 * 224) // (crop_size * crop_size)))


def _record(
    options: QuantOptions,
    calibration: ImageSet,
    source: ModelVersion,
    reports: list[SetReport],
    min_agreement: float,
) -> dict[str, Any]:
    calibration_report = reports[0]
    record: dict[str, Any] = {
        "format": "QDQ",
        "method": options.method,
        "calibration_dir": calibration.folder.name,
        "calibration_images": len(calibration),
        "calibration_skipped": len(calibration.skipped),
        "activation_type": options.activation_type,
        "weight_type": options.weight_type,
        "per_channel": options.per_channel,
        "reduce_range": options.reduce_range,
        "source_version": source.info.version,
        "min_agreement": min_agreement,
        **{k: v for k, v in calibration_report.as_record().items() if k not in ("role",)},
    }
    if options.method == "percentile":
        record["percentile"] = options.percentile
    record.pop("folder", None)
    record.pop("images", None)
    for report in reports[1:]:
        record[report.role] = report.as_record()
    return record


def _publish(staging: Path, model_dir: Path) -> int:
    """Move ``staging`` to the next free version number; return that number.

    ``mkdir`` reserves the number (it fails if a concurrent export took it), then the
    rename replaces the empty reserved folder in one step.
    """
    for _ in range(10):
        number = next_version(model_dir)
        try:
            (model_dir / str(number)).mkdir()
        except FileExistsError:
            continue
        try:
            info = VersionInfo.model_validate_json((staging / "version.json").read_text())
            write_json(staging / "version.json", info.model_copy(update={"version": number}))
            staging.rename(model_dir / str(number))
        except BaseException:
            (model_dir / str(number)).rmdir()  # an empty version folder would not load
            raise
        return number
    raise QuantizeError(f"{model_dir}: could not reserve a new version folder")


def quantize_model(
    repository: Path,
    name: str,
    calibration_dir: Path,
    *,
    version: int | None = None,
    holdout_dir: Path | None = None,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    options: QuantOptions | None = None,
    keep_default: bool = False,
) -> QuantizeResult:
    """Write ``<repository>/<name>/<n+1>/`` holding the int8 model, or raise.

    Raises :class:`QuantizationRefused` (nothing written) when agreement is too low,
    :class:`QuantizeError` / :class:`CalibrationError` for unusable arguments.
    """
    import onnx
    import onnxruntime

    options = options or QuantOptions()
    model_dir = repository / name
    if not (model_dir / "config.json").is_file():
        raise QuantizeError(f"no model {name!r} in {repository} (no {model_dir}/config.json)")
    entry = load_model(model_dir)
    config = entry.config
    if config.engine == "torchscript":
        raise QuantizeError(
            f"{model_dir}/config.json forces engine 'torchscript'; the int8 version is ONNX "
            f"only and could not be served. Remove 'engine' from the config first."
        )
    source = pick_source(entry, version)
    calibration = load_images(calibration_dir, config.preprocessing, config.labels)
    image_sets = {"calibration": calibration}
    if holdout_dir is not None:
        image_sets["holdout"] = load_images(holdout_dir, config.preprocessing, config.labels)
    logger.info(
        "quantizing %s v%d with %s calibration on %d images from %s",
        name,
        source.info.version,
        options.method,
        len(calibration),
        calibration_dir,
    )
    staging = Path(tempfile.mkdtemp(prefix=".quantize-", dir=model_dir))
    try:
        artifact = staging / "model.onnx"
        reader = CalibrationReader(
            calibration,
            onnx_input_name(source.artifact_path("onnx")),
            _calibration_batch(config.preprocessing.crop_size),
        )
        quantize_onnx(source.artifact_path("onnx"), artifact, reader, options)
        reports = evaluate(source.artifact_path("onnx"), artifact, image_sets)
        for report in reports:
            logger.debug("%s", report.describe())
        check_agreement(reports, min_agreement)
        record = _record(options, calibration, source, reports, min_agreement)
        golden = record_artifacts(
            staging, config.preprocessing, {"onnx": artifact}, precision="int8"
        )
        info = VersionInfo(
            version=next_version(model_dir),  # provisional; _publish sets the final one
            weights=source.info.weights,
            precision="int8",
            artifacts={"onnx": artifact_info(artifact)},
            tools={"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__},
            quantization=record,
            golden=golden,
        )
        write_json(staging / "version.json", info)
        number = _publish(staging, model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename
    default = _update_default(entry, keep_default)
    return QuantizeResult(
        model=name,
        source_version=source.info.version,
        version=number,
        path=model_dir / str(number),
        reports=reports,
        default_version=default if default is not None else number,
        record=record,
    )


def _update_default(entry: ModelEntry, keep_default: bool) -> int | None:
    """Pin the previous default in config.json if asked; return the pinned default.

    Without pinning, the highest version (the new int8 one) becomes the default, as
    after any export; ``keep_default`` keeps clients that name no version on the model
    they used until now, while ``?version=<n>`` reaches the int8 one.
    """
    if entry.config.default_version is not None:
        return entry.config.default_version
    if not keep_default:
        return None
    previous = entry.default_version.info.version
    pinned = entry.config.model_copy(update={"default_version": previous})
    write_json(entry.path / "config.json", pinned)
    return previous


def onnx_input_name(path: Path) -> str:
    """The graph's first real input (initializers may also be listed as inputs)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in initializers)
