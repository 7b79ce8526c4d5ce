"""How much to measure (full vs --quick) and the sections that measure in-process or
over ``/classify`` alone (the front doors, Triton and phone photos: :mod:`benchmarks.sidebyside`).

Every cell is bounded in count and time, and the whole run has a deadline: cells that
would start after it are skipped and listed in the notes, so a slow or loaded machine
gives a shorter report, never a run that does not end.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import engine, http, preprocess
from benchmarks.harness import ServerProcess
from benchmarks.inputs import label
from service.preprocess import Limits, Preprocessor
from service.repository import ModelEntry, ModelVersion
from service.settings import Settings

Model = tuple[ModelEntry, ModelVersion]


@dataclass
class Plan:
    engines: list[str]
    batch_sizes: list[int]
    concurrency: list[int]
    off_concurrency: list[int]
    images_per_request: int
    server_settings: dict[str, str]
    engine_budget: engine.EngineBudget
    load_budget: http.LoadBudget
    preprocess_passes: int
    preprocess_max_time_s: float
    small_images: int
    large_images: int
    deadline_s: float
    #: The front doors (ours and Triton's): every door at each of these levels, a few
    #: seconds per door and level.
    doors_concurrency: list[int]
    doors_budget: http.LoadBudget
    #: Rounds per level, servers alternating; each cell keeps its median round.
    doors_rounds: int
    #: The phone-photo workload: 12 MP JPEGs made per run, one level, and how many
    #: photos the in-process decode limit runs.
    phone_images: int
    phone_concurrency: int
    phone_decode_images: int
    triton_python: Path
    device: str | None = None
    fp16: bool = False
    server_cpus: str | None = None
    started: float = field(default_factory=time.monotonic)
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        quick = bool(args.quick)
        concurrency = args.concurrency or ([1, 4] if quick else [1, 4, 16, 64])
        settings = dict(args.server_settings)
        if args.providers:
            settings["providers"] = args.providers
        return cls(
            engines=[e.strip() for e in args.engines.split(",") if e.strip()],
            batch_sizes=args.batch_sizes or ([1, 2] if quick else [1, 2, 4, 8, 16, 32]),
            concurrency=concurrency,
            off_concurrency=(
                args.off_concurrency
                if args.off_concurrency is not None
                else ([4] if quick else [16, 64])
            ),
            images_per_request=args.images_per_request,
            server_settings=settings,
            engine_budget=(
                engine.EngineBudget(min_runs=2, min_time_s=0.1, max_runs=5, max_time_s=2.0)
                if quick
                else engine.EngineBudget()
            ),
            load_budget=(
                http.LoadBudget(max_requests=12, max_time_s=5.0, warmup_s=0.0, timeout_s=30.0)
                if quick
                else http.LoadBudget()
            ),
            preprocess_passes=1 if quick else 5,
            preprocess_max_time_s=1.0 if quick else 4.0,
            small_images=4 if quick else 16,
            large_images=1 if quick else 4,
            deadline_s=240.0 if quick else 1200.0,
            doors_concurrency=args.doors_concurrency or ([4] if quick else [1, 4, 16, 64, 128]),
            doors_budget=(
                http.LoadBudget(max_requests=8, max_time_s=2.0, warmup_s=0.0, timeout_s=30.0)
                if quick
                else http.LoadBudget(max_requests=4000, max_time_s=5.0, warmup_s=1.5)
            ),
            doors_rounds=args.doors_rounds,
            phone_images=1 if quick else 4,
            phone_concurrency=args.phone_concurrency or (2 if quick else 16),
            phone_decode_images=2 if quick else 32,
            triton_python=args.triton_python,
            device=args.device,
            fp16=bool(args.fp16),
            server_cpus=args.server_cpus,
        )

    def describe(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("started")
        data.pop("skipped")
        data["triton_python"] = str(self.triton_python)
        return data

    def time_left(self, what: str) -> bool:
        """False (and the cell noted as skipped) once the run's deadline has passed."""
        if time.monotonic() - self.started < self.deadline_s:
            return True
        self.skipped.append(what)
        return False

    def server_base_settings(self) -> Settings:
        return Settings(**self.server_settings)  # type: ignore[arg-type]


