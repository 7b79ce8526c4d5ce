"""``python -m benchmarks.profile``: where a served image's CPU time goes, under load.

Starts a real server (the shared harness), drives it with the benchmark's closed-loop
client (640x480 JPEGs, ``--concurrency`` in flight), and reads two accounts of it:

1. First, exact: the server's CPU time per thread from /proc, grouped by what each thread
   does (event loop, decode, parse, engine, grpc, other: :mod:`benchmarks.threads`; the
   service names its threads in the OS, :mod:`service.threads`), in CPU-ms per image.
   Trust these figures for "how much does the event loop cost".
2. Then, sampled: py-spy (``--native``: ONNX Runtime's and Pillow's C frames are seen)
   for ``--seconds``, to see *which code* inside a thread costs what. Its shares
   overstate the event loop (and anything else that mostly waits): ``--native`` samples
   the stacks of waiting threads too, and a wait under a Python frame of uvicorn or
   asyncio is filed there; the idle filter below catches only the waits it recognises.
   At resnet18, c16 on a 2-core machine, py-spy's "http + event loop" came out at 3 to
   8 CPU-ms/image from run to run while /proc counted the event-loop thread at 1.0-1.2
   (and the engine's share, taken from the same total, correspondingly too low).

The raw stacks (``<out>/<model>-c<N>.txt``, collapsed-stack format: speedscope.app and
flamegraph tools open it) are then attributed to the stages of the request path (the
innermost frame that names a stage wins; threads blocked in a wait are left out), and
the server's own CPU time over the window (/proc) is split by those shares into CPU-ms
per image.

Why CPU-ms per image and not wall time: on a shared machine other work changes wall
time from run to run, while the CPU a stage costs per image barely moves. Sampling
pauses the server (py-spy's default, needed for native stacks), so the throughput
printed here is lower than an unprofiled run's; compare shares, not img/s.
Needs py-spy (the ``profile`` extra) and ptrace rights on the server process.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks import http, threads
from benchmarks.harness import ServerProcess
from benchmarks.inputs import DEFAULT_CACHE, DEFAULT_PHOTOS, SMALL_SIZE, make_jpegs, source_photos
from benchmarks.options import _setting

#: Stage -> patterns matched against the frames of a stack (first match, leaf first wins
#: the *innermost* stage). Order matters: inner stages before the routes that call them.
ENGINE = "engine (ONNX Runtime)"
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (ENGINE, (r"onnxruntime", r"libgomp", r"mlas", r"\(service/engines/")),
    ("jpeg decode", (r"decode_jpeg|jpeg_|libjpeg|ImageFile\.py|JpegImagePlugin", r"\bload \(")),
    ("resize + crop", (r"resize_crop|ImagingResample|resample", r"\bcrop \(")),
    ("normalise", (r"to_tensor",)),
    ("other preprocess", (r"\(service/preprocess\.py",)),
    ("batch stack", (r"\bstack \(.*numpy",)),
    ("multipart parse", (r"formparsers|python_multipart|multipart", r"\bform \(")),
    ("response build", (r"pydantic|serialize_response|jsonable_encoder|\btop_k|render",)),
    ("metrics", (r"prometheus_client",)),
    ("http + event loop", (r"uvicorn|h11|httptools|asyncio|starlette|fastapi|anyio|uv_|UV",)),
)


#: A thread blocked in one of these (its innermost frames) is waiting, not working: py-spy
#: with ``--native`` reports some waiting threads as active.
IDLE = re.compile(r"epoll|cond_wait|cond_timedwait|acquire_lock|sem_.*wait|futex|nanosleep|poll \(")


def stage_of(stack: list[str]) -> str:
    """The innermost stage any frame of ``stack`` (root first) belongs to, or ``idle``."""
    if any(IDLE.search(frame) for frame in stack[-3:]):
        return "idle"
    for frame in reversed(stack):
        for stage, patterns in STAGES:
            if any(re.search(p, frame) for p in patterns):
                return stage
    return "other"


def attribute(raw: Path) -> Counter[str]:
    """Samples per stage from py-spy's raw (collapsed) output: ``a;b;c <count>``."""
    counts: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[stage_of(stack.split(";"))] += int(count)
    return counts


#: An unsymbolised native frame (``0x7f... (lib.so)``): counted by its library.
_ADDRESS = re.compile(r"^0x[0-9a-f]+ \((.*)\)$")


