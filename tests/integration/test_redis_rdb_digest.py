"""The RDB-parsed Redis digest (`_redis_rdb_digest`) on files written by a real redis-server:
independent of encodings, sensitive to content and TTLs, and the engine's round trip
through it (no temporary server) as well as through its stream/function complement."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import redis

from rpger_ops.engines._redis_digest import EXPIRY_GRID_MS
from rpger_ops.engines._redis_rdb_digest import ParsedRdb, combine, parse_rdb
from rpger_ops.engines._redis_sync import fetch_rdb, parse_address
from rpger_ops.engines.base import no_progress
from rpger_ops.engines.redis import RedisEngine, is_stack_state
from tests.integration.test_redis_engine import no_sync_delay, settings_for

# Small enough for listpack/intset by default; the "big" server forces the other encodings.
FORCE_OTHER_ENCODINGS = {"hash-max-listpack-entries": 0, "set-max-intset-entries": 0,
                         "set-max-listpack-entries": 0, "zset-max-listpack-entries": 0,
                         "list-max-listpack-size": 1}


def _client(endpoint: Any) -> redis.Redis:
    return redis.Redis(host=endpoint.host, port=endpoint.port, password=endpoint.secrets["password"])


def _write(c: redis.Redis, expire_at_ms: int) -> None:
    c.set("str", "hello")
    c.set("int", "12345")  # stored int-encoded
    c.rpush("list", "a", "b", "c", "a")
    c.sadd("ints", 1, 2, 3)
    c.sadd("words", "x", "y")
    c.hset("hash", mapping={"f1": "v1", "f2": "v2"})
    c.zadd("zset", {"m1": 1.5, "m2": -3.0, "m3": 1e300})
    c.set("cache:1", "cached")
    c.pexpireat("cache:1", expire_at_ms)
    c.select(3)
    c.set("other-db", "v")
    c.select(0)


def _parse(endpoint: Any, tmp_path: Path, name: str, now_ms: int | None = None) -> ParsedRdb:
    rdb = tmp_path / f"{name}.rdb"
    fetch_rdb(parse_address(f"redis://{endpoint.host}:{endpoint.port}/0", None, endpoint.secrets["password"]),
              rdb, no_progress, 30.0)
    parsed = parse_rdb(rdb, [0, 15], is_stack_state, now_ms)
    assert parsed is not None
    return parsed


@pytest.fixture
def two_servers(redis_factory: Callable[[], Any]) -> tuple[Any, Any]:
    small, big = redis_factory(), redis_factory()
    for endpoint in (small, big):
        c = _client(endpoint)
        c.config_set("repl-diskless-sync-delay", 0)
        c.close()
    c = _client(big)
    for k, v in FORCE_OTHER_ENCODINGS.items():
        with suppress(redis.ResponseError):  # set-max-listpack-entries: Redis 7.2+ only
            c.config_set(k, v)
    c.close()
    return small, big


def test_same_content_in_other_encodings_digests_the_same(two_servers: tuple[Any, Any], tmp_path: Path) -> None:
    small, big = two_servers
    expire = (10**13 // EXPIRY_GRID_MS) * EXPIRY_GRID_MS + 1000  # far future, mid-bucket
    encodings = []
    for endpoint in (small, big):
        c = _client(endpoint)
        _write(c, expire)
        encodings.append([c.object("encoding", k) for k in ("list", "ints", "hash", "zset")])
        c.close()
    assert encodings[0] != encodings[1], "the servers must store the same data differently"
    a, b = _parse(small, tmp_path, "small"), _parse(big, tmp_path, "big")
    assert a.complete and b.complete
    assert a.totals == b.totals == {"db0": 8, "db3": 1}
    assert combine(a.key_digests) == combine(b.key_digests)


@pytest.mark.parametrize("change", ["value", "list order", "score", "ttl bucket", "db", "type"])
def test_any_change_of_content_changes_the_digest(two_servers: tuple[Any, Any], tmp_path: Path,
                                                   change: str) -> None:
    small, big = two_servers
    expire = (10**13 // EXPIRY_GRID_MS) * EXPIRY_GRID_MS + 1000
    for endpoint in (small, big):
        c = _client(endpoint)
        _write(c, expire)
        c.close()
    c = _client(big)
    if change == "value":
        c.hset("hash", "f2", "V2")
    elif change == "list order":
        c.delete("list")
        c.rpush("list", "a", "c", "b", "a")
    elif change == "score":
        c.zadd("zset", {"m1": 1.5000000000000002})
    elif change == "ttl bucket":
        c.pexpireat("cache:1", expire + EXPIRY_GRID_MS)
    elif change == "db":
        c.move("str", 5)
    elif change == "type":
        c.delete("words")
        c.rpush("words", "x", "y")
    c.close()
    assert combine(_parse(small, tmp_path, "a").key_digests) != combine(_parse(big, tmp_path, "b").key_digests)


def test_expired_keys_and_stack_state_are_left_out(redis_factory: Callable[[], Any], tmp_path: Path) -> None:
    endpoint = redis_factory()
    c = _client(endpoint)
    c.config_set("repl-diskless-sync-delay", 0)
    c.set("keep", "1")
    before = _parse(endpoint, tmp_path, "before")
    c.set("soon", "gone", px=60_000)
    c.select(15)
    c.set("_rpger:stack", "{}")
    c.set("_rpger:lock:backup", "me", px=60_000)
    c.close()
    now = _parse(endpoint, tmp_path, "now")
    later = _parse(endpoint, tmp_path, "later", now_ms=2**62)
    assert now.stack_keys == {"db0": 0, "db15": 2} and now.totals == {"db0": 2, "db15": 2}
    assert combine(now.key_digests) != combine(before.key_digests)  # "soon" still counts
    assert combine(later.key_digests) == combine(before.key_digests)  # expired by then: left out


def test_streams_and_functions_are_what_the_parser_leaves_to_the_server(
        redis_factory: Callable[[], Any], tmp_path: Path) -> None:
    endpoint = redis_factory()
    c = _client(endpoint)
    c.config_set("repl-diskless-sync-delay", 0)
    c.set("s", "v")
    c.xadd("events", {"roll": "1d20"})
    plain = _parse(endpoint, tmp_path, "stream")
    assert not plain.complete and plain.skipped() == {0: 1} and not plain.has_preamble_data
    c.delete("events")
    c.function_load("#!lua name=rpgerlib\nredis.register_function('one', function() return 1 end)")
    c.close()
    functions = _parse(endpoint, tmp_path, "functions")
    assert functions.has_preamble_data and not functions.complete and functions.skipped() == {}


@pytest.mark.parametrize("with_stream", [False, True])
def test_engine_round_trip_digest(redis_factory: Callable[[], Any], tmp_path: Path, with_stream: bool) -> None:
    """Backup digest == restored server's digest, by the parser alone or with the server's
    help for a stream, a consumer group and a function library; and a change shows."""
    source, target = redis_factory(), redis_factory()
    settings = [settings_for(e, tmp_path / n) for e, n in ((source, "s"), (target, "t"))]
    for s in settings:
        no_sync_delay(s)
    c = _client(source)
    _write(c, (10**13 // EXPIRY_GRID_MS) * EXPIRY_GRID_MS + 1000)
    if with_stream:
        c.xadd("events:dice", {"roll": "1d20", "result": "17"}, id="1700000000000-0")
        c.xgroup_create("events:dice", "narrator", id="0")
        c.function_load("#!lua name=rpgerlib\nredis.register_function('one', function() return 1 end)")
    c.close()
    src, dst = RedisEngine(settings[0]), RedisEngine(settings[1])
    try:
        dump = tmp_path / "dump"
        dump.mkdir()
        result = src.dump(dump)
        assert result.counts == {"db0": 9 if with_stream else 8, "db3": 1}
        dst.restore(dump)
        assert dst.digest() == result.digest == src.digest() == RedisEngine.digest_dump(dump)
        c = _client(target)
        if with_stream:
            c.xgroup_setid("events:dice", "narrator", id="1700000000000-0")
        else:
            c.lset("list", 0, "z")
        c.close()
        assert dst.digest() != result.digest
    finally:
        src.close()
        dst.close()
