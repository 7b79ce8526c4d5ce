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
        0,
        ge=0,
        description="Concurrent V2 gRPC calls (HTTP/2 streams) on one connection; past it "
        "gRPC refuses the call (UNAVAILABLE, RST_STREAM REFUSED_STREAM): clients do not "
        "reliably queue at the limit. 0: twice grpc_max_concurrent_rpcs, every call gRPC "
        "admits, so one channel (as tritonclient opens) can use them all.",
    )
    grpc_idle_timeout_s: float = Field(
        300.0, gt=0, description="A V2 gRPC connection with no call for this long is closed."
    )

    def grpc_calls_admitted(self) -> int:
        """Calls gRPC itself admits at once (its ``maximum_concurrent_rpcs``).

        Twice the pipeline's limit: gRPC reads a whole message before the servicer sees
        it, so the calls past ``grpc_max_concurrent_rpcs`` must reach the pipeline to be
        answered UNAVAILABLE and counted; past this, gRPC answers RESOURCE_EXHAUSTED on
        its own. Times ``grpc_max_message_bytes``, it bounds what gRPC messages hold.
        """
        return 2 * self.grpc_max_concurrent_rpcs

    def effective_grpc_streams_per_connection(self) -> int:
        """The HTTP/2 ``MAX_CONCURRENT_STREAMS`` each V2 gRPC connection announces.

        Unset (0), every call gRPC admits (:meth:`grpc_calls_admitted`): a lower cap
        refuses calls that one channel sends within the service's limits, because gRPC's
        server counts a finished stream a moment longer than the client does and refuses
        the next one (``REFUSED_STREAM``, the client sees UNAVAILABLE) instead of the
        client waiting for room. A refused stream's data is dropped unread.
        """
        if self.grpc_max_streams_per_connection:
            return self.grpc_max_streams_per_connection
        return self.grpc_calls_admitted()
