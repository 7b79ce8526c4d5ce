"""One served model version: its config, preprocessor, engine and batcher once loaded.

Requests hold the :class:`ServedModel` they were admitted to (and its batcher) until
they are answered, so a swap or an unload that replaces it in the pool never moves a
request to another version mid-way: the old instance drains what it admitted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from service.batching import Batcher
from service.engines.base import Engine
from service.errors import ModelUnavailable
from service.preprocess import Limits, Preprocessor
from service.repository import ModelConfig, ModelEntry, ModelVersion
from service.settings import Settings

Status = Literal["loading", "ready", "failed", "unloading", "stopped"]
GateOutcome = Literal["", "passed", "refused", "skipped"]
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
    #: The correctness gate's verdict at this load ("" until it ran).
    gate: GateOutcome = ""
    #: Why a periodic re-check of the gate refused this version (it still serves).
    gate_reason: str = ""
    #: Estimated memory held in the model-memory budget while loaded.
    memory_bytes: int = 0
    #: Why the last load failed, as raised (the pool tells memory refusals apart).
    load_error: Exception | None = field(default=None, repr=False)

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
