"""Load well past capacity on the real server, for a bounded time.

Shows: every accepted request answered correctly, rejections (503 + Retry-After) fast,
client deadlines answered 504, /health/live responsive throughout, and the server's RSS
back to its steady state afterwards. Figures are printed (``-s``) and written as JSON.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.harness import ServerProcess, percentile
from tests.reliability import images
from tests.reliability.load import Load, summary

LOAD_S = 10.0
IMAGE = images.encode(images.photo_like(320, 240), "JPEG", quality=90)
FILES = [("file", ("load.jpg", IMAGE))]


def probe_live(url: str, stop: threading.Event, latencies: list[float]) -> None:
    """GET /health/live every 50 ms until stopped (bounded to 1000 probes)."""
    for _ in range(1000):
        if stop.wait(0.05):
            return
        started = time.monotonic()
        response = httpx.get(f"{url}/health/live", timeout=10)
        assert response.status_code == 200
        latencies.append(time.monotonic() - started)


@pytest.mark.slow
def test_overload_is_refused_fast_and_accepted_requests_are_answered(
    start_server, model_repository: Path, tmp_path: Path
) -> None:
    srv: ServerProcess = start_server(
        model_repository,
        max_batch_size=4,
        max_queue_size=8,
        max_images_per_request=8,
        request_timeout_s=10,
    )
    alone = httpx.post(f"{srv.url}/classify", files=FILES, timeout=60).json()
    want = alone["results"][0]["predictions"]

    # Warm-up at the same load shape, so the baseline RSS is the steady state.
    Load(srv.url, FILES, clients=8, duration_s=3, max_requests=2000).run()
    time.sleep(1)
    rss_before = srv.rss_bytes()

    stop_probe, live_latencies = threading.Event(), []
    prober = threading.Thread(target=probe_live, args=(srv.url, stop_probe, live_latencies))
    prober.start()
    greedy = Load(srv.url, FILES, clients=16, duration_s=LOAD_S, max_requests=20_000)
    hurried = Load(
        srv.url,
        FILES,
        clients=4,
        duration_s=LOAD_S,
        max_requests=2_000,
        headers={"X-Request-Timeout-Ms": "20"},
    )
    runners = [threading.Thread(target=load.run) for load in (greedy, hurried)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(timeout=180)
    # The kernel's high-water mark: a peak between two samples cannot be missed.
    rss_peak = srv.peak_rss_bytes()
    stop_probe.set()
    prober.join(timeout=30)
    time.sleep(2)
    rss_after = srv.rss_bytes()

    outcomes = greedy.outcomes + hurried.outcomes
    counts = summary(outcomes)
    # Nothing but 200, 503 (full queue), and the hurried clients' 20 ms deadlines: 504,
    # or 408 when it passed while their body was still being read (the deadline covers
    # the body read too). Greedy clients, with the service's 10 s deadline, get neither.
    assert set(counts) <= {"200", "408", "503", "504"}, counts
    assert {o.status for o in greedy.outcomes} <= {200, 503}, summary(greedy.outcomes)
    assert counts.get("503", 0) > 0, f"the load never filled the queue: {counts}"
    assert counts.get("504", 0) > 0, f"no client deadline ever expired: {counts}"
    for o in outcomes:
        assert o.body is not None
        if o.status == 200:
            got = o.body["results"][0]["predictions"]  # type: ignore[index]
            assert [p["index"] for p in got] == [p["index"] for p in want]
            for g, w in zip(got, want, strict=True):
                assert g["score"] == pytest.approx(w["score"], abs=1e-4)
        elif o.status == 503:
            assert o.body["error"]["code"] == "overloaded"  # type: ignore[index]
            assert o.retry_after is not None and o.retry_after.isdigit()
        elif o.status == 408:
            assert o.body["error"]["code"] == "request_timeout"  # type: ignore[index]
        else:
            assert o.body["error"]["code"] == "deadline_exceeded"  # type: ignore[index]

    ok = [o.latency_s for o in outcomes if o.status == 200]
    refused = [o.latency_s for o in outcomes if o.status == 503]
    figures = {
        "load_s": LOAD_S,
        "counts": counts,
        "accepted_p50_ms": percentile(ok, 0.5) * 1000,
        "accepted_p99_ms": percentile(ok, 0.99) * 1000,
        "refused_p50_ms": percentile(refused, 0.5) * 1000,
        "refused_p99_ms": percentile(refused, 0.99) * 1000,
        "live_probes": len(live_latencies),
        "live_max_ms": max(live_latencies) * 1000,
        "rss_before_mib": rss_before / 2**20,
        "rss_peak_mib": rss_peak / 2**20,
        "rss_after_mib": rss_after / 2**20,
    }
    print("\noverload figures:", json.dumps(figures, indent=1))
    (tmp_path / "overload.json").write_text(json.dumps(figures, indent=1))
    # Refusals skip decoding and the queue: faster than answered requests.
    assert percentile(refused, 0.5) < percentile(ok, 0.5)
    # Liveness: answered throughout (generous bound on a shared 2-core machine).
    assert len(live_latencies) >= LOAD_S and max(live_latencies) < 3.0
    # Memory back to steady state: within 64 MiB of the warmed-up baseline.
    assert rss_after - rss_before < 64 * 2**20, figures
    assert srv.process.poll() is None