def _tensors(model: Model, images: list[Path], settings: Settings) -> list[Any]:
    pre = Preprocessor(model[0].config.preprocessing, Limits(max_pixels=settings.max_image_pixels))
    return [pre(p.read_bytes()) for p in images[:8]]


def run_engines(
    plan: Plan, models: list[Model], images: list[Path], results: dict[str, Any]
) -> None:
    print("== engine limit (in-process, preprocessed tensors)", flush=True)
    settings = plan.server_base_settings()
    for model in models:
        tensors = _tensors(model, images, settings)
        for name in plan.engines:
            if not plan.time_left(f"engine {label(*model)} {name}"):
                continue
            rows, reason = engine.bench_engine(
                *model,
                name,
                tensors,
                plan.batch_sizes,
                settings,
                plan.engine_budget,
                device=plan.device,
                fp16=plan.fp16,
            )
            results["engine"] += engine.rows_as_dicts(rows)
            if reason:
                print(f"  engine {label(*model)} {name}: skipped ({reason})", flush=True)
                results["engine_skipped"].append(
                    {"variant": label(*model), "engine": name, "reason": reason}
                )


def run_preprocess(
    plan: Plan, entry: ModelEntry, small: list[Path], large: list[Path], results: dict[str, Any]
) -> None:
    print(f"== preprocessing ({entry.config.name} recipe)", flush=True)
    settings = plan.server_base_settings()
    for name, paths in (("small", small), ("large", large)):
        row = preprocess.bench_preprocess(
            name,
            paths,
            entry.config.preprocessing,
            settings,
            passes=plan.preprocess_passes,
            max_time_s=plan.preprocess_max_time_s,
        )
        print(
            f"  {name} {row.width}x{row.height}: {row.total_ms_p50:.2f} ms/image p50, "
            f"{row.images_per_s_threaded:.0f} img/s on {row.threads} threads",
            flush=True,
        )
        results["preprocess"].append(asdict(row))


def run_http(
    plan: Plan,
    repository: Path,
    models: list[Model],
    images: list[Path],
    tmp: Path,
    results: dict[str, Any],
) -> None:
    blobs = [(p.name, p.read_bytes()) for p in images]
    bodies = http.multipart_bodies(blobs, plan.images_per_request)
    servers = [("on", plan.server_settings, plan.concurrency)]
    if plan.off_concurrency:
        off = {**plan.server_settings, "max_batch_size": "1"}
        servers.append(("off", off, plan.off_concurrency))
    for batching, settings, levels in servers:
        if not plan.time_left(f"http server batching {batching}"):
            continue
        print(f"== service over HTTP, batching {batching} ({settings or 'defaults'})", flush=True)
        log = tmp / f"server-{batching}.log"
        quiet = {"log_level": "warning", **settings}
        with ServerProcess(repository, log, cpus=plan.server_cpus, **quiet) as server:
            served = {f"{m['name']}:{m['version']}": m for m in server.models()}
            for entry, version in models:
                name = label(entry, version)
                info = served.get(name, {"status": "absent"})
                if info["status"] != "ready":
                    plan.skipped.append(f"http {name} batching {batching}: {info['status']}")
                    continue
                if batching == "on":
                    results["served"][name] = {k: info[k] for k in ("engine", "provider")}
                for level in levels:
                    if not plan.time_left(f"http {name} batching {batching} c{level}"):
                        continue
                    row = http.run_level(
                        server,
                        entry.config.name,
                        version.info.version,
                        bodies,
                        plan.images_per_request,
                        level,
                        plan.load_budget,
                        batching=batching,
                    )
                    print(
                        f"  {name} c{level:<3} {row.images_per_s:7.1f} img/s  p50 "
                        f"{row.p50_ms:7.1f}  p99 {row.p99_ms:7.1f} ms  batch "
                        f"{row.mean_batch_size:5.2f}  errors {row.errors}  client CPU "
                        f"{row.client_cpu_share:.0%}",
                        flush=True,
                    )
                    results["http"].append(asdict(row))
