"""Redis (and Valkey) behind the `Engine` contract.

- Namespaces are the logical databases `db0`, `db1`, ...
- Stack state lives in the stack db (`RPGER_REDIS_STACK_DB`, default 15): the
  marker `_rpger:stack` and locks `_rpger:lock:<name>`, so the app's db0
  (its DBSIZE, KEYS, INFO keyspace) holds only the app's keys. rpger-ops 0.1
  kept them in db0: the same two key shapes there are stack state too (read as
  a fallback, removed when the marker is next written). Stack state is left
  out of stats, digest, dump counts and restore; every other key, in any db
  (the stack db too), is data. Any `_rpger:*` key does not make the server
  non-empty.
- Dump: `dump.rdb`, a snapshot pulled over the replication protocol
  (`_redis_sync`), parsed (`_redis_rdb_digest`) to count keys per db and
  digest them; `dump.json` beside it records its size and the stack-state
  keys in it (see `_write_sidecar`). The archive's check runs
  redis-check-rdb over it (`_redis_tmp.check_rdb`).
- Restore: load the RDB into a temporary redis-server and replay every key
  with DUMP/PEXPIRETIME -> RESTORE ... REPLACE ABSOLUTETTL, pipelined, into
  the live server (works with AOF on, unlike dropping dump.rdb into its dir).
- Digest (`_summarize`): of the RDB file, never of the live server. Parsed
  (`_redis_rdb_digest`) where the parser reads everything; streams and
  function libraries, which it skips, from one load into a temporary server
  (`_redis_tmp`); any other content (module values) digested in that server
  (`_redis_digest`: `DEBUG DIGEST` plus TTLs, stream groups, functions).
  `dump` digests the snapshot it took; `digest()` of a live server takes a
  snapshot first; `digest_dump` gives the digest a restore of a dump would
  produce now (keys expired since the dump left out).
Needs Redis/Valkey 7.0+ (PEXPIRETIME, FUNCTION) and a local redis-server or
valkey-server at least as new as the source (to read its RDB format).
"""

from __future__ import annotations

import json
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import redis
from pydantic import SecretStr

