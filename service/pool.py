"""Served models: repository entries turned into engines, batchers and preprocessors.

Models load in the background after the server starts, so ``/health/live`` answers at
once and ``/health/ready`` tells when every model is warm. A model whose engine cannot
be created, or that its correctness gate refuses (:mod:`service.gate`), is kept,
marked failed with the reason, and the others serve on. The lookups a request makes
(``get``, ``all``, ``index``) live in :class:`service.version_table.VersionTable`; this
module holds what changes the table.

Lifecycle without restarts (``model_control_mode`` explicit or poll): :meth:`load_model`
re-reads a model's folder and loads each new or changed version *beside* what serves,
warms it up and gates it; only then does the version table flip, in one step on the
event loop, so :meth:`get` hands new requests the new version. Requests admitted before
hold the old :class:`ServedModel` and its batcher, which drains them before its engine
is closed. A load that fails leaves what was serving untouched and says why in
:meth:`index`, the log and ``resnet_serve_model_loads_total``. One lock per model
serialises loads and unloads of the same model; different models load independently.
"""

from __future__ import annotations

import asyncio
import logging

from service.batching.turns import CpuTurns
from service.engines import create_engine
from service.errors import ModelConfigError, ModelLoadFailed, ModelMemoryExceeded, UnknownModel
from service.lifecycle import (
    LifecycleResult,
    ModelMemory,
    check_control,
    check_model_name,
    return_freed_memory,
)
from service.loader import VersionLoader
from service.metrics import Metrics
from service.poller import RepositoryPoller
from service.recheck import GateRechecker
from service.repository import ModelEntry, load_model
from service.served import (
    EngineFactory,
    ServedModel,
    Status,
    create_preprocessor,
)
from service.settings import Settings
from service.version_table import VersionTable

logger = logging.getLogger(__name__)

__all__ = ["EngineFactory", "ModelPool", "ServedModel", "Status", "create_preprocessor"]


