"""Counts and content digest of a Redis dataset read straight from its RDB file.

`rdb-py` (a Rust RDB parser) decodes every string, list, set, sorted set and
hash, in every encoding, with its absolute expiry: 105k keys in about 0.06 s,
where loading the file into a temporary redis-server and digesting it there
(`_redis_digest`) takes about 1.1 s. The digest is of logical content, so it
does not depend on encodings (listpack or hashtable), key order or history:
a restored server's snapshot digests like the backup it came from.

The parser skips streams, module values and function libraries. The file's
size hints (RESIZEDB) say how many keys per db it skipped; a file with any is
loaded once into a temporary server, which gives the streams (entries and
consumer groups) and the function libraries. When what was skipped is not all
live streams (module values, a stream whose TTL passed), or the parser cannot
read the file (a newer format), the copy is digested in the server
(`_redis_digest`) instead. Which way is taken depends only on the content, so
a backup and its restore always take the same one.

Per key: its db, name, type, value and its absolute expiry on the same
one-hour grid as `_redis_digest` (see there why). Keys whose TTL has passed
are left out (a restore now would not bring them back), as is stack state.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rdb

from rpger_ops.engines._redis_digest import EXPIRY_GRID_MS, _b, _h

# RDB opcodes before the first SELECTDB (rdb.h): aux fields, functions, module aux.
_OP_AUX, _OP_SELECTDB, _OP_EOF = 0xFA, 0xFE, 0xFF


@dataclass
class ParsedRdb:
    """What the parser read of one RDB file."""
    key_digests: list[bytes]  # one per live data key it decoded (see `key_digest`)
    sizes: dict[int, int]  # every key per db, from the file's size hints (expired and stack keys too)
    decoded: dict[int, int]  # keys per db the parser decoded; short of `sizes` by streams and module values
    stack_keys: dict[str, int]  # stack-state keys per stack db that holds any key (as redis._stack_keys)
    has_preamble_data: bool  # function libraries or module aux data before the first db

    @property
    def complete(self) -> bool:
        return self.sizes == self.decoded and not self.has_preamble_data

    @property
    def totals(self) -> dict[str, int]:
        return {f"db{d}": n for d, n in sorted(self.sizes.items())}

    def skipped(self) -> dict[int, int]:
        """Keys per db the parser did not decode."""
        return {d: n - self.decoded.get(d, 0) for d, n in self.sizes.items() if n > self.decoded.get(d, 0)}


def combine(key_digests: list[bytes], functions: bytes = b"") -> str:
    """The dataset digest from its keys' digests (any order) and its function libraries."""
    return hashlib.sha256(_h(b"rdb-parse-1", functions, *sorted(key_digests))).hexdigest()


_KEY_HEAD = struct.Struct(">cIqQ")  # type, db, expiry bucket (-1: none), key length
_LENGTH = struct.Struct(">Q")


def key_digest(db: int, key: bytes, kind: bytes, value: bytes, expiry_ms: int | None) -> bytes:
    """One key's digest; `value` is a string's bytes, or another type's `_value` hash.
    One sha256 over a flat record: this runs for every key (0.1 s per 100k keys)."""
    bucket = -1 if expiry_ms is None else expiry_ms // EXPIRY_GRID_MS
    return hashlib.sha256(b"".join((_KEY_HEAD.pack(kind, db, bucket, len(key)), key,
                                    _LENGTH.pack(len(value)), value))).digest()


def _length(buf: bytes, at: int) -> tuple[int, int, bool]:
    """(length or special-encoding id, next offset, is special) of an RDB length."""
    first = buf[at]
    kind = first >> 6
    if kind == 0:
        return first & 0x3F, at + 1, False
    if kind == 1:
        return ((first & 0x3F) << 8) | buf[at + 1], at + 2, False
    if kind == 3:
        return first & 0x3F, at + 1, True
    if first == 0x80:
        return int.from_bytes(buf[at + 1:at + 5], "big"), at + 5, False
    if first == 0x81:
        return int.from_bytes(buf[at + 1:at + 9], "big"), at + 9, False
    raise ValueError("bad RDB length")


def _skip_string(buf: bytes, at: int) -> int:
    n, at, special = _length(buf, at)
    if not special:
        return at + n
    if n in (0, 1, 2):  # 8, 16, 32-bit integer
        return at + (1, 2, 4)[n]
    if n == 3:  # LZF: compressed length, plain length, data
        clen, at, _ = _length(buf, at)
        _, at, _ = _length(buf, at)
        return at + clen
    raise ValueError("bad RDB string encoding")