def top_frames(
    raw: Path, count: int, *, skip: str | None = None
) -> tuple[list[tuple[str, int]], int]:
    """The innermost frames of busy stacks (self time) by samples, and all busy samples
    counted (stacks of the ``skip`` stage left out of both: e.g. the engine, to see
    what runs beside it).

    A frame is shown without its line number, so one function's samples add up; native
    frames without symbols add up per library.
    """
    frames: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        parts = stack.split(";")
        stage = stage_of(parts)
        if stage == "idle" or stage == skip:
            continue
        leaf = re.sub(r":\d+\)$", ")", parts[-1])
        frames[_ADDRESS.sub(r"[native] \1", leaf)] += int(samples)
    return frames.most_common(count), sum(frames.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--repository", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--set", dest="settings", action="append", type=_setting, default=[])
    parser.add_argument("--out", type=Path, default=Path(".cache/profile"))
    parser.add_argument("--top", type=int, default=20, help="innermost frames to list")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise SystemExit("py-spy not found: pip install -e '.[profile]'")
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"{args.model}-c{args.concurrency}.txt"
    with tempfile.TemporaryDirectory(prefix="resnet-profile-") as tmp_name:
        tmp = Path(tmp_name)
        jpegs = make_jpegs(source_photos(DEFAULT_PHOTOS), tmp / "jpegs", SMALL_SIZE, 16)
        bodies = http.multipart_bodies([(p.name, p.read_bytes()) for p in jpegs], 1)
        settings = {"log_level": "warning", **dict(args.settings)}
        with ServerProcess(args.repository, tmp / "server.log", **settings) as server:
            version = next(m["version"] for m in server.models() if m["name"] == args.model)
            command = [py_spy, "record", "--pid", str(server.process.pid), "--native"]
            command += ["--rate", str(args.rate), "--duration", str(int(args.seconds) + 2)]
            command += ["--format", "raw", "--output", str(raw)]
            spy = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            budget = http.LoadBudget(max_requests=100_000, max_time_s=args.seconds, warmup_s=1)
            cpu_before = server.cpu_seconds()
            threads_before = threads.snapshot(server.process.pid)
            row = http.run_level(
                server, args.model, version, bodies, 1, args.concurrency, budget, batching="on"
            )
            server_cpu_s = server.cpu_seconds() - cpu_before
            by_thread = threads.cpu_by_group(threads_before, threads.snapshot(server.process.pid))
            _, err = spy.communicate(timeout=args.seconds + 60)
            if spy.returncode != 0:
                raise SystemExit(f"py-spy failed ({spy.returncode}): {err.decode()[-2000:]}")
    images = max(row.requests, 1)  # every request of the level, warm-up included
    counts = attribute(raw)
    idle = counts.pop("idle", 0)
    busy = sum(counts.values()) or 1
    print(
        f"{args.model} c{args.concurrency}: {row.images_per_s:.1f} img/s while sampled, "
        f"p50 {row.p50_ms:.1f} ms, batch {row.mean_batch_size:.2f}; server CPU "
        f"{server_cpu_s * 1000 / images:.1f} ms/image over {images} images (/proc); "
        f"{busy} busy + {idle} idle samples in {raw}"
    )
    print_thread_split(by_thread, server_cpu_s, images)
    print("\nsampled by py-spy (shares of busy samples; the event loop's are inflated):")
    # Shares of the busy samples (ONNX Runtime's pool threads included: py-spy --native
    # sees them) split the server's measured CPU time; py-spy's pauses stretch wall time,
    # so samples / rate would overstate every stage.
    print(f"{'stage':<24}{'share of busy':>14}{'CPU ms/image':>14}")
    per_image_ms = server_cpu_s * 1000 / images
    for stage, count in counts.most_common():
        print(f"{stage:<24}{count / busy:>14.1%}{count / busy * per_image_ms:>14.2f}")
    print_top_frames(raw, args.top, per_image_ms, busy)
    return 0


def print_thread_split(by_thread: dict[str, float], server_cpu_s: float, images: int) -> None:
    """The exact account: each thread group's CPU time (/proc) per image."""
    print(f"\n{'thread group (/proc, exact)':<28}{'CPU ms/image':>14}{'share':>8}")
    total_s = sum(by_thread.values())
    for group, seconds in threads.ms_per_image(by_thread, images).items():
        share = by_thread[group] / total_s if total_s else 0.0
        print(f"{group:<28}{seconds:>14.2f}{share:>8.1%}")
    print(
        f"{'all threads':<28}{total_s * 1000 / images:>14.2f}  (process total "
        f"{server_cpu_s * 1000 / images:.2f}: threads that ended keep theirs there)"
    )


def print_top_frames(raw: Path, top: int, per_image_ms: float, busy: int) -> None:
    """Beside the engine: the innermost frames of every other stage, in CPU ms/image."""
    frames, _ = top_frames(raw, top, skip=ENGINE)
    print(
        f"\ntop {top} frames beside the engine, by self time (share of all busy samples, "
        "CPU ms/image):"
    )
    for frame, count in frames:
        share = count / max(busy, 1)
        print(f"{share:>7.1%} {share * per_image_ms:>7.2f}  {frame[:110]}")


if __name__ == "__main__":
    sys.exit(main())
