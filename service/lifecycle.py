"""The public shapes of model lifecycle, and the model-memory budget.

What the repository doors (V2 REST and gRPC repository extension) get from the pool:
:meth:`ModelPool.index` returns :class:`VersionState` rows, :meth:`ModelPool.load_model`
and :meth:`ModelPool.unload_model` return a :class:`LifecycleResult` or raise a typed
error from :mod:`service.errors` (``ModelControlNotAllowed`` 409, ``UnknownModel`` 404,
``BadRequest`` 400, ``ModelLoadFailed`` 400, ``ModelMemoryExceeded`` 409). Every door
calls :func:`check_admin_key` first (``Unauthorized`` 401; 409 with the API off).

States a version goes through::

    loading --> ready --> unloading --> stopped
        \\--> failed (engine error, gate refused, memory budget): reason says which
"""

from __future__ import annotations

import ctypes
import hmac
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from service.errors import BadRequest, ModelControlNotAllowed, ModelMemoryExceeded, Unauthorized
from service.metrics import Metrics
from service.settings import Settings

logger = logging.getLogger(__name__)

VersionStatus = Literal["loading", "ready", "failed", "unloading", "stopped"]
#: Where the admin key travels: HTTP header, gRPC metadata (lower case, as gRPC sends it).
ADMIN_KEY_HEADER = "X-Admin-Key"
ADMIN_KEY_METADATA = "x-admin-key"
#: The V2 repository extension's (Triton's) names for our states.
TRITON_STATES: dict[str, str] = {
    "loading": "LOADING",
    "ready": "READY",
    "failed": "UNAVAILABLE",
    "unloading": "UNLOADING",
    "stopped": "UNAVAILABLE",
}


@dataclass(frozen=True)
class VersionState:
    """One row of the repository index.

    ``version`` is "" for a model whose folder could not be read at all (no version
    known). ``reason`` is empty when the state needs no explanation; a serving version
    whose reload was refused is "ready" with the refusal as its reason.
    """

    name: str
    version: str
    state: VersionStatus
    reason: str = ""

    @property
    def triton_state(self) -> str:
        """READY, LOADING, UNLOADING or UNAVAILABLE: what tritonclient expects."""
        return TRITON_STATES[self.state]

    def as_index_entry(self) -> dict[str, str]:
        """The V2 repository index entry (REST JSON; gRPC ModelIndex has the same fields)."""
        return {
            "name": self.name,
            "version": self.version,
            "state": self.triton_state,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class LifecycleResult:
    """What a successful load or unload did; every version of the model afterwards."""

    name: str
    action: Literal["loaded", "unloaded"]
    #: The model's versions after the call (see :class:`VersionState`).
    versions: tuple[VersionState, ...]
    #: Versions a load started anew (the others were already serving, unchanged).
    loaded: tuple[int, ...] = ()
    #: Versions drained and closed by the call (replaced, removed or unloaded).
    retired: tuple[int, ...] = ()
    #: The version a request naming none gets now (None after an unload).
    default_version: int | None = None


@dataclass
class ModelMemory:
    """The model-memory budget: estimated bytes per loaded version, refused past it.

    An estimate, not a measurement: ``factor x artifact bytes`` (weights held by the
    engine plus its working copies and arenas; docs/LIMITS.md, memory budget). Checked before a load
    starts, so a version that would not fit is refused with the figures instead of the
    process being OOM-killed half-way through a session build.
    """

    budget_bytes: int
    factor: float
    metrics: Metrics
    held: dict[tuple[str, int, int], int] = field(default_factory=dict)

    def estimate(self, artifact_bytes: int) -> int:
        return int(artifact_bytes * self.factor)

    @property
    def used_bytes(self) -> int:
        return sum(self.held.values())

    def take(self, name: str, version: int, token: int, size_bytes: int) -> None:
        """Hold ``size_bytes`` for one loaded instance (``token``: its id) or refuse."""
        if self.budget_bytes and self.used_bytes + size_bytes > self.budget_bytes:
            holders = ", ".join(f"{n}:{v} {_size(b)}" for (n, v, _), b in sorted(self.held.items()))
            raise ModelMemoryExceeded(
                f"loading {name} v{version} needs ~{_size(size_bytes)} "
                f"(model_memory_factor {self.factor} x its artifact); "
                f"{_size(self.used_bytes)} of the {_size(self.budget_bytes)} "
                f"model_memory_budget_bytes are held ({holders or 'nothing'}). Unload a "
                "model or raise the budget; a swap holds the old and the new version at once",
                model=name,
                version=version,
                needed_bytes=size_bytes,
                used_bytes=self.used_bytes,
                budget_bytes=self.budget_bytes,
            )
        self.held[(name, version, token)] = size_bytes
        self.metrics.model_memory_bytes.set(self.used_bytes)

    def give(self, name: str, version: int, token: int) -> None:
        """Release what :meth:`take` held (idempotent)."""
        self.held.pop((name, version, token), None)
        self.metrics.model_memory_bytes.set(self.used_bytes)


#: What a repository folder name may be (ModelConfig.name's rule): no path tricks.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_control(settings: Settings, action: str) -> None:
    """Explicit load/unload calls are for ``explicit`` mode only (Triton refuses them too)."""
    mode = settings.model_control_mode
    if mode == "explicit":
        return
    why = (
        "the repository is read once at start-up"
        if mode == "none"
        else f"versions follow the repository folder, re-read every "
        f"{settings.repository_poll_secs:g}s: add, change or remove folders there"
    )
    raise ModelControlNotAllowed(
        f"cannot {action} models: model_control_mode is {mode!r} ({why}); "
        "explicit load and unload need model_control_mode 'explicit'",
        mode=mode,
    )


def check_model_name(name: str) -> None:
    if not _MODEL_NAME.fullmatch(name):
        raise BadRequest(
            f"invalid model name {name!r}: 1-64 characters A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit",
        )


def check_admin_key(expected: str | None, presented: str | bytes | None) -> None:
    """The repository API's gate, for every door: the admin key, never the inference key.

    ``expected`` is ``settings.admin_api_key``: None only with model_control_mode
    ``none`` (settings refuse the other modes without one), where the API is off (409).
    Compared in constant time as bytes, as :func:`service.security.check_api_key` does.
    """
    if expected is None:
        raise ModelControlNotAllowed(
            "the repository API is off: model_control_mode is 'none' (set it to "
            "'explicit' or 'poll', with an admin key, to use it)",
            mode="none",
        )
    if presented is None:
        raise Unauthorized(f"missing admin key: send it in the {ADMIN_KEY_HEADER} header")
    given = presented if isinstance(presented, bytes) else presented.encode("latin-1", "replace")
    if not hmac.compare_digest(given, expected.encode("utf-8")):
        raise Unauthorized(f"wrong admin key in the {ADMIN_KEY_HEADER} header")


def _size(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.0f} MB" if size_bytes >= 10**6 else f"{size_bytes} B"


def return_freed_memory() -> None:
    """Hand freed heap pages back to the OS after an engine closed (glibc only).

    A closed session frees its weights; glibc keeps small freed blocks in its arenas,
    so without a trim RSS would stay at the old version's level after a swap.
    """
    try:
        libc: Any = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: its allocator returns memory its own way
        return
    libc.malloc_trim(0)
