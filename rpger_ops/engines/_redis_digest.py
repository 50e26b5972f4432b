"""Content digest of a Redis server: every db's keys with type-aware canonical values.

Values are read with type commands, never with DUMP: DUMP payloads depend
on the encoding a key happens to have (listpack vs hashtable, ...), which
depends on its history, not its content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import redis

from rpger_ops.engines._redis_raw import pack, run_packed
from rpger_ops.engines.base import Digest

BATCH = 500

# TTLs are digested as presence plus the ABSOLUTE expiry time rounded down to
# a one-hour grid. A restore keeps the absolute expiry exactly (RESTORE ...
# ABSOLUTETTL), so a backup and its restore agree however long verification
# takes (a remaining-TTL bucket would flip for every key crossing a bucket
# edge meanwhile). Two copies loaded with the same relative TTL (RPGer's
# 3600 s caches) moments apart differ only if the grid edge falls between
# their two expiry instants: a chance of (seconds apart / 3600).
EXPIRY_GRID_MS = 3_600_000


def _h(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.digest()


def _sorted_hash(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    return _h(*(_h(k, v) for k, v in sorted(pairs)))


def _score(raw: bytes | float) -> bytes:
    return repr(float(raw)).encode()


def _reads(key: bytes, kind: str) -> list[bytes]:
    """The packed read(s) that fetch one key's whole value. Module types get
    none: only their presence and type are digested."""
    if kind == "string":
        return [pack(b"GET", key)]
    if kind == "hash":
        return [pack(b"HGETALL", key)]
    if kind == "list":
        return [pack(b"LRANGE", key, b"0", b"-1")]
    if kind == "set":
        return [pack(b"SMEMBERS", key)]
    if kind == "zset":
        return [pack(b"ZRANGE", key, b"0", b"-1", b"WITHSCORES")]
    if kind == "stream":
        return [pack(b"XRANGE", key, b"-", b"+"), pack(b"XINFO", b"GROUPS", key)]
    return []


def _pairs(reply: Any) -> list[tuple[Any, Any]]:
    """Field/value pairs from a RESP3 map or nested pairs, or a RESP2 flat list."""
    if isinstance(reply, dict):
        return list(reply.items())
    if reply and isinstance(reply[0], list):
        return [(a, b) for a, b in reply]
    return list(zip(reply[::2], reply[1::2], strict=True))


def _canonical(kind: str, replies: list[Any]) -> bytes:
    """Replies are raw, RESP2 or RESP3 (redis-py 8 speaks RESP3)."""
    if kind == "string":
        return _h(replies[0] or b"")
    if kind == "hash":
        return _sorted_hash(_pairs(replies[0]))
    if kind == "list":
        return _h(*replies[0])
    if kind == "set":
        return _h(*sorted(replies[0]))  # a list (RESP2) or a set (RESP3)
    if kind == "zset":
        return _sorted_hash((m, _score(s)) for m, s in _pairs(replies[0]))
    if kind == "stream":
        # Field order is data in a stream entry: no sorting inside an entry.
        entries = [_h(entry_id, _h(*(x for pair in _pairs(fields) for x in pair))) for entry_id, fields in replies[0]]
        groups = sorted(_h(g.get(b"name", b""), g.get(b"last-delivered-id", b""))
                        for g in (dict(_pairs(raw)) for raw in replies[1]))  # type: ignore[misc]
        return _h(_h(*entries), _h(*groups))
    return b""


def _b(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _expiry_bucket(expire_at_ms: int) -> bytes:
    if expire_at_ms < 0:  # -1: no TTL (-2: vanished meanwhile, digested as no TTL)
        return b"persistent"
    return b"expires@" + str(expire_at_ms // EXPIRY_GRID_MS).encode()


def digest_db(client: redis.Redis, namespace: str, digest: Digest, skip: Callable[[bytes], bool]) -> int:
    """Add every key of the client's db to `digest`; returns how many keys."""
    keys: list[bytes] = []
    total = 0
    for key in client.scan_iter(count=1000):
        if skip(key):
            continue
        keys.append(key)
        if len(keys) >= BATCH:
            _digest_batch(client, namespace, keys, digest)
            total += len(keys)
            keys = []
    if keys:
        _digest_batch(client, namespace, keys, digest)
        total += len(keys)
    return total


def _digest_batch(client: redis.Redis, namespace: str, keys: list[bytes], digest: Digest) -> None:
    meta = run_packed(client, b"".join(pack(b"TYPE", k) + pack(b"PEXPIRETIME", k) for k in keys), 2 * len(keys))
    kinds = [_b(meta[i]).decode() for i in range(0, len(meta), 2)]
    expiries = [int(meta[i]) for i in range(1, len(meta), 2)]
    reads = [_reads(key, kind) for key, kind in zip(keys, kinds, strict=True)]
    replies = run_packed(client, b"".join(b"".join(r) for r in reads), sum(len(r) for r in reads))
    pos = 0
    for key, kind, expiry, width in zip(keys, kinds, expiries, (len(r) for r in reads), strict=True):
        value = _canonical(kind, replies[pos:pos + width])
        pos += width
        if kind != "none":  # "none": deleted between SCAN and TYPE
            digest.add(namespace, key, kind.encode(), value, _expiry_bucket(expiry))


def digest_functions(client: redis.Redis, digest: Digest) -> None:
    """Function libraries (Redis 7+) by name and code; older servers have none."""
    try:
        libraries = client.function_list(withcode=True)
    except redis.ResponseError:
        return
    for lib in libraries:
        fields = dict(zip(lib[::2], lib[1::2], strict=True)) if isinstance(lib, list) else lib
        name = fields.get(b"library_name", fields.get("library_name", b""))
        code = fields.get(b"library_code", fields.get("library_code", b""))
        digest.add("functions", _b(name), _b(code))
