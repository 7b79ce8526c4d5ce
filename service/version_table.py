"""The version table: which instance of each model version serves, looked up per request.

Split from :mod:`service.pool` so the request path (``get``, ``all``, ``index``: sync, so a
request resolves and reserves without an await between) reads one small class, and the
operations that change the table (start-up load, reload, unload, in :class:`ModelPool`)
stay apart. The table changes only on the event loop, in one step per model (a swap), so
a lookup always sees either the old or the new versions of a model, never a mix.
"""

from __future__ import annotations

from service.engines import max_batch_size_of
from service.errors import UnknownModel
from service.lifecycle import VersionState
from service.preprocess import Limits
from service.repository import ModelEntry, ModelVersion
from service.served import ServedModel, create_preprocessor
from service.settings import Settings


class VersionTable:
    """Every served model version, looked up by name and optional version."""

    def __init__(self, entries: list[ModelEntry], settings: Settings) -> None:
        self.settings = settings
        self._limits = Limits(
            max_pixels=settings.max_image_pixels,
            max_jpeg_scans=settings.max_jpeg_scans,
            max_decode_work=settings.max_decode_work,
        )
        self._models: dict[str, dict[int, ServedModel]] = {}
        self._defaults: dict[str, int] = {}
        self._entries: dict[str, ModelEntry] = {}
        for entry in entries:
            self._models[entry.config.name] = {
                m.number: m for m in (self._new(entry, v) for v in entry.served_versions)
            }
            self._entries[entry.config.name] = entry
            self._defaults[entry.config.name] = entry.default_version.info.version
        if settings.default_model and settings.default_model not in self._models:
            raise UnknownModel(
                f"default model {settings.default_model!r} is not in the repository",
                available=sorted(self._models),
            )
        self.default_name = settings.default_model or (min(self._models) if self._models else None)
        #: Instances replaced or unloaded that are still finishing admitted requests.
        self._draining: list[ServedModel] = []
        #: Versions being loaded that are not in the table yet.
        self._loading: dict[tuple[str, int], ServedModel] = {}
        #: A reload refused while the previous instance serves on: (model, version) -> why.
        self._refusals: dict[tuple[str, int], str] = {}
        #: Models whose folder could not be read at all: name -> why.
        self._unreadable: dict[str, str] = {}

    def _new(self, entry: ModelEntry, version: ModelVersion) -> ServedModel:
        preprocessor = create_preprocessor(entry.config, self._limits)
        return ServedModel(
            entry,
            version,
            preprocessor,
            max_batch_size_of(entry.config, self.settings),
            stuck_after_s=self.settings.stuck_batch_after_s,
        )

    # -- lookup ----------------------------------------------------------------------
    def all(self) -> list[ServedModel]:
        return [m for versions in self._models.values() for m in versions.values()]

    def versions_of(self, name: str) -> list[ServedModel]:
        """Every served version of one model (empty for an unknown name)."""
        return list(self._models.get(name, {}).values())

    def default_of(self, name: str) -> ServedModel:
        return self._models[name][self._defaults[name]]

    def get(self, name: str | None, version: int | None = None) -> ServedModel:
        name = name or self.default_name
        if name is None or name not in self._models:
            raise UnknownModel(f"unknown model {name!r}", available=sorted(self._models))
        if version is None:
            return self.default_of(name)
        try:
            return self._models[name][version]
        except KeyError:
            raise UnknownModel(
                f"model {name} has no version {version}",
                available_versions=sorted(self._models[name]),
            ) from None

    def index(self, *, ready: bool = False) -> list[VersionState]:
        """Every version the server knows, with its state and reason (V2 repository index);
        ``ready``: only those serving (the index request's ``ready`` flag)."""
        if ready:
            return [s for s in self.index() if s.state == "ready"]
        rows: list[VersionState] = []
        for name in sorted({*self._models, *self._unreadable, *(n for n, _ in self._loading)}):
            table = self._models.get(name, {})
            if name in self._unreadable:
                rows.append(VersionState(name, "", "failed", self._unreadable[name]))
            for number, model in sorted(table.items()):
                refusal = self._refusals.get((name, number))
                reason = f"serving the previous load; reload refused: {refusal}" if refusal else ""
                reason = reason or model.gate_reason
                rows.append(
                    VersionState(name, str(number), model.status, reason or model.error or "")
                )
            for model_name, number in sorted(self._loading):
                if model_name == name and number not in table:
                    rows.append(VersionState(name, str(number), "loading"))
            for model in self._draining:
                if model.name == name and model.number not in table:
                    rows.append(
                        VersionState(name, str(model.number), "unloading", model.error or "")
                    )
        return rows

    def _default_for(self, entry: ModelEntry, table: dict[int, ServedModel]) -> int:
        """The pinned default, else the newest version serving, else the newest."""
        pinned = entry.config.default_version
        if pinned is not None and pinned in table:
            return pinned
        ready = [n for n, m in table.items() if m.status == "ready"]
        return max(ready or table)

    def _states(self, name: str) -> tuple[VersionState, ...]:
        return tuple(s for s in self.index() if s.name == name)
