"""The request path, once, for every front door: see :mod:`service.pipeline.hub`."""

from service.pipeline.call import (
    BodyParser,
    Call,
    Door,
    EncodedImage,
    Head,
    Inputs,
    Outcome,
    Parsed,
    Timings,
    never,
)
from service.pipeline.hub import UNRESOLVED, Pipeline, let_go, parse_version

__all__ = [
    "UNRESOLVED",
    "BodyParser",
    "Call",
    "Door",
    "EncodedImage",
    "Head",
    "Inputs",
    "Outcome",
    "Parsed",
    "Pipeline",
    "Timings",
    "let_go",
    "never",
    "parse_version",
]
