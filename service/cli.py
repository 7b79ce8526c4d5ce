"""``resnet-serve``: serve | export | import | quantize.

Heavy imports (torch, onnxruntime, uvicorn) happen inside the subcommand that needs them,
so ``resnet-serve serve`` and ``resnet-serve import`` work on a serving-only install
(``pip install '.[cpu]'``). A subcommand that needs an extra the install lacks says which
one in one line instead of a traceback; so does a bad setting.

The benchmarks are not a subcommand: they ship with the source tree, not the wheel, and run
as ``python -m benchmarks.run`` (``make bench``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any, get_args

from pydantic import ValidationError

from service.errors import ModelConfigError, SettingsError, UnknownModel
from service.settings import ENV_PREFIX, Settings, load_settings

#: Modules with a ``register(subparsers)`` adding their subcommands.
SUBCOMMAND_MODULES = ("service.export.cli", "service.importer", "service.quantize.cli")

#: ``serve --help`` sections, in order. A setting added without a place here is listed
#: under "other" (never an error), and a test asks for it to be placed.
SETTING_SECTIONS: dict[str, tuple[str, ...]] = {
    "network": (
        "host",
        "port",
        "grpc_host",
        "grpc_port",
        "max_connections",
        "max_header_bytes",
        "head_timeout_s",
        "keep_alive_timeout_s",
    ),
    "V2 gRPC limits": (
        "grpc_max_message_bytes",
        "grpc_max_concurrent_rpcs",
        "grpc_max_connections",
        "grpc_max_streams_per_connection",
        "grpc_idle_timeout_s",
    ),
    "models": (
        "repository",
        "models",
        "default_model",
        "engine",
        "providers",
        "intra_op_threads",
        "decode_threads",
        "intra_op_spinning",
        "cpu_turns",
        "cpu_turn_wait_ms",
        "trt_cache_dir",
    ),
    "start-up and probes": ("warmup", "strict", "require_all_models", "stuck_batch_after_s"),
    "model lifecycle": (
        "model_control_mode",
        "repository_poll_secs",
        "admin_api_key",
        "admin_api_key_file",
        "gate_recheck_secs",
        "model_memory_budget_bytes",
        "model_memory_factor",
    ),
    "batching": ("max_batch_size", "max_queue_delay_ms", "max_queue_size", "request_timeout_s"),
    "limits": (
        "max_body_bytes",
        "max_images_per_request",
        "max_image_pixels",
        "max_top_k",
        "drain_timeout_s",
        "min_body_rate_bytes_per_s",
        "body_rate_grace_s",
        "max_json_values",
    ),
    "memory budgets": ("max_body_bytes_in_flight", "max_decode_bytes_in_flight", "max_parse_bytes"),
    "decode time": (
        "max_jpeg_scans",
        "max_decode_work",
        "heavy_decode_work",
        "heavy_decode_threads",
    ),
    "security": ("api_key", "api_key_file", "cors_origins"),
    "observability": ("log_level", "log_format", "tracing"),
}
OTHER_SECTION = "other"

#: Extra that provides a module a command imports lazily; per command where they differ.
EXTRA_FOR_MODULE: dict[str, str] = {
    "torch": "export",
    "torchvision": "export",
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "cpu",
    "opentelemetry": "tracing",
}
EXTRA_FOR_COMMAND_MODULE: dict[tuple[str, str], str] = {
    ("quantize", "onnx"): "quantize",
    ("quantize", "sympy"): "quantize",
}
#: Help added to settings whose value must not sit on a command line.
ARGV_WARNINGS = {
    "api_key": " Visible to anyone who can run `ps` on the host and kept in shell "
    f"history: prefer {ENV_PREFIX}API_KEY or --api-key-file."
}
EXIT_USAGE = 2


def sections() -> dict[str, list[str]]:
    """Section -> setting names, every current setting exactly once (unplaced: "other")."""
    fields = set(Settings.model_fields)
    grouped = {
        title: [n for n in names if n in fields] for title, names in SETTING_SECTIONS.items()
    }
    placed = {n for names in grouped.values() for n in names}
    other = [n for n in Settings.model_fields if n not in placed]
    if other:
        grouped[OTHER_SECTION] = other
    return {title: names for title, names in grouped.items() if names}


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, documented from the field description and env var name."""
    parser.epilog = (
        f"Every flag is also an environment variable {ENV_PREFIX}<NAME> (flags win), or a "
        f"line of the file named by {ENV_PREFIX}SETTINGS_FILE."
    )
    for title, names in sections().items():
        group = parser.add_argument_group(title)
        for name in names:
            _add_setting_flag(group, name)


