"""A bounded HTTP load generator for the overload/shutdown tests.

Every loop is bounded in count and in time. Each request opens a fresh connection
(``Connection: close``), so an outcome is per request, never a keep-alive artefact.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class Outcome:
    sent_at: float  # time.monotonic() when the request started
    latency_s: float
    status: int | None  # None: no HTTP response (see ``failure``)
    failure: str = ""  # exception class name when there was no response
    body: dict[str, object] | None = None
    retry_after: str | None = None


@dataclass
class Load:
    """``clients`` threads posting ``files`` until ``stop`` is set or a bound is hit."""

    url: str
    files: list[tuple[str, tuple[str, bytes]]]
    clients: int
    duration_s: float
    max_requests: int
    headers: dict[str, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    outcomes: list[Outcome] = field(default_factory=list)

    def run(self) -> list[Outcome]:
        until = time.monotonic() + self.duration_s
        budget = iter(range(self.max_requests))
        lock = threading.Lock()

        def client() -> None:
            while not self.stop.is_set() and time.monotonic() < until:
                with lock:
                    if next(budget, None) is None:
                        return
                outcome = self.one()
                with lock:
                    self.outcomes.append(outcome)

        with ThreadPoolExecutor(self.clients) as pool:
            for future in [pool.submit(client) for _ in range(self.clients)]:
                future.result(timeout=self.duration_s + 120)
        return self.outcomes

    def one(self) -> Outcome:
        started = time.monotonic()
        try:
            response = httpx.post(
                f"{self.url}/classify",
                files=self.files,
                headers={"Connection": "close", **self.headers},
                timeout=60,
            )
        except httpx.HTTPError as exc:
            return Outcome(started, time.monotonic() - started, None, type(exc).__name__)
        try:
            body = response.json()
        except ValueError:
            body = None
        return Outcome(
            started,
            time.monotonic() - started,
            response.status_code,
            body=body,
            retry_after=response.headers.get("retry-after"),
        )


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    return dict(Counter(str(o.status or o.failure) for o in outcomes))
