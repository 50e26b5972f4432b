"""Content digest of a Redis server: every db's keys with type-aware canonical values.

Values are read with type commands, never with DUMP: DUMP payloads depend
on the encoding a key happens to have (listpack vs hashtable, ...), which
depends on its history, not its content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

import redis

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


def _queue_value(pipe: redis.client.Pipeline, key: bytes, kind: str) -> int:
    """Queue the read(s) for one key's value; returns how many replies it takes."""
    if kind == "string":
        pipe.get(key)
    elif kind == "hash":
        pipe.hgetall(key)
    elif kind == "list":
        pipe.lrange(key, 0, -1)
    elif kind == "set":
        pipe.smembers(key)
    elif kind == "zset":
        pipe.zrange(key, 0, -1, withscores=True, score_cast_func=lambda s: s)
    elif kind == "stream":
        pipe.xrange(key, "-", "+")
        pipe.xinfo_groups(key)
        return 2
    else:  # module types: only their presence and type are digested
        return 0
    return 1


def _canonical(kind: str, replies: list[object]) -> bytes:
    if kind == "string":
        return _h(replies[0] or b"")  # type: ignore[arg-type]
    if kind == "hash":
        return _sorted_hash(replies[0].items())  # type: ignore[attr-defined]
    if kind == "list":
        return _h(*replies[0])  # type: ignore[misc]
    if kind == "set":
        return _h(*sorted(replies[0]))  # type: ignore[call-overload]
    if kind == "zset":
        return _sorted_hash((m, _score(s)) for m, s in replies[0])  # type: ignore[attr-defined]
    if kind == "stream":
        entries = [_h(entry_id, _h(*(x for kv in fields.items() for x in kv)))  # field order is data in a stream
                   for entry_id, fields in replies[0]]  # type: ignore[attr-defined]
        groups = sorted(_h(_b(g["name"]), _b(g["last-delivered-id"])) for g in replies[1])  # type: ignore[attr-defined]
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
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
        pipe.execute_command("PEXPIRETIME", key)
    meta = pipe.execute()
    kinds = [_b(meta[i]).decode() for i in range(0, len(meta), 2)]
    expiries = [int(meta[i]) for i in range(1, len(meta), 2)]
    pipe = client.pipeline(transaction=False)
    widths = [_queue_value(pipe, key, kind) for key, kind in zip(keys, kinds, strict=True)]
    replies = pipe.execute()
    pos = 0
    for key, kind, expiry, width in zip(keys, kinds, expiries, widths, strict=True):
        if kind == "none":  # deleted between SCAN and TYPE
            pos += width
            continue
        value = _canonical(kind, replies[pos:pos + width])
        pos += width
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