def _add_setting_flag(group: argparse._ArgumentGroup, name: str) -> None:
    field = Settings.model_fields[name]
    flag = "--" + name.replace("_", "-")
    env = ENV_PREFIX + name.upper()
    help_text = (
        f"{field.description or ''}{ARGV_WARNINGS.get(name, '')} "
        f"[env {env}; default {field.default!r}]"
    ).replace("%", "%%")
    if field.annotation is bool:
        group.add_argument(
            flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
        )
        return
    choices = [c for c in get_args(field.annotation) if isinstance(c, str)] or None
    if choices is None:
        for arg in get_args(field.annotation):
            choices = [c for c in get_args(arg) if isinstance(c, str)] or choices
    group.add_argument(flag, dest=name, default=None, choices=choices, help=help_text)


def settings_error_line(exc: ValidationError) -> str:
    """One line naming each bad setting's flag and env var, the value and what is allowed."""
    problems = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:
            problems.append(message)
            continue
        name = str(error["loc"][0])
        where = f"--{name.replace('_', '-')} / {ENV_PREFIX}{name.upper()}"
        problems.append(f"{where} = {error.get('input')!r}: {message}")
    return "resnet-serve: invalid setting: " + "; ".join(problems)


def _serve(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {name: getattr(args, name) for name in Settings.model_fields}
    try:
        settings = load_settings(**overrides)
    except ValidationError as exc:
        print(settings_error_line(exc), file=sys.stderr)
        return EXIT_USAGE
    from service.server import run_server  # uvicorn and onnxruntime load here only

    try:
        return run_server(settings)
    except (ModelConfigError, SettingsError) as exc:
        # A broken repository or contradicting budgets are the operator's to fix: say
        # which file or setting, no traceback.
        print(f"resnet-serve: cannot serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UnknownModel as exc:  # --default-model names a model the repository lacks
        available = ", ".join(exc.details.get("available", ())) or "no models"
        print(
            f"resnet-serve: cannot serve: {exc.message} ({settings.repository} has: "
            f"{available}); set --default-model / {ENV_PREFIX}DEFAULT_MODEL to one of them",
            file=sys.stderr,
        )
        return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnet-serve", description="Serve ResNet image classifiers over HTTP."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="serve the repository's models over HTTP and V2 gRPC",
        description="Serve the repository's models (every one, or those --models names) on "
        "two ports: HTTP on --port (default 8000: POST /classify, V2 REST under /v2, "
        "health, /metrics) and V2 gRPC on --grpc-port (default 8001; 0 turns it off). A "
        "port in use stops the server with one line naming it, exit status 5.",
    )
    _add_settings_flags(serve)
    serve.set_defaults(func=_serve)

    # Each module imports its heavy dependencies (torch, onnx) only when its command runs.
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def missing_extra_line(command: str, exc: ModuleNotFoundError) -> str | None:
    """The one-line hint for a module an optional extra provides, or None."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_FOR_COMMAND_MODULE.get((command, top)) or EXTRA_FOR_MODULE.get(top)
    if extra is None:
        return None
    return (
        f"resnet-serve {command}: needs the '{extra}' extra (module {top!r} is not "
        f"installed): pip install '.[{extra}]' (or 'resnet-serve[{extra}]')"
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        line = missing_extra_line(args.command, exc)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
