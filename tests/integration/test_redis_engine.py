"""The Redis engine on real redis-servers (password, AOF on), one fresh server per test."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from rpger_ops import testdata
from rpger_ops.connect import redis_client
from rpger_ops.devservers import free_port, port_open, start_redis
from rpger_ops.engines._redis_digest import EXPIRY_GRID_MS
from rpger_ops.engines._redis_sync import fetch_rdb, parse_address
from rpger_ops.engines.base import EngineError, NamespaceStats, NotReadyError, StackMarker
from rpger_ops.engines.redis import DUMP_FILE, SIDECAR, RedisEngine
from rpger_ops.settings import Settings, load_settings

SCALE = 30


def settings_for(endpoint: Any, tmp_path: Path, **overrides: Any) -> Settings:
    env: dict[str, Any] = {"REDIS_URL": endpoint.uri or f"redis://{endpoint.host}:{endpoint.port}/0",
                           "RPGER_BACKUP_DIR": str(tmp_path / "backups")}
    if endpoint.secrets.get("password"):
        env["REDIS_PASSWORD"] = endpoint.secrets["password"]
    env.update(overrides)
    return load_settings(_env_file=None, **env)


def no_sync_delay(settings: Settings) -> None:
    """Test servers only: start diskless syncs at once instead of waiting 5 s for more replicas."""
    client = redis_client(settings)
    client.config_set("repl-diskless-sync-delay", 0)
    client.close()


@pytest.fixture
def rsettings(redis_endpoint: Any, tmp_path: Path) -> Settings:
    settings = settings_for(redis_endpoint, tmp_path)
    no_sync_delay(settings)
    return settings


@pytest.fixture
def engine(rsettings: Settings) -> Iterator[RedisEngine]:
    e = RedisEngine(rsettings)
    yield e
    e.close()


@pytest.fixture
def second_endpoint(redis_factory: Callable[[], Any]) -> Any:
    return redis_factory()


@pytest.fixture
def second(second_endpoint: Any, tmp_path: Path) -> Iterator[RedisEngine]:
    """Another fresh real server (password, AOF on)."""
    settings = settings_for(second_endpoint, tmp_path)
    no_sync_delay(settings)
    e = RedisEngine(settings)
    yield e
    e.close()


def client(engine: RedisEngine, db: int = 0) -> redis.Redis:
    return redis_client(engine.settings, db=db)


def own_server(endpoint: Any) -> Any:
    """The harness-started server behind an endpoint; fault tests skip on an external one."""
    if endpoint.server is None:
        pytest.skip("needs a server this test may stop or kill (not RPGER_TEST_REDIS_URL)")
    return endpoint.server


def wait_until_gone(engine: RedisEngine, key: str, limit_s: float = 10.0) -> None:
    """Until a key with a TTL has expired (polling, so a slow machine only waits longer)."""
    c = client(engine)
    deadline = time.monotonic() + limit_s
    while c.exists(key):
        assert time.monotonic() < deadline, f"{key} did not expire"
        time.sleep(0.05)
    c.close()


def load_extras(engine: RedisEngine) -> None:
    """Types and places testdata does not cover: stream groups, odd scores, a far db, a ledger key."""
    c = client(engine)
    # Stream ids are data; testdata's are server-generated, so pin them for comparisons.
    c.delete("events:dice")
    c.xadd("events:dice", {"roll": "1d20", "result": "17"}, id="1704067200000-0")
    c.xadd("events:dice", {"roll": "2d6", "result": "7"}, id="1704067200000-1")
    c.xgroup_create("events:dice", "dm", id="0")
    c.zadd("scores:odd", {"a": float("inf"), "b": -0.0, "c": 1e-300, "d": 2.5})
    c.set("_rpger:migrations", '{"applied": ["0001"]}')
    c.set("empty:string", b"")
    c.close()
    c5 = client(engine, 5)
    c5.rpush("db5:list", "x", "y", "z")
    c5.set("db5:ttl", "v", px=5_000_000)
    c5.close()


def test_wrong_password_is_not_ready_and_never_shown(redis_endpoint: Any, tmp_path: Path) -> None:
    wrong = "not-the-password-" + "x" * 8
    engine = RedisEngine(settings_for(redis_endpoint, tmp_path, REDIS_PASSWORD=wrong))
    for call in (engine.ping, engine.is_empty, engine.stats):
        with pytest.raises(NotReadyError) as info:
            call()
        assert wrong not in str(info.value)
    with pytest.raises(NotReadyError):
        engine.dump(tmp_path / "d")
    engine.close()


def test_is_empty_ignores_marker_locks_and_ledger_but_not_data(engine: RedisEngine) -> None:
    assert engine.is_empty()
    engine.write_marker(StackMarker("s1", 1))
    assert engine.acquire_lock("backup", "me", 60)
    client(engine).set("_rpger:migrations", "[]")
    assert engine.is_empty()
    # The ledger is data for stats (and dump/digest); marker and lock are not.
    assert engine.stats() == {"db0": NamespaceStats(1, 0)}
    client(engine, 3).set("anything", "1")
    assert not engine.is_empty()
    client(engine, 3).delete("anything")
    client(engine).set("game:state:x", "1")
    assert not engine.is_empty()


def test_malformed_marker_is_an_error(engine: RedisEngine) -> None:
    client(engine).set("_rpger:stack", "not json")
    with pytest.raises(EngineError):
        engine.read_marker()


def test_stats_count_keys_per_db(engine: RedisEngine) -> None:
    testdata.load_redis(engine.settings, scale=SCALE)
    db0_keys = client(engine).dbsize()
    assert db0_keys > SCALE and client(engine, 1).dbsize() == 2
    engine.write_marker(StackMarker("s", 1))
    engine.acquire_lock("backup", "me", 60)
    assert engine.stats() == {"db0": NamespaceStats(db0_keys, 0), "db1": NamespaceStats(2, 0)}


def test_wipe_removes_data_in_every_db_but_keeps_marker_and_locks(engine: RedisEngine) -> None:
    testdata.load_redis(engine.settings, scale=SCALE)
    load_extras(engine)
    marker = StackMarker("s", 1)
    engine.write_marker(marker)
    assert engine.acquire_lock("restore", "me", 60)
    engine.wipe()
    assert engine.is_empty()
    assert engine.stats() == {}
    assert engine.read_marker() == marker
    assert not engine.acquire_lock("restore", "other", 60)


# --- digest ------------------------------------------------------------------

def _load_same(a: RedisEngine, b: RedisEngine) -> None:
    testdata.load_redis(a.settings, scale=SCALE)
    testdata.load_redis(b.settings, scale=SCALE)
    for e in (a, b):
        load_extras(e)


def test_digest_equal_for_equal_content_regardless_of_order_and_stack_state(
        engine: RedisEngine, second: RedisEngine) -> None:
    _load_same(engine, second)
    ca, cb = client(engine), client(second)
    ca.hset("order:hash", mapping={"a": "1", "b": "2", "c": "3"})
    cb.hset("order:hash", mapping={"c": "3", "b": "2", "a": "1"})
    ca.sadd("order:set", "x", "y", "z")
    cb.sadd("order:set", "z", "y", "x")
    engine.write_marker(StackMarker("only-here", 1))
    engine.acquire_lock("backup", "me", 60)
    assert engine.digest() == second.digest()


def _swap_first_two(c: redis.Redis, key: str) -> None:
    first, second_ = c.lrange(key, 0, 1)
    assert first != second_
    c.lset(key, 0, second_)
    c.lset(key, 1, first)


CHANGES: dict[str, Callable[[redis.Redis, redis.Redis], Any]] = {
    "one string value": lambda c0, c1: c0.set("game:state:characters:3", '{"hp": 1, "pos": [3, 6]}'),
    "one hash field": lambda c0, c1: c0.hset("session:abc", "user", "user2"),
    "list order": lambda c0, c1: _swap_first_two(c0, "memory:conversation"),
    "one TTL removed": lambda c0, c1: c0.persist("dashboard:default:user0"),
    # The absolute expiry counts on a one-hour grid (DEBUG DIGEST alone only sees a TTL's presence).
    "one TTL moved by two hours": lambda c0, c1: c0.pexpireat(
        "dashboard:default:user0", c0.pexpiretime("dashboard:default:user0") + 2 * EXPIRY_GRID_MS),
    "one consumer group's position": lambda c0, c1: c0.xgroup_setid("events:dice", "dm", "1704067200000-1"),
    "key moved to another db": lambda c0, c1: c0.move("game:state:environment", 1),
    "one set member": lambda c0, c1: c0.sadd("online:users", "user99"),
    "one zset score": lambda c0, c1: c0.zincrby("leaderboard:xp", 1, "Hero 0"),
    "one stream entry": lambda c0, c1: c0.xadd("events:dice", {"roll": "1d6", "result": "2"}),
    "string becomes a list": lambda c0, c1: (c0.delete("game:state:environment"),
                                             c0.rpush("game:state:environment", '{"weather": "rain", "time": "dusk"}')),
    "one key deleted": lambda c0, c1: c0.delete("bin:blob"),
    "ledger changed": lambda c0, c1: c0.set("_rpger:migrations", '{"applied": []}'),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_digest_changes_with_each_single_change(engine: RedisEngine, change: str) -> None:
    testdata.load_redis(engine.settings, scale=SCALE)
    load_extras(engine)
    before = engine.digest()
    assert engine.digest() == before  # stable when nothing changes
    CHANGES[change](client(engine), client(engine, 1))
    assert engine.digest() != before


# --- dump, count, restore ------------------------------------------------------

LIBRARY = "#!lua name=rpger_test\nredis.register_function('rpger_ping', function() return 'pong' end)"


def test_dump_count_restore_into_scratch_round_trip(engine: RedisEngine, tmp_path: Path) -> None:
    testdata.load_redis(engine.settings, scale=SCALE)
    load_extras(engine)
    engine.write_marker(StackMarker("src", 1))
    engine.acquire_lock("backup", "me", 60)
    without_function = engine.digest()
    client(engine).function_load(LIBRARY)
    source_digest = engine.digest()
    assert source_digest != without_function
    dest = tmp_path / "dump"
    dest.mkdir()
    calls: list[tuple[str, int, int | None]] = []
    result = engine.dump(dest, lambda m, d, t: calls.append((m, d, t)))
    assert result.files == [DUMP_FILE, SIDECAR]
    assert result.bytes_written == (dest / DUMP_FILE).stat().st_size > 0
    assert result.point_in_time
    assert result.counts == {ns: s.count for ns, s in engine.stats().items()}
    assert set(result.counts) == {"db0", "db1", "db5"}
    # The marker and the lock live in the stack db (15), out of the app's db0; neither is data.
    assert result.extra["source_dbsize"]["db0"] == result.counts["db0"]
    assert result.extra["source_dbsize"]["db15"] == 2 and "db15" not in result.counts
    assert calls
    assert RedisEngine.count_dump(dest) == result.counts

    with engine.scratch() as scratch:
        assert isinstance(scratch, RedisEngine)
        assert scratch.is_empty()
        restored = scratch.restore(dest)
        assert restored.counts == result.counts
        assert restored.notes == ["restored 1 function libraries"]
        assert client(scratch).fcall("rpger_ping", 0) == b"pong"
        assert scratch.digest() == source_digest
        assert scratch.read_marker() is None  # stack state stays with its stack
        assert scratch.acquire_lock("backup", "someone-else", 10)
        # TTLs come back as the same absolute expiry.
        sc, oc = client(scratch), client(engine)
        assert sc.pexpiretime("dashboard:default:user1") == oc.pexpiretime("dashboard:default:user1") > 0
        assert sc.pexpiretime("game:state:environment") == -1
        assert client(scratch, 5).pexpiretime("db5:ttl") == client(engine, 5).pexpiretime("db5:ttl")
        scratch_url = scratch.settings.redis_url.get_secret_value()
    # Removed on exit.
    assert not Path(scratch_url.removeprefix("unix://")).exists()


def test_restore_into_a_real_aof_server_survives_its_restart(engine: RedisEngine, second: RedisEngine,
                                                             second_endpoint: Any, tmp_path: Path) -> None:
    testdata.load_redis(engine.settings, scale=SCALE)
    load_extras(engine)
    client(engine).set("soon:gone", "x", px=3000)
    dest = tmp_path / "dump"
    dest.mkdir()
    digest_at_dump = engine.digest()
    result = engine.dump(dest)
    assert RedisEngine.digest_dump(dest) == digest_at_dump
    wait_until_gone(engine, "soon:gone")
    # The count of a dump does not change when keys in it expire later.
    assert RedisEngine.count_dump(dest) == result.counts
    client(engine).delete("soon:gone")  # gone from the source too, for the digest below
    source_digest = engine.digest()

    restored = second.restore(dest)
    assert restored.notes == ["db0: 1 keys had expired since the dump and were skipped"]
    assert restored.counts["db0"] == result.counts["db0"] - 1
    assert second.digest() == source_digest
    # What a restore today gives is known from the dump alone, expired keys and all.
    assert RedisEngine.digest_dump(dest) == source_digest != digest_at_dump
    # Restored through the server, so it is in its AOF: a restart keeps it.
    old = second_endpoint.server
    old.stop()
    # Same data dir and port: the server comes back from its AOF alone.
    second_endpoint.server = start_redis(old.data_dir, old.secrets["password"], port=old.port)
    second.close()
    assert second.digest() == source_digest


@pytest.fixture
def dumped(engine: RedisEngine, tmp_path: Path) -> Path:
    testdata.load_redis(engine.settings, scale=SCALE)
    dest = tmp_path / "dump"
    dest.mkdir()
    engine.dump(dest)
    return dest


def _rewrite(path: Path, change: Callable[[bytes], bytes]) -> None:
    path.write_bytes(change(path.read_bytes()))


DAMAGES = ["truncated", "truncated, size record matched", "tail cut", "byte flipped", "not an rdb", "empty",
           "missing", "sidecar missing", "sidecar malformed"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_count_dump_rejects_damaged_dumps(dumped: Path, damage: str) -> None:
    rdb = dumped / DUMP_FILE
    if damage == "truncated":
        _rewrite(rdb, lambda b: b[: len(b) // 2])
    elif damage == "truncated, size record matched":  # only loading the RDB can tell
        _rewrite(rdb, lambda b: b[: len(b) - 200] + b[-9:])
        meta = json.loads((dumped / SIDECAR).read_text())
        meta["rdb_bytes"] = rdb.stat().st_size
        (dumped / SIDECAR).write_text(json.dumps(meta))
    elif damage == "sidecar missing":
        (dumped / SIDECAR).unlink()
    elif damage == "sidecar malformed":
        (dumped / SIDECAR).write_text('{"rdb_bytes": "many"}')
    elif damage == "tail cut":
        _rewrite(rdb, lambda b: b[:-3])
    elif damage == "byte flipped":
        _rewrite(rdb, lambda b: b[:200] + bytes([b[200] ^ 0x40]) + b[201:])
    elif damage == "not an rdb":
        _rewrite(rdb, lambda b: b"hello world, not redis at all\n" * 3)
    elif damage == "empty":
        rdb.write_bytes(b"")
    else:
        rdb.unlink()
    with pytest.raises(EngineError):
        RedisEngine.count_dump(dumped)


def test_restore_refuses_a_damaged_dump_and_writes_nothing(dumped: Path, second: RedisEngine) -> None:
    _rewrite(dumped / DUMP_FILE, lambda b: b[:300] + bytes([b[300] ^ 0x01]) + b[301:])
    with pytest.raises(EngineError):
        second.restore(dumped)
    assert second.is_empty()


def test_server_killed_while_preparing_the_snapshot(redis_endpoint: Any, tmp_path: Path) -> None:
    own_server(redis_endpoint)
    settings = settings_for(redis_endpoint, tmp_path)
    client_ = redis_client(settings)
    client_.config_set("repl-diskless-sync-delay", 5)  # the default: keep-alives before the payload
    client_.close()
    testdata.load_redis(settings, scale=SCALE)
    engine = RedisEngine(settings)
    dest = tmp_path / "dump"
    dest.mkdir()

    def kill_on_first_progress(message: str, done: int, total: int | None) -> None:
        if redis_endpoint.server.proc is not None:
            redis_endpoint.server.kill()

    with pytest.raises(EngineError):
        engine.dump(dest, kill_on_first_progress)
    assert not (dest / DUMP_FILE).exists()
    engine.close()


# --- TLS -----------------------------------------------------------------------

@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A redis-server speaking only TLS, with a throwaway CA and a certificate for 127.0.0.1."""
    if not shutil.which("openssl"):
        pytest.skip("openssl CLI not available to make test certificates")
    d = tmp_path / "tls"
    d.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "1", "-subj", "/CN=rpger-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "srv.crt", "-days", "1", "-extfile", "ext.cnf")
    port, password = free_port(), secrets.token_urlsafe(12)
    conf = d / "redis.conf"
    conf.write_text(f"port 0\ntls-port {port}\nbind 127.0.0.1\ntls-cert-file {d / 'srv.crt'}\n"
                    f"tls-key-file {d / 'srv.key'}\ntls-ca-cert-file {d / 'ca.crt'}\ntls-auth-clients no\n"
                    f"save \"\"\ndir {d}\nrequirepass {password}\nrepl-diskless-sync-delay 0\n")
    conf.chmod(0o600)
    proc = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", port):
            assert proc.poll() is None and time.monotonic() < deadline, "TLS redis-server did not start"
            time.sleep(0.05)
        yield {"port": port, "password": password, "ca": d / "ca.crt"}
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_dump_and_restore_over_tls(tls_redis: dict[str, Any], tmp_path: Path) -> None:
    url = f"rediss://127.0.0.1:{tls_redis['port']}/0?ssl_ca_certs={tls_redis['ca']}"
    settings = load_settings(_env_file=None, REDIS_URL=url, REDIS_PASSWORD=tls_redis["password"])
    engine = RedisEngine(settings)
    testdata.load_redis(settings, scale=SCALE)
    dest = tmp_path / "dump"
    dest.mkdir()
    result = engine.dump(dest)
    assert result.counts == {ns: s.count for ns, s in engine.stats().items()} != {}
    with engine.scratch() as scratch:
        scratch.restore(dest)
        assert scratch.digest() == engine.digest()
    engine.close()


