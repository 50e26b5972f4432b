"""MongoDB (and FerretDB) behind `base.Engine`.

All collections of `settings.mongodb_database` are user data. The stack's own
state (marker with the migrations ledger, locks) lives in a database of its
own, `<database>__stack` (collection `state`), where the app's user has no
role and which the app's collection listings never show. rpger-ops 0.1 kept it
in the collection `_rpger_stack` of the app's database: that collection is
still never data, is read as a fallback, and goes when the marker is next
written. Dumps use mongodump's directory
layout (see `_bson_dump`), so `mongorestore --dir <dump>` can read them too.
Documents are streamed as raw BSON both ways: the server's own bytes go to
the file, and the file's bytes go back to the server.

FerretDB lacks validators, collations, collMod, partial/TTL indexes and replica
sets; where a restore cannot bring something back, `RestoreResult.notes` says
what and where instead of failing.

`DumpResult.digest` is the digest of exactly what was written (the same
computation as `digest()`, during the dump's one read); `digest_dump` gives
it again from the files. `DumpResult.extra` holds: server_kind
("mongodb"/"ferretdb"), database, format ("mongodump-directory"), and on a
replica set replica_set and at_cluster_time.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast
from urllib.parse import urlsplit

from bson import SON, json_util
from bson.codec_options import CodecOptions
from bson.json_util import CANONICAL_JSON_OPTIONS
from bson.raw_bson import RawBSONDocument
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from rpger_ops.connect import mongo_client
from rpger_ops.engines import _bson_dump as layout
from rpger_ops.engines.base import (
    MARKER_NAME,
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

if TYPE_CHECKING:
    import pymongo
    from pymongo.client_session import ClientSession
    from pymongo.collection import Collection
    from pymongo.database import Database

    from rpger_ops.settings import Settings

MARKER_ID = "marker"
LOCK_PREFIX = "lock:"
STACK_COLLECTION = "state"
MAX_DATABASE_NAME = 63  # bytes, MongoDB's limit


def stack_database_name(database: str) -> str:
    """The database holding the stack state of `database` (marker, ledger, locks)."""
    return f"{database[:MAX_DATABASE_NAME - 7]}__stack"
STACK_PREFIX = "_rpger_"  # namespaces of the stack: kept, but not "user data" for is_empty
# Server error codes meaning "you may not": the server is up but refuses us.
AUTH_ERROR_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed
NAMESPACE_EXISTS = 48
COMMAND_NOT_FOUND = 59  # FerretDB for dbHash
VALIDATION_OPTIONS = ("validator", "validationLevel", "validationAction")
# Index fields that are bookkeeping, not definition.
INDEX_BOOKKEEPING = ("v", "ns")
# Spec fields a server may legitimately drop or normalise (background is a no-op since 4.2).
INDEX_IGNORED_OPTIONS = frozenset({"v", "ns", "background"})
_RAW: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)


def _short(exc: BaseException, limit: int = 300) -> str:
    """First line of a driver error (no credentials: the driver never puts them in messages)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _canonical(value: Any) -> str:
    """Extended JSON that keeps BSON types and the order inside values."""
    return json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS)


def _canonical_fields(doc: dict[str, Any], skip: tuple[str, ...]) -> str:
    """A definition document with its top-level fields sorted: servers list options in
    their own order, which must not change a digest."""
    return _canonical([[k, doc[k]] for k in sorted(doc) if k not in skip])


