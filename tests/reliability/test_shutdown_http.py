"""SIGTERM under load: unready, no new connections, every accepted request answered, exit 0.

A request counts as *accepted* when it was sent well before the signal (the server had
read it) and was still unanswered when the signal came: each of those must get a 200.
Requests sent after the signal may be refused (connection refused, or 503 while the
listener closes) but never answered with another error.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from benchmarks.harness import ServerProcess
from tests.reliability import images
from tests.reliability.load import Load, summary

IMAGE = images.encode(images.photo_like(640, 480), "JPEG", quality=90)
#: Sent this long before SIGTERM, a request is surely in the server's hands.
IN_HANDS_S = 0.5


@pytest.mark.slow
def test_sigterm_under_load_loses_no_accepted_request(
    start_server, model_repository: Path, tmp_path: Path
) -> None:
    srv: ServerProcess = start_server(
        model_repository, max_batch_size=8, max_queue_size=256, drain_timeout_s=30
    )
    # 4 images a request keep each one in the server longer than IN_HANDS_S even on an
    # idle machine; 12 clients x 4 stay well under the queue, so nothing before is a 503.
    files = [("file", (f"{i}.jpg", IMAGE)) for i in range(4)]
    load = Load(srv.url, files, clients=12, duration_s=60, max_requests=3000)
    runner = threading.Thread(target=load.run)
    runner.start()
    for _ in range(100):  # until the queue is busy (bounded: 10 s)
        if len(load.outcomes) >= 12:
            break
        time.sleep(0.1)
    time.sleep(1.0)
    signalled_at = time.monotonic()
    srv.process.send_signal(15)
    exit_code = srv.process.wait(timeout=90)
    exited_at = time.monotonic()
    load.stop.set()
    runner.join(timeout=120)
    assert not runner.is_alive()

    before = [o for o in load.outcomes if o.sent_at < signalled_at - IN_HANDS_S]
    in_flight = [o for o in before if o.sent_at + o.latency_s > signalled_at]
    after = [o for o in load.outcomes if o.sent_at >= signalled_at - IN_HANDS_S]
    figures = {
        "before_signal": summary(before),
        "in_flight_at_signal": summary(in_flight),
        "after_signal": summary(after),
        "drain_s": exited_at - signalled_at,
        "exit_code": exit_code,
    }
    print("\nshutdown figures:", json.dumps(figures, indent=1))
    (tmp_path / "shutdown.json").write_text(json.dumps(figures, indent=1))
    assert exit_code == 0, srv.logs()[-3000:]
    assert in_flight, "no request was in flight at SIGTERM: the test proved nothing"
    assert all(o.status == 200 for o in before), figures
    for o in after:
        refused = o.status is None and o.failure in (
            "ConnectError",
            "RemoteProtocolError",
            "ReadError",
        )
        assert o.status in (200, 503) or refused, (o, figures)
        if o.status == 503:
            assert o.body is not None and o.body["error"]["code"] == "model_unavailable"  # type: ignore[index]
    logs = srv.logs()
    assert "draining" in logs and "Traceback" not in logs, logs[-3000:]
