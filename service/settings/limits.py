"""Settings that bound what requests and connections may take: batching, body and image
limits, decode work and connection timeouts (a field group of :class:`Settings`)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LimitSettings(BaseModel):
    """Every bound a request or a connection meets, from its head to its batch."""

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
