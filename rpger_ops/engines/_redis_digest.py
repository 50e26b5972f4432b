"""Content digest of a Redis dataset, computed inside a private redis-server.

Used for an RDB that the parser of `_redis_rdb_digest` cannot cover (module
values, a stream whose TTL passed, a format it does not read); its TTL grid
and `library_digest` serve that module too.

The digest is always taken on a copy loaded into a temporary server of our
own (`_redis_tmp`), never on the live one: the copy may be changed (its stack
state removed, keys whose TTL passed expired), and debugging commands are
enabled there only. It combines, per logical db:

- `DEBUG DIGEST`: the server's own digest of every key and value, type-aware
  and independent of encodings (listpack vs hashtable), insertion order and
  history — in C, so 100k keys take a fraction of a second, where reading
  them back into Python took seconds;
- a TTL digest (a Lua script on the copy): for every key with a TTL, its
  ABSOLUTE expiry time rounded down to a one-hour grid. `DEBUG DIGEST` only
  knows whether a key has a TTL; a restore keeps the absolute expiry exactly
  (RESTORE ... ABSTTL), so a backup and its restore agree however long
  verification takes (a remaining-TTL bucket would flip for every key
  crossing a bucket edge meanwhile). Two copies loaded with the same relative
  TTL (RPGer's 3600 s caches) moments apart differ only if the grid edge
  falls between their two expiry instants: a chance of (seconds apart / 3600);
- stream consumer groups (name, last-delivered id), which `DEBUG DIGEST`
  leaves out;
- function libraries (name and code).
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis

EXPIRY_GRID_MS = 3_600_000

# sha1 over the sorted "(key, expiry bucket)" lines of every key with a TTL in the current
# db (length-prefixed keys: any byte may be in a key). Touching each key also expires those
# whose TTL has passed (the copy is a master by then), so `DEBUG DIGEST` afterwards sees the
# dataset as of now. Sorting in Lua beat xor-ing per-key sha1s by 2x at 100k keys.
_TTL_DIGEST_LUA = """
local grid = tonumber(ARGV[1])
local lines = {}
local n = 0
local cursor = "0"
repeat
  local reply = redis.call("SCAN", cursor, "COUNT", 10000)
  cursor = reply[1]
  for _, key in ipairs(reply[2]) do
    local at = redis.call("PEXPIRETIME", key)
    if at >= 0 then
      n = n + 1
      lines[n] = string.format("%d:", #key) .. key .. string.format(":%d", math.floor(at / grid))
    end
  end
until cursor == "0"
table.sort(lines)
return redis.sha1hex(table.concat(lines, "\\n"))
"""


def _h(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.digest()


def _b(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _pairs(reply: Any) -> list[tuple[Any, Any]]:
    """Field/value pairs from a RESP3 map or nested pairs, or a RESP2 flat list."""
    if isinstance(reply, dict):
        return list(reply.items())
    if reply and isinstance(reply[0], list):
        return [(a, b) for a, b in reply]
    return list(zip(reply[::2], reply[1::2], strict=True))


def _stream_groups(client: redis.Redis) -> list[bytes]:
    out = []
    # COUNT 10000: the TYPE filter is applied after the scan, so few round trips matter.
    for key in client.scan_iter(count=10_000, _type="stream"):
        groups = client.execute_command("XINFO", "GROUPS", key)
        names = sorted(_h(_b(g.get(b"name", b"")), _b(g.get(b"last-delivered-id", b"")))
                       for g in (dict(_pairs(raw)) for raw in groups))
        out.append(_h(_b(key), *names))
    return sorted(out)


def library_digest(client: redis.Redis) -> bytes:
    """Function libraries (Redis 7+) by name and code; older servers have none."""
    try:
        libraries = client.function_list(withcode=True)
    except redis.ResponseError:
        return b""
    items = []
    for lib in libraries:
        fields = dict(zip(lib[::2], lib[1::2], strict=True)) if isinstance(lib, list) else lib
        name = fields.get(b"library_name", fields.get("library_name", b""))
        code = fields.get(b"library_code", fields.get("library_code", b""))
        items.append(_h(_b(name), _b(code)))
    return _h(*sorted(items))


def digest_copy(client_for_db: Any, dbs: list[int]) -> str:
    """Digest of the dataset of a temporary server (which this may change: it expires
    keys whose TTL passed). `dbs`: its non-empty logical dbs; stack state already removed."""
    parts: list[bytes] = []
    for db in sorted(dbs):
        client = client_for_db(db)
        ttl = _b(client.eval(_TTL_DIGEST_LUA, 0, EXPIRY_GRID_MS))
        parts.append(_h(b"db%d" % db, ttl, *_stream_groups(client)))
    c0 = client_for_db(0)
    dataset = _b(c0.execute_command("DEBUG", "DIGEST"))  # every db; after the expiry above
    return hashlib.sha256(_h(dataset, *parts, library_digest(c0))).hexdigest()
