"""An engine of our own in memory, for unit tests of the orchestration
(pipeline, Dagster wiring) without database servers. It keeps the Engine
contract — the same contract suite (tests/integration/test_engine_contract.py)
runs on it and on the real servers — and tests can break it on purpose:
`MemoryServer.down` (unreachable), `die_after` (the server dies mid-dump).

Servers are named (`MemoryServer.get(name)`), so two engines on one name see
the same data, as two clients of one database do.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rpger_ops.engines.base import (
    Digest,
    DumpResult,
    EngineError,
    EngineName,
    NamespaceStats,
    NotReadyError,
    PingResult,
    Progress,
    RestoreResult,
    StackMarker,
    no_progress,
)

META = "memory.json"


@dataclass
class MemoryServer:
    name: str
    data: dict[str, dict[str, str]] = field(default_factory=dict)  # namespace -> key -> value
    marker: dict[str, Any] | None = None
    locks: dict[str, tuple[str, float]] = field(default_factory=dict)  # name -> (owner, expires_at)
    down: bool = False
    has_server_hash: bool = True  # like MongoDB's dbHash (False: like FerretDB)
    stored_wrong: bool = False  # the next restore stores a value other than the dump's
    die_after: int | None = None  # namespaces dumped before the server "dies"
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    registry: ClassVar[dict[str, MemoryServer]] = {}

    @classmethod
    def get(cls, name: str) -> MemoryServer:
        return cls.registry.setdefault(name, MemoryServer(name))


def _digest(data: dict[str, dict[str, str]]) -> str:
    d = Digest()
    for ns, items in data.items():
        for key, value in items.items():
            d.add(ns, key, value)
    return d.hexdigest()


class MemoryEngine:
    name: ClassVar[EngineName] = "redis"  # a stand-in; `kind` says what it plays
    digest_version: ClassVar[int] = 1

    def __init__(self, server: str = "default", kind: EngineName = "redis") -> None:
        self.server = MemoryServer.get(server)
        self.kind = kind

    def _up(self) -> MemoryServer:
        if self.server.down:
            raise NotReadyError(f"memory server {self.server.name} unreachable")
        return self.server

    def ping(self) -> PingResult:
        self._up()
        return PingResult("1.0", 0.1, "memory")

    def is_empty(self) -> bool:
        return not any(self._up().data.values())

    def stats(self) -> dict[str, NamespaceStats]:
        return {ns: NamespaceStats(len(items), 0) for ns, items in self._up().data.items() if items}

    def server_hash(self) -> tuple[str | None, str]:
        """Stands in for MongoDB's dbHash: a hash the server computes of its content
        (hashed differently from `digest`, so the two are never confused)."""
        if not self._up().has_server_hash:
            return None, "this memory server has no hash of its own"
        data = {ns: items for ns, items in self._up().data.items() if items}
        return "server:" + _digest(data), ""

    def digest(self) -> str:
        return _digest({ns: items for ns, items in self._up().data.items() if items})

    def read_marker(self) -> StackMarker | None:
        m = self._up().marker
        return StackMarker.from_dict(m) if m else None

    def write_marker(self, marker: StackMarker) -> None:
        self._up().marker = marker.as_dict()

    # --- dump -------------------------------------------------------------------------
    def dump(self, dest: Path, progress: Progress = no_progress) -> DumpResult:
        server = self._up()
        snapshot = {ns: dict(items) for ns, items in server.data.items() if items}
        files, sums = [], {}
        for i, (ns, items) in enumerate(sorted(snapshot.items())):
            if server.die_after is not None and i >= server.die_after:
                server.down = True
                raise NotReadyError(f"memory server {server.name} died mid-dump")
            body = json.dumps(items, sort_keys=True).encode()
            (dest / f"{ns}.json").write_bytes(body)
            sums[ns] = hashlib.sha256(body).hexdigest()
            files.append(f"{ns}.json")
            progress(f"memory: {ns}", i + 1, len(snapshot))
        (dest / META).write_text(json.dumps({"counts": {ns: len(v) for ns, v in snapshot.items()}, "sha256": sums}))
        return DumpResult(counts={ns: len(v) for ns, v in snapshot.items()}, files=[META, *files],
                          bytes_written=sum((dest / f).stat().st_size for f in files), point_in_time=True,
                          server_version="1.0", digest=_digest(snapshot))

    @staticmethod
    def _load(src: Path) -> dict[str, dict[str, str]]:
        try:
            meta = json.loads((src / META).read_text())
            out = {}
            for ns, sha in meta["sha256"].items():
                body = (src / f"{ns}.json").read_bytes()
                if hashlib.sha256(body).hexdigest() != sha:
                    raise EngineError(f"memory dump {ns}.json is damaged")
                out[ns] = json.loads(body)
                if len(out[ns]) != meta["counts"][ns]:
                    raise EngineError(f"memory dump {ns}.json holds {len(out[ns])} items, meta says {meta['counts'][ns]}")
            return out
        except EngineError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EngineError(f"memory dump unreadable: {type(exc).__name__}: {exc}") from None

    @staticmethod
    def count_dump(src: Path) -> dict[str, int]:
        return {ns: len(items) for ns, items in MemoryEngine._load(src).items()}

    @staticmethod
    def digest_dump(src: Path) -> str:
        return _digest(MemoryEngine._load(src))

    def restore(self, src: Path, progress: Progress = no_progress) -> RestoreResult:
        started = time.monotonic()
        loaded = self._load(src)
        server = self._up()
        clash = [ns for ns in loaded if server.data.get(ns)]
        if clash:
            raise EngineError(f"memory restore: target namespaces hold data: {', '.join(clash)}")
        for ns, items in loaded.items():
            server.data[ns] = dict(items)
        if server.stored_wrong and server.data:  # a server that silently stores something else
            server.stored_wrong = False
            ns = sorted(server.data)[0]
            key = sorted(server.data[ns])[0]
            server.data[ns][key] += " (altered)"
        return RestoreResult({ns: len(v) for ns, v in loaded.items()}, time.monotonic() - started)

    def wipe(self) -> None:
        self._up().data.clear()

    # --- locks ---------------------------------------------------------------------------
    def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        server = self._up()
        with server.lock:
            held = server.locks.get(name)
            if held is None or held[0] == owner or held[1] < time.time():
                server.locks[name] = (owner, time.time() + ttl_s)
                return True
            return False

    def release_lock(self, name: str, owner: str) -> None:
        server = self._up()
        with server.lock:
            if server.locks.get(name, ("", 0.0))[0] == owner:
                del server.locks[name]

    @contextmanager
    def scratch(self) -> Iterator[MemoryEngine]:
        name = f"scratch-{uuid.uuid4().hex[:8]}"
        try:
            yield MemoryEngine(name, self.kind)
        finally:
            MemoryServer.registry.pop(name, None)

    def close(self) -> None:
        return None
