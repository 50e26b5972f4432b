"""Redis (and Valkey) behind the `Engine` contract.

- Namespaces are the logical databases `db0`, `db1`, ...
- Stack state lives in db0: the marker `_rpger:stack` and locks
  `_rpger:lock:<name>`. They are left out of stats, digest, dump counts and
  restore. Any `_rpger:*` key (e.g. a migrations ledger) does not make the
  server non-empty, but everything except stack state is data.
- Dump: `dump.rdb`, a snapshot pulled over the replication protocol
  (`_redis_sync`), loaded into a temporary redis-server (`_redis_tmp`) to
  prove it reads and to count keys per db; `dump.json` beside it records its
  size and the stack-state keys in it (see `_write_sidecar`).
- Restore: load the RDB into a temporary redis-server and replay every key
  with DUMP/PEXPIRETIME -> RESTORE ... REPLACE ABSOLUTETTL, pipelined, into
  the live server (works with AOF on, unlike dropping dump.rdb into its dir).
- Digest: `_redis_digest`; `digest_dump` gives the digest a restore of a dump
  would produce now (keys expired since the dump left out).
Needs Redis/Valkey 7.0+ (PEXPIRETIME, FUNCTION) and a local redis-server or
valkey-server at least as new as the source (to read its RDB format).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import redis
from pydantic import SecretStr

from rpger_ops.connect import redis_client
from rpger_ops.engines._redis_digest import digest_db, digest_functions
from rpger_ops.engines._redis_raw import pack, run_packed
from rpger_ops.engines._redis_sync import RedisAddress, check_rdb_header, fetch_rdb, parse_address
from rpger_ops.engines._redis_tmp import TempRedis, TempServerError, temp_redis
from rpger_ops.engines.base import (
    Digest,
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
    """Marker and locks: never data (they are only ever in db0)."""
    return key == MARKER_KEY or key.startswith(LOCK_PREFIX)


def _db_index(namespace: str) -> int:
    return int(namespace.removeprefix("db"))


def _keyspace(client: redis.Redis) -> dict[int, int]:
    """db index -> key count, from INFO keyspace (only non-empty dbs appear)."""
    info = client.info("keyspace")
    return {_db_index(name): int(v["keys"]) for name, v in info.items()
            if name.startswith("db") and isinstance(v, dict)}


def _stack_key_count(db0: redis.Redis) -> int:
    count = int(db0.exists(MARKER_KEY))
    count += sum(1 for _ in db0.scan_iter(match=LOCK_PREFIX + b"*", count=1000))
    return count


def _totals(db0: redis.Redis) -> dict[str, int]:
    return {f"db{db}": n for db, n in sorted(_keyspace(db0).items())}


def _without(totals: dict[str, int], stack_keys: dict[str, int]) -> dict[str, int]:
    """Data keys per db: totals less stack state; dbs left with nothing omitted."""
    counts = {ns: n - stack_keys.get(ns, 0) for ns, n in totals.items()}
    return {ns: n for ns, n in counts.items() if n > 0}


def counts_of(db0: redis.Redis) -> dict[str, int]:
    """Data keys per db of the server `db0` talks to."""
    return _without(_totals(db0), {"db0": _stack_key_count(db0)})


def _write_sidecar(dest: Path, rdb_bytes: int, rdb_version: int, stack_keys: dict[str, int]) -> None:
    """What the RDB alone cannot say later. Stack keys are counted while the
    snapshot is fresh: a lock in it expires, and a loaded RDB then hides the
    lock from SCAN but still counts it in INFO keyspace."""
    meta = {"format": 1, "rdb_bytes": rdb_bytes, "rdb_version": rdb_version, "stack_keys": stack_keys}
    (dest / SIDECAR).write_text(json.dumps(meta, indent=1) + "\n")


def _read_sidecar(src: Path) -> dict[str, Any]:
    try:
        meta = json.loads((src / SIDECAR).read_text())
        meta["rdb_bytes"] = int(meta["rdb_bytes"])
        meta["stack_keys"] = {str(k): int(v) for k, v in meta["stack_keys"].items()}
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


def _digest_server(client_for_db: Callable[[int], redis.Redis]) -> str:
    digest = Digest()
    for db in sorted(_keyspace(client_for_db(0))):
        digest_db(client_for_db(db), f"db{db}", digest, is_stack_state if db == 0 else _never)
    digest_functions(client_for_db(0), digest)
    return digest.hexdigest()


def _has_data(client: redis.Redis) -> bool:
    """Any key outside `_rpger:*`; stops at the first one."""
    return any(not key.startswith(STACK_PREFIX) for key in client.scan_iter(count=1000))


def _unlink_data(db0: redis.Redis) -> None:
    """Delete every key of db0 except the marker and locks."""
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

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[int, redis.Redis] = {}

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
        counts = self._call("count keys", partial(counts_of, self._client()))
        return {ns: NamespaceStats(count=n, size_bytes=0) for ns, n in counts.items()}

    def digest(self) -> str:
        return self._call("read keys for the digest", partial(_digest_server, self._client))

    @staticmethod
    def digest_dump(src: Path) -> str:
        """The digest a restore of `src` would produce NOW (keys that expired since
        the dump left out). Beyond the contract: lets a restore days after the
        backup tell "keys expired meanwhile" from "the restore lost data"."""
        meta = _read_sidecar(src)
        rdb = _checked_rdb(src, meta)
        with _loaded(rdb, no_progress, check_rdb_header(rdb)) as tmp:
            clients: dict[int, redis.Redis] = {}
            try:
                return _digest_server(lambda db: clients.setdefault(db, tmp.client(db)))
            finally:
                for client in clients.values():
                    client.close()

    # --- marker and locks ------------------------------------------------------
    def read_marker(self) -> StackMarker | None:
        raw = self._call("read the stack marker", lambda: self._client().get(MARKER_KEY))
        if raw is None:
            return None
        try:
            return StackMarker.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineError(f"stack marker {MARKER_KEY.decode()} in db0 is malformed") from exc

    def write_marker(self, marker: StackMarker) -> None:
        self._call("write the stack marker", lambda: self._client().set(MARKER_KEY, json.dumps(marker.as_dict())))

    def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take the lock, or refresh its TTL when `owner` already holds it."""
        key = LOCK_PREFIX + name.encode()
        ttl_ms = max(1, int(ttl_s * 1000))
        client = self._client()
        if self._call("take a lock", lambda: client.set(key, owner, nx=True, px=ttl_ms)):
            return True
        # Held: ours again (a refresh) or someone else's (until it expires).
        return bool(self._call("refresh a lock", lambda: client.eval(_REFRESH_LUA, 1, key, owner, ttl_ms)))

    def release_lock(self, name: str, owner: str) -> None:
        key = LOCK_PREFIX + name.encode()
        self._call("release a lock", lambda: self._client().eval(_RELEASE_LUA, 1, key, owner))

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
        progress("counting the snapshot's keys", 0, None)
        with _loaded(rdb, progress, rdb_version) as tmp, closing(tmp.client()) as tmp_db0:
            totals = _totals(tmp_db0)
            stack_keys = {"db0": _stack_key_count(tmp_db0)}
        counts = _without(totals, stack_keys)
        _write_sidecar(dest, sync.bytes, rdb_version, stack_keys)
        if had_data and not counts:
            raise EngineError("the Redis snapshot came out empty although the server holds data")
        notes = [f"RDB format {rdb_version}, {'diskless' if sync.diskless else 'disk-based'} transfer"]
        progress("snapshot complete", sync.bytes, sync.bytes)
        return DumpResult(
            counts=counts, files=[DUMP_FILE, SIDECAR], bytes_written=sync.bytes, point_in_time=True,
            server_version=version, notes=notes,
            extra={"rdb_version": rdb_version, "source_dbsize": source_sizes,
                   "replication_id": sync.replid, "replication_offset": sync.offset},
        )

    @staticmethod
    def count_dump(src: Path) -> dict[str, int]:
        meta = _read_sidecar(src)
        rdb = _checked_rdb(src, meta)
        with _loaded(rdb, no_progress, check_rdb_header(rdb)) as tmp, closing(tmp.client()) as tmp_db0:
            return _without(_totals(tmp_db0), meta["stack_keys"])

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
                restored = self._replay_db(tmp, _db_index(namespace), progress, done, total)
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

    def _replay_db(self, tmp: TempRedis, db: int, progress: Progress, done: int, total: int) -> int:
        """Copy one db from the temporary server; returns how many keys were restored.

        A reader thread pulls DUMP payloads from the temporary server while this
        thread writes RESTOREs to the target, so the two round trips overlap."""
        batches: queue.Queue[list[tuple[bytes, bytes, int]] | BaseException | None] = queue.Queue(maxsize=4)
        source = tmp.client(db)
        stop = threading.Event()

        def read() -> None:
            try:
                for batch in _dump_batches(source, db, stop):
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
            if db == 0:  # db0 holds the marker and locks
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


def _dump_batches(source: redis.Redis, db: int, stop: threading.Event) -> Iterator[list[tuple[bytes, bytes, int]]]:
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
        if db == 0 and is_stack_state(key):
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
