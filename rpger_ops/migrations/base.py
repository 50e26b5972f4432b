"""What a migration is, the ordered registry of them, and what they receive.

A migration is a module with `VERSION: int`, `NAME: str` and one step per
database it changes: `up_mongo(ctx)`, `up_redis(ctx)`, `up_chroma(ctx)`, each
optionally with its `down_<db>(ctx)`. Steps are applied, recorded and
reverted per database (each database keeps its own ledger in its stack
marker), so restoring only Redis runs only Redis's pending steps.

A module with a plain `up(ctx)` (and `down(ctx)`) is a *combined* migration:
it needs every database of `DATABASES` (default: all three) at once, e.g. to
move data between them, and runs only when all of them are migrated together.

Its checksum is the sha256 of the module's source file, so editing an applied
migration is detected (drift) instead of silently diverging between stacks.
`FORMER_CHECKSUMS` lists earlier sources of the same migration that mean the
same (a refactor reviewed as such); ledgers recorded with one of them are
accepted and re-recorded with the current checksum.
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

from rpger_ops.engines.base import ENGINE_NAMES, EngineName, Progress, no_progress

if TYPE_CHECKING:
    import chromadb.api
    import pymongo.database
    import redis

    from rpger_ops.settings import Settings

MigrationStep = Callable[["MigrationContext"], None]


class RegistryError(Exception):
    """The migration list itself is malformed (duplicate or unordered versions)."""


@dataclass(frozen=True)
class Step:
    up: MigrationStep
    down: MigrationStep | None


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    steps: dict[EngineName, Step]  # one per database it changes (combined: the same step for each)
    checksum: str
    combined: bool = False  # one step across all of `databases`, run only with all of them at once
    former_checksums: frozenset[str] = frozenset()
    source: str = ""  # where it came from, for messages

    @property
    def label(self) -> str:
        return f"{self.version:04d} {self.name}"

    @property
    def databases(self) -> tuple[EngineName, ...]:
        return tuple(db for db in ENGINE_NAMES if db in self.steps)

    def accepts(self, checksum: str) -> bool:
        return checksum == self.checksum or checksum in self.former_checksums

    @classmethod
    def from_module(cls, module: ModuleType) -> Migration:
        where = getattr(module, "__file__", None) or module.__name__
        try:
            version, name = module.VERSION, module.NAME
        except AttributeError as exc:
            raise RegistryError(f"{where}: a migration needs VERSION and NAME ({exc})") from None
        if not isinstance(version, int) or version < 1:
            raise RegistryError(f"{where}: VERSION must be a positive int, got {version!r}")
        steps = {db: Step(getattr(module, f"up_{db}"), getattr(module, f"down_{db}", None))
                 for db in ENGINE_NAMES if hasattr(module, f"up_{db}")}
        combined = not steps
        if combined:
            if not hasattr(module, "up"):
                raise RegistryError(f"{where}: a migration needs up_<db>(ctx) steps (or a combined up(ctx))")
            databases = tuple(getattr(module, "DATABASES", ENGINE_NAMES))
            unknown = sorted(set(databases) - set(ENGINE_NAMES))
            if unknown or not databases:
                raise RegistryError(f"{where}: DATABASES must name some of {', '.join(ENGINE_NAMES)}, got {databases}")
            step = Step(module.up, getattr(module, "down", None))
            steps = {db: step for db in ENGINE_NAMES if db in databases}
        return cls(version=version, name=str(name), steps=steps, checksum=module_checksum(module), combined=combined,
                   former_checksums=frozenset(getattr(module, "FORMER_CHECKSUMS", ())), source=str(where))


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
    database: EngineName | None = None  # the database of the step being run (None: a combined migration)
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