def test_tls_with_an_untrusted_certificate_is_not_ready(tls_redis: dict[str, Any], tmp_path: Path) -> None:
    url = f"rediss://127.0.0.1:{tls_redis['port']}/0"  # system CAs: our test CA is unknown
    engine = RedisEngine(load_settings(_env_file=None, REDIS_URL=url, REDIS_PASSWORD=tls_redis["password"]))
    dest = tmp_path / "dump"
    dest.mkdir()
    with pytest.raises(NotReadyError) as info:
        engine.dump(dest)
    assert tls_redis["password"] not in str(info.value)
    # The snapshot's own connection (not redis-py's) refuses the certificate too.
    with pytest.raises(NotReadyError, match="TLS"):
        fetch_rdb(parse_address(url, None, tls_redis["password"]), dest / DUMP_FILE, lambda *a: None, 5)
    assert not (dest / DUMP_FILE).exists()
    engine.close()


def test_a_dump_that_comes_out_empty_from_a_full_server_is_an_error(
        engine: RedisEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    testdata.load_redis(engine.settings, scale=SCALE)
    # The server is real; only our reading of the snapshot is made to see nothing.
    monkeypatch.setattr("rpger_ops.engines.redis._without", lambda *a: {})
    dest = tmp_path / "dump"
    dest.mkdir()
    with pytest.raises(EngineError, match="empty"):
        engine.dump(dest)


def test_counts_of_a_dump_do_not_change_when_a_lock_in_it_expires(engine: RedisEngine, tmp_path: Path) -> None:
    testdata.load_redis(engine.settings, scale=SCALE)
    assert engine.acquire_lock("restore", "safety-backup", 3.0)  # held while a safety backup runs
    dest = tmp_path / "dump"
    dest.mkdir()
    result = engine.dump(dest)
    assert json.loads((dest / SIDECAR).read_text())["stack_keys"] == {"db0": 0, "db15": 1}  # the lock, in the stack db
    assert result.counts == {ns: s.count for ns, s in engine.stats().items()}
    wait_until_gone(engine, "_rpger:lock:restore")
    assert RedisEngine.count_dump(dest) == result.counts
    with engine.scratch() as scratch:
        restored = scratch.restore(dest)
        assert restored.counts == result.counts and restored.notes == []


def test_target_killed_mid_restore_raises(engine: RedisEngine, second: RedisEngine,
                                          second_endpoint: Any, tmp_path: Path) -> None:
    c = client(engine)
    pipe = c.pipeline(transaction=False)
    for i in range(3_000):  # three restore batches
        pipe.set(f"k:{i}", "v")
    pipe.execute()
    dest = tmp_path / "dump"
    dest.mkdir()
    engine.dump(dest)
    seen: list[int] = []

    def kill_after_first_batch(message: str, done: int, total: int | None) -> None:
        seen.append(done)
        if second_endpoint.server.proc is not None:
            second_endpoint.server.kill()

    with pytest.raises(EngineError):
        second.restore(dest, kill_after_first_batch)
    assert seen and seen[0] < 3_000
