"""``resnet-serve``: export | serve | quantize | bench.

Heavy imports (torch, onnxruntime, uvicorn) happen inside the subcommand that needs them,
so ``resnet-serve serve`` works on a serving-only install without PyTorch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any, get_args

from service.errors import ModelConfigError
from service.settings import ENV_PREFIX, Settings, load_settings

#: Modules with a ``register(subparsers)`` adding their subcommands.
SUBCOMMAND_MODULES = ("service.export.cli", "service.quantize.cli", "benchmarks.cli")


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, documented from the field description and env var name."""
    group = parser.add_argument_group(
        "settings", f"every flag is also an environment variable {ENV_PREFIX}<NAME>"
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = ENV_PREFIX + name.upper()
        help_text = f"{field.description or ''} [env {env}; default {field.default!r}]"
        if field.annotation is bool:
            group.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
            continue
        choices = [c for c in get_args(field.annotation) if isinstance(c, str)] or None
        if choices is None:
            for arg in get_args(field.annotation):
                choices = [c for c in get_args(arg) if isinstance(c, str)] or choices
        group.add_argument(flag, dest=name, default=None, choices=choices, help=help_text)


def _serve(args: argparse.Namespace) -> int:
    from service.server import run_server  # uvicorn and onnxruntime load here only

    overrides: dict[str, Any] = {name: getattr(args, name) for name in Settings.model_fields}
    settings = load_settings(**overrides)
    try:
        return run_server(settings)
    except ModelConfigError as exc:
        # A broken repository is the operator's to fix: say which file, no traceback.
        print(f"resnet-serve: cannot serve: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnet-serve", description="Serve ResNet image classifiers over HTTP."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="serve every model in the repository",
        description="Serve every model of the repository on POST /classify.",
    )
    _add_settings_flags(serve)
    serve.set_defaults(func=_serve)

    # Subcommands contributed by other parts of the package. Each imports its heavy
    # dependencies (torch, onnx, locust) only when run. `benchmarks` ships with the source
    # tree, not the wheel, so it may be absent.
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise  # a real missing dependency inside the module: do not hide it
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
