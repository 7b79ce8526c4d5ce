"""Served models: repository entries turned into engines, batchers and preprocessors.

Models load in the background after the server starts, so ``/health/live`` answers at
once and ``/health/ready`` tells when every model is warm. A model whose engine cannot
be created is kept, marked failed with the reason, and the others serve on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from service.batching import Batcher, BatcherConfig
from service.engines import create_engine, max_batch_size_of, select_engine
from service.engines.base import Engine
from service.errors import ModelUnavailable, UnknownModel
from service.metrics import Metrics
from service.preprocess import Limits, Preprocessor
from service.repository import ModelConfig, ModelEntry, ModelVersion
from service.settings import Settings

logger = logging.getLogger(__name__)

Status = Literal["loading", "ready", "failed", "stopped"]
#: Builds the engine of one model version; tests pass a fake one.
EngineFactory = Callable[[ModelConfig, ModelVersion, Settings], Engine]


def create_preprocessor(config: ModelConfig, limits: Limits) -> Preprocessor:
    """The model's preprocessing backend: the exact CPU one unless its config asks for
    ``preprocess_device: cuda`` (:mod:`service.preprocess_torch`, which needs torch)."""
    if config.preprocess_device == "cpu":
        return Preprocessor(config.preprocessing, limits)
    from service.preprocess_torch import cuda_preprocessor

    return cuda_preprocessor(config, limits)


@dataclass
class ServedModel:
    """One model version as served: its config, its engine and batcher once loaded."""

    entry: ModelEntry
    version: ModelVersion
    preprocessor: Preprocessor
    max_batch_size: int
    engine_name: str = ""
    status: Status = "loading"
    error: str | None = None
    engine: Engine | None = None
    batcher: Batcher | None = field(default=None, repr=False)
    #: A batch running longer than this means the engine is stuck (see ``serving``).
    stuck_after_s: float = 10.0

    @property
    def name(self) -> str:
        return self.entry.config.name

    @property
    def number(self) -> int:
        return self.version.info.version

    @property
    def key(self) -> tuple[str, str]:
        """(model, version) as text: the metric label values of this version."""
        return self.name, str(self.number)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.entry.config.labels

    @property
    def architecture(self) -> str:
        return self.entry.config.architecture

    @property
    def weights(self) -> str:
        """Where the weights came from; "random (untrained)" is never hidden."""
        return self.version.info.weights.display

    @property
    def precision(self) -> str:
        return self.version.info.precision

    @property
    def parity(self) -> dict[str, dict[str, object]]:
        """The export's faithfulness figures per artifact format."""
        return {fmt: report.model_dump() for fmt, report in self.version.info.parity.items()}

    @property
    def quantization(self) -> dict[str, Any] | None:
        return self.version.info.quantization

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.preprocessor.input_shape

    @property
    def stuck(self) -> bool:
        """The engine has been on one batch far longer than a batch takes."""
        return self.batcher is not None and self.batcher.batch_age_s() > self.stuck_after_s

    @property
    def serving(self) -> bool:
        """Loaded, warm and not stuck: what readiness reports for this version."""
        return self.status == "ready" and not self.stuck

    @property
    def provider(self) -> str:
        return self.engine.provider if self.engine else ""

    def require_batcher(self) -> Batcher:
        if self.status != "ready" or self.batcher is None:
            reason = f": {self.error}" if self.error else ""
            raise ModelUnavailable(
                f"model {self.name} v{self.number} is {self.status}{reason}",
                model=self.name,
                status=self.status,
            )
        return self.batcher