def only_aux_before_data(path: Path) -> bool:
    """True when nothing but aux fields comes before the first db (no function
    libraries, no module aux data), which the parser would skip unseen."""
    with path.open("rb") as f:
        buf = f.read(1 << 16)
    at = 9 if buf.startswith(b"REDIS") else -1
    try:
        while 0 <= at < len(buf):
            op = buf[at]
            if op in (_OP_SELECTDB, _OP_EOF):
                return True
            if op != _OP_AUX:
                return False
            at = _skip_string(buf, _skip_string(buf, at + 1))
    except (IndexError, ValueError):
        pass
    return False  # not a "REDIS" file, or aux fields longer than we read: not ours to judge


def _value(item: Any) -> tuple[bytes, bytes]:
    """(type code, value) of a decoded key: a string as is, any other type hashed."""
    kind = item["type"]
    if kind == "string":
        return b"s", item["value"]
    if kind == "list":
        return b"l", _h(*item["values"])
    if kind == "set":
        return b"e", _h(*sorted(item["members"]))
    if kind == "hash":
        return b"h", _h(*(_h(f, v) for f, v in sorted(item["values"].items())))
    if kind == "sorted_set":  # float.hex: exact, one spelling per double
        return b"z", _h(*(_h(m, float(s).hex().encode()) for s, m in sorted(item["values"],
                                                                           key=lambda p: p[1])))
    raise ValueError(f"unknown item type {kind}")


def parse_rdb(path: Path, stack_dbs: Iterable[int], is_stack_state: Callable[[bytes], bool],
              now_ms: int | None = None) -> ParsedRdb | None:
    """Counts and key digests of the RDB at `path`; None when the parser cannot read it
    (a format it does not know, malformed data, no size hints)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    stack = set(stack_dbs)
    sizes: dict[int, int] = {}
    decoded: dict[int, int] = {}
    stack_keys: dict[int, int] = {}
    keys: list[bytes] = []
    db = 0
    try:
        preamble_data = not only_aux_before_data(path)
        items: Iterable[Any] = rdb.RdbDecoder(path)  # dicts told apart by "type"
        for item in items:
            kind = item["type"]
            if kind == "select_db":
                db = int(item["db"])
                continue
            if kind == "resize_db":
                sizes[db] = int(item["db_size"])
                continue
            if kind in ("aux_field", "checksum"):
                continue
            key: bytes = item["key"]
            decoded[db] = decoded.get(db, 0) + 1
            if db in stack and is_stack_state(key):
                stack_keys[db] = stack_keys.get(db, 0) + 1
                continue
            expiry = item["expiry"]
            if expiry is not None and expiry <= now:
                continue  # a restore now would not bring it back
            kind_name, value = _value(item)
            keys.append(key_digest(db, key, kind_name, value, expiry))
    except (OSError, ValueError):
        return None
    if set(decoded) - set(sizes) or any(decoded.get(d, 0) > n for d, n in sizes.items()):
        return None  # no (or inconsistent) size hints: what was skipped cannot be told
    return ParsedRdb(keys, sizes, decoded, {f"db{d}": stack_keys.get(d, 0) for d in sorted(stack) if d in sizes},
                     preamble_data)


def _entries(client: Any, key: bytes) -> list[bytes]:
    out: list[bytes] = []
    start = b"-"
    while True:
        page = client.xrange(key, min=start, max=b"+", count=1000)
        out.extend(_h(_b(entry_id), *(_h(_b(f), _b(v)) for f, v in fields.items())) for entry_id, fields in page)
        if len(page) < 1000:
            return out
        start = b"(" + _b(page[-1][0])


def stream_key_digests(client_for_db: Callable[[int], Any], skipped: dict[int, int],
                       now_ms: int | None = None) -> list[bytes] | None:
    """Key digests of the streams of a temporary server loaded from the file, for the keys
    the parser skipped; None when those are not all live streams (module values, a stream
    whose TTL passed): then the whole copy is digested in the server instead."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    out: list[bytes] = []
    for db, missing in sorted(skipped.items()):
        client = client_for_db(db)
        keys = list(client.scan_iter(count=10_000, _type="stream"))
        if len(keys) != missing:
            return None
        for key in keys:
            at = int(client.execute_command("PEXPIRETIME", key))
            if 0 <= at <= now:
                return None
            groups = sorted(_h(_b(g["name"]), _b(g["last-delivered-id"])) for g in client.xinfo_groups(key))
            value = _h(*_entries(client, key), b"groups", *groups)
            out.append(key_digest(db, key, b"x", value, at if at >= 0 else None))
    return out
