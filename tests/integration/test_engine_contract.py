"""One contract suite over every engine (rpger_ops/engines/base.py): MongoDB
(FerretDB, or RPGER_TEST_MONGODB_URI), Redis, Chroma on their real servers, and
the in-memory engine the orchestration unit tests use. What is particular to
one database (BSON types, RDB transfer, cosine embeddings, ...) stays in that
engine's own test file; what every engine promises is checked here, once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import Endpoint, ensure_chroma_database

from rpger_ops import devservers
from rpger_ops.connect import chroma_client, mongo_client, redis_client
from rpger_ops.engines import build_engine
from rpger_ops.engines.base import Engine, EngineError, NotReadyError, StackMarker
from rpger_ops.engines.chroma import ChromaEngine
from rpger_ops.engines.mongo import MongoEngine
from rpger_ops.engines.redis import RedisEngine
from rpger_ops.settings import Settings, load_settings
from tests.memory_engine import MemoryEngine, MemoryServer

SECRET = "Sup3r-Secret-Pw-123"


@dataclass
class Target:
    """One empty database of one kind, and how to write data into it natively."""

    kind: str
    engine: Engine
    namespaces: tuple[str, str]
    put: Callable[[str, str, str], None]  # namespace, key, value: through the plain client library
    second: Callable[[], Engine]  # another client of the same database
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def fill(self, n: int = 5) -> None:
        for ns in self.namespaces:
            for i in range(n):
                self.put(ns, f"k{i}", f"value {i} of {ns}")


def _mongo(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    uri = request.getfixturevalue("mongo_endpoint").uri
    settings = load_settings(_env_file=None, MONGODB_URI=uri, MONGODB_DATABASE=f"rpger_c{uuid.uuid4().hex[:10]}",
                             RPGER_BACKUP_DIR=str(tmp_path / "b"))
    client = mongo_client(settings)
    db = client[settings.mongodb_database]

    def put(ns: str, key: str, value: str) -> None:
        db[ns].replace_one({"_id": key}, {"_id": key, "v": value}, upsert=True)

    target = Target("mongo", MongoEngine(settings), ("monsters", "spells"), put, lambda: MongoEngine(settings))
    target.cleanup += [lambda: client.drop_database(settings.mongodb_database), client.close]
    return target


def _redis_settings(endpoint: Endpoint, tmp_path: Path) -> Settings:
    settings = load_settings(_env_file=None, REDIS_URL=f"redis://{endpoint.host}:{endpoint.port}/0",
                             REDIS_PASSWORD=endpoint.secrets["password"], RPGER_BACKUP_DIR=str(tmp_path / "b"))
    c = redis_client(settings)
    c.config_set("repl-diskless-sync-delay", 0)  # test servers: start the snapshot at once
    c.close()
    return settings


def _redis(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    settings = _redis_settings(request.getfixturevalue("redis_factory")(), tmp_path)
    clients: dict[int, Any] = {}

    def put(ns: str, key: str, value: str) -> None:
        db = int(ns.removeprefix("db"))
        clients.setdefault(db, redis_client(settings, db=db)).set(key, value)

    target = Target("redis", RedisEngine(settings), ("db0", "db2"), put, lambda: RedisEngine(settings))
    target.cleanup.append(lambda: [c.close() for c in clients.values()])
    return target


def _chroma(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    endpoint = request.getfixturevalue("chroma_endpoint")
    settings = load_settings(_env_file=None, CHROMA_HOST=endpoint.host, CHROMA_PORT=endpoint.port,
                             CHROMA_DATABASE=f"db_c{uuid.uuid4().hex[:10]}", RPGER_BACKUP_DIR=str(tmp_path / "b"))
    ensure_chroma_database(settings)
    client = chroma_client(settings)

    def put(ns: str, key: str, value: str) -> None:
        coll = client.get_or_create_collection(ns, embedding_function=None)
        coll.upsert(ids=[key], embeddings=[[float(len(value)), 0.5, -1.0]], documents=[value])

    return Target("chroma", ChromaEngine(settings), ("monsters", "spells"), put, lambda: ChromaEngine(settings))


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    name = f"mem-{uuid.uuid4().hex[:8]}"
    server = MemoryServer.get(name)

    def put(ns: str, key: str, value: str) -> None:
        server.data.setdefault(ns, {})[key] = value

    target = Target("memory", MemoryEngine(name), ("a", "b"), put, lambda: MemoryEngine(name))
    target.cleanup.append(lambda: MemoryServer.registry.pop(name, None))
    return target


BUILDERS = {"mongo": _mongo, "redis": _redis, "chroma": _chroma, "memory": _memory}


def _target(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    target = BUILDERS[kind](request, tmp_path)
    try:
        yield target
    finally:
        target.engine.close()
        for fn in target.cleanup:
            fn()


@pytest.fixture(params=list(BUILDERS))
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    yield from _target(request.param, request, tmp_path)


@pytest.fixture
def twin(request: pytest.FixtureRequest, target: Target, tmp_path: Path) -> Iterator[Target]:
    """A second, independent empty database of the same kind."""
    yield from _target(target.kind, request, tmp_path / "twin")


# --- identity and health -------------------------------------------------------------------------

def test_is_an_engine(target: Target) -> None:
    assert isinstance(target.engine, Engine)
    if target.kind != "memory":
        built = build_engine(target.kind, target.engine.settings)  # type: ignore[arg-type, attr-defined]
        assert type(built) is type(target.engine)
        built.close()


def test_ping_names_the_server(target: Target) -> None:
    ping = target.engine.ping()
    assert ping.server_version and ping.server_kind and ping.latency_ms >= 0


def _unreachable(kind: str, tmp_path: Path) -> Engine:
    port = devservers.free_port()
    if kind == "mongo":
        return MongoEngine(load_settings(_env_file=None, MONGODB_URI=f"mongodb://ops:{SECRET}@127.0.0.1:{port}/",
                                         MONGODB_SERVER_SELECTION_TIMEOUT_MS=300, MONGODB_CONNECT_TIMEOUT_MS=300))
    if kind == "redis":
        return RedisEngine(load_settings(_env_file=None, REDIS_URL=f"redis://127.0.0.1:{port}/0",
                                         REDIS_PASSWORD=SECRET, REDIS_SOCKET_CONNECT_TIMEOUT=1))
    if kind == "chroma":
        return ChromaEngine(load_settings(_env_file=None, CHROMA_HOST="127.0.0.1", CHROMA_PORT=port,
                                          CHROMA_AUTH_TOKEN=SECRET))
    engine = MemoryEngine(f"down-{uuid.uuid4().hex[:6]}")
    engine.server.down = True
    return engine


def test_an_unreachable_server_is_not_ready_never_empty_and_names_no_secret(target: Target, tmp_path: Path) -> None:
    engine = _unreachable(target.kind, tmp_path)
    try:
        for call in (engine.ping, engine.is_empty, engine.stats, engine.digest, engine.read_marker):
            with pytest.raises(NotReadyError) as info:
                call()
            assert SECRET not in str(info.value)
        (tmp_path / "dump").mkdir()
        with pytest.raises(EngineError):
            engine.dump(tmp_path / "dump")
    finally:
        engine.close()


# --- what is data, and what is not ------------------------------------------------------------------

def test_marker_and_locks_are_not_data(target: Target) -> None:
    e = target.engine
    assert e.is_empty() and e.stats() == {} and e.read_marker() is None
    empty_digest = e.digest()
    marker = StackMarker("test-stack", 3, "2026-11-28T00:00:00+00:00")
    e.write_marker(marker)
    assert e.acquire_lock("backup", "me", 60)
    assert e.read_marker() == marker
    assert e.is_empty() and e.stats() == {} and e.digest() == empty_digest
    e.write_marker(StackMarker("test-stack", 4, marker.initialized_at))
    assert e.read_marker() == StackMarker("test-stack", 4, marker.initialized_at)
    target.put(target.namespaces[0], "k", "v")
    assert not e.is_empty()


def test_stats_count_items_per_namespace(target: Target) -> None:
    target.fill(4)
    target.put(target.namespaces[1], "extra", "x")
    target.engine.write_marker(StackMarker("test-stack", 1))
    counts = {ns: s.count for ns, s in target.engine.stats().items()}
    assert counts == {target.namespaces[0]: 4, target.namespaces[1]: 5}


# --- locks ---------------------------------------------------------------------------------------------

def test_locks_are_exclusive_renewable_and_released_only_by_their_owner(target: Target) -> None:
    a, b = target.engine, target.second()
    try:
        assert a.acquire_lock("backup", "owner-a", 60)
        assert not b.acquire_lock("backup", "owner-b", 60)
        assert a.acquire_lock("backup", "owner-a", 60)  # the owner renews
        assert b.acquire_lock("restore", "owner-b", 60)  # names are independent
        b.release_lock("backup", "owner-b")  # not b's: no effect
        assert not b.acquire_lock("backup", "owner-b", 60)
        a.release_lock("backup", "owner-a")
        assert b.acquire_lock("backup", "owner-b", 60)
        assert not a.acquire_lock("backup", "owner-a", 60)
    finally:
        b.close()


def test_an_expired_lock_is_taken_over_and_renewal_keeps_one_alive(target: Target) -> None:
    a, b = target.engine, target.second()
    try:
        # TTLs of seconds, not fractions: one Chroma round trip on a loaded 2-core machine takes ~1 s.
        assert a.acquire_lock("migrate", "owner-a", 3.0)
        assert not b.acquire_lock("migrate", "owner-b", 60)
        deadline = time.monotonic() + 20
        while not b.acquire_lock("migrate", "owner-b", 60):  # a crashed holder frees it after its TTL
            assert time.monotonic() < deadline, "the expired lock was never taken over"
            time.sleep(0.2)
        a.release_lock("migrate", "owner-a")  # the late release of the old owner frees nothing
        assert not a.acquire_lock("migrate", "owner-c", 60)
        # Renewing before the TTL passes keeps a lock alive past its first TTL.
        assert a.acquire_lock("kept", "owner-a", 3.0)
        for _ in range(4):
            time.sleep(1.0)
            assert a.acquire_lock("kept", "owner-a", 3.0)
        assert not b.acquire_lock("kept", "owner-b", 60)
    finally:
        b.close()


def test_a_lock_race_has_exactly_one_winner(target: Target) -> None:
    engines = [target.second() for _ in range(5)]
    try:
        with ThreadPoolExecutor(len(engines)) as pool:
            wins = list(pool.map(lambda i: engines[i].acquire_lock("race", f"o{i}", 60), range(len(engines))))
        assert wins.count(True) == 1
    finally:
        for e in engines:
            e.close()


# --- digest, dump, restore --------------------------------------------------------------------------------

def test_equal_content_gives_equal_digests_and_one_change_changes_it(target: Target, twin: Target) -> None:
    target.fill()
    for ns in reversed(twin.namespaces):  # another insertion order
        for i in reversed(range(5)):
            twin.put(ns, f"k{i}", f"value {i} of {ns}")
    twin.engine.write_marker(StackMarker("another-stack", 9))
    assert target.engine.digest() == twin.engine.digest()
    twin.put(twin.namespaces[1], "k3", "value 3 of someone else")
    assert target.engine.digest() != twin.engine.digest()


def test_dump_count_digest_and_restore_round_trip(target: Target, tmp_path: Path) -> None:
    target.fill(6)
    target.engine.write_marker(StackMarker("test-stack", 1))
    live = target.engine.digest()
    dest = tmp_path / "dump"
    dest.mkdir()
    calls: list[tuple[str, int, int | None]] = []
    result = target.engine.dump(dest, lambda m, d, t: calls.append((m, d, t)))
    counts = {target.namespaces[0]: 6, target.namespaces[1]: 6}
    assert result.counts == counts and result.server_version
    assert result.digest == live, "the dump's digest is the digest of what it wrote"
    assert type(target.engine).count_dump(dest) == counts
    assert type(target.engine).digest_dump(dest) == live
    assert calls, "long work reports progress"
    with target.engine.scratch() as scratch:
        assert scratch.is_empty()
        restored = scratch.restore(dest)
        assert restored.counts == counts
        assert scratch.digest() == live
        assert scratch.read_marker() is None  # the marker belongs to the target, never to a dump
    # An empty database dumps nothing, and that is not an error.
    with target.engine.scratch() as empty:
        (tmp_path / "empty").mkdir()
        nothing = empty.dump(tmp_path / "empty")
        assert sum(nothing.counts.values()) == 0
        assert type(target.engine).count_dump(tmp_path / "empty") == nothing.counts


def test_wipe_removes_data_and_keeps_the_marker_and_locks(target: Target) -> None:
    target.fill()
    marker = StackMarker("test-stack", 1)
    target.engine.write_marker(marker)
    assert target.engine.acquire_lock("restore", "me", 60)
    target.engine.wipe()
    assert target.engine.is_empty() and target.engine.stats() == {}
    assert target.engine.read_marker() == marker
    other = target.second()
    try:
        assert not other.acquire_lock("restore", "other", 60)
    finally:
        other.close()


def _damage(kind: str, dump: Path) -> None:
    pattern = {"mongo": "**/*.bson", "redis": "dump.rdb", "chroma": "collections/*.parquet", "memory": "*.json"}[kind]
    victim = next(p for p in sorted(dump.glob(pattern)) if p.name != "memory.json")
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # a truncated file: what a full disk or a cut copy leaves


def test_a_damaged_dump_is_refused(target: Target, tmp_path: Path) -> None:
    target.fill(20)
    dest = tmp_path / "dump"
    dest.mkdir()
    target.engine.dump(dest)
    _damage(target.kind, dest)
    with pytest.raises(EngineError):
        type(target.engine).count_dump(dest)
    with target.engine.scratch() as scratch, pytest.raises(EngineError):
        scratch.restore(dest)


# --- death mid-dump ---------------------------------------------------------------------------------------

@dataclass
class Dying:
    engine: Engine
    kill: Callable[[str, int, int | None], None]  # a progress callback that kills the server mid-dump
    stop: Callable[[], None]


def _dying(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Dying:
    if kind == "memory":
        engine = MemoryEngine(f"dying-{uuid.uuid4().hex[:6]}")
        for ns in ("a", "b", "c"):
            engine.server.data[ns] = {"k": "v"}
        engine.server.die_after = 1
        return Dying(engine, lambda m, d, t: None, lambda: None)
    if kind == "mongo":
        if request.getfixturevalue("mongo_endpoint").server is None:
            pytest.skip("needs a server this test may kill (not RPGER_TEST_MONGODB_URI)")
        server = devservers.start_ferretdb(tmp_path / "dying-ferretdb")
        settings = load_settings(_env_file=None, MONGODB_URI=f"mongodb://{server.host}:{server.port}/",
                                 MONGODB_DATABASE="rpger_dying", MONGODB_SERVER_SELECTION_TIMEOUT_MS=1000,
                                 MONGODB_CONNECT_TIMEOUT_MS=1000, MONGODB_SOCKET_TIMEOUT_MS=5000)
        client = mongo_client(settings)
        client["rpger_dying"]["monsters"].insert_many([{"n": i, "pad": "x" * 200} for i in range(200)])
        client.close()
        mongo = MongoEngine(settings)
        mongo.dump_batch_size, mongo.progress_interval_s = 20, 0
        return Dying(mongo, lambda m, d, t: server.kill() if d > 0 else None, server.stop)
    if kind == "redis":
        endpoint = request.getfixturevalue("redis_factory")()
        settings = _redis_settings(endpoint, tmp_path)
        c = redis_client(settings)
        # Test-only server setting: the snapshot child sleeps per key, so the transfer lasts seconds.
        c.config_set("rdb-key-save-delay", 200)
        pipe = c.pipeline(transaction=False)
        for i in range(20_000):
            pipe.set(f"k:{i}", "v" * 100)
        pipe.execute()
        c.close()
        return Dying(RedisEngine(settings),
                     lambda m, d, t: endpoint.server.kill() if m.startswith("receiving") and d > 0 else None,
                     lambda: None)
    server = devservers.start_chroma(tmp_path / "dying-chroma")
    settings = load_settings(_env_file=None, CHROMA_HOST=server.host, CHROMA_PORT=server.port,
                             CHROMA_DATABASE="db_dying", RPGER_BACKUP_DIR=str(tmp_path / "b"))
    ensure_chroma_database(settings)
    client_ = chroma_client(settings)
    for name in ("monsters", "spells"):
        coll = client_.create_collection(name, embedding_function=None)
        coll.add(ids=[f"{name}{i}" for i in range(300)], embeddings=[[float(i)] * 256 for i in range(300)])
    return Dying(ChromaEngine(settings), lambda m, d, t: server.kill() if d > 0 else None, server.stop)


def test_a_server_dying_mid_dump_fails_the_dump(target: Target, request: pytest.FixtureRequest,
                                                tmp_path: Path) -> None:
    dying = _dying(target.kind, request, tmp_path)
    dest = tmp_path / "dying-dump"
    dest.mkdir()
    try:
        started = time.monotonic()
        with pytest.raises(EngineError):
            dying.engine.dump(dest, dying.kill)
        assert time.monotonic() - started < 60
        with pytest.raises(NotReadyError):  # and afterwards it is not ready, never "empty"
            dying.engine.is_empty()
    finally:
        dying.engine.close()
        dying.stop()
