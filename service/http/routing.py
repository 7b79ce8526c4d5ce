"""The route class of every HTTP router: it names the request's server span.

The OpenTelemetry ASGI middleware opens the server span before routing, so it can only
name it by method. Once a route matched, its template (``POST /v2/models/{model}/infer``)
is the name with bounded cardinality that tracing backends group by; FastAPI's
``route_class`` is the documented hook that runs with the matched route.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from service import tracing


class TracedRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not tracing.enabled():
            return handler  # nothing to name: no extra layer on every request
        name = f"{min(self.methods or {'GET'})} {self.path}"

        async def named(request: Request) -> Response:
            tracing.rename(name, **{"http.route": self.path})
            return await handler(request)

        return named
