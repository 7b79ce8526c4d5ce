"""Every service setting, in one place.

Read from ``RESNET_SERVE_*`` environment variables, an optional ``.env``-style settings
file (``RESNET_SERVE_SETTINGS_FILE``) and CLI flags (which win). Nothing reads the
environment at import time: :func:`load_settings` is called by the CLI or the test, and
the result is passed down, so two apps in one process can differ.

One class, :class:`Settings`, is the public API; its field groups and checks are split
over this package's modules (see :mod:`service.settings.core`).
"""

from service.settings.core import ENV_PREFIX, Settings, load_settings

__all__ = ["ENV_PREFIX", "Settings", "load_settings"]
