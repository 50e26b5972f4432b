"""What a migration is, the ordered registry of them, and what they receive.

A migration is a module with `VERSION: int`, `NAME: str`, `up(ctx)` and
optionally `down(ctx)`. Its checksum is the sha256 of the module's source
file, so editing an applied migration is detected (drift) instead of
silently diverging between stacks.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rpger_ops.engines.base import Progress, no_progress

if TYPE_CHECKING:
    import chromadb.api
    import pymongo.database
    import redis

    from rpger_ops.settings import Settings

MigrationStep = Callable[["MigrationContext"], None]


class RegistryError(Exception):
    """The migration list itself is malformed (duplicate or unordered versions)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up: MigrationStep
    down: MigrationStep | None
    checksum: str
    source: str = ""  # where it came from, for messages

    @property
    def label(self) -> str:
        return f"{self.version:04d} {self.name}"

    @classmethod
    def from_module(cls, module: ModuleType) -> Migration:
        where = getattr(module, "__file__", None) or module.__name__
        try:
            version, name, up = module.VERSION, module.NAME, module.up
        except AttributeError as exc:
            raise RegistryError(f"{where}: a migration needs VERSION, NAME and up(ctx) ({exc})") from None
        if not isinstance(version, int) or version < 1:
            raise RegistryError(f"{where}: VERSION must be a positive int, got {version!r}")
        return cls(version=version, name=str(name), up=up, down=getattr(module, "down", None),
                   checksum=module_checksum(module), source=str(where))


def module_checksum(module: ModuleType) -> str:
    """sha256 of the module's source file (line endings normalised)."""
    path = getattr(module, "__file__", None)
    if not path:
        raise RegistryError(f"{module.__name__}: migration has no source file to checksum")
    data = Path(path).read_bytes().replace(b"\r\n", b"\n")
    return hashlib.sha256(data).hexdigest()


class Registry:
    """Migrations in ascending version order; versions unique."""

    def __init__(self, migrations: Iterable[Migration | ModuleType]) -> None:
        items = [m if isinstance(m, Migration) else Migration.from_module(m) for m in migrations]
        versions = [m.version for m in items]
        if versions != sorted(set(versions)):
            raise RegistryError(f"migration versions must be unique and ascending, got {versions}")
        self.migrations: tuple[Migration, ...] = tuple(items)
        self._by_version = {m.version: m for m in items}

    def latest_version(self) -> int:
        return self.migrations[-1].version if self.migrations else 0

    def get(self, version: int) -> Migration | None:
        return self._by_version.get(version)

    def versions(self) -> list[int]:
        return list(self._by_version)

    def between(self, low_exclusive: int, high_inclusive: int) -> list[Migration]:
        return [m for m in self.migrations if low_exclusive < m.version <= high_inclusive]

    def __len__(self) -> int:
        return len(self.migrations)

    def __iter__(self) -> Iterator[Migration]:
        return iter(self.migrations)


@dataclass
class MigrationContext:
    """What a migration's `up`/`down` receive. Clients are opened on first use."""

    settings: Settings
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("rpger_ops.migrations"))
    progress: Progress = no_progress
    notes: list[str] = field(default_factory=list)  # shown in the run report, e.g. "validators not supported"
    _closers: list[Callable[[], Any]] = field(default_factory=list, repr=False)

    @cached_property
    def mongo_client(self) -> pymongo.MongoClient[dict[str, Any]]:
        from rpger_ops.connect import mongo_client

        client = mongo_client(self.settings)
        self._closers.append(client.close)
        return client

    @cached_property
    def mongo(self) -> pymongo.database.Database[dict[str, Any]]:
        return self.mongo_client[self.settings.mongodb_database]

    @cached_property
    def redis(self) -> redis.Redis:
        from rpger_ops.connect import redis_client

        client = redis_client(self.settings)
        self._closers.append(client.close)
        return client

    @cached_property
    def chroma(self) -> chromadb.api.ClientAPI:
        from rpger_ops.connect import chroma_client

        return chroma_client(self.settings)

    @cached_property
    def mongo_is_ferretdb(self) -> bool:
        """FerretDB answers buildInfo with a `ferretdbVersion` field."""
        info = self.mongo_client.admin.command("buildInfo")
        return "ferretdbVersion" in info or "ferretdb" in info

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.log.warning(message)

    def close(self) -> None:
        for close in reversed(self._closers):
            # Best effort: the run's outcome is already decided.
            with contextlib.suppress(Exception):
                close()
        self._closers.clear()


def versions_of(migrations: Sequence[Migration]) -> list[int]:
    return [m.version for m in migrations]