class ModelPool(VersionTable):
    """The version table plus what changes it: start-up load, reload, unload, stop."""

    def __init__(
        self,
        entries: list[ModelEntry],
        settings: Settings,
        metrics: Metrics,
        *,
        engine_factory: EngineFactory = create_engine,
    ) -> None:
        super().__init__(entries, settings)
        #: The metrics it reports model state to; routes use the app's, not this.
        self.metrics = metrics
        self.loaded = False
        #: Latched when the initial load ends: did the default model come up? Start-up
        #: and liveness should read this, not the current state: an operator unloading
        #: the default model later must not make the pod look dead (and be restarted).
        self.startup_ok: bool | None = None
        self.memory = ModelMemory(
            settings.model_memory_budget_bytes, settings.model_memory_factor, metrics
        )
        metrics.model_memory_budget_bytes.set(settings.model_memory_budget_bytes)
        #: CPU engines and decodes take turns on the cores (service/batching/turns.py);
        #: shared by every batcher here and the pipeline's decode lanes.
        self.turns = CpuTurns(
            enabled=settings.cpu_turns_enabled(),
            max_wait_s=settings.cpu_turn_wait_ms / 1000,
            waits=metrics.cpu_turn_wait,
        )
        self._loader = VersionLoader(settings, metrics, self.memory, engine_factory, self.turns)
        self._locks: dict[str, asyncio.Lock] = {}
        self._poller: RepositoryPoller | None = None
        self._rechecker: GateRechecker | None = None

    # -- start-up and shutdown ---------------------------------------------------------
    async def load(self) -> None:
        """Create, warm up, gate and start every model; failures are recorded, not raised.

        In poll mode the repository poller starts once this initial load is done.
        """
        for name in list(self._models):
            async with self._lock(name):
                for model in self._models[name].values():
                    if model.status != "loading":
                        continue  # a load_model call got there first: already swapped in
                    await self._loader.start(model)
                    self._loader.publish(model)
                self._defaults[name] = self._default_for(self._entries[name], self._models[name])
        self.loaded = True
        self.startup_ok = (
            self.default_name is not None and self.default_of(self.default_name).serving
        )
        ready = [f"{m.name}:{m.number}" for m in self.all() if m.status == "ready"]
        logger.info("models ready: %s", ", ".join(ready) or "none")
        if self.settings.model_control_mode == "poll":
            self.start_polling()
        if self.settings.gate_recheck_secs and self._rechecker is None:
            self._rechecker = GateRechecker(self, self.settings.gate_recheck_secs)
            self._rechecker.start()

    async def stop(self, drain_timeout_s: float) -> None:
        """Stop polling, drain every batcher (in parallel, one shared timeout), close engines."""
        await self.stop_polling()
        if self._rechecker is not None:
            await self._rechecker.stop()
            self._rechecker = None
        live = [m for m in (*self.all(), *self._draining) if m.batcher or m.engine]
        await asyncio.gather(*(self._loader.close(m, drain_timeout_s) for m in live))
        for model in self.all():
            model.status = "stopped"
            self._loader.publish(model)

    def start_polling(self) -> None:
        """Re-read the repository every ``repository_poll_secs`` (see :mod:`service.poller`)."""
        if self._poller is None:
            self._poller = RepositoryPoller(
                self, self.settings.repository, self.settings.repository_poll_secs
            )
            self._poller.start()

    async def stop_polling(self) -> None:
        if self._poller is not None:
            await self._poller.stop()
            self._poller = None

    # -- lifecycle API (the repository doors call these) -------------------------------
    async def load_model(self, name: str) -> LifecycleResult:
        """Load or reload ``name`` from the repository: new and changed versions beside
        what serves, each warmed up and gated, then swapped in; replaced and removed
        versions drained and closed. Explicit mode only.

        Raises :class:`ModelControlNotAllowed`, :class:`BadRequest` (bad name),
        :class:`UnknownModel` (no such folder), :class:`ModelMemoryExceeded` or
        :class:`ModelLoadFailed` (a version did not come up; the others did, and what
        served before serves on).
        """
        check_control(self.settings, "load")
        return await self.reload(name)

    async def unload_model(self, name: str) -> LifecycleResult:
        """Stop serving every version of ``name``: new requests get 503 at once, admitted
        ones are answered (bounded by ``drain_timeout_s``), engines closed, memory
        returned. Idempotent. Explicit mode only."""
        check_control(self.settings, "unload")
        return await self.retire_model(name, "unloaded by the repository API")

    async def reload(self, name: str) -> LifecycleResult:
        """:meth:`load_model` without the mode check (the poller's entry)."""
        check_model_name(name)
        async with self._lock(name):
            folder = self.settings.repository / name
            if not await asyncio.to_thread(folder.is_dir):
                raise UnknownModel(
                    f"no model {name!r} in the repository {self.settings.repository}",
                    available=sorted(self._models),
                )
            try:
                entry = await asyncio.to_thread(load_model, folder)
            except ModelConfigError as exc:
                self._unreadable[name] = str(exc)
                self.metrics.model_loads.labels(name, "failed").inc()
                logger.error("load of %s refused: %s", name, exc)
                raise ModelLoadFailed(str(exc), model=name) from None
            self._unreadable.pop(name, None)
            return await self._swap_in(entry)

    async def retire_model(self, name: str, reason: str) -> LifecycleResult:
        """:meth:`unload_model` without the mode check (the poller's entry)."""
        check_model_name(name)
        async with self._lock(name):
            table = self._models.get(name)
            if table is None:
                raise UnknownModel(f"model {name!r} is not loaded", available=sorted(self._models))
            live = [m for m in table.values() if m.status != "stopped"]
            for model in live:
                model.status, model.error = "unloading", reason
                self._loader.publish(model)
            await asyncio.gather(*(self._retire(m, "unloaded") for m in live))
            for model in table.values():
                model.status, model.error = "stopped", reason
                self._loader.publish(model)
            self._refusals = {k: v for k, v in self._refusals.items() if k[0] != name}
            logger.info(
                "model %s unloaded (%s): versions %s", name, reason, [m.number for m in live]
            )
            return LifecycleResult(
                name, "unloaded", self._states(name), retired=tuple(m.number for m in live)
            )

    # -- internals ---------------------------------------------------------------------
    async def _swap_in(self, entry: ModelEntry) -> LifecycleResult:
        name = entry.config.name
        current = self._models.get(name, {})
        candidates: dict[int, ServedModel] = {}
        table: dict[int, ServedModel] = {}
        for version in entry.served_versions:
            number = version.info.version
            old = current.get(number)
            unchanged = (
                old is not None
                and old.status == "ready"
                and old.entry.config == entry.config
                and old.version.info == version.info
            )
            if unchanged and old is not None:
                table[number] = old
            else:
                candidates[number] = self._new(entry, version)
        for number, candidate in candidates.items():
            self._loading[(name, number)] = candidate
            try:
                await self._loader.start(candidate)
            finally:
                del self._loading[(name, number)]
        retire: list[ServedModel] = []
        refused: dict[int, str] = {}
        for number, candidate in candidates.items():
            old = current.get(number)
            if candidate.status == "ready" or old is None or old.status != "ready":
                table[number] = candidate
                if old is not None:
                    retire.append(old)
                self._refusals.pop((name, number), None)
            else:  # a failed reload: the serving instance stays
                table[number] = old
                self._refusals[(name, number)] = candidate.error or "failed"
            if candidate.status != "ready":
                refused[number] = candidate.error or "failed"
        if refused:  # never retire what serves when its successor did not come up
            table.update({n: m for n, m in current.items() if n not in table})
        retire.extend(m for n, m in current.items() if n not in table)
        # The swap: one step on the event loop, between two requests' lookups.
        self._models[name] = table
        self._entries[name] = entry
        self._defaults[name] = self._default_for(entry, table)
        self.default_name = self.default_name or self.settings.default_model or min(self._models)
        for model in table.values():
            self._loader.publish(model)
        for old in retire:
            old.status, old.error = "unloading", "replaced or removed; finishing admitted requests"
            if old.number not in table:  # else the series belong to its successor now
                self._loader.publish(old)
        await asyncio.gather(*(self._retire(m, "replaced") for m in retire))
        for old in retire:
            old.status = "stopped"
            if old.number not in table:
                self._loader.publish(old)
        logger.info(
            "model %s loaded: versions %s new, %s retired, default %d",
            name,
            sorted(candidates),
            sorted(m.number for m in retire),
            self._defaults[name],
        )
        if refused:
            problems = "; ".join(f"v{n}: {why}" for n, why in sorted(refused.items()))
            versions = [s.as_index_entry() for s in self._states(name)]
            if all(
                isinstance(c.load_error, ModelMemoryExceeded)
                for c in candidates.values()
                if c.status != "ready"
            ):
                raise ModelMemoryExceeded(
                    f"model {name}: {problems}", model=name, versions=versions
                )
            raise ModelLoadFailed(f"model {name}: {problems}", model=name, versions=versions)
        return LifecycleResult(
            name,
            "loaded",
            self._states(name),
            loaded=tuple(sorted(candidates)),
            retired=tuple(sorted(m.number for m in retire)),
            default_version=self._defaults[name],
        )

    async def _retire(self, model: ServedModel, outcome: str) -> None:
        """Drain and close one instance no longer in the table (or being unloaded)."""
        if model.engine is None and model.batcher is None:
            return
        self._draining.append(model)
        try:
            await self._loader.close(model, self.settings.drain_timeout_s)
        finally:
            self._draining.remove(model)
        self.metrics.model_unloads.labels(model.name, outcome).inc()
        return_freed_memory()

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())
