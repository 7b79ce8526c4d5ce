"""Log lines as text (default) or JSON, carrying the id of the request they belong to.

The request id lives in a :class:`~contextvars.ContextVar` set by the request-id
middleware (``service/api/request_id.py``) for the task that handles one HTTP request,
so any log call made while handling it, in any module, is stamped without passing the id
around. Work handed to plain executor threads does not inherit the context; those lines
carry no id rather than a wrong one.

JSON lines are for log collectors (Loki, Elasticsearch, Cloud Logging): one object per
line with stable keys ``time``, ``level``, ``logger``, ``message``, ``request_id`` (when
known) and ``exc_info`` (the formatted traceback, as one string).
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

from service.tracing import current_trace_ids

#: The id of the HTTP request being handled in this context, None outside requests.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

#: Longest caller-sent request id kept: it ends up in log lines and headers.
MAX_REQUEST_ID_LENGTH = 128


def usable_request_id(value: str) -> bool:
    """Printable ASCII (space to tilde), 1..128 characters: nothing else is trusted."""
    return 0 < len(value) <= MAX_REQUEST_ID_LENGTH and all(" " <= c <= "~" for c in value)


def request_id_from(asked: str | bytes | None) -> str:
    """The caller's request id when usable (HTTP ``X-Request-ID``, gRPC ``x-request-id``),
    else a fresh uuid4 hex: one rule for every door."""
    if isinstance(asked, str) and usable_request_id(asked):
        return asked
    return uuid.uuid4().hex


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LogFormat = Literal["text", "json"]


class JsonFormatter(logging.Formatter):
    """One JSON object per record; never raises on odd arguments (``default=str``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        ids = current_trace_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str, log_format: LogFormat) -> None:
    """One stderr handler on the root logger, replacing plain stream handlers
    (``basicConfig``'s); capture handlers such as pytest's (subclasses) are kept.

    uvicorn's own loggers are left to propagate here in JSON mode (``server.py`` passes
    ``log_config=None``), so its start-up and error lines are JSON objects too.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level.upper())
