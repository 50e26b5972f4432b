"""The contract every database engine implements.

One module per database (`mongo.py`, `redis.py`, `chroma.py`) implements
`Engine`; nothing here imports Dagster, so tests and benchmarks call engines
directly. Helpers written only against this contract live in other modules.

Shared vocabulary:
- a *namespace* is what a database holds data in: a Mongo collection, a Redis
  logical database (`db0`, `db1`, ...), a Chroma collection;
- the *stack marker* records that this stack initialised the database (stack
  id, schema version). It, and any lock the stack takes, is stack state, not
  user data: it is excluded from `is_empty`, `stats`, `digest` and `dump`.
  It lives outside the app's namespaces: Mongo: database `<database>__stack`,
  collection `state` (marker doc `_id: "marker"`, lock docs `_id: "lock:<name>"`);
  Redis: keys `_rpger:stack` and `_rpger:lock:<name>` in the stack db
  (`RPGER_REDIS_STACK_DB`, 15); Chroma: database `<database>_rpger_stack`,
  collections `stack` and `lock_<name>`. Markers of rpger-ops 0.1 (in the app's
  namespaces: `_rpger_stack`, db0, `rpger__stack`) are still read; the next
  marker write moves them.
- other `_rpger_*` namespaces (e.g. the migrations ledger `_rpger_migrations`)
  are dumped, restored and digested, but do not make a database non-empty.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

EngineName = Literal["mongo", "redis", "chroma"]
ENGINE_NAMES: tuple[EngineName, ...] = ("mongo", "redis", "chroma")

# Name used for marker collections/keys in every database.
MARKER_NAME = "_rpger_stack"

# Callback for long work: (message, done, total or None). Engines call it at
# least every few seconds of work so runs show progress.
Progress = Callable[[str, int, int | None], None]


def no_progress(message: str, done: int, total: int | None) -> None:
    return None


class EngineError(Exception):
    """A database operation failed; the message is safe to show (no secrets)."""


_URL_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]+@")


def safe_error(exc: BaseException) -> str:
    """An exception as one line without credentials (engines' messages already are safe;
    driver messages may quote a URI)."""
    text = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
    return _URL_CREDENTIALS.sub(r"\1***@", text).splitlines()[0] if text else type(exc).__name__


class NotReadyError(EngineError):
    """The server is unreachable or refuses our credentials: neither empty nor full."""


class UnsupportedFeature(EngineError):
    """The server lacks a feature (e.g. FerretDB has no $jsonSchema validators)."""


@dataclass(frozen=True)
class PingResult:
    server_version: str
    latency_ms: float
    server_kind: str = ""  # e.g. "mongodb", "ferretdb", "redis", "valkey", "chroma"


@dataclass(frozen=True)
class NamespaceStats:
    count: int  # documents / keys / records
    size_bytes: int  # the server's own size estimate, 0 where it has none


@dataclass(frozen=True)
class LedgerEntry:
    """One migration step applied to one database."""

    version: int
    name: str
    checksum: str
    applied_at: str = ""
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "name": self.name, "checksum": self.checksum,
                "applied_at": self.applied_at, "duration_s": self.duration_s}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LedgerEntry:
        return cls(int(d["version"]), str(d.get("name", "")), str(d.get("checksum", "")),
                   str(d.get("applied_at", "")), float(d.get("duration_s", 0.0)))


@dataclass(frozen=True)
class StackMarker:
    """The stack's record in a database: who initialised it, its schema version, and
    its migrations ledger (`migrations`; None in markers written before the
    ledger moved into them: the runner then derives it from `schema_version`)."""

    stack_id: str
    schema_version: int
    initialized_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    migrations: tuple[LedgerEntry, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stack_id": self.stack_id, "schema_version": self.schema_version,
                               "initialized_at": self.initialized_at}
        if self.migrations is not None:
            # A JSON string: Chroma keeps the marker in collection metadata (scalars only).
            out["migrations"] = json.dumps([e.as_dict() for e in self.migrations], sort_keys=True)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StackMarker:
        raw = d.get("migrations")
        entries = json.loads(raw) if isinstance(raw, str) else raw
        return cls(stack_id=str(d["stack_id"]), schema_version=int(d["schema_version"]),
                   initialized_at=str(d.get("initialized_at", "")),
                   migrations=None if entries is None else tuple(LedgerEntry.from_dict(e) for e in entries))


@dataclass
class DumpResult:
    """What `Engine.dump` wrote into its directory."""

    counts: dict[str, int]  # namespace -> items written
    files: list[str]  # paths relative to the dump directory
    bytes_written: int
    point_in_time: bool  # one consistent instant for all namespaces
    server_version: str
    digest: str = ""  # `digest()` of exactly what was written (computed while dumping)
    notes: list[str] = field(default_factory=list)  # e.g. "validators not supported by server"
    extra: dict[str, Any] = field(default_factory=dict)  # engine-specific metadata


@dataclass
class RestoreResult:
    counts: dict[str, int]
    seconds: float
    notes: list[str] = field(default_factory=list)  # what could not be restored, and why


@runtime_checkable
class Engine(Protocol):
    """One database server as the ops layer sees it."""

    name: ClassVar[EngineName]
    # Bumped whenever `digest()` computes differently: a set records the version of its
    # digest, and one recorded by another version is checked against `digest_dump` instead.
    digest_version: ClassVar[int]

    def ping(self) -> PingResult:
        """Round trip with auth; raises NotReadyError when unreachable or refused."""
        ...

    def is_empty(self) -> bool:
        """True when the database holds no user data (marker and locks do not count).
        Raises NotReadyError rather than answering when the server can't be asked."""
        ...

    def stats(self) -> dict[str, NamespaceStats]:
        """Per-namespace counts and sizes of user data."""
        ...

    def digest(self) -> str:
        """Hex sha256 over everything a restore must bring back, independent of
        insertion/iteration order. Equal content -> equal digest; any single
        change in data, type, index/option/configuration, or TTL presence
        changes it."""
        ...

    def server_hash(self) -> tuple[str | None, str]:
        """A hash of the user data that the server computes itself (MongoDB's dbHash),
        far cheaper than `digest()`, which reads everything back. Equal hashes of two
        databases mean equal content on the same server kind; the value is only ever
        compared with one this server kind computed of content already proven by a
        digest. (None, why) when the server has none: `why` is "" when none is expected
        of this kind of server, else what is missing (e.g. FerretDB has no dbHash)."""
        ...

    def read_marker(self) -> StackMarker | None: ...

    def write_marker(self, marker: StackMarker) -> None: ...

    def dump(self, dest: Path, progress: Progress = no_progress) -> DumpResult:
        """Write a complete, online, non-blocking dump of all user data into the
        (existing, empty) directory `dest`. Raises EngineError on any failure;
        the caller removes `dest` then."""
        ...

    @staticmethod
    def count_dump(src: Path) -> dict[str, int]:
        """Parse a dump directory written by `dump` and count items per namespace
        (proves an archive is readable and complete without a server)."""
        ...

    @staticmethod
    def digest_dump(src: Path) -> str:
        """The digest a database holds after `restore(src)` into an empty target now:
        computed from the dump's files, without the source server. Equal to
        `DumpResult.digest` unless content has legitimately lapsed since the dump
        (Redis keys whose TTL passed)."""
        ...

    def restore(self, src: Path, progress: Progress = no_progress) -> RestoreResult:
        """Load a dump directory into this database, which the caller has made
        sure is empty (or wiped after a safety backup). Bulk and batched."""
        ...

    def wipe(self) -> None:
        """Delete all user data (not the marker). Only ever called by restore
        with force, after a safety backup, and by tests."""
        ...

    def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """Atomically take the named lock in the database itself; False when
        another live owner holds it. An expired lock may be taken over; when
        `owner` already holds it, its TTL is renewed (the heartbeat of
        `locks.LockHolder`)."""
        ...

    def release_lock(self, name: str, owner: str) -> None:
        """Release the lock if `owner` still holds it."""
        ...

    def scratch(self) -> AbstractContextManager[Engine]:
        """An empty scratch target of the same kind, removed on exit (Mongo: a
        temporary database; Redis: a temporary redis-server; Chroma: a temporary
        database in the same tenant). Used by verify_restore."""
        ...

    def close(self) -> None: ...


class Digest:
    """Order-independent digest: sha256 of the sorted per-item hashes.

    Each item is hashed with its namespace, so moving an item between
    namespaces changes the digest too.
    """

    def __init__(self) -> None:
        self._items: list[bytes] = []

    def add(self, namespace: str, *parts: bytes | str) -> None:
        h = hashlib.sha256()
        for p in (namespace, *parts):
            b = p.encode() if isinstance(p, str) else p
            h.update(len(b).to_bytes(8, "big"))
            h.update(b)
        self._items.append(h.digest())

    def add_many(self, namespace: str, items: Iterable[bytes]) -> None:
        for item in items:
            self.add(namespace, item)

    def hexdigest(self) -> str:
        outer = hashlib.sha256()
        for item in sorted(self._items):
            outer.update(item)
        outer.update(len(self._items).to_bytes(8, "big"))
        return outer.hexdigest()
