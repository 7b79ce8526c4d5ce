"""Probes: what an orchestrator asks the service (``/metrics`` is mounted in ``service/app.py``).

Models load in the background after the port opens (see ``service/app.py``), so the
three probes answer three different questions:

``/health/startup``
    Has loading ended with the default model serving? 503 while models load and warm up,
    then 200. If loading ended with the default model not serving, it stays 503, so a
    Kubernetes startupProbe bounds loading time and restarts a pod whose load failed.
``/health/live``
    Is the process worth keeping? 200 while the event loop answers, except once loading
    ended with the default model not serving: then 503, for the same restart.
``/health/ready``
    Should traffic come here now? 503 while loading, while draining, when the default
    model does not serve (or, with ``require_all_models``, any model), naming the models
    that do not serve.

:func:`startup_problems` is shared with strict mode (``service/server.py``): the same
facts that keep a pod unready make a strict server exit.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.pool import ModelPool, ServedModel
from service.settings import Settings

Phase = Literal["loading", "started", "failed"]

#: Providers that mean "a GPU was asked for": if the engine runs another, it fell back.
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
#: What engines report when they run on the CPU (ONNX Runtime, TorchScript).
CPU_PROVIDERS = ("CPUExecutionProvider", "cpu")


def _key(model: ServedModel) -> str:
    return f"{model.name}:{model.number}"


def startup_phase(pool: ModelPool) -> Phase:
    """Loading, or ended with the default model serving ("started") or not ("failed")."""
    if not pool.loaded:
        return "loading"
    if pool.default_name is None:
        return "failed"  # an empty repository serves nothing
    return "started" if pool.default_of(pool.default_name).status == "ready" else "failed"


def requested_gpu(model: ServedModel, settings: Settings) -> str | None:
    """The GPU provider (or ``cuda``) this model asked for, None if it did not insist."""
    wanted = settings.provider_list() or model.entry.config.providers or ()
    if wanted and wanted[0] in GPU_PROVIDERS:
        return wanted[0]
    if model.entry.config.device == "cuda":
        return "cuda"
    return None


def provider_mismatch(model: ServedModel, settings: Settings) -> str | None:
    """Why a serving model does not run where it asked to, or None.

    ONNX Runtime silently falls back to the next provider when one fails to initialise
    (a missing CUDA library, no device visible): the session works, on the CPU.
    """
    wanted = requested_gpu(model, settings)
    running = model.provider
    if wanted is None or model.status != "ready":
        return None
    fell_back = running in CPU_PROVIDERS if wanted == "cuda" else running != wanted
    return f"asked for {wanted}, running on {running}" if fell_back else None


def startup_problems(pool: ModelPool, settings: Settings) -> dict[str, str]:
    """Every model that failed to load or runs off its requested GPU, with the reason."""
    problems: dict[str, str] = {}
    for model in pool.all():
        if model.status == "failed":
            problems[_key(model)] = f"failed to load: {model.error or 'unknown error'}"
        elif (mismatch := provider_mismatch(model, settings)) is not None:
            problems[_key(model)] = mismatch
    return problems


def readiness(
    pool: ModelPool, settings: Settings, *, draining: bool
) -> tuple[bool, dict[str, object]]:
    """(ready, body) for ``/health/ready``; the body names what does not serve."""
    # A loaded model whose engine sits on one batch far too long is "stuck": not ready
    # until the batch ends (resnet_serve_batch_running_seconds shows it too).
    models = {_key(m): "stuck" if m.stuck else m.status for m in pool.all()}
    unavailable = {k: v for k, v in models.items() if v != "ready"}
    default = pool.default_of(pool.default_name) if pool.default_name else None
    failed = {_key(m): m.error or m.status for m in pool.all() if m.status == "failed"}
    phase = startup_phase(pool)
    if draining:
        status = "draining"
    elif phase == "loading":
        status = "not ready"
    elif phase == "failed" or default is None or not default.serving:
        status = "default model not serving"
    elif settings.require_all_models and unavailable:
        status = "not every model serving"
    else:
        status = "ready"
    body: dict[str, object] = {
        "status": status,
        "default_model": pool.default_name,
        "models": models,
        "unavailable": unavailable,
        "failed": failed,
    }
    return status == "ready", body


def build_health_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["operations"])
    not_ready: dict[int | str, dict[str, Any]] = {
        503: {"description": "not (yet) in that state; the body says why"}
    }

    @router.get("/health/startup", responses=not_ready)
    async def startup(request: Request) -> JSONResponse:
        """200 once loading ended with the default model serving; 503 before or if not."""
        phase = startup_phase(request.app.state.models)
        return JSONResponse({"status": phase}, status_code=200 if phase == "started" else 503)

    @router.get("/health/live", responses=not_ready)
    async def live(request: Request) -> JSONResponse:
        """The loop answers; 503 only once loading ended with nothing worth serving."""
        if startup_phase(request.app.state.models) == "failed":
            return JSONResponse(
                {"status": "failed", "reason": "loading ended with the default model not serving"},
                status_code=503,
            )
        return JSONResponse({"status": "alive"})

    @router.get("/health/ready", responses=not_ready)
    async def ready(request: Request) -> JSONResponse:
        is_ready, body = readiness(
            request.app.state.models, settings, draining=bool(request.app.state.draining)
        )
        return JSONResponse(body, status_code=200 if is_ready else 503)

    return router
