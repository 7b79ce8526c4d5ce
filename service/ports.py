"""The ports the server listens on, opened (or checked) before anything else starts.

uvicorn binds its port after the app's lifespan has started (models loading, the V2 gRPC
server listening), and reports a port in use as a log line and exit status 1; gRPC, bound
from the lifespan, fails with a traceback. Opening both first turns either into one line
naming the port and the flag / variable that moves it (:class:`PortUnavailable`).
"""

from __future__ import annotations

import errno
import socket

from service.settings import ENV_PREFIX, Settings

#: Connections the kernel queues before the server accepts them (uvicorn's default).
LISTEN_BACKLOG = 2048


class PortUnavailable(Exception):
    """A port cannot be opened; the message is the one line the operator reads."""


def _port_problem(exc: OSError, host: str, port: int, door: str, setting: str) -> str:
    flag = f"--{setting.replace('_', '-')} / {ENV_PREFIX}{setting.upper()}"
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} ({door}, {flag}) is in use on {host}; stop what holds it or move it"
    return f"cannot listen on {host}:{port} ({door}, {flag}): {exc.strerror or exc}"


def listen_http(settings: Settings) -> socket.socket:
    """The HTTP listening socket, bound and listening, as uvicorn would bind it."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
        sock.listen(LISTEN_BACKLOG)  # listening now: nothing else can take the port
    except OSError as exc:
        sock.close()
        raise PortUnavailable(
            _port_problem(exc, settings.host, settings.port, "HTTP", "port")
        ) from None
    return sock


def check_grpc_port(settings: Settings) -> None:
    """Bind the V2 gRPC port once, as gRPC will (SO_REUSEADDR, no SO_REUSEPORT), and let go.

    gRPC binds it later, from the app's lifespan; a process taking the port in between
    still fails there (with a traceback), a race this check does not close.
    """
    if settings.grpc_port == 0:
        return
    host = settings.grpc_host or settings.host
    try:
        addresses = socket.getaddrinfo(
            host, settings.grpc_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise PortUnavailable(
            _port_problem(exc, host, settings.grpc_port, "V2 gRPC", "grpc_port")
        ) from None
    failures: list[OSError] = []
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                failures.append(exc)
    # In use on any address is fatal; other failures only when no address works
    # (gRPC binds what it can, e.g. 127.0.0.1 where ::1 is unavailable).
    in_use = [f for f in failures if f.errno == errno.EADDRINUSE]
    if in_use or (failures and len(failures) == len(addresses)):
        problem = (in_use or failures)[0]
        raise PortUnavailable(
            _port_problem(problem, host, settings.grpc_port, "V2 gRPC", "grpc_port")
        )