from rpger_ops.connect import redis_client
from rpger_ops.engines._redis_digest import digest_copy, library_digest
from rpger_ops.engines._redis_raw import pack, run_packed
from rpger_ops.engines._redis_rdb_digest import combine, parse_rdb, stream_key_digests
from rpger_ops.engines._redis_sync import RedisAddress, check_rdb_header, fetch_rdb, parse_address
from rpger_ops.engines._redis_tmp import TempRedis, TempServerError, check_rdb, temp_redis
from rpger_ops.engines.base import (
    DumpResult,
    Engine,
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
from rpger_ops.settings import Settings

MARKER_KEY = b"_rpger:stack"
LOCK_PREFIX = b"_rpger:lock:"
STACK_PREFIX = b"_rpger:"
DUMP_FILE = "dump.rdb"
SIDECAR = "dump.json"
RESTORE_BATCH = 1000

# Release only our own lock; refresh only our own lock.
_RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_REFRESH_LUA = ("if redis.call('GET', KEYS[1]) == ARGV[1] then "
                "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0")

T = TypeVar("T")


def _never(key: bytes) -> bool:
    return False


def is_stack_state(key: bytes) -> bool:
    """Marker and locks: never data (only in db0, 0.1's place, and the stack db)."""
    return key == MARKER_KEY or key.startswith(LOCK_PREFIX)


def _skip_in(db: int, stack_dbs: Iterable[int]) -> Callable[[bytes], bool]:
    return is_stack_state if db in set(stack_dbs) else _never


def _db_index(namespace: str) -> int:
    return int(namespace.removeprefix("db"))


def _keyspace(client: redis.Redis) -> dict[int, int]:
    """db index -> key count, from INFO keyspace (only non-empty dbs appear)."""
    info = client.info("keyspace")
    return {_db_index(name): int(v["keys"]) for name, v in info.items()
            if name.startswith("db") and isinstance(v, dict)}


def _stack_key_count(client: redis.Redis) -> int:
    count = int(client.exists(MARKER_KEY))
    count += sum(1 for _ in client.scan_iter(match=LOCK_PREFIX + b"*", count=1000))
    return count


def _stack_keys(client_for_db: Callable[[int], redis.Redis], stack_dbs: Iterable[int]) -> dict[str, int]:
    """Stack keys per stack db that holds any key at all."""
    present = _keyspace(client_for_db(0))
    return {f"db{db}": _stack_key_count(client_for_db(db)) for db in sorted(set(stack_dbs)) if db in present}


def _totals(db0: redis.Redis) -> dict[str, int]:
    return {f"db{db}": n for db, n in sorted(_keyspace(db0).items())}


def _without(totals: dict[str, int], stack_keys: dict[str, int]) -> dict[str, int]:
    """Data keys per db: totals less stack state; dbs left with nothing omitted."""
    counts = {ns: n - stack_keys.get(ns, 0) for ns, n in totals.items()}
    return {ns: n for ns, n in counts.items() if n > 0}


def counts_of(client_for_db: Callable[[int], redis.Redis], stack_dbs: Iterable[int]) -> dict[str, int]:
    """Data keys per db of the server."""
    return _without(_totals(client_for_db(0)), _stack_keys(client_for_db, stack_dbs))


def _write_sidecar(dest: Path, rdb_bytes: int, rdb_version: int, stack_keys: dict[str, int],
                   stack_dbs: list[int], keys: dict[str, int]) -> None:
    """What the RDB alone cannot say later: its key count per db (so the check of an
    archive validates the file without loading it again) and the stack keys in it,
    counted while the snapshot is fresh (a lock in it expires, and a loaded RDB then
    hides the lock from SCAN but still counts it in INFO keyspace)."""
    meta = {"format": 2, "rdb_bytes": rdb_bytes, "rdb_version": rdb_version, "stack_keys": stack_keys,
            "stack_dbs": stack_dbs, "keys": keys}
    (dest / SIDECAR).write_text(json.dumps(meta, indent=1) + "\n")


def _read_sidecar(src: Path) -> dict[str, Any]:
    try:
        meta = json.loads((src / SIDECAR).read_text())
        meta["rdb_bytes"] = int(meta["rdb_bytes"])
        meta["stack_keys"] = {str(k): int(v) for k, v in meta["stack_keys"].items()}
        meta["stack_dbs"] = [int(db) for db in meta.get("stack_dbs", [0])]  # format 1: db0 only
        meta["keys"] = {str(k): int(v) for k, v in meta["keys"].items()} if "keys" in meta else None
    except FileNotFoundError:
        raise EngineError(f"no {SIDECAR} in the Redis dump (incomplete dump)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise EngineError(f"{SIDECAR} in the Redis dump is unreadable or malformed") from None
    return dict(meta)


def _checked_rdb(src: Path, meta: dict[str, Any]) -> Path:
    rdb = src / DUMP_FILE
    try:
        size = rdb.stat().st_size
    except OSError:
        raise EngineError(f"no {DUMP_FILE} in the Redis dump") from None
    if size != meta["rdb_bytes"]:
        raise EngineError(f"{DUMP_FILE} has {size} bytes, the dump wrote {meta['rdb_bytes']} (truncated or altered)")
    return rdb


def _digest_loaded(tmp: TempRedis, stack_dbs: Iterable[int]) -> str:
    """Digest of a dump loaded into a temporary server: the copy becomes a master, loses
    its stack state and the keys whose TTL has passed (what a restore now would bring
    back), then digests itself (`_redis_digest`). The copy is changed: count it first."""
    clients: dict[int, redis.Redis] = {}

    def client_for_db(db: int) -> redis.Redis:
        return clients.setdefault(db, tmp.client(db))

    try:
        client_for_db(0).execute_command("REPLICAOF", "NO", "ONE")
        for db in set(stack_dbs) & set(_keyspace(client_for_db(0))):
            c = client_for_db(db)
            stack = [k for k in c.scan_iter(match=STACK_PREFIX + b"*", count=1000) if is_stack_state(k)]
            if stack:
                c.delete(*stack)
        return digest_copy(client_for_db, list(_keyspace(client_for_db(0))))
    finally:
        for client in clients.values():
            client.close()


def _summarize(rdb: Path, stack_dbs: Iterable[int], progress: Progress,
               rdb_version: int) -> tuple[dict[str, int], dict[str, int], str]:
    """(keys per db, stack keys per stack db, digest) of an RDB file, in one read: parsed
    (`_redis_rdb_digest`); what the parser skips (streams, functions) from one load into a
    temporary server; anything else digested in that server (`_redis_digest`)."""
    parsed = parse_rdb(rdb, stack_dbs, is_stack_state)
    if parsed is not None and parsed.complete:
        return parsed.totals, parsed.stack_keys, combine(parsed.key_digests)
    with _loaded(rdb, progress, rdb_version) as tmp:
        clients: dict[int, redis.Redis] = {}
        try:
            client_for_db = lambda db: clients.setdefault(db, tmp.client(db))  # noqa: E731
            if parsed is not None:
                streams = stream_key_digests(client_for_db, parsed.skipped())
                if streams is not None:
                    functions = library_digest(client_for_db(0)) if parsed.has_preamble_data else b""
                    return parsed.totals, parsed.stack_keys, combine(parsed.key_digests + streams, functions)
            totals = _totals(client_for_db(0))
            stack_keys = _stack_keys(client_for_db, stack_dbs)
        finally:
            for c in clients.values():
                c.close()
        return totals, stack_keys, _digest_loaded(tmp, stack_dbs)


def _has_data(client: redis.Redis) -> bool:
    """Any key outside `_rpger:*`; stops at the first one."""
    return any(not key.startswith(STACK_PREFIX) for key in client.scan_iter(count=1000))


def _unlink_data(db0: redis.Redis) -> None:
    """Delete every key of a db except the marker and locks."""
    batch: list[bytes] = []
    for key in db0.scan_iter(count=1000):
        if not is_stack_state(key):
            batch.append(key)
        if len(batch) >= 1000:
            db0.unlink(*batch)
            batch = []
    if batch:
        db0.unlink(*batch)


class RedisEngine:
    name: ClassVar[EngineName] = "redis"
    # 3: parsed from the RDB (`_redis_rdb_digest`), or DEBUG DIGEST on a copy when the file holds
    # what the parser skips; 2: always DEBUG DIGEST on a copy; 1 (rpger-ops 0.1): read back key by key.
    digest_version: ClassVar[int] = 3

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[int, redis.Redis] = {}
        self.stack_db = settings.redis_stack_db
        self.stack_dbs = sorted({0, self.stack_db})  # 0: where rpger-ops 0.1 kept them

    # --- connections -----------------------------------------------------------
    def _client(self, db: int = 0) -> redis.Redis:
        if db not in self._clients:
            self._clients[db] = redis_client(self.settings, db=db)
        return self._clients[db]

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run a client call; map unreachable/auth failures to NotReadyError."""
        try:
            return fn()
        except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
            raise NotReadyError(f"Redis refused our credentials while trying to {what}") from exc
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise NotReadyError(f"Redis unreachable while trying to {what}: {exc}") from exc
        except redis.ResponseError as exc:
            text = str(exc)
            if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
                raise NotReadyError(f"Redis refused our credentials while trying to {what}") from exc
            raise EngineError(f"Redis could not {what}: {text}") from exc

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    # --- health --------------------------------------------------------------
    def ping(self) -> PingResult:
        start = time.perf_counter()
        info = self._call("read INFO", lambda: self._client().info("server"))
        latency = (time.perf_counter() - start) * 1000
        if "valkey_version" in info or str(info.get("server_name", "")).lower() == "valkey":
            return PingResult(str(info.get("valkey_version", info.get("redis_version", ""))), latency, "valkey")
        return PingResult(str(info.get("redis_version", "")), latency, "redis")

    def _keyspace(self) -> dict[int, int]:
        return self._call("read the keyspace", lambda: _keyspace(self._client()))

    def is_empty(self) -> bool:
        for db, keys in self._keyspace().items():
            client = self._client(db)
            if keys and self._call("scan keys", partial(_has_data, client)):
                return False
        return True

    def stats(self) -> dict[str, NamespaceStats]:
        counts = self._call("count keys", partial(counts_of, self._client, self.stack_dbs))
        return {ns: NamespaceStats(count=n, size_bytes=0) for ns, n in counts.items()}

    def server_hash(self) -> tuple[str | None, str]:
        # DEBUG DIGEST is off on production servers (enable-debug-command no).
        return None, ""

    def digest(self) -> str:
        """A snapshot of the live server (over replication, as a backup takes it) loaded into
        a temporary server and digested there: never a debugging command on the live one."""
        with tempfile.TemporaryDirectory(prefix="rpger-redis-digest-") as tmp_dir:
            rdb = Path(tmp_dir) / DUMP_FILE
            fetch_rdb(self._address(), rdb, no_progress, max(self.settings.redis_socket_timeout, 30.0))
            return self._call("digest the snapshot", partial(
                _summarize, rdb, self.stack_dbs, no_progress, check_rdb_header(rdb)))[2]

    @staticmethod
    def digest_dump(src: Path) -> str:
        """The digest a restore of `src` would produce NOW (keys that expired since
        the dump left out). Beyond the contract: lets a restore days after the
        backup tell "keys expired meanwhile" from "the restore lost data"."""
        meta = _read_sidecar(src)
        rdb = _checked_rdb(src, meta)
        return _summarize(rdb, meta["stack_dbs"], no_progress, check_rdb_header(rdb))[2]

    # --- marker and locks ------------------------------------------------------
    def read_marker(self) -> StackMarker | None:
        for db in (self.stack_db, 0):  # then where 0.1 kept it
            raw = self._call("read the stack marker", lambda db=db: self._client(db).get(MARKER_KEY))  # type: ignore[misc]
            if raw is None:
                continue
            try:
                return StackMarker.from_dict(json.loads(raw))
            except (ValueError, KeyError, TypeError) as exc:
                raise EngineError(f"stack marker {MARKER_KEY.decode()} in db{db} is malformed") from exc
        return None

    def write_marker(self, marker: StackMarker) -> None:
        self._call("write the stack marker",
                   lambda: self._client(self.stack_db).set(MARKER_KEY, json.dumps(marker.as_dict())))
        if self.stack_db != 0:
            self._call("remove the 0.1 stack marker", lambda: self._client(0).delete(MARKER_KEY))

    def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take the lock, or refresh its TTL when `owner` already holds it."""
        key = LOCK_PREFIX + name.encode()
        ttl_ms = max(1, int(ttl_s * 1000))
        client = self._client(self.stack_db)
        if self._call("take a lock", lambda: client.set(key, owner, nx=True, px=ttl_ms)):
            return True
        # Held: ours again (a refresh) or someone else's (until it expires).
        return bool(self._call("refresh a lock", lambda: client.eval(_REFRESH_LUA, 1, key, owner, ttl_ms)))

    def release_lock(self, name: str, owner: str) -> None:
        key = LOCK_PREFIX + name.encode()
        self._call("release a lock", lambda: self._client(self.stack_db).eval(_RELEASE_LUA, 1, key, owner))

    # --- dump ------------------------------------------------------------------
    def _address(self) -> RedisAddress:
        s = self.settings
        return parse_address(s.redis_url.get_secret_value(), s.redis_username,
                             s.redis_password.get_secret_value() if s.redis_password else None)

    def dump(self, dest: Path, progress: Progress = no_progress) -> DumpResult:
        version = self.ping().server_version
        source_sizes = {f"db{db}": n for db, n in self._keyspace().items()}
        had_data = not self.is_empty()
        rdb = dest / DUMP_FILE
        timeout = max(self.settings.redis_socket_timeout, 30.0)
        sync = fetch_rdb(self._address(), rdb, progress, timeout)
        rdb_version = check_rdb_header(rdb)
        progress("counting and digesting the snapshot's keys", 0, None)
        # One read of the snapshot gives both its counts and its digest (the archive's check
        # runs redis-check-rdb over the file: every record, and the CRC64).
        totals, stack_keys, digest = _summarize(rdb, self.stack_dbs, progress, rdb_version)
        counts = _without(totals, stack_keys)
        _write_sidecar(dest, sync.bytes, rdb_version, stack_keys, self.stack_dbs, totals)
        if had_data and not counts:
            raise EngineError("the Redis snapshot came out empty although the server holds data")
        notes = [f"RDB format {rdb_version}, {'diskless' if sync.diskless else 'disk-based'} transfer"]
        progress("snapshot complete", sync.bytes, sync.bytes)
        return DumpResult(
            counts=counts, files=[DUMP_FILE, SIDECAR], bytes_written=sync.bytes, point_in_time=True,
            server_version=version, digest=digest, notes=notes,
            extra={"rdb_version": rdb_version, "source_dbsize": source_sizes,
                   "replication_id": sync.replid, "replication_offset": sync.offset},
        )

    @staticmethod
    def count_dump(src: Path) -> dict[str, int]:
        """Validated by the RDB checker (every record parsed, CRC64 checked) without a
        server: the keys it reads must be those the dump counted per db. Dumps of
        rpger-ops 0.1 (no per-db counts beside them) are loaded and counted instead."""
        meta = _read_sidecar(src)
        rdb = _checked_rdb(src, meta)
        version = check_rdb_header(rdb)
        if meta["keys"] is not None:
            try:
                read = check_rdb(rdb)
            except TempServerError as exc:
                raise EngineError(f"{exc} (the dump is RDB format {version})") from None
            if read != sum(meta["keys"].values()):
                raise EngineError(f"{DUMP_FILE} holds {read} keys, the dump counted {sum(meta['keys'].values())}")
            return _without(meta["keys"], meta["stack_keys"])
        with _loaded(rdb, no_progress, version) as tmp, closing(tmp.client()) as tmp_db0:
            return _without(_totals(tmp_db0), meta["stack_keys"])  # stack keys counted when the dump was fresh

    # --- restore ---------------------------------------------------------------
    def restore(self, src: Path, progress: Progress = no_progress) -> RestoreResult:
        started = time.monotonic()
        meta = _read_sidecar(src)
        rdb = _checked_rdb(src, meta)
        rdb_version = check_rdb_header(rdb)
        self.ping()
        notes: list[str] = []
        counts: dict[str, int] = {}
        with _loaded(rdb, progress, rdb_version) as tmp:
            with closing(tmp.client()) as tmp_db0:
                loaded = _without(_totals(tmp_db0), meta["stack_keys"])
            total = sum(loaded.values())
            done = 0
            for namespace, in_dump in loaded.items():
                db = _db_index(namespace)
                restored = self._replay_db(tmp, db, progress, done, total, _skip_in(db, meta["stack_dbs"]))
                done += in_dump
                if restored:
                    counts[namespace] = restored
                if in_dump > restored:
                    notes.append(f"{namespace}: {in_dump - restored} keys had expired since the dump and were skipped")
            functions = self._replay_functions(tmp)
            if functions:
                notes.append(f"restored {functions} function libraries")
        progress("restore complete", done, total)
        return RestoreResult(counts=counts, seconds=time.monotonic() - started, notes=notes)

    def _replay_db(self, tmp: TempRedis, db: int, progress: Progress, done: int, total: int,
                   skip: Callable[[bytes], bool]) -> int:
        """Copy one db from the temporary server; returns how many keys were restored.

        A reader thread pulls DUMP payloads from the temporary server while this
        thread writes RESTOREs to the target, so the two round trips overlap."""
        batches: queue.Queue[list[tuple[bytes, bytes, int]] | BaseException | None] = queue.Queue(maxsize=4)
        source = tmp.client(db)
        stop = threading.Event()

        def read() -> None:
            try:
                for batch in _dump_batches(source, skip, stop):
                    batches.put(batch)
                batches.put(None)
            except BaseException as exc:  # handed to the writer, which raises it
                batches.put(exc)

        reader = threading.Thread(target=read, name=f"redis-restore-read-db{db}", daemon=True)
        reader.start()
        target = self._client(db)
        restored = 0
        try:
            while (item := batches.get()) is not None:
                if isinstance(item, BaseException):
                    raise EngineError(f"reading the dump failed: {item}") from item
                packed = b"".join(pack(b"RESTORE", key, b"%d" % max(expire_at, 0), payload, b"REPLACE", b"ABSTTL")
                                  for key, payload, expire_at in item)
                self._call(f"restore keys into db{db}", partial(run_packed, target, packed, len(item)))
                restored += len(item)
                progress(f"restoring db{db}", done + restored, total)
        finally:
            stop.set()
            while reader.is_alive():  # unblock a reader waiting on a full queue
                try:
                    batches.get_nowait()
                except queue.Empty:
                    reader.join(0.05)
            source.close()
        return restored

    def _replay_functions(self, tmp: TempRedis) -> int:
        client = tmp.client()
        try:
            libraries = client.function_list()
            if not libraries:
                return 0
            payload = client.function_dump()
        except redis.ResponseError:
            return 0
        finally:
            client.close()
        restore = partial(self._client().function_restore, payload, "REPLACE")  # type: ignore[arg-type]
        self._call("restore functions", restore)
        return len(libraries)

    # --- wipe and scratch --------------------------------------------------------
    def wipe(self) -> None:
        for db in self._keyspace():
            client = self._client(db)
            if db in self.stack_dbs:  # marker and locks stay
                self._call("delete keys in db0", partial(_unlink_data, client))
            else:
                # ASYNC: the keys are gone at once, their memory is freed in the background.
                self._call(f"flush db{db}", partial(client.flushdb, asynchronous=True))
        with suppress(redis.ResponseError):  # pre-7.0 servers have no functions
            self._client().function_flush()

    @contextmanager
    def scratch(self) -> Iterator[Engine]:
        with temp_redis() as tmp:
            settings = self.settings.model_copy(update={
                "redis_url": SecretStr(tmp.url), "redis_password": None, "redis_username": None})
            engine = RedisEngine(settings)
            try:
                yield engine
            finally:
                engine.close()


def _dump_batches(source: redis.Redis, skip: Callable[[bytes], bool],
                  stop: threading.Event) -> Iterator[list[tuple[bytes, bytes, int]]]:
    """(key, DUMP payload, absolute expiry ms or -1) in batches; skips stack state and
    keys that expired meanwhile (the temporary server reports them missing)."""
    keys: list[bytes] = []

    def fetch(batch: list[bytes]) -> list[tuple[bytes, bytes, int]]:
        packed = b"".join(pack(b"DUMP", key) + pack(b"PEXPIRETIME", key) for key in batch)
        replies = run_packed(source, packed, 2 * len(batch))
        out = []
        for i, key in enumerate(batch):
            payload, expire_at = replies[2 * i], int(replies[2 * i + 1])
            if payload is None or expire_at == -2:
                continue
            out.append((key, payload, expire_at))
        return out

    for key in source.scan_iter(count=RESTORE_BATCH):
        if stop.is_set():
            return
        if skip(key):
            continue
        keys.append(key)
        if len(keys) >= RESTORE_BATCH:
            yield fetch(keys)
            keys = []
    if keys:
        yield fetch(keys)


@contextmanager
def _loaded(rdb: Path, progress: Progress, rdb_version: int) -> Iterator[TempRedis]:
    try:
        with temp_redis(rdb, progress) as tmp:
            yield tmp
    except TempServerError as exc:
        raise EngineError(f"{exc}\n(the dump is RDB format {rdb_version}; a corrupt or truncated file, "
                          "or a format newer than the local redis-server, fails to load)") from None


_: type[Engine] = RedisEngine
