"""Poll mode: follow the repository folder, as Triton's ``--model-control-mode=poll``.

Every ``repository_poll_secs`` each model folder is fingerprinted from its small files
only (``config.json`` and every ``<version>/version.json``; an export or quantize run
writes a new ``version.json`` with new artifact checksums, so the artifacts need not be
hashed). A changed fingerprint reloads the model through the pool (new and changed
versions swap in beside the old, removed ones drain); a model folder that disappeared,
or was left with no version, is unloaded; a new one is loaded. Hidden folders
(``.export-*``, ``.quantize-*`` staging) and version folders without a ``version.json``
yet are ignored, so a tool's work in progress is never picked up half-written.

A failed load is not retried every poll (it would fail the same way, flooding the log):
the folder's fingerprint is remembered, and the next change to it is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Protocol

from service.errors import ServiceError
from service.lifecycle import LifecycleResult
from service.repository import CONFIG_FILE, VERSION_FILE

logger = logging.getLogger(__name__)


class ReloadablePool(Protocol):
    """What the poller asks of the pool: the lifecycle operations without the mode check
    (the poll mode is the control), so the poller never depends on the pool itself."""

    async def reload(self, name: str) -> LifecycleResult: ...

    async def retire_model(self, name: str, reason: str) -> LifecycleResult: ...


def fingerprint(folder: Path) -> str | None:
    """A digest of a model folder's config and version files; None while it has no
    config or no complete version (an export publishing a new model writes its config
    a moment before its first version): such a folder counts as absent."""
    digest = hashlib.sha256()
    complete = 0
    try:
        digest.update((folder / CONFIG_FILE).read_bytes())
        versions = sorted(
            p for p in folder.iterdir() if p.is_dir() and p.name.isascii() and p.name.isdigit()
        )
        for version in versions:
            try:
                data = (version / VERSION_FILE).read_bytes()
            except FileNotFoundError:
                continue  # still being written (quantize reserves the number first)
            digest.update(version.name.encode() + b"\0" + data + b"\0")
            complete += 1
    except OSError:
        return None
    return digest.hexdigest() if complete else None


def snapshot(root: Path) -> dict[str, str]:
    """Fingerprint of every visible model folder under ``root`` (blocking file reads)."""
    if not root.is_dir():
        return {}
    prints = {}
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and folder.name[0] not in "._":
            print_ = fingerprint(folder)
            if print_ is not None:
                prints[folder.name] = print_
    return prints


class RepositoryPoller:
    """One task re-reading the repository; ``start()`` and ``stop()`` are a pair."""

    def __init__(self, pool: ReloadablePool, root: Path, interval_s: float) -> None:
        self._pool = pool
        self._root = root
        self._interval_s = interval_s
        self._seen: dict[str, str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="repository-poller")

    async def stop(self) -> None:
        """Stop after the current poll (a load in progress finishes: never half-swapped)."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.poll_once()
            except Exception:  # one bad poll must not end polling for the process's life
                logger.exception("repository poll failed; trying again next time")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)

    async def poll_once(self) -> list[str]:
        """Apply what changed since the last poll; return the model names acted on.

        The first call only records what the initial load served from.
        """
        now = await asyncio.to_thread(snapshot, self._root)
        if self._seen is None:
            self._seen = now
            return []
        changed = sorted(n for n in now if now[n] != self._seen.get(n))
        removed = sorted(n for n in self._seen if n not in now)
        for name in changed:
            if self._stopping.is_set():
                return changed
            try:
                result = await self._pool.reload(name)
                logger.info(
                    "poll: %s loaded (new %s, retired %s)", name, result.loaded, result.retired
                )
            except ServiceError as exc:
                logger.error("poll: %s not loaded: %s", name, exc.message)
            self._seen[name] = now[name]
        for name in removed:
            try:
                await self._pool.retire_model(name, "removed from the repository")
            except ServiceError as exc:
                logger.error("poll: %s not unloaded: %s", name, exc.message)
            del self._seen[name]
        return [*changed, *removed]
