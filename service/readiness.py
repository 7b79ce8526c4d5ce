"""One readiness rule for every probe: ``/health/*``, ``/v2/health/*``, model ready, gRPC.

Models load in the background after the ports open, so three questions have three
answers, and every door asks them here (the V2 protocol's live and ready are the same
questions as ``/health/live`` and ``/health/ready``; KServe probes the V2 ones):

startup
    Has loading ended with the default model serving? False while models load, then
    true. If loading ended with the default model not serving, it stays false, so a
    Kubernetes startupProbe bounds loading time and restarts a pod whose load failed.
live
    Is the process worth keeping? True while the event loop answers, except once loading
    ended with the default model not serving: then false, for the same restart.
ready
    Should traffic come here now? False while loading, while draining, when the default
    model does not serve (or, with ``require_all_models``, any model), naming why.

:meth:`Readiness.startup_problems` is shared with strict mode (``service/server.py``):
the same facts that keep a pod unready make a strict server exit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from service.engines import device_mismatch
from service.errors import UnknownModel
from service.pool import ModelPool, ServedModel
from service.settings import Settings

Phase = Literal["loading", "started", "failed"]


@dataclass(frozen=True)
class Answer:
    """A probe's answer: yes or no, and a body that says why."""

    ok: bool
    body: dict[str, object] = field(default_factory=dict)


def _key(model: ServedModel) -> str:
    return f"{model.name}:{model.number}"


class Readiness:
    """The service's state as every probe sees it; ``draining`` is set on shutdown."""

    def __init__(self, models: ModelPool, settings: Settings) -> None:
        self.models = models
        self.settings = settings
        self.draining = False

    def phase(self) -> Phase:
        """Loading, or the start-up load ended with the default model serving ("started")
        or not ("failed"). Latched at the end of that load: unloading or swapping a model
        later through the repository API changes readiness, never liveness (a restart
        would not help)."""
        pool = self.models
        if not pool.loaded or pool.startup_ok is None:
            return "loading"
        return "started" if pool.startup_ok else "failed"

    def startup(self) -> Answer:
        phase = self.phase()
        return Answer(phase == "started", {"status": phase})

    def live(self) -> Answer:
        if self.phase() == "failed":
            return Answer(
                False,
                {"status": "failed", "reason": "loading ended with the default model not serving"},
            )
        return Answer(True, {"status": "alive"})

    def ready(self) -> Answer:
        pool = self.models
        # A loaded model whose engine sits on one batch far too long is "stuck": not
        # ready until the batch ends (resnet_serve_batch_running_seconds shows it too).
        models = {_key(m): "stuck" if m.stuck else m.status for m in pool.all()}
        unavailable = {k: v for k, v in models.items() if v != "ready"}
        default = pool.default_of(pool.default_name) if pool.default_name else None
        failed = {_key(m): m.error or m.status for m in pool.all() if m.status == "failed"}
        phase = self.phase()
        if self.draining:
            status = "draining"
        elif phase == "loading":
            status = "not ready"
        elif phase == "failed" or default is None or not default.serving:
            status = "default model not serving"
        elif self.settings.require_all_models and unavailable:
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
        return Answer(status == "ready", body)

    def model_ready(self, name: str | None, version: int | None) -> bool:
        """One version serves (an unknown model is simply not ready, as Triton answers)."""
        if self.draining:
            return False
        try:
            return self.models.get(name, version).serving
        except UnknownModel:
            return False

    def startup_problems(self) -> dict[str, str]:
        """Every model that failed to load or runs off its requested GPU, with the reason."""
        problems: dict[str, str] = {}
        for model in self.models.all():
            if model.status == "failed":
                problems[_key(model)] = f"failed to load: {model.error or 'unknown error'}"
            elif model.status == "ready" and (
                mismatch := device_mismatch(model.entry.config, self.settings, model.provider)
            ):
                problems[_key(model)] = mismatch
        return problems