class ModelPool:
    """Every served model version, looked up by name and optional version."""

    def __init__(
        self,
        entries: list[ModelEntry],
        settings: Settings,
        metrics: Metrics,
        *,
        engine_factory: EngineFactory = create_engine,
    ) -> None:
        self.settings = settings
        #: The metrics it reports model state to; routes use the app's, not this.
        self.metrics = metrics
        self._engine_factory = engine_factory
        limits = Limits(
            max_pixels=settings.max_image_pixels,
            max_jpeg_scans=settings.max_jpeg_scans,
            max_decode_work=settings.max_decode_work,
        )
        self._models: dict[str, dict[int, ServedModel]] = {}
        self._defaults: dict[str, int] = {}
        for entry in entries:
            preprocessor = create_preprocessor(entry.config, limits)
            batch = max_batch_size_of(entry.config, settings)
            self._models[entry.config.name] = {
                v.info.version: ServedModel(
                    entry, v, preprocessor, batch, stuck_after_s=settings.stuck_batch_after_s
                )
                for v in entry.versions
            }
            self._defaults[entry.config.name] = entry.default_version.info.version
        if settings.default_model and settings.default_model not in self._models:
            raise UnknownModel(
                f"default model {settings.default_model!r} is not in the repository",
                available=sorted(self._models),
            )
        self.default_name = settings.default_model or (min(self._models) if self._models else None)
        self.loaded = False

    def all(self) -> list[ServedModel]:
        return [m for versions in self._models.values() for m in versions.values()]

    def versions_of(self, name: str) -> list[ServedModel]:
        """Every served version of one model (empty for an unknown name)."""
        return list(self._models.get(name, {}).values())

    def default_of(self, name: str) -> ServedModel:
        return self._models[name][self._defaults[name]]

    def get(self, name: str | None, version: int | None = None) -> ServedModel:
        name = name or self.default_name
        if name is None or name not in self._models:
            raise UnknownModel(f"unknown model {name!r}", available=sorted(self._models))
        if version is None:
            return self.default_of(name)
        try:
            return self._models[name][version]
        except KeyError:
            raise UnknownModel(
                f"model {name} has no version {version}",
                available_versions=sorted(self._models[name]),
            ) from None

    # -- lifecycle ---------------------------------------------------------------------
    async def load(self) -> None:
        """Create, warm up and start every model; failures are recorded, not raised."""
        for model in self.all():
            await self._load_one(model)
        self.loaded = True
        ready = [f"{m.name}:{m.number}" for m in self.all() if m.status == "ready"]
        logger.info("models ready: %s", ", ".join(ready) or "none")

    async def _load_one(self, model: ServedModel) -> None:
        info = model.version.info
        try:
            model.engine_name = select_engine(model.entry.config, model.version, self.settings)
            engine = await asyncio.to_thread(
                self._engine_factory, model.entry.config, model.version, self.settings
            )
            if self.settings.warmup:
                await asyncio.to_thread(engine.warmup, model.max_batch_size)
        except Exception as exc:
            model.status, model.error = "failed", f"{type(exc).__name__}: {exc}"
            logger.exception("model %s v%d failed to load", model.name, model.number)
            self.metrics.model_ready.labels(*model.key).set(0)
            return
        model.engine = engine
        model.batcher = Batcher(
            engine,
            BatcherConfig(
                max_batch_size=model.max_batch_size,
                max_queue_delay_ms=self.settings.max_queue_delay_ms,
                max_queue_size=self.settings.max_queue_size,
            ),
            self.metrics,
            model.key,
            collate=model.preprocessor.collate,
        )
        model.batcher.start()
        model.status = "ready"
        self.metrics.model_ready.labels(*model.key).set(1)
        self.metrics.model_info.labels(
            *model.key,
            model.engine_name,
            engine.provider,
            info.weights.display,
            info.precision,
        ).set(1)
        if info.weights.origin == "random":
            logger.warning(
                "model %s v%d has RANDOM (untrained) weights: its predictions are "
                "meaningless; export pretrained weights for real use",
                model.name,
                model.number,
            )
        logger.info(
            "model %s v%d ready on %s (%s)",
            model.name,
            model.number,
            model.engine_name,
            engine.provider,
        )

    async def stop(self, drain_timeout_s: float) -> None:
        """Drain every batcher (in parallel, one shared timeout) and close the engines."""
        batchers = [m.batcher for m in self.all() if m.batcher is not None]
        await asyncio.gather(*(b.stop(drain_timeout_s) for b in batchers))
        for model in self.all():
            if model.engine is not None:
                model.engine.close()
            model.status = "stopped"
            self.metrics.model_ready.labels(*model.key).set(0)
