"""The V2 repository extension, door-neutral: load and unload a model with the admin key.

Both doors (REST ``/v2/repository/...``, gRPC ``RepositoryModelLoad|Unload``) check the
admin key (:func:`service.lifecycle.check_admin_key`: never the inference key), refuse
the parameters this server does not take, and call the pool, which loads new versions
beside what serves, gates them on their recorded answers and swaps them in (see
:mod:`service.lifecycle`). Each call is logged with its request id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Literal

from service.errors import BadRequest
from service.lifecycle import LifecycleResult, check_admin_key
from service.pool import ModelPool

logger = logging.getLogger(__name__)
Action = Literal["load", "unload"]
#: Triton's parameters for a load from a config or files sent in the request: this
#: server loads only what the repository holds (what the gate can check).
_REFUSED_PREFIXES = ("config", "file:")


async def control(
    pool: ModelPool,
    admin_key: str | None,
    presented: str | bytes | None,
    action: Action,
    model: str,
    parameters: Iterable[str] = (),
) -> LifecycleResult:
    """Load or unload ``model`` for a door; raises the typed error the door maps."""
    check_admin_key(admin_key, presented)
    refused = sorted(p for p in parameters if p.startswith(_REFUSED_PREFIXES))
    if refused:
        raise BadRequest(
            f"parameters {refused} are not served: models load from the repository only",
            allowed="no parameters (unload_dependents is ignored)",
        )
    logger.info("repository %s of model %r asked", action, model)
    if action == "load":
        result = await pool.load_model(model)
    else:
        result = await pool.unload_model(model)
    logger.info("repository %s of model %r done: %s", action, model, result)
    return result
