"""The :class:`Settings` class: its field groups composed, and the checks across them.

The fields live in one group per concern (:mod:`.network`, :mod:`.models`, :mod:`.limits`;
security and operations here); pydantic collects them from the bases, so ``Settings`` is
still one flat settings class: one ``RESNET_SERVE_<NAME>`` variable and one CLI flag per
field. The bases are listed last group first: pydantic orders fields from the most basic
class up, which keeps the field order (and ``--help``) as it was.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.settings.keys import key_from_file
from service.settings.limits import LimitSettings
from service.settings.models import ModelSettings
from service.settings.network import NetworkSettings

ENV_PREFIX = "RESNET_SERVE_"


class Settings(LimitSettings, ModelSettings, NetworkSettings, BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    # --- security ------------------------------------------------------------------
    api_key: str | None = Field(
        None,
        description="If set, /classify and /models need header 'X-API-Key' with this value.",
    )
    cors_origins: str = Field(
        "", description="Comma-separated allowed CORS origins (off if empty)."
    )

    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # --- operations: start-up checks, secrets from files, logs, tracing ---------------
    strict: bool = Field(
        False,
        description="Exit non-zero at start-up when a model fails to load or a requested "
        "GPU provider is not the one running (Triton's exit-on-error).",
    )
    require_all_models: bool = Field(
        False, description="Ready only when every model serves, not just the default one."
    )
    api_key_file: Path | None = Field(
        None,
        description="Read the API key from this file (stripped), e.g. a mounted secret; "
        "keeps the key off the command line.",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="'json': one JSON object per log line, with the request id."
    )
    tracing: bool = Field(
        False,
        description="Export OpenTelemetry spans, configured by the standard OTEL_* "
        "environment variables (needs the 'tracing' extra).",
    )

    @model_validator(mode="before")
    @classmethod
    def _api_key_from_file(cls, data: Any) -> Any:
        """Fill ``api_key`` from ``api_key_file``: a mounted secret never appears in ``ps``."""
        return key_from_file(data, key="api_key", what="the API key")

    @model_validator(mode="before")
    @classmethod
    def _admin_key_from_file(cls, data: Any) -> Any:
        """Fill ``admin_api_key`` from ``admin_api_key_file`` (a mounted secret)."""
        return key_from_file(data, key="admin_api_key", what="the admin key")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Refuse settings that would make valid requests fail forever, at start-up."""
        problems = []
        if self.max_images_per_request > self.max_queue_size:
            problems.append(
                f"max_images_per_request ({self.max_images_per_request}) must be <= "
                f"max_queue_size ({self.max_queue_size}): a full request could never fit"
            )
        if self.grpc_max_message_bytes > self.max_body_bytes:
            problems.append(
                f"grpc_max_message_bytes ({self.grpc_max_message_bytes}) must be <= "
                f"max_body_bytes ({self.max_body_bytes}): one limit for a request's bytes"
            )
        if self.max_body_bytes > self.max_body_bytes_in_flight:
            problems.append(
                f"max_body_bytes ({self.max_body_bytes}) must be <= max_body_bytes_in_flight "
                f"({self.max_body_bytes_in_flight}): a maximal body could never be admitted"
            )
        if self.max_decode_work < self.max_image_pixels:
            problems.append(
                f"max_decode_work ({self.max_decode_work}) must be >= max_image_pixels "
                f"({self.max_image_pixels}): an image at the pixel cap, decoded in one pass, "
                "could never be accepted"
            )
        if self.port == self.grpc_port != 0:
            problems.append(
                f"port and grpc_port are both {self.port}: HTTP and V2 gRPC need a port each"
            )
        problems.extend(self._lifecycle_problems())
        selected = self.model_names()
        if selected is not None and not selected:
            problems.append(f"models ({self.models!r}) names no model: give at least one name")
        if selected and self.default_model and self.default_model not in selected:
            problems.append(
                f"default_model ({self.default_model!r}) must be one of models "
                f"({', '.join(selected)}): the default would never be loaded"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _lifecycle_problems(self) -> list[str]:
        """The repository API loads code into the server: never without its own key."""
        if self.model_control_mode == "none":
            return []
        if not self.admin_api_key:
            return [
                f"model_control_mode {self.model_control_mode!r} needs an admin key: set "
                "admin_api_key or admin_api_key_file (the repository API is refused without one)"
            ]
        if self.api_key is not None and self.admin_api_key == self.api_key:
            return [
                "admin_api_key must differ from api_key: an inference client must not "
                "be able to load or unload models"
            ]
        return []

    def model_names(self) -> tuple[str, ...] | None:
        """The models to serve, in the order given; None: every model of the repository."""
        if self.models is None:
            return None
        return tuple(dict.fromkeys(n.strip() for n in self.models.split(",") if n.strip()))

    def provider_list(self) -> tuple[str, ...] | None:
        if not self.providers:
            return None
        return tuple(p.strip() for p in self.providers.split(",") if p.strip())

    def cpu_turns_enabled(self) -> bool:
        """Whether CPU engines and decodes take turns: 'auto' when the engines' intra-op
        threads (0: one per core) cover every core this process may run on."""
        if self.cpu_turns != "auto":
            return self.cpu_turns == "on"
        return self.intra_op_threads == 0 or self.intra_op_threads >= self.usable_cores()

    def usable_cores(self) -> int:
        """The cores this process may run on (taskset, cpusets), not every core of the host."""
        if hasattr(os, "sched_getaffinity"):  # Linux
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1

    def effective_decode_threads(self) -> int:
        return self.decode_threads or self.usable_cores()


def load_settings(**overrides: Any) -> Settings:
    """Environment (and settings file) first, then explicit overrides such as CLI flags."""
    settings_file = os.environ.get(f"{ENV_PREFIX}SETTINGS_FILE")
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(_env_file=settings_file, **clean)  # type: ignore[call-arg]
