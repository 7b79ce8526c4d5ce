"""Every service setting, in one place.

Read from ``RESNET_SERVE_*`` environment variables, an optional ``.env``-style settings
file (``RESNET_SERVE_SETTINGS_FILE``) and CLI flags (which win). Nothing reads the
environment at import time: :func:`load_settings` is called by the CLI or the test, and
the result is passed down, so two apps in one process can differ.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "RESNET_SERVE_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    # --- network -------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to bind; use 0.0.0.0 only in a container.")
    port: int = Field(
        8000,
        ge=0,
        le=65535,
        description="HTTP port: /classify, V2 REST, health probes and metrics.",
    )
    # --- V2 gRPC (Open Inference Protocol) -------------------------------------------
    grpc_port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="V2 gRPC port (Open Inference Protocol; 0 turns it off).",
    )
    grpc_host: str | None = Field(
        None, description="Address the V2 gRPC service binds (default: the HTTP host)."
    )
    grpc_max_message_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Largest V2 gRPC request message (gRPC's own default, 4 MiB); raise it "
        "for large FP32 batches. At most max_body_bytes.",
    )
    grpc_max_concurrent_rpcs: int = Field(
        64,
        ge=1,
        description="V2 gRPC inference calls served at once; past it, UNAVAILABLE (retryable) "
        "at once, counted. gRPC reads a message before the service can charge it to the body "
        "budget and admits up to twice this many calls, so 2 x this x grpc_max_message_bytes "
        "bounds what gRPC messages can hold.",
    )
    grpc_max_connections: int = Field(
        256, ge=1, description="V2 gRPC connections open at once; past it, refused by gRPC."
    )
    grpc_max_streams_per_connection: int = Field(
        32, ge=1, description="Concurrent V2 gRPC calls (HTTP/2 streams) on one connection."
    )
    grpc_idle_timeout_s: float = Field(
        300.0, gt=0, description="A V2 gRPC connection with no call for this long is closed."
    )

    # --- models --------------------------------------------------------------------
    repository: Path = Field(Path("models"), description="Model repository folder.")
    default_model: str | None = Field(
        None, description="Model used when a request names none (default: first by name)."
    )
    engine: Literal["onnxruntime", "torchscript"] | None = Field(
        None,
        description="Force this engine for every model that has its artifact "
        "(overrides the model configs).",
    )
    providers: str | None = Field(
        None,
        description="Comma-separated ONNX Runtime execution providers in preference order "
        "(overrides configs), e.g. 'CPUExecutionProvider'.",
    )
    intra_op_threads: int = Field(
        0, ge=0, description="Threads per engine for one batch (0: number of cores)."
    )
    decode_threads: int = Field(
        0, ge=0, description="Threads decoding and resizing images (0: number of cores)."
    )
    intra_op_spinning: bool = Field(
        False,
        description="Let ONNX Runtime's idle intra-op threads spin-wait for work. Off: they "
        "would burn the CPU the decode threads need (see docs/BENCHMARKS.md); on only with "
        "cores to spare.",
    )
    trt_cache_dir: Path = Field(
        Path(".cache/tensorrt"), description="TensorRT engine cache folder (GPU only)."
    )
    warmup: bool = Field(True, description="Run each model once per batch size before ready.")

    # --- model lifecycle -------------------------------------------------------------
    model_control_mode: Literal["none", "explicit", "poll"] = Field(
        "none",
        description="Triton's names. 'none': the repository is read once at start-up. "
        "'explicit': the V2 repository API loads and unloads models. 'poll': the repository "
        "is re-read every repository_poll_secs; a new or removed version folder, or a "
        "changed config.json, is loaded (beside what serves) or unloaded.",
    )
    repository_poll_secs: float = Field(
        15.0,
        ge=0.5,
        le=3600,
        description="Poll mode: seconds between two reads of the repository.",
    )
    admin_api_key: str | None = Field(
        None,
        description="Key of the repository API (header 'X-Admin-Key', gRPC metadata "
        "'x-admin-key'); distinct from api_key. Required by the explicit and poll modes.",
    )
    admin_api_key_file: Path | None = Field(
        None, description="Read the admin key from this file (stripped), e.g. a mounted secret."
    )
    gate_recheck_secs: float = Field(
        0.0,
        ge=0,
        description="Re-run each serving version's correctness gate this often, through "
        "its batcher (0: only at load). A refusal is exposed (metric, index, log), not "
        "acted on.",
    )
    model_memory_budget_bytes: int = Field(
        0,
        ge=0,
        description="Memory the loaded model versions may hold together (0: no limit), "
        "each estimated as model_memory_factor x its artifact size; a load past it is "
        "refused. A swap holds the old and the new version at once. See README, memory.",
    )
    model_memory_factor: float = Field(
        8.0,
        ge=1.0,
        le=100.0,
        description="Resident memory of a loaded version per byte of its artifact (weights, "
        "the engine's copies, activation arenas): measured 3.3x for a ResNet-18 session, "
        "7.2x once warmed up to batch 32 on CPU; see README, memory.",
    )

    # --- model selection -----------------------------------------------------------
    models: str | None = Field(
        None,
        description="Comma-separated names of the repository's models to serve (default: "
        "every model); the others are never read, so they cost no start-up time or memory.",
    )

    # --- batching ------------------------------------------------------------------
    max_batch_size: int = Field(32, ge=1, le=1024, description="Most images run in one batch.")
    max_queue_delay_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="Longest a batch waits for images still being decoded; never waits "
        "when nothing else is arriving.",
    )
    max_queue_size: int = Field(
        256, ge=1, description="Images queued or being decoded per model before 503."
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="Deadline of a request; past it, queued images are not run (504)."
    )

    # --- limits --------------------------------------------------------------------
    max_body_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest request body, enforced while streaming."
    )
    max_images_per_request: int = Field(64, ge=1, description="Most images in one request.")
    min_body_rate_bytes_per_s: int = Field(
        16 * 1024,
        ge=1,
        description="Slowest average rate a request body may arrive at, after "
        "body_rate_grace_s; slower is 408 (a trickling client cannot hold a request).",
    )
    body_rate_grace_s: float = Field(
        5.0, ge=0, description="Seconds a body may take before min_body_rate_bytes_per_s applies."
    )
    max_parse_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1024 * 1024,
        description="Most memory the parsed form of one request body may take (bounded from "
        "the body before it is parsed; one body is parsed at a time); past it, 413.",
    )
    max_json_values: int = Field(
        262_144,
        ge=1024,
        description="Most values (numbers, strings, lists...) in a V2 JSON request; past it, "
        "413 before parsing. Bounds JSON parse time; send images as BYTES or tensors with "
        "the binary tensor extension for more.",
    )
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest width*height accepted, checked before decoding."
    )
    max_top_k: int = Field(100, ge=1, description="Largest top_k a client may ask for.")
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest request line plus headers; past it, 431 and the connection "
        "is closed (bounded in the HTTP protocol, before any request handling).",
    )
    max_connections: int = Field(
        1024,
        ge=1,
        description="Open connections (and requests in progress) at once, counted when "
        "accepted (silent ones and partial heads too); past it, the connection waiting longest "
        "for a head gives way (after half head_timeout_s), else 503 + Retry-After at once. "
        "With max_header_bytes, bounds the memory request heads can hold.",
    )
    max_body_bytes_in_flight: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Request-body bytes held at once across all requests (being read or "
        "waiting to be decoded); past it a request gets 503 + Retry-After at once.",
    )
    max_decode_bytes_in_flight: int = Field(
        768 * 1024 * 1024,
        ge=1024 * 1024,
        description="Decode memory held at once across the decode threads, each image's "
        "cost bounded from its header; a decode waits for room (bounded by its deadline). "
        "Must hold one maximal image: see docs/LIMITS.md, memory budget.",
    )
    stuck_batch_after_s: float = Field(
        10.0,
        gt=0,
        description="A batch running longer than this marks its model not ready until "
        "it ends (a stuck engine); visible as resnet_serve_batch_running_seconds.",
    )
    drain_timeout_s: float = Field(
        20.0, ge=0, description="On SIGTERM, how long accepted requests may take to finish."
    )

    # --- decode time ---------------------------------------------------------------
    max_jpeg_scans: int = Field(
        500,
        ge=1,
        description="Most scans (SOS markers) in one JPEG; past it, 413 image_too_costly "
        "from the header. Each scan is another pass over every pixel; encoders write 1 to "
        "a few dozen, libjpeg-turbo calls over 500 unreasonable (TJFLAG_LIMITSCANS).",
    )
    max_decode_work: int = Field(
        40_000_000 * 64,
        ge=1,
        description="Most decode work of one image in pixel-passes (full-size pixels x "
        "passes: JPEG scans, Adam7 interlace), estimated from the header; past it, 413 "
        "image_too_costly. Default: a 40 MP image with 64 scans (~2 s of decode).",
    )
    heavy_decode_work: int = Field(
        200_000_000,
        ge=1,
        description="Images whose decode work (pixel-passes) is above this decode in the "
        "heavy lane (heavy_decode_threads), so that they never take every decode thread "
        "from cheap images. Default: 20 MP progressive with 10 scans (~0.3 s).",
    )
    heavy_decode_threads: int = Field(
        1,
        ge=1,
        description="Threads of the heavy decode lane; fewer than decode_threads, so the "
        "cheap lane keeps its own.",
    )

    # --- connections ---------------------------------------------------------------
    head_timeout_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="A request line and headers must arrive within this long of the "
        "connection opening (or of the next request's first byte on a keep-alive "
        "connection); past it, 408 and the connection is closed.",
    )
    keep_alive_timeout_s: int = Field(
        5,
        ge=1,
        le=3600,
        description="An idle keep-alive connection is closed after this long without a "
        "new request (uvicorn's timeout_keep_alive).",
    )

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
        if not isinstance(data, dict) or not data.get("api_key_file"):
            return data
        if data.get("api_key"):
            raise ValueError("give the API key once: api_key or api_key_file, not both")
        path = Path(data["api_key_file"])
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the API key file {path}: {exc}") from None
        if not key:
            raise ValueError(f"the API key file {path} is empty")
        return {**data, "api_key": key}

    @model_validator(mode="before")
    @classmethod
    def _admin_key_from_file(cls, data: Any) -> Any:
        """Fill ``admin_api_key`` from ``admin_api_key_file`` (a mounted secret)."""
        if not isinstance(data, dict) or not data.get("admin_api_key_file"):
            return data
        if data.get("admin_api_key"):
            raise ValueError(
                "give the admin key once: admin_api_key or admin_api_key_file, not both"
            )
        path = Path(data["admin_api_key_file"])
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the admin key file {path}: {exc}") from None
        if not key:
            raise ValueError(f"the admin key file {path} is empty")
        return {**data, "admin_api_key": key}

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

    def effective_decode_threads(self) -> int:
        # The cores this process may run on (taskset, cpusets), not every core of the host.
        if self.decode_threads:
            return self.decode_threads
        if hasattr(os, "sched_getaffinity"):  # Linux
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1


def load_settings(**overrides: Any) -> Settings:
    """Environment (and settings file) first, then explicit overrides such as CLI flags."""
    settings_file = os.environ.get(f"{ENV_PREFIX}SETTINGS_FILE")
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(_env_file=settings_file, **clean)  # type: ignore[call-arg]
