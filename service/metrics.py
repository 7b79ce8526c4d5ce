"""Every Prometheus metric of the service, defined once.

Each app gets its own :class:`Metrics` on its own registry, so two apps in one process
(tests) never collide and nothing is registered at import time. Call sites only observe.

Names end with their unit (``_seconds``, ``_bytes``), as Prometheus' naming guide asks;
the Python attributes kept their earlier names (``body_bytes_in_flight``) so call sites
did not change when the exported names did (CHANGELOG lists the old names).
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

PREFIX = "resnet_serve"

#: Latencies from ~1 ms (a 32x32 CIFAR batch) to 10 s (a large batch on a loaded CPU or
#: a request stuck behind a deep queue); dense between 5 and 250 ms where ResNet-50 on
#: CPU and GPU lives, so p50/p95/p99 interpolate well.
LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.35,
    0.5,
    0.75,
    1.0,
    1.5,
    2.5,
    5.0,
    10.0,
)
#: Loading a version (engine session, warm-up per batch size, gate): ~50 ms for a CIFAR
#: ResNet on CPU to minutes for a TensorRT engine build on first load.
LOAD_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: The gate: a few single-image forwards, ~5 ms (CIFAR, CPU) to ~2 s (ResNet-152, CPU).
GATE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: States a version goes through (see service/lifecycle.py).
VERSION_STATES = ("loading", "ready", "failed", "unloading", "stopped")
GATE_OUTCOMES = ("passed", "refused", "skipped")

#: Powers of two, the batch sizes engines are warmed up and usually tuned for.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

MODEL_LABELS = ("model", "version")
#: Per-request series also carry the front door: "classify", "v2-rest" or "v2-grpc".
REQUEST_LABELS = (*MODEL_LABELS, "protocol")


class Metrics:
    """The service's metrics on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No `<name>_created` series: they doubled the series count, and PromQL derives
        # resets from the counters themselves. The library's switch is process-wide (read
        # when a scrape collects), which suits a process that is this service.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Inference requests answered, by front door and HTTP status code (gRPC answers "
            "are counted by the HTTP status of the same error; 499: the client hung up).",
            (*REQUEST_LABELS, "code"),
            registry=r,
        )
        self.images = Counter(
            f"{PREFIX}_images", "Images classified successfully.", REQUEST_LABELS, registry=r
        )
        self.request_duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "End-to-end time of an inference request, body read to response ready.",
            REQUEST_LABELS,
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.preprocess_duration = Histogram(
            f"{PREFIX}_preprocess_duration_seconds",
            "Decode + resize + normalise time of one image (in the decode pool).",
            MODEL_LABELS,
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.cpu_turn_wait = Histogram(
            f"{PREFIX}_cpu_turn_wait_seconds",
            "Time spent waiting for a turn on the cores (cpu_turns), by side: 'batch' "
            "(a CPU batch let the decodes in flight finish), 'decode' (a decode waited for "
            "a CPU batch to end). Counted only when there was something to wait for.",
            ("side",),
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "Time an image waited in the batch queue before its batch started.",
            MODEL_LABELS,
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.inference_duration = Histogram(
            f"{PREFIX}_inference_duration_seconds",
            "Engine time of one batch.",
            MODEL_LABELS,
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size",
            "Images per engine batch.",
            MODEL_LABELS,
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth",
            "Images waiting in the batch queue.",
            MODEL_LABELS,
            registry=r,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_in_flight_requests",
            "Requests accepted and not yet answered.",
            REQUEST_LABELS,
            registry=r,
        )
        self.model_info = Gauge(
            f"{PREFIX}_model_info",
            "Served model versions (value 1) and how they run.",
            (*MODEL_LABELS, "engine", "provider", "weights", "precision"),
            registry=r,
        )
        self.batch_running = Gauge(
            f"{PREFIX}_batch_running_seconds",
            "Age of the batch the engine is running now (0 when idle): a value that keeps "
            "growing is a stuck engine, and the model is then reported not ready.",
            MODEL_LABELS,
            registry=r,
        )
        self.body_bytes_in_flight = Gauge(
            f"{PREFIX}_body_in_flight_bytes",
            "Request-body bytes held (being read or waiting to be decoded).",
            registry=r,
        )
        self.body_bytes_budget = Gauge(
            f"{PREFIX}_body_budget_bytes",
            "Capacity of the body-bytes budget; past it requests get 503.",
            registry=r,
        )
        self.decode_bytes_in_flight = Gauge(
            f"{PREFIX}_decode_in_flight_bytes",
            "Decode memory held now (each image's cost bounded from its header).",
            registry=r,
        )
        self.decode_bytes_budget = Gauge(
            f"{PREFIX}_decode_budget_bytes",
            "Capacity of the decode-memory budget; past it decodes wait for room.",
            registry=r,
        )
        self.model_ready = Gauge(
            f"{PREFIX}_model_ready",
            "1 when the model version is loaded, warmed up and serving.",
            MODEL_LABELS,
            registry=r,
        )
        self._lifecycle(r)
        # Process (CPU seconds, RSS, open fds), Python platform and GC figures, on this
        # registry rather than the global one: /metrics serves only this registry.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    def _lifecycle(self, r: CollectorRegistry) -> None:
        """Model loads, unloads, the correctness gate and the model-memory budget."""
        self.model_loads = Counter(
            f"{PREFIX}_model_loads",
            "Version loads by outcome: 'loaded', 'failed' (engine or repository error), "
            "'gate_refused', 'memory_refused'.",
            ("model", "outcome"),
            registry=r,
        )
        self.model_unloads = Counter(
            f"{PREFIX}_model_unloads",
            "Versions unloaded (drained, engine closed) by outcome: 'unloaded' (asked "
            "for, or gone from the repository) or 'replaced' (a new load took over).",
            ("model", "outcome"),
            registry=r,
        )
        self.model_load_duration = Histogram(
            f"{PREFIX}_model_load_duration_seconds",
            "Time to load one version: engine, warm-up and gate.",
            ("model",),
            buckets=LOAD_BUCKETS_S,
            registry=r,
        )
        self.gate_duration = Histogram(
            f"{PREFIX}_gate_duration_seconds",
            "Time of one correctness-gate run (golden images through the chosen engine).",
            ("model",),
            buckets=GATE_BUCKETS_S,
            registry=r,
        )
        self.gate_outcome = Enum(
            f"{PREFIX}_gate_outcome",
            "The last gate result of each version ('skipped': no golden set recorded).",
            MODEL_LABELS,
            states=list(GATE_OUTCOMES),
            registry=r,
        )
        self.model_state = Enum(
            f"{PREFIX}_model_state",
            "Lifecycle state of each version the server knows.",
            MODEL_LABELS,
            states=list(VERSION_STATES),
            registry=r,
        )
        self.model_memory_bytes = Gauge(
            f"{PREFIX}_model_memory_bytes",
            "Estimated memory of the loaded versions (model_memory_factor x artifact size).",
            registry=r,
        )
        self.model_memory_budget_bytes = Gauge(
            f"{PREFIX}_model_memory_budget_bytes",
            "Capacity of the model-memory budget (0: no limit).",
            registry=r,
        )
