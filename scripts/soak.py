#!/usr/bin/env python3
"""Bounded soak run: mixed valid/invalid load, RSS sampled over time, error counts.

    python scripts/soak.py --repository models --duration-s 600 --concurrency 8 \
        --out soak.json --csv soak-rss.csv          # starts its own server
    python scripts/soak.py --url http://127.0.0.1:8000 --pid 1234 --duration-s 600

Every request has an expected answer: valid images 200 (or 503 when the queue is full:
refused, not accepted), each invalid input its documented 4xx. Anything else, or a
transport error, is a failure. RSS must level off: the median of the last quarter of
the run is compared with the median of the second quarter (the first quarter is
warm-up). Exit status 1 on any failure or growth above --max-growth-mib.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

# Run as a file (`python scripts/soak.py`) from a source checkout, where `benchmarks`
# (not installed: source tree only) sits beside this folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.harness import REPO_ROOT, ServerProcess, percentile, rss_bytes


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def request_mix(seed: int = 0) -> list[tuple[str, dict[str, object], tuple[int, ...]]]:
    """(name, httpx.post kwargs, accepted statuses); about a third are invalid."""
    rng = np.random.default_rng(seed)
    photo = Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
    jpeg = encode(photo, "JPEG", quality=85)
    png = encode(photo.convert("RGBA"), "PNG")
    bomb = encode(Image.new("1", (8000, 8000)), "PNG")  # tiny file, 64 Mpx header
    ok = (200, 503)

    def files(name: str, data: bytes) -> dict[str, object]:
        return {"files": [("file", (name, data))]}

    return [
        ("jpeg", files("a.jpg", jpeg), ok),
        ("png-rgba", files("a.png", png), ok),
        ("webp", files("a.webp", encode(photo, "WEBP")), ok),
        ("gray", files("g.jpg", encode(photo.convert("L"), "JPEG")), ok),
        ("two-images", {"files": [("file", ("a.jpg", jpeg)), ("file", ("b.png", png))]}, ok),
        ("raw-body", {"content": jpeg, "headers": {"content-type": "image/jpeg"}}, ok),
        ("empty", files("e.jpg", b""), (400,)),
        ("not-image", files("t.txt", b"plain text " * 50), (415,)),
        ("truncated", files("t.jpg", jpeg[: len(jpeg) // 3]), (400,)),
        ("bomb", files("b.png", bomb), (413,)),
        ("top-k", {**files("a.jpg", jpeg), "params": {"top_k": "x"}}, (422,)),
        ("unknown-model", {**files("a.jpg", jpeg), "params": {"model": "nope"}}, (404,)),
    ]


def soak(args: argparse.Namespace, url: str, pid: int | None) -> dict[str, object]:
    mix = request_mix()
    counts: Counter[str] = Counter()
    failures: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    started = time.monotonic()
    until = started + args.duration_s
    budget = iter(range(args.max_requests))

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=60) as session:
            while time.monotonic() < until:
                with lock:
                    if next(budget, None) is None:
                        return
                name, kwargs, accepted = rng.choice(mix)
                t0 = time.monotonic()
                try:
                    status = session.post("/classify", **kwargs).status_code  # type: ignore[arg-type]
                except httpx.HTTPError as exc:
                    status, error = 0, type(exc).__name__
                else:
                    error = ""
                with lock:
                    counts[f"{name} {status or error}"] += 1
                    if status == 200:
                        latencies.append(time.monotonic() - t0)
                    if status not in accepted:
                        failures.append(f"{name}: got {status or error}, expected {accepted}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.concurrency)]
    for thread in threads:
        thread.start()
    samples: list[tuple[float, float]] = []
    while any(t.is_alive() for t in threads):
        if pid is not None:
            samples.append((round(time.monotonic() - started, 2), rss_bytes(pid) / 2**20))
        time.sleep(args.sample_s)
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    report: dict[str, object] = {
        "url": url,
        "duration_s": round(elapsed, 1),
        "concurrency": args.concurrency,
        "requests": sum(counts.values()),
        "counts": dict(sorted(counts.items())),
        "failures": len(failures),
        "failure_examples": failures[:20],
        "ok_p50_ms": round(percentile(latencies, 0.5) * 1000, 1) if latencies else None,
        "ok_p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
        "rss_samples": samples,
    }
    if len(samples) >= 8:
        quarter = len(samples) // 4
        second = statistics.median(r for _, r in samples[quarter : 2 * quarter])
        last = statistics.median(r for _, r in samples[-quarter:])
        report |= {
            "rss_start_mib": samples[0][1],
            "rss_second_quarter_median_mib": second,
            "rss_last_quarter_median_mib": last,
            "rss_peak_mib": max(r for _, r in samples),
            "rss_growth_mib": round(last - second, 1),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--url", help="soak a running server (else start one)")
    parser.add_argument("--pid", type=int, help="server pid for RSS sampling (with --url)")
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--sample-s", type=float, default=1.0)
    parser.add_argument("--max-growth-mib", type=float, default=64.0)
    parser.add_argument("--out", type=Path, default=Path("soak.json"))
    parser.add_argument("--csv", type=Path, help="also write RSS samples as CSV")
    args = parser.parse_args(argv)

    server = None
    if args.url:
        url, pid = args.url.rstrip("/"), args.pid
    else:
        log = args.out.with_suffix(".server.log")
        # A small queue so overload (503) is part of the mix; a request holds at most
        # 2 images here, and the server refuses a queue smaller than its largest request.
        server = ServerProcess(args.repository, log, max_queue_size=32, max_images_per_request=8)
        try:
            server.wait_ready(timeout_s=120)
        except BaseException:
            server.stop()
            raise
        url, pid = server.url, server.process.pid
    try:
        report = soak(args, url, pid)
        if server is not None:
            report["rss_peak_since_start_mib"] = round(server.peak_rss_bytes() / 2**20, 1)
    finally:
        exit_code = server.stop(timeout_s=60) if server is not None else None
    if server is not None:
        report["server_exit_code"] = exit_code
    growth = report.get("rss_growth_mib")
    report["ok"] = report["failures"] == 0 and (growth is None or growth <= args.max_growth_mib)
    args.out.write_text(json.dumps(report, indent=1))
    if args.csv:
        with args.csv.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["elapsed_s", "rss_mib"])
            writer.writerows(report["rss_samples"])  # type: ignore[arg-type]
    shown = {k: v for k, v in report.items() if k not in ("rss_samples", "counts")}
    print(json.dumps(shown, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