class _Throttle:
    """Forwards progress at most every `interval_s`, plus whenever forced."""

    def __init__(self, progress: Progress, interval_s: float) -> None:
        self._progress, self._interval, self._last = progress, interval_s, 0.0

    def __call__(self, message: str, done: int, total: int | None, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self._interval:
            self._last = now
            self._progress(message, done, total)


def _add_definition(d: Digest, info: dict[str, Any], indexes: list[dict[str, Any]]) -> None:
    """A collection's digest items other than its documents: type, options, indexes."""
    name = info["name"]
    d.add("collection", name, info.get("type", "collection"), _canonical_fields(info.get("options", {}), ("uuid",)))
    for index in indexes:
        d.add("index:" + name, _canonical_fields(index, INDEX_BOOKKEEPING))


@dataclass
class _DumpRun:
    """State of one dump shared by its per-collection steps."""

    result: DumpResult
    report: _Throttle
    digest: Digest  # of exactly what was written
    session: ClientSession | None  # the snapshot session on a replica set
    total: int  # estimated documents, for progress
    done: int = 0


class MongoEngine:
    name: ClassVar[EngineName] = "mongo"
    digest_version: ClassVar[int] = 1

    # Tuning knobs (class attributes so benchmarks and tests can adjust one instance).
    # Documents per find/getMore (a reply is capped at 16 MiB anyway); small enough that a
    # slow server still returns a batch, and so a progress report, every second or two.
    dump_batch_size = 2_000
    restore_batch_docs = 5_000
    restore_batch_bytes = 4 << 20
    restore_workers = 2  # insert threads: one batch on the wire while the next is read (FerretDB gains nothing from more)
    progress_interval_s = 2.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: pymongo.MongoClient[dict[str, Any]] | None = None
        self._build_info: dict[str, Any] | None = None

    # --- connection ----------------------------------------------------------------
    @property
    def client(self) -> pymongo.MongoClient[dict[str, Any]]:
        if self._client is None:
            self._client = mongo_client(self.settings)
        return self._client

    @property
    def db(self) -> Database[dict[str, Any]]:
        return self.client[self.settings.mongodb_database]

    def _where(self) -> str:
        """Scheme and hosts only: credentials and query options (which may hold TLS key
        passwords) never reach a message."""
        parts = urlsplit(self.settings.mongodb_uri.get_secret_value())
        return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"

    @contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        """Driver errors -> EngineError/NotReadyError with messages safe to show."""
        try:
            yield
        except EngineError:
            raise
        except ConnectionFailure as exc:
            raise NotReadyError(f"MongoDB {action}: server unreachable ({self._where()}): {_short(exc)}") from None
        except OperationFailure as exc:
            if exc.code in AUTH_ERROR_CODES:
                raise NotReadyError(f"MongoDB {action}: credentials refused by {self._where()} "
                                    f"(code {exc.code})") from None
            raise EngineError(f"MongoDB {action}: {_short(exc)}") from None
        except PyMongoError as exc:
            raise EngineError(f"MongoDB {action}: {type(exc).__name__}: {_short(exc)}") from None
        except OSError as exc:  # dump files: disk full, permissions, vanished folder
            raise EngineError(f"MongoDB {action}: {exc.strerror or exc}: {exc.filename or ''}") from None

    def _server_build(self) -> dict[str, Any]:
        if self._build_info is None:
            self._build_info = dict(self.client.admin.command("buildInfo"))
        return self._build_info

    def _hello(self) -> dict[str, Any]:
        try:
            return dict(self.client.admin.command("hello"))
        except OperationFailure:  # servers before 4.4.2 only know the legacy name
            return dict(self.client.admin.command("isMaster"))

    def _server_kind(self) -> str:
        return "ferretdb" if "ferretdbVersion" in self._server_build() else "mongodb"

    def _collections(self) -> list[dict[str, Any]]:
        """listCollections entries of user data and `_rpger_*` ledgers (not the stack
        collection, not system.*), sorted by name."""
        infos = [dict(info) for info in self.db.list_collections()
                 if info["name"] != MARKER_NAME and not info["name"].startswith("system.")]
        return sorted(infos, key=lambda info: info["name"])

    # --- Engine: health ---------------------------------------------------------------
    def ping(self) -> PingResult:
        with self._translate("ping"):
            build = self._server_build()
            start = time.perf_counter()
            self.db.command("ping")
            latency_ms = (time.perf_counter() - start) * 1000
        return PingResult(server_version=str(build.get("version", "")), latency_ms=latency_ms,
                          server_kind=self._server_kind())

    def is_empty(self) -> bool:
        """No documents in any collection outside `_rpger_*` (empty collections and
        indexes made by migrations do not count as data)."""
        with self._translate("is_empty"):
            for info in self._collections():
                name = info["name"]
                if name.startswith(STACK_PREFIX) or info.get("type") == "view":
                    continue
                if self.db[name].find_one({}, projection={"_id": 1}) is not None:
                    return False
        return True

    def stats(self) -> dict[str, NamespaceStats]:
        out: dict[str, NamespaceStats] = {}
        with self._translate("stats"):
            for info in self._collections():
                if info.get("type") == "view":
                    continue
                out[info["name"]] = self._collection_stats(info["name"])
        return out

    def _collection_stats(self, name: str) -> NamespaceStats:
        try:
            s = self.db.command("collStats", name)
            return NamespaceStats(count=int(s.get("count", 0)), size_bytes=int(s.get("size", 0)))
        except OperationFailure:  # collStats is deprecated on newer MongoDB; counts still work
            return NamespaceStats(count=self.db[name].estimated_document_count(), size_bytes=0)

    # --- Engine: digest -------------------------------------------------------------------
    def digest(self) -> str:
        """Covers each document's raw BSON (field order and types), each index
        definition (minus v/ns) and each collection's type and options (uuid is
        server-generated and lives outside options). `dump` computes the same
        digest of what it wrote, as `DumpResult.digest`."""
        d = Digest()
        with self._translate("digest"):
            for info in self._collections():
                name = info["name"]
                is_view = info.get("type") == "view"
                _add_definition(d, info, [] if is_view else [dict(ix) for ix in self.db[name].list_indexes()])
                if is_view:
                    continue
                for batch in self.db[name].find_raw_batches({}, batch_size=self.dump_batch_size):
                    for doc in layout.split_documents(cast(bytes, batch)):
                        d.add("doc:" + name, bytes(doc))
        return d.hexdigest()

    def server_hash(self) -> tuple[str | None, str]:
        """dbHash's per-collection md5s (documents in _id order, as the server stores them)
        plus the digest of each collection's definition (type, options, indexes), which
        dbHash leaves out."""
        with self._translate("dbHash"):
            infos = self._collections()
            try:
                reply = self.db.command("dbHash")
            except OperationFailure as exc:
                if exc.code != COMMAND_NOT_FOUND:
                    raise
                return None, (f"{self._server_kind()} has no dbHash, so the restored data was checked by "
                              "reading all of it back (digest)")
            definitions = Digest()
            for info in infos:
                is_view = info.get("type") == "view"
                _add_definition(definitions, info, [] if is_view else
                                [dict(ix) for ix in self.db[info["name"]].list_indexes()])
        hashed = reply.get("collections") or {}
        data = {info["name"] for info in infos if info.get("type") != "view"}
        if set(hashed) != data:  # e.g. a kind of collection this server version does not hash
            return None, (f"dbHash covers {sorted(hashed)} but the database holds {sorted(data)}; "
                          "checked by digest instead")
        both = json.dumps({"dbHash": hashed, "definitions": definitions.hexdigest()}, sort_keys=True)
        return hashlib.sha256(both.encode()).hexdigest(), ""

    # --- Engine: marker and locks -----------------------------------------------------------
    @property
    def stack_database(self) -> str:
        return stack_database_name(self.settings.mongodb_database)

    @property
    def _stack(self) -> Collection[dict[str, Any]]:
        return self.client[self.stack_database][STACK_COLLECTION]

    def read_marker(self) -> StackMarker | None:
        with self._translate("read_marker"):
            doc = self._stack.find_one({"_id": MARKER_ID}) or self.db[MARKER_NAME].find_one({"_id": MARKER_ID})
        return StackMarker.from_dict(doc) if doc else None

    def write_marker(self, marker: StackMarker) -> None:
        with self._translate("write_marker"):
            self._stack.replace_one({"_id": MARKER_ID}, {"_id": MARKER_ID, **marker.as_dict()}, upsert=True)
            if MARKER_NAME in self.db.list_collection_names():  # 0.1's place, in the app's database
                self.db.drop_collection(MARKER_NAME)

    def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """Insert the lock doc; if it exists, take it over only when expired (or
        already ours: a refresh). Both steps are single-document atomic ops."""
        lock_id = LOCK_PREFIX + name
        with self._translate(f"acquire_lock {name}"):
            for _ in range(2):  # a release between our two steps: try the insert again
                now = datetime.now(UTC)
                doc = {"owner": owner, "expiresAt": now + timedelta(seconds=ttl_s), "acquiredAt": now}
                try:
                    self._stack.insert_one({"_id": lock_id, **doc})
                    return True
                except DuplicateKeyError:
                    pass
                taken = self._stack.find_one_and_update(
                    {"_id": lock_id, "$or": [{"expiresAt": {"$lt": now}}, {"owner": owner}]},
                    {"$set": doc})
                if taken is not None:
                    return True
                if self._stack.find_one({"_id": lock_id}, projection={"_id": 1}) is not None:
                    return False
        return False

    def release_lock(self, name: str, owner: str) -> None:
        with self._translate(f"release_lock {name}"):
            self._stack.delete_one({"_id": LOCK_PREFIX + name, "owner": owner})

    # --- Engine: dump -----------------------------------------------------------------------
    def dump(self, dest: Path, progress: Progress = no_progress) -> DumpResult:
        """Raw BSON per collection into `dest/<database>/`. On a replica set every
        collection is read in one snapshot session (point in time, within the
        server's snapshot history window, 5 min by default); elsewhere one
        collection after another."""
        db_dir = dest / self.settings.mongodb_database
        result = DumpResult(counts={}, files=[], bytes_written=0, point_in_time=False, server_version="")
        with self._translate("dump"):
            db_dir.mkdir(parents=True, exist_ok=True)
            build = self._server_build()
            result.server_version = str(build.get("version", ""))
            result.extra.update({"server_kind": self._server_kind(), "database": self.settings.mongodb_database,
                                 "format": "mongodump-directory"})
            replica_set = self._hello().get("setName")
            infos = self._collections()
            # collStats, not estimated_document_count: FerretDB answers the count command by scanning.
            expected = {i["name"]: self._collection_stats(i["name"]).count
                        for i in infos if i.get("type") != "view"}
            session = self._open_snapshot(infos, result) if replica_set else None
            run = _DumpRun(result, _Throttle(progress, self.progress_interval_s), Digest(), session,
                           total=sum(expected.values()))
            run.report(f"dumping {len(infos)} collections (~{run.total} documents)", 0, run.total, force=True)
            try:
                for info in infos:
                    self._dump_collection(info, db_dir, run)
                result.digest = run.digest.hexdigest()
                if session is not None:
                    # Private in pymongo: the timestamp the server chose for the snapshot.
                    at = getattr(session, "_snapshot_time", None) or session.operation_time
                    result.point_in_time = True
                    result.extra.update({"replica_set": replica_set, "at_cluster_time": str(at)})
            finally:
                if session is not None:
                    session.end_session()
        if not result.point_in_time and not replica_set:
            result.notes.append("not point-in-time: the server is not a replica set (FerretDB or standalone "
                                "MongoDB), so collections were read one after another")
        written = sum(result.counts.values())
        if written == 0 and run.total > 0:
            raise EngineError(f"MongoDB dump: read 0 documents although the server reports ~{run.total}; "
                              "refusing an empty dump of a non-empty database")
        run.report(f"dumped {written} documents from {len(result.counts)} collections", written, run.total,
                   force=True)
        return result

    def _open_snapshot(self, infos: list[dict[str, Any]], result: DumpResult) -> ClientSession | None:
        """A snapshot session whose timestamp is fixed, or None (with a note) where the
        server refuses snapshot reads (MongoDB before 5.0). The first read fixes the
        timestamp; it is done decoded so the driver records atClusterTime (raw batch
        replies are opaque to it)."""
        session = self.client.start_session(snapshot=True)
        try:
            for info in infos:
                if info.get("type") != "view":
                    self.db[info["name"]].find_one({}, projection={"_id": 1}, session=session)
                    break
            return session
        except (ConfigurationError, OperationFailure) as exc:
            session.end_session()
            result.notes.append(f"not point-in-time: the replica set refused a snapshot read ({_short(exc, 160)}); "
                                "collections were read one after another")
            return None

    def _dump_collection(self, info: dict[str, Any], db_dir: Path, run: _DumpRun) -> None:
        name, kind = info["name"], info.get("type", "collection")
        coll = self.db[name]
        meta = layout.CollectionMetadata(
            name=name, type=kind, options=info.get("options", {}),
            indexes=[] if kind == "view" else [dict(ix) for ix in coll.list_indexes()],
            uuid=layout.uuid_hex((info.get("info") or {}).get("uuid")))
        meta_file = layout.metadata_path(db_dir, name)
        meta_file.write_text(meta.to_json(), encoding="utf-8")
        self._record_file(run.result, db_dir, meta_file)
        _add_definition(run.digest, info, meta.indexes)
        if not meta.has_documents:
            return
        data_file = layout.bson_path(db_dir, name)
        count, namespace = 0, "doc:" + name
        with data_file.open("wb") as fh:
            for raw in coll.find_raw_batches({}, batch_size=self.dump_batch_size, session=run.session):
                batch = cast(bytes, raw)  # typed as documents by pymongo; really concatenated BSON
                fh.write(batch)
                for doc in layout.split_documents(batch):
                    run.digest.add(namespace, bytes(doc))
                    count += 1
                run.report(f"dumping {name}", run.done + count, run.total)
        run.result.counts[name] = count
        run.done += count
        self._record_file(run.result, db_dir, data_file)
        run.report(f"dumped {name}: {count} documents", run.done, run.total, force=True)

    @staticmethod
    def _record_file(result: DumpResult, db_dir: Path, path: Path) -> None:
        result.files.append(str(path.relative_to(db_dir.parent)))
        result.bytes_written += path.stat().st_size

    @staticmethod
    def count_dump(src: Path) -> dict[str, int]:
        """Documents per collection of a dump, each decoded to prove the files intact;
        raises EngineError on a truncated/corrupt file or a missing metadata/data file."""
        try:
            db_dir = layout.database_dir(src)
            return {meta.name: layout.validate_and_count(meta.data_file)
                    for meta in layout.read_layout(db_dir)
                    if meta.data_file is not None and meta.name != MARKER_NAME}
        except layout.DumpFormatError as exc:
            raise EngineError(f"MongoDB dump unreadable: {exc}") from None
        except OSError as exc:
            raise EngineError(f"MongoDB dump unreadable: {exc.strerror}: {exc.filename}") from None

    @staticmethod
    def digest_dump(src: Path) -> str:
        """`digest()` of a database restored from `src`, from the files alone."""
        d = Digest()
        try:
            for meta in sorted(layout.read_layout(layout.database_dir(src)), key=lambda m: m.name):
                if meta.name == MARKER_NAME:
                    continue
                info = {"name": meta.name, "type": meta.type, "options": meta.options}
                _add_definition(d, info, [] if meta.type == "view" else meta.indexes)
                if meta.data_file is not None:
                    for doc in layout.iter_documents(meta.data_file):
                        d.add("doc:" + meta.name, doc)
        except layout.DumpFormatError as exc:
            raise EngineError(f"MongoDB dump unreadable: {exc}") from None
        except OSError as exc:
            raise EngineError(f"MongoDB dump unreadable: {exc.strerror}: {exc.filename}") from None
        return d.hexdigest()

    # --- Engine: restore ---------------------------------------------------------------------
    def restore(self, src: Path, progress: Progress = no_progress) -> RestoreResult:
        """Collections with their options, then documents (unordered raw batches,
        several in flight), then indexes (built once over the loaded data), then views.
        The files are walked once first: a truncated dump fails before anything is written."""
        started = time.monotonic()
        report = _Throttle(progress, self.progress_interval_s)
        notes: list[str] = []
        try:
            metas = layout.read_layout(layout.database_dir(src, self.settings.mongodb_database))
            if any(m.name == MARKER_NAME for m in metas):
                notes.append(f"{MARKER_NAME}: skipped; stack marker and locks belong to the target")
                metas = [m for m in metas if m.name != MARKER_NAME]
            collections = [m for m in metas if m.has_documents]
            views = [m for m in metas if not m.has_documents]
            total = sum(layout.count_documents(m.data_file) for m in collections if m.data_file)
        except (layout.DumpFormatError, OSError) as exc:
            raise EngineError(f"MongoDB restore: dump unreadable: {exc}") from None
        with self._translate("restore"):
            self._refuse_non_empty_targets(collections)
            existing = set(self.db.list_collection_names())
            for meta in collections:
                self._create_collection(meta, existing, notes)
            counts = self._load_documents(collections, report, total)
            for meta in collections:
                report(f"building indexes of {meta.name}", sum(counts.values()), total, force=True)
                self._create_indexes(meta, notes)
            for meta in views:
                self._create_collection(meta, existing, notes)
        report(f"restored {sum(counts.values())} documents into {len(counts)} collections",
               sum(counts.values()), sum(counts.values()), force=True)
        return RestoreResult(counts=counts, seconds=time.monotonic() - started, notes=notes)

    def _refuse_non_empty_targets(self, collections: list[layout.CollectionMetadata]) -> None:
        existing = set(self.db.list_collection_names())
        full = [m.name for m in collections
                if m.name in existing and self.db[m.name].find_one({}, projection={"_id": 1}) is not None]
        if full:
            raise EngineError(f"MongoDB restore: target collections already hold documents: {', '.join(full)} "
                              "(restore only into an empty database, or wipe it after a safety backup)")

    def _create_collection(self, meta: layout.CollectionMetadata, existing: set[str], notes: list[str]) -> None:
        """Create with every option; where the server refuses, retry without validation,
        then without collation, then without any option, noting each thing left out."""
        if meta.name in existing:
            notes.append(f"{meta.name}: already existed in the target; kept its options")
            return
        if not meta.has_documents:  # a view: without its definition it would be a wrong, empty collection
            try:
                self.db.command(SON([("create", meta.name), *meta.options.items()]))
            except OperationFailure as exc:
                notes.append(f"{meta.name}: view not restored: the server refused it ({_short(exc, 160)})")
            return
        remaining = dict(meta.options)
        fallbacks: list[tuple[tuple[str, ...] | None, str]] = [
            (VALIDATION_OPTIONS, "the server lacks document validators ($jsonSchema), e.g. FerretDB"),
            (("collation",), "the server lacks collations, e.g. FerretDB"),
            (None, "the server refused these collection options"),
        ]
        for group, reason in fallbacks:
            try:
                self.db.command(SON([("create", meta.name), *remaining.items()]))
                return
            except OperationFailure as exc:
                if exc.code == NAMESPACE_EXISTS:
                    return
                dropped = [k for k in remaining if group is None or k in group]
                if not dropped:
                    continue
                for key in dropped:
                    del remaining[key]
                notes.append(f"{meta.name}: created without {', '.join(dropped)}: {reason} ({_short(exc, 160)})")
        self.db.command(SON([("create", meta.name), *remaining.items()]))

    def _load_documents(self, collections: list[layout.CollectionMetadata], report: _Throttle,
                        total: int) -> dict[str, int]:
        counts = {meta.name: 0 for meta in collections}
        max_in_flight = self.restore_workers * 2
        with ThreadPoolExecutor(max_workers=self.restore_workers, thread_name_prefix="mongo-restore") as pool:
            in_flight: set[Future[tuple[str, int]]] = set()

            def settle(futures: set[Future[tuple[str, int]]]) -> None:
                for fut in futures:
                    name, n = fut.result()  # re-raises an insert failure here
                    counts[name] += n
                report("restoring documents", sum(counts.values()), total)

            try:
                for meta in collections:
                    assert meta.data_file is not None
                    coll = cast("Collection[RawBSONDocument]", self.db.get_collection(meta.name, codec_options=_RAW))
                    for batch in layout.iter_batches(meta.data_file, self.restore_batch_docs,
                                                     self.restore_batch_bytes):
                        if len(in_flight) >= max_in_flight:
                            finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                            settle(finished)
                        in_flight.add(pool.submit(_insert_batch, coll, meta.name, batch))
                finished, in_flight = wait(in_flight)
                settle(finished)
            except layout.DumpFormatError as exc:
                raise EngineError(f"MongoDB restore: dump unreadable: {exc}") from None
            finally:
                for fut in in_flight:
                    fut.cancel()
        return counts

    def _create_indexes(self, meta: layout.CollectionMetadata, notes: list[str]) -> None:
        """All of a collection's indexes in one createIndexes (one pass over the data);
        when the server refuses that, one by one, noting each index it refuses."""
        specs = [{k: v for k, v in ix.items() if k not in INDEX_BOOKKEEPING}
                 for ix in meta.indexes if ix.get("name") != "_id_"]
        if not specs:
            return
        try:
            self.db.command(SON([("createIndexes", meta.name), ("indexes", specs)]))
        except OperationFailure:
            for spec in specs:
                try:
                    self.db.command(SON([("createIndexes", meta.name), ("indexes", [spec])]))
                except OperationFailure as exc:
                    notes.append(f"{meta.name}: index {spec.get('name')!r} not restored: {_short(exc, 200)}")
        self._note_dropped_index_options(meta.name, specs, notes)

    def _note_dropped_index_options(self, collection: str, specs: list[dict[str, Any]], notes: list[str]) -> None:
        """Some servers accept an index option and silently ignore it (FerretDB: sparse)."""
        listed = {ix["name"]: dict(ix) for ix in self.db[collection].list_indexes()}
        for spec in specs:
            have = listed.get(spec.get("name", ""))
            if have is None:
                continue  # refused outright: noted already
            lost = [k for k in spec if k not in INDEX_IGNORED_OPTIONS and _canonical(spec[k]) != _canonical(have.get(k))]
            if lost:
                notes.append(f"{collection}: index {spec['name']!r} restored without {', '.join(lost)}: "
                             "the server did not keep these options")

    # --- Engine: wipe, scratch, close -----------------------------------------------------------
    def wipe(self) -> None:
        """Drop every collection and view except the stack collection (marker, locks)."""
        with self._translate("wipe"):
            for info in self._collections():
                self.db.drop_collection(info["name"])

    def scratch(self) -> AbstractContextManager[MongoEngine]:
        return self._scratch()

    @contextmanager
    def _scratch(self) -> Iterator[MongoEngine]:
        # MongoDB database names are limited to 63 bytes.
        name = f"{self.settings.mongodb_database[:40]}__scratch_{secrets.token_hex(4)}"
        engine = MongoEngine(self.settings.model_copy(update={"mongodb_database": name}))
        try:
            yield engine
        finally:
            try:
                with engine._translate(f"drop scratch database {name}"):
                    engine.client.drop_database(name)
                    engine.client.drop_database(engine.stack_database)
            finally:
                engine.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _insert_batch(coll: Collection[RawBSONDocument], name: str, batch: list[bytes]) -> tuple[str, int]:
    """One unordered bulk insert of raw documents. Validation is bypassed: the
    documents were in the database already, and a restore must bring back all of them."""
    try:
        coll.insert_many([RawBSONDocument(doc) for doc in batch], ordered=False,
                         bypass_document_validation=True)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        first = errors[0].get("errmsg", "") if errors else ""
        raise EngineError(f"MongoDB restore: {len(errors)} of {len(batch)} documents refused by {name}: "
                          f"{first[:200]}") from None
    # The driver does not collect _ids of raw documents; no error means all went in.
    return name, len(batch)


_: type[Engine] = MongoEngine
