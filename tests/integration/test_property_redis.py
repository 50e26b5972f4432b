"""Property-based Redis round trips (issue 11, item 5): random keyspaces over several
databases, with every type (strings, lists, hashes, sets, sorted sets, streams with
consumer groups and pending entries), binary key names and millisecond TTLs -> backup ->
restore into a scratch server -> digests equal and types, values and absolute expiry
times read back identical through redis-py.
"""

from __future__ import annotations

import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from property_support import ROUND_TRIP, backed_up
from readback import redis_state

from rpger_ops.connect import redis_client
from rpger_ops.engines.redis import RedisEngine
from rpger_ops.settings import Settings

BYTES = st.binary(max_size=24)
# Binary key names, anything but the stack's own state.
KEY = st.binary(min_size=1, max_size=16).filter(lambda k: not k.startswith(b"_rpger:"))
SCORE = st.floats(allow_nan=False)  # ±inf and -0.0 are valid scores

STREAM = st.fixed_dictionaries({
    "entries": st.lists(st.dictionaries(BYTES, BYTES, min_size=1, max_size=3), min_size=1, max_size=6),
    "deleted": st.sets(st.integers(0, 5), max_size=2),
    "groups": st.lists(st.tuples(st.binary(min_size=1, max_size=8), st.integers(0, 6), st.integers(0, 6),
                                 st.sampled_from([b"alice", b"bob"])),
                       max_size=2, unique_by=lambda g: g[0]),
})
VALUE = st.one_of(
    st.tuples(st.just("string"), BYTES),
    st.tuples(st.just("list"), st.lists(BYTES, min_size=1, max_size=6)),
    st.tuples(st.just("hash"), st.dictionaries(BYTES, BYTES, min_size=1, max_size=5)),
    st.tuples(st.just("set"), st.sets(BYTES, min_size=1, max_size=5)),
    st.tuples(st.just("zset"), st.dictionaries(BYTES, SCORE, min_size=1, max_size=5)),
    st.tuples(st.just("stream"), STREAM),
)
# No TTL, or one in milliseconds that outlives the example (at least a minute).
TTL_MS = st.one_of(st.none(), st.integers(60_000, 10**10))
KEYSPACES = st.dictionaries(st.integers(0, 3), st.dictionaries(KEY, st.tuples(VALUE, TTL_MS), min_size=1, max_size=8),
                            min_size=1, max_size=3)


def write(r: Any, key: bytes, kind: str, value: Any) -> None:
    if kind == "string":
        r.set(key, value)
    elif kind == "list":
        r.rpush(key, *value)
    elif kind == "hash":
        r.hset(key, mapping=value)
    elif kind == "set":
        r.sadd(key, *value)
    elif kind == "zset":
        r.zadd(key, value)
    else:
        ids = [r.xadd(key, fields, id=f"{1_700_000_000_000 + i}-{i % 3}") for i, fields in enumerate(value["entries"])]
        for group, start, read, consumer in value["groups"]:
            r.xgroup_create(key, group, id=ids[min(start, len(ids) - 1)] if start else "0")
            if read:  # delivered, so pending for the consumer, and acknowledged in part
                got = r.xreadgroup(group, consumer, {key: ">"}, count=read)
                delivered = [mid for _, entries in got for mid, _ in entries]
                if delivered[: read // 2]:
                    r.xack(key, group, *delivered[: read // 2])
        for i in sorted(value["deleted"]):
            if i < len(ids):
                r.xdel(key, ids[i])


def load(settings: Settings, keyspaces: dict[int, dict[bytes, Any]]) -> None:
    expire_base = int(time.time() * 1000)
    for db, keys in keyspaces.items():
        r = redis_client(settings, db=db)
        try:
            for key, ((kind, value), ttl) in keys.items():
                write(r, key, kind, value)
                if ttl is not None:
                    r.pexpireat(key, expire_base + ttl)
        finally:
            r.close()


@ROUND_TRIP
@given(keyspaces=KEYSPACES)
def test_random_keyspaces_round_trip(settings: Settings, keyspaces: dict[int, dict[bytes, Any]]) -> None:
    flush = redis_client(settings)
    try:
        flush.flushall()
    finally:
        flush.close()
    load(settings, keyspaces)
    engine = RedisEngine(settings)
    try:
        source = redis_state(settings)
        assert sum(len(k) for k in source.values()) == sum(len(k) for k in keyspaces.values())
        source_digest = engine.digest()
        with backed_up(engine) as dump, engine.scratch() as scratch:
            result = scratch.restore(dump)
            assert not any("expired" in n for n in result.notes), result.notes  # TTLs outlive the example
            assert scratch.digest() == source_digest
            assert redis_state(scratch.settings) == source
    finally:
        engine.close()
