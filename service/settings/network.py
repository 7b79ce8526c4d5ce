"""Settings of the two listeners: HTTP and V2 gRPC (a field group of :class:`Settings`)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class NetworkSettings(BaseModel):
    """Where the service listens, and what the gRPC server itself bounds."""

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
