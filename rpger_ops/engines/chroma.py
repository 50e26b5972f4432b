"""Chroma engine: a logical, live export through the HTTP API.

Chroma has no dump tool and no snapshots, and copying its data directory
while the server runs can corrupt it, so a dump reads every collection
through the API into Parquet:

    collections.json                  format, server version, and per collection:
                                      name, metadata, configuration, schema,
                                      dimension, count, file
    collections/<name>.parquet        id: string, embedding: fixed_size_list<float32>[dim],
                                      document, metadata (canonical JSON), uri: string (nullable)

Embeddings are kept as exact float32; record metadata as canonical JSON so
int/float/bool/str survive exactly. Files carry page checksums so
`count_dump` detects corruption without a server. Cosine collections store
embeddings through a lossy normalisation, so restore sends inputs that come
back as exactly the dumped bytes (see `chroma_cosine`); likewise Chroma's JSON
parser moves some floats by an ulp, so metadata floats are sent in a form that
parses onto the dumped value (see `chroma_floats`).

The stack's own state lives in a database of its own in the same tenant,
`<database>_rpger_stack`, so the app's database lists only the app's
collections: the collection `stack` holds the marker (in its metadata, with
the migrations ledger), `lock_<name>` collections are locks. rpger-ops 0.1
kept them in the app's database as `rpger__stack` and `rpger__lock_<name>`:
those are still never data, the marker is read there as a fallback and goes
when it is next written. Chroma collection names must start and end with a
letter or digit, so contract namespaces `_rpger_*` are spelled `rpger__*`
here (see `chroma_namespace`); any other `rpger__*` collection is dumped but
does not make the database non-empty.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from rpger_ops.connect import chroma_admin, chroma_client
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
from rpger_ops.engines.chroma_cosine import cosine_preimage
from rpger_ops.engines.chroma_floats import COLLECTION_PASSES, RECORD_PASSES, send_forms

if TYPE_CHECKING:
    import chromadb.api
    import pyarrow as pa
    from chromadb.api.models.Collection import Collection

    from rpger_ops.settings import Settings

T = TypeVar("T")

# `_rpger_x` (the contract's spelling) -> `rpger__x` (a valid Chroma name).
INTERNAL_PREFIX = "rpger__"
MARKER_COLLECTION = INTERNAL_PREFIX + MARKER_NAME.removeprefix("_rpger_")  # "rpger__stack" (0.1)
LOCK_PREFIX = INTERNAL_PREFIX + "lock_"  # (0.1)
STACK_MARKER = "stack"  # in the stack database
STACK_LOCK_PREFIX = "lock_"


def stack_database_name(database: str) -> str:
    """The database holding the stack state of `database` (marker, ledger, locks)."""
    return f"{database}_rpger_stack"

DUMP_FORMAT = 1
COLLECTIONS_FILE = "collections.json"
DATA_DIR = "collections"
INCLUDE_ALL: list[Any] = ["embeddings", "documents", "metadatas", "uris"]

# Memory, not speed, sets these two: the client holds a page or a batch as JSON text plus
# Python floats (~32 bytes each), two at a time (one page fetched ahead, two adds in
# flight), and larger ones were not faster. Measured at 1536-d (tracemalloc, scale 2000):
# 1M-float pages peaked ~300 MB of Python objects in the dump, 500k ones ~120 MB (RSS +190 MB, not slower); 4096-row adds ~200 MB
# above the process's baseline, 1024-row ones ~50 MB.
# Floats per `get` page: ~325 rows of 1536-d embeddings.
FLOATS_PER_PAGE = 500_000
ID_PAGE = 10_000
# Rows per `add` (the server's max batch size caps it too): ~3 MB of vectors at 1536-d.
ADD_BATCH_ROWS = 512
PROGRESS_EVERY_S = 2.0
_VALID_LOCK_NAME = re.compile(r"^[A-Za-z0-9._-]*[A-Za-z0-9]$")


def chroma_namespace(name: str) -> str:
    """The Chroma collection name for a contract namespace (`_rpger_x` -> `rpger__x`)."""
    return INTERNAL_PREFIX + name.removeprefix("_rpger_") if name.startswith("_rpger_") else name


def is_stack_state(name: str) -> bool:
    """Marker and locks: never user data, never dumped."""
    return name == MARKER_COLLECTION or name.startswith(LOCK_PREFIX)


def is_internal(name: str) -> bool:
    """Stack namespaces: dumped (unless stack state) but not user data for `is_empty`."""
    return name.startswith(INTERNAL_PREFIX)


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace: equal values give equal text; 1, 1.0 and true stay distinct."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=_transport_form)


def _transport_form(value: Any) -> Any:
    """Sparse-vector metadata values as their tagged dict, which `add` accepts back."""
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON serialisable")


def _float32_rows(embeddings: Any, n: int) -> np.ndarray:
    """Chroma returns float32 values widened to float64; narrowing gives back the exact bytes."""
    if embeddings is None or n == 0:
        return np.zeros((n, 0), dtype="<f4")
    return np.asarray(embeddings, dtype="<f4").reshape(n, -1)


@dataclass
class _Page:
    ids: list[str]
    embeddings: np.ndarray  # (rows, dim) little-endian float32
    documents: list[str | None]
    metadatas: list[str | None]  # canonical JSON
    uris: list[str | None]


def _page_from_get(got: Any) -> _Page:
    ids = list(got["ids"])
    n = len(ids)
    docs = got.get("documents") or [None] * n
    metas = got.get("metadatas") or [None] * n
    uris = got.get("uris") or [None] * n
    return _Page(ids=ids, embeddings=_float32_rows(got.get("embeddings"), n), documents=list(docs),
                 metadatas=[None if m is None else canonical_json(m) for m in metas], uris=list(uris))


def _page_from_batch(rb: pa.RecordBatch) -> _Page:
    """A dumped record batch in the shape `_pages` yields (metadata stays canonical JSON)."""
    n = rb.num_rows
    emb_col = rb.column("embedding")
    dim = emb_col.type.list_size
    # flatten() honours a batch's offset into its column; `.values` would not.
    vectors = np.asarray(emb_col.flatten().to_numpy(zero_copy_only=False), dtype="<f4").reshape(n, dim)
    return _Page(ids=rb.column("id").to_pylist(), embeddings=vectors, documents=rb.column("document").to_pylist(),
                 metadatas=rb.column("metadata").to_pylist(), uris=rb.column("uri").to_pylist())


class ChromaEngine:
    name: ClassVar[EngineName] = "chroma"
    digest_version: ClassVar[int] = 1

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client_obj: chromadb.api.ClientAPI | None = None
        self._stack_obj: chromadb.api.ClientAPI | None = None

    # --- connection and error mapping ------------------------------------
    def _where(self) -> str:
        s = self.settings
        return f"chroma at {s.chroma_host}:{s.chroma_port} ({s.chroma_tenant}/{s.chroma_database})"

    def _fail(self, action: str, exc: Exception) -> EngineError:
        """Map a client error to ours; messages name the server, never credentials."""
        import chromadb.errors
        import httpx

        if isinstance(exc, EngineError):  # already ours (e.g. NotReadyError from connecting)
            return exc
        detail = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError):
            return NotReadyError(f"{action}: cannot reach {self._where()}: {type(exc).__name__}")
        if isinstance(exc, chromadb.errors.AuthorizationError | chromadb.errors.ChromaAuthError):
            return NotReadyError(f"{action}: {self._where()} refused our credentials")
        if isinstance(exc, ValueError) and "Could not connect" in str(exc):
            return NotReadyError(f"{action}: cannot reach {self._where()}")
        return EngineError(f"{action} on {self._where()} failed: {detail}")

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except EngineError:
            raise
        except Exception as exc:
            raise self._fail(action, exc) from None

    @property
    def _client(self) -> chromadb.api.ClientAPI:
        if self._client_obj is None:
            self._client_obj = self._call("connect", self._connect)
        return self._client_obj

    def _connect(self, database: str | None = None) -> chromadb.api.ClientAPI:
        import chromadb.errors

        database = database or self.settings.chroma_database
        try:
            return chroma_client(self.settings, database=database)
        except chromadb.errors.NotFoundError:
            # The stack owns its databases: a fresh server simply has not got them yet.
            # Another process may create it at the same moment; that is as good.
            try:
                chroma_admin(self.settings).create_database(database, tenant=self.settings.chroma_tenant)
            except chromadb.errors.ChromaError as exc:
                if "already exists" not in str(exc):  # 1.5.9 raises a bare ChromaError for this
                    raise
            return chroma_client(self.settings, database=database)

    @property
    def stack_database(self) -> str:
        return stack_database_name(self.settings.chroma_database)

    @property
    def _stack(self) -> chromadb.api.ClientAPI:
        """The client of the stack's own database (marker, locks)."""
        if self._stack_obj is None:
            self._client  # noqa: B018 -- connect (and map errors) through the app database first
            self._stack_obj = self._call("connect", lambda: self._connect(self.stack_database))
        return self._stack_obj

    def _collections(self) -> list[Collection]:
        return self._call("list collections", lambda: list(self._client.list_collections()))

    def _data_collections(self) -> list[Collection]:
        """Everything a dump holds: all collections but the marker and locks, by name."""
        return sorted((c for c in self._collections() if not is_stack_state(c.name)), key=lambda c: c.name)

    def _page_size(self, dimension: int | None) -> int:
        per_page = FLOATS_PER_PAGE // max(dimension or 1, 1)
        return max(50, min(per_page, self._call("max batch size", self._client.get_max_batch_size)))

    # --- health and inspection --------------------------------------------
    def ping(self) -> PingResult:
        start = time.perf_counter()
        self._call("heartbeat", self._client.heartbeat)
        version = self._call("get version", self._client.get_version)
        return PingResult(server_version=str(version), latency_ms=(time.perf_counter() - start) * 1000,
                          server_kind="chroma")

    def is_empty(self) -> bool:
        return not any(not is_internal(c.name) for c in self._collections())

    def stats(self) -> dict[str, NamespaceStats]:
        # Chroma reports no sizes; counts are what monitoring compares.
        return {c.name: NamespaceStats(count=self._call(f"count {c.name}", c.count), size_bytes=0)
                for c in self._data_collections()}

    def server_hash(self) -> tuple[str | None, str]:
        return None, ""  # Chroma computes no hash of a collection's content

    def digest(self) -> str:
        """Collections (spec and records) as the server holds them now. `digest_dump`
        computes the same value from a dump through the same two functions."""
        d = Digest()
        for coll in self._data_collections():
            add_collection_item(d, coll.name, collection_spec(coll.get_model()))
            for page in self._pages(coll):
                add_record_items(d, coll.name, page)
        return d.hexdigest()

    @staticmethod
    def digest_dump(src: Path) -> str:
        """The digest of what restoring the dump in `src` gives, without a server."""
        import pyarrow.parquet as pq

        d = Digest()
        for entry in _read_manifest(src)["collections"]:
            add_collection_item(d, entry["name"], entry)
            try:
                pf = pq.ParquetFile(src / entry["file"])
                for rb in record_batches(pf, read_batch_rows(entry.get("dimension"))):
                    add_record_items(d, entry["name"], _page_from_batch(rb))
            except EngineError:
                raise
            except Exception as exc:
                raise EngineError(f"chroma dump file {entry['file']} is unreadable: {type(exc).__name__}: {exc}") \
                    from None
        return d.hexdigest()

    def _pages(self, coll: Collection) -> Iterator[_Page]:
        """All records of a live collection in pages, one page fetched ahead.

        Ids are listed first, then fetched by id: records added meanwhile are
        left out, records deleted meanwhile drop out, none is read twice.
        """
        ids = self._all_ids(coll)
        size = self._page_size(_dimension(coll))
        chunks = [ids[s:s + size] for s in range(0, len(ids), size)]

        def fetch(chunk: list[str]) -> _Page:
            return _page_from_get(self._call(f"read {coll.name}", lambda: coll.get(ids=chunk, include=INCLUDE_ALL)))

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chroma-read") as pool:
            pending: Future[_Page] | None = pool.submit(fetch, chunks[0]) if chunks else None
            for k in range(len(chunks)):
                assert pending is not None
                page = pending.result()
                pending = pool.submit(fetch, chunks[k + 1]) if k + 1 < len(chunks) else None
                yield page

    def _all_ids(self, coll: Collection) -> list[str]:
        ids: list[str] = []
        seen: set[str] = set()
        offset = 0
        while True:
            got = self._call(f"list ids of {coll.name}",
                             partial(coll.get, limit=ID_PAGE, offset=offset, include=[]))
            batch = list(got["ids"])
            for rid in batch:
                if rid not in seen:  # offsets shift under concurrent deletes
                    seen.add(rid)
                    ids.append(rid)
            if len(batch) < ID_PAGE:
                return ids
            offset += len(batch)

    # --- marker ------------------------------------------------------------
    def read_marker(self) -> StackMarker | None:
        import chromadb.errors

        for client, name in ((self._stack, STACK_MARKER), (self._client, MARKER_COLLECTION)):  # then 0.1's place
            try:
                coll = client.get_collection(name)
            except chromadb.errors.NotFoundError:
                continue
            except Exception as exc:
                raise self._fail("read marker", exc) from None
            return StackMarker.from_dict(dict(coll.metadata or {}))
        return None

    def write_marker(self, marker: StackMarker) -> None:
        meta: dict[str, Any] = marker.as_dict()
        self._call("write marker", lambda: self._stack.get_or_create_collection(
            STACK_MARKER, metadata=meta, embedding_function=None).modify(metadata=meta))
        if any(c.name == MARKER_COLLECTION for c in self._collections()):
            self._call("remove the 0.1 marker", lambda: self._client.delete_collection(MARKER_COLLECTION))

    # --- dump ----------------------------------------------------------------
    def dump(self, dest: Path, progress: Progress = no_progress) -> DumpResult:
        import pyarrow.parquet as pq

        version = self.ping().server_version
        colls = self._data_collections()
        expected = {c.name: self._call(f"count {c.name}", c.count) for c in colls}
        total = sum(expected.values())
        (dest / DATA_DIR).mkdir(parents=True, exist_ok=True)
        entries: list[dict[str, Any]] = []
        files: list[str] = []
        counts: dict[str, int] = {}
        digest = Digest()  # of what is written, in the same pass
        done = 0
        last = 0.0
        progress(f"chroma: exporting {len(colls)} collections", 0, total)
        for coll in colls:
            rel = f"{DATA_DIR}/{coll.name}.parquet"
            spec = collection_spec(coll.get_model())
            add_collection_item(digest, coll.name, spec)
            dim = spec["dimension"]
            written = 0
            writer: pq.ParquetWriter | None = None
            try:
                for page in self._pages(coll):
                    dim = dim or page.embeddings.shape[1] or None
                    if writer is None:
                        writer = _parquet_writer(dest / rel, dim or 0)
                    writer.write_table(_page_table(page, dim or 0))
                    add_record_items(digest, coll.name, page)
                    written += len(page.ids)
                    done += len(page.ids)
                    if time.monotonic() - last >= PROGRESS_EVERY_S:
                        last = time.monotonic()
                        progress(f"chroma: {coll.name} {written}/{expected[coll.name]}", done, total)
                if writer is None:
                    writer = _parquet_writer(dest / rel, dim or 0)
            finally:
                if writer is not None:
                    writer.close()
            if written == 0 and expected[coll.name] > 0:
                raise EngineError(f"chroma dump read 0 of {expected[coll.name]} records from {coll.name}")
            counts[coll.name] = written
            files.append(rel)
            entries.append({**spec, "name": coll.name, "dimension": dim,
                            "count": written, "file": rel})
            progress(f"chroma: {coll.name} done ({written} records)", done, total)
        if total > 0 and sum(counts.values()) == 0:
            raise EngineError("chroma dump came out empty although the server reported records")
        manifest = {"format": DUMP_FORMAT, "server_version": version, "tenant": self.settings.chroma_tenant,
                    "database": self.settings.chroma_database, "collections": entries}
        (dest / COLLECTIONS_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        files.insert(0, COLLECTIONS_FILE)
        notes = ["Chroma has no snapshots: collections were exported one after another while the "
                 "server stayed live, so the dump is not one point in time"]
        if done != total:
            notes.append(f"{total} records counted before export, {done} exported (concurrent writes)")
        return DumpResult(counts=counts, files=files, bytes_written=sum((dest / f).stat().st_size for f in files),
                          point_in_time=False, server_version=version, digest=digest.hexdigest(), notes=notes,
                          extra={"format": DUMP_FORMAT, "collections": len(entries)})

    @staticmethod
    def count_dump(src: Path) -> dict[str, int]:
        """Read every file fully (page checksums on) and check its rows against collections.json."""
        import pyarrow.parquet as pq

        manifest = _read_manifest(src)
        counts: dict[str, int] = {}
        for entry in manifest["collections"]:
            name, path = entry["name"], src / entry["file"]
            try:
                pf = pq.ParquetFile(path, page_checksum_verification=True)
                rows = sum(batch.num_rows for batch in record_batches(pf, read_batch_rows(entry.get("dimension"))))
                footer_rows = pf.metadata.num_rows
            except Exception as exc:
                raise EngineError(f"chroma dump file {entry['file']} is unreadable: {type(exc).__name__}: {exc}") \
                    from None
            if not rows == footer_rows == entry["count"]:
                raise EngineError(f"chroma dump file {entry['file']} holds {rows} rows "
                                  f"(footer {footer_rows}), collections.json says {entry['count']}")
            counts[name] = rows
        return counts

    # --- restore -------------------------------------------------------------
    def restore(self, src: Path, progress: Progress = no_progress) -> RestoreResult:
        import pyarrow.parquet as pq

        start = time.perf_counter()
        manifest = _read_manifest(src)
        entries = manifest["collections"]
        existing = {c.name for c in self._data_collections()}
        clash = sorted(existing & {e["name"] for e in entries})
        if clash:
            raise EngineError(f"chroma restore target already has collections {', '.join(clash)}")
        total = sum(int(e["count"]) for e in entries)
        batch = min(ADD_BATCH_ROWS, self._call("max batch size", self._client.get_max_batch_size))
        notes: list[str] = []
        counts: dict[str, int] = {}
        done = 0
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="chroma-add") as pool:
            for entry in entries:
                coll, note = self._create_collection(entry)
                if note:
                    notes.append(note)
                if entry["count"] == 0 and entry.get("dimension"):
                    self._set_dimension(coll, int(entry["dimension"]))
                cosine = _space(entry.get("configuration")) == "cosine"
                in_flight: list[Future[tuple[int, int]]] = []
                unresolved = 0
                try:
                    pf = pq.ParquetFile(src / entry["file"])
                    for rb in record_batches(pf, batch):
                        in_flight.append(pool.submit(self._add_batch, coll, rb, cosine))
                        while len(in_flight) >= 2:  # two requests in flight keep the server busy
                            added, drift = in_flight.pop(0).result()
                            done, unresolved = done + added, unresolved + drift
                            progress(f"chroma: restoring {entry['name']}", done, total)
                    while in_flight:
                        added, drift = in_flight.pop(0).result()
                        done, unresolved = done + added, unresolved + drift
                        progress(f"chroma: restoring {entry['name']}", done, total)
                except EngineError:
                    raise
                except Exception as exc:
                    raise EngineError(f"chroma restore of {entry['name']} failed: {type(exc).__name__}: {exc}") \
                        from None
                finally:
                    for f in in_flight:
                        f.cancel()
                got = self._call(f"count {entry['name']}", coll.count)
                if got != entry["count"]:
                    raise EngineError(f"chroma restore of {entry['name']}: {got} records after restore, "
                                      f"dump holds {entry['count']}")
                counts[entry["name"]] = got
                if unresolved:
                    notes.append(f"{entry['name']}: {unresolved} cosine embeddings may differ from the dump "
                                 "in the last bit (no exact input found for Chroma's normalisation)")
        return RestoreResult(counts=counts, seconds=time.perf_counter() - start, notes=notes)

    def _create_collection(self, entry: dict[str, Any]) -> tuple[Collection, str]:
        """Create the collection exactly as dumped: metadata, configuration (embedding
        function included) and schema, sent as the JSON they were read as.

        The client's `create_collection` cannot do that: it rebuilds the embedding
        function from its Python class (a custom one may not exist here, "legacy" and
        absent ones come out different) and without one writes `legacy`. And the
        server takes the settings in one of three ways only: a configuration beside a
        schema that is default; a non-default schema alone (a configuration that isn't
        default beside it is refused); or `hnsw:*` metadata (0.4 style) with a
        configuration and no schema. So each way is tried in the order likely to fit,
        and the first that the server stores exactly as dumped is kept; when none does,
        the first one it accepted is kept and the note says what differs.
        """
        import chromadb.errors

        name = entry["name"]
        want = digest_spec(entry)
        bodies = _create_bodies(entry)
        accepted: dict[str, Any] | None = None
        first_diff: list[str] = []
        last_error = ""
        for body in bodies:
            try:
                self._post_collection(body)
            except chromadb.errors.InvalidArgumentError as exc:
                last_error = str(exc)
                continue
            except Exception as exc:
                raise self._fail(f"create {name}", exc) from None
            coll = self._get_collection(name)
            diff = _spec_differences(want, digest_spec(collection_spec(coll.get_model())))
            if not diff:
                return coll, ""
            if accepted is None:
                accepted, first_diff = body, diff
            self._call(f"delete {name}", partial(self._client.delete_collection, name))
        if accepted is None:
            raise EngineError(f"chroma restore of {name}: the server refused the collection's settings: {last_error}")
        self._call(f"create {name}", partial(self._post_collection, accepted))
        return self._get_collection(name), (f"{name}: this server does not store the collection's "
                                            f"{' and '.join(first_diff)} exactly as dumped")

    def _post_collection(self, body: dict[str, Any]) -> None:
        """POST a collection as JSON through the client's own HTTP session (base URL, TLS,
        auth headers, error mapping), bypassing its embedding-function handling."""
        server = getattr(self._client, "_server", None)
        request = getattr(server, "_make_request", None)
        if request is None:
            raise EngineError("this chromadb client cannot send a collection's configuration as dumped "
                              "(no HTTP request method); use the chromadb version pinned in pyproject.toml")
        s = self.settings
        request("post", f"/tenants/{s.chroma_tenant}/databases/{s.chroma_database}/collections", json=body)

    def _get_collection(self, name: str) -> Collection:
        # No embedding function: records are added with their embeddings, and the
        # collection's own (possibly unknown here) function is never instantiated.
        return self._call(f"open {name}", lambda: self._client.get_collection(
            name, embedding_function=None))  # type: ignore[arg-type]

    def _set_dimension(self, coll: Collection, dim: int) -> None:
        """An emptied collection keeps the dimension of its past records; Chroma sets it
        only on the first add, so add and delete one placeholder record."""
        probe = np.zeros((1, dim), dtype=np.float32)
        probe[0, 0] = 1.0
        self._call(f"set dimension of {coll.name}", lambda: coll.add(ids=["rpger-dimension-probe"], embeddings=probe))
        self._call(f"set dimension of {coll.name}", lambda: coll.delete(ids=["rpger-dimension-probe"]))

    def _add_batch(self, coll: Collection, rb: pa.RecordBatch, cosine: bool) -> tuple[int, int]:
        """Add one record batch; returns (records added, cosine rows that may drift by an ulp)."""
        page = _page_from_batch(rb)
        vectors = page.embeddings
        unresolved = 0
        if cosine:  # Chroma re-normalises cosine embeddings: send what comes back as the dumped bytes
            vectors, unresolved = cosine_preimage(vectors)
        # `add` refuses {}, which `get` returns for a record with an empty-string URI and
        # no metadata; adding it without metadata gives it back the same way.
        # Floats go in their send form: Chroma's JSON parser would move some by an ulp.
        metas = [None if m is None else (send_forms(json.loads(m), RECORD_PASSES) or None) for m in page.metadatas]
        self._call(f"add to {coll.name}", lambda: coll.add(
            ids=page.ids, embeddings=vectors,
            documents=_unless_all_none(page.documents),  # type: ignore[arg-type]
            metadatas=_unless_all_none(metas),  # type: ignore[arg-type]
            uris=_unless_all_none(page.uris)))  # type: ignore[arg-type]
        return len(page.ids), unresolved

    def wipe(self) -> None:
        for coll in self._data_collections():
            self.delete_collection(coll)

    def delete_collection(self, coll: Collection) -> None:
        """Delete a collection without leaving its records' array metadata behind.

        Chroma 1.5.9 (single server) keeps the array-valued metadata of a deleted
        collection's records (or of every collection in a deleted database), and those
        values then appear on records added later anywhere on the server: a scratch
        restore for `verify --deep` would plant them on live data. Deleting the records
        first removes them, so every delete here does that."""
        ids = self._all_ids(coll)
        size = self._call("max batch size", self._client.get_max_batch_size)
        for start in range(0, len(ids), size):
            chunk = ids[start:start + size]
            self._call(f"delete records of {coll.name}", lambda: coll.delete(ids=chunk))  # noqa: B023
        self._call(f"delete {coll.name}", partial(self._client.delete_collection, coll.name))

    # --- locks -----------------------------------------------------------------
    def acquire_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """Creating a collection is atomic: it fails when the lock exists. Our own lock
        is renewed; an expired one is deleted (only if it is still the same
        collection) and retaken."""
        import chromadb.errors

        lock = _lock_collection(name)
        meta: dict[str, Any] = {"owner": owner, "expires_at": time.time() + ttl_s}
        for _ in range(2):
            try:
                created = self._stack.create_collection(lock, metadata=meta, embedding_function=None)
            except chromadb.errors.ChromaError as exc:
                if "already exists" not in str(exc):
                    raise self._fail(f"take lock {name}", exc) from None
            except Exception as exc:
                raise self._fail(f"take lock {name}", exc) from None
            else:
                # A racing taker may have deleted ours as "expired": only the survivor holds it.
                held = self._get_lock(lock)
                return held is not None and held.id == created.id
            held = self._get_lock(lock)
            if held is None:
                continue  # released meanwhile: try again
            if (held.metadata or {}).get("owner") == owner:  # ours: a renewal
                self._call(f"renew lock {name}", partial(held.modify, metadata=meta))
                return True
            if float((held.metadata or {}).get("expires_at", 0)) > time.time():
                return False
            again = self._get_lock(lock)
            if again is not None and again.id == held.id:
                self._call(f"break expired lock {name}", lambda: self._stack.delete_collection(lock))
        return False

    def release_lock(self, name: str, owner: str) -> None:
        lock = _lock_collection(name)
        held = self._get_lock(lock)
        if held is not None and (held.metadata or {}).get("owner") == owner:
            self._call(f"release lock {name}", lambda: self._stack.delete_collection(lock))

    def _get_lock(self, lock: str) -> Collection | None:
        import chromadb.errors

        try:
            return self._stack.get_collection(lock)
        except chromadb.errors.NotFoundError:
            return None
        except Exception as exc:
            raise self._fail(f"read lock {lock}", exc) from None

    # --- scratch and lifecycle ------------------------------------------------------
    @contextmanager
    def scratch(self) -> Iterator[ChromaEngine]:
        """A new database in the same tenant, deleted on exit."""
        name = f"rpger_scratch_{uuid.uuid4().hex[:12]}"
        tenant = self.settings.chroma_tenant
        admin = self._call("connect admin", lambda: chroma_admin(self.settings))
        self._call("create scratch database", lambda: admin.create_database(name, tenant=tenant))
        engine = ChromaEngine(self.settings.model_copy(update={"chroma_database": name}))
        try:
            yield engine
        finally:
            made_stack = engine._stack_obj is not None
            try:
                for coll in engine._collections():  # records first (see delete_collection)
                    engine.delete_collection(coll)
            finally:
                engine.close()
                self._call("delete scratch database", lambda: admin.delete_database(name, tenant=tenant))
                if made_stack:
                    self._call("delete scratch stack database",
                               lambda: admin.delete_database(stack_database_name(name), tenant=tenant))

    def close(self) -> None:
        # Only drop our reference: chromadb shares one HTTP "system" per host:port
        # across all clients in the process, and Client.close() (1.5.9) releases
        # more references than it took, stopping it under every other client.
        self._client_obj = self._stack_obj = None


_: type[Engine] = ChromaEngine


# --- helpers shared by dump, digest and restore --------------------------------------
def _nullable(value: str | None) -> bytes:
    """None and "" hash differently."""
    return b"\x00" if value is None else b"\x01" + value.encode()


def _unless_all_none(values: list[Any]) -> list[Any] | None:
    """`add` takes a missing field as None, not as a list of Nones."""
    return values if any(v is not None for v in values) else None


def _dimension(coll: Collection) -> int | None:
    dim = coll.get_model().dimension
    return int(dim) if dim else None


# --- a collection's spec: one shape for a live collection and a collections.json entry ----------
SPEC_FIELDS = ("metadata", "configuration", "schema", "dimension")
# 0.4-style index settings in collection metadata (`hnsw:space`, `hnsw:M`, ...).
LEGACY_INDEX_PREFIX = "hnsw:"


def collection_spec(model: Any) -> dict[str, Any]:
    """What defines a live collection besides its records, as the server reports it (no
    server-made ids or versions). A dump stores exactly this in its collections.json entry."""
    dim = model.dimension
    return {"metadata": dict(model.metadata) if model.metadata else None,
            "configuration": model.configuration_json,
            "schema": model.serialized_schema,
            "dimension": int(dim) if dim else None}


def digest_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a collection spec (`collection_spec`, or a collections.json entry)
    that the digest covers: metadata, the full configuration (embedding function,
    HNSW/SPANN parameters, space), the schema and the dimension.

    Schema entries Chroma adds by itself are left out: every metadata key ever written
    gets a copy of the default index settings for its type and keeps it after the
    record is gone, so only non-default ones (and the `#` keys) count."""
    out = {k: spec.get(k) for k in SPEC_FIELDS}
    out["metadata"] = out["metadata"] or None  # Chroma reports "no metadata" as None, never {}
    schema = out.get("schema")
    if isinstance(schema, dict) and isinstance(schema.get("keys"), dict):
        defaults = schema.get("defaults") or {}
        keys = {}
        for key, by_type in schema["keys"].items():
            custom = {t: v for t, v in by_type.items() if key.startswith("#") or defaults.get(t) != v}
            if custom:
                keys[key] = custom
        out["schema"] = {**schema, "keys": keys}
    return out


def add_collection_item(d: Digest, name: str, spec: Mapping[str, Any]) -> None:
    """A collection's digest item (live or dumped spec: the same bytes for the same collection)."""
    d.add(name, "collection", canonical_json(digest_spec(spec)))


def add_record_items(d: Digest, name: str, page: _Page) -> None:
    """One digest item per record (live page or dumped record batch)."""
    for i, rid in enumerate(page.ids):
        d.add(name, "record", rid, page.embeddings[i].tobytes(),
              _nullable(page.documents[i]), _nullable(page.metadatas[i]), _nullable(page.uris[i]))


def _spec_differences(want: Mapping[str, Any], got: Mapping[str, Any]) -> list[str]:
    """Which parts of two digest specs differ; the dimension is set by records, later."""
    return [k for k in SPEC_FIELDS if k != "dimension" and want.get(k) != got.get(k)]


def _has_legacy_index_metadata(metadata: Mapping[str, Any] | None) -> bool:
    return any(str(k).startswith(LEGACY_INDEX_PREFIX) for k in (metadata or {}))


def _create_configuration(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The dumped configuration, plus the HNSW settings the server reports only in the
    schema (`num_threads`, `batch_size`), so a configuration alone carries them too."""
    config = entry.get("configuration")
    if not isinstance(config, dict):
        return None
    out = dict(config)
    hnsw = out.get("hnsw")
    schema_hnsw = _schema_vector_index(entry.get("schema")).get("hnsw")
    if isinstance(hnsw, dict) and isinstance(schema_hnsw, dict):
        extra = {k: schema_hnsw[k] for k in ("num_threads", "batch_size") if k in schema_hnsw and k not in hnsw}
        out["hnsw"] = {**hnsw, **extra}
    return out


def _schema_vector_index(schema: Any) -> dict[str, Any]:
    try:
        config = schema["keys"]["#embedding"]["float_list"]["vector_index"]["config"]
    except (KeyError, TypeError):
        return {}
    return config if isinstance(config, dict) else {}


def _create_bodies(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The request bodies that may recreate a dumped collection, most likely first."""
    # Floats in their send form (chroma_floats): Chroma's JSON parser would move some by an ulp.
    base = {"name": entry["name"], "metadata": send_forms(entry.get("metadata") or None, COLLECTION_PASSES),
            "get_or_create": False}
    config = send_forms(_create_configuration(entry), COLLECTION_PASSES)
    schema = send_forms(entry.get("schema") or None, COLLECTION_PASSES)
    both = {**base, "configuration": config, "schema": schema}
    schema_only = {**base, "configuration": None, "schema": schema}
    config_only = {**base, "configuration": config, "schema": None}
    if _has_legacy_index_metadata(base["metadata"]):
        order = [config_only, both, schema_only]
    else:
        order = [both, schema_only, config_only]
    unique: list[dict[str, Any]] = []
    for body in order:
        if body not in unique:
            unique.append(body)
    return unique


def _space(configuration: dict[str, Any] | None) -> str | None:
    for index in ("hnsw", "spann"):
        params = (configuration or {}).get(index)
        if params and params.get("space"):
            return str(params["space"])
    return None


def modify_collection_metadata(client: chromadb.api.ClientAPI, coll: Collection, metadata: dict[str, Any]) -> None:
    """Replace a collection's metadata. Metadata that carries `hnsw:*` keys (0.4 style)
    goes through the server API: the stock client refuses any `modify` naming
    `hnsw:space`, even unchanged. Callers keep those keys' values (the server would store
    a changed `hnsw:space` without changing the distance)."""
    metadata = send_forms(metadata, COLLECTION_PASSES)  # unchanged floats must stay unchanged (chroma_floats)
    if not _has_legacy_index_metadata(metadata):
        coll.modify(metadata=metadata)
        return
    server = getattr(client, "_server", None)
    modify = getattr(server, "_modify", None)
    if modify is None:
        raise EngineError("this chromadb client cannot update metadata that carries hnsw:* keys; "
                          "use the chromadb version pinned in pyproject.toml")
    modify(id=coll.id, new_metadata=metadata, tenant=coll.tenant, database=coll.database)


def read_batch_rows(dimension: int | None) -> int:
    """Rows per record batch when reading a dump: a `get` page's worth of floats."""
    return max(1, min(4096, FLOATS_PER_PAGE // max(dimension or 1, 1)))


def record_batches(pf: Any, max_rows: int) -> Iterator[pa.RecordBatch]:
    """Every row of a dump file in batches of at most `max_rows`, one row group at a time.

    `iter_batches` over the whole file holds far more native memory than one batch
    (measured on 31 MB files of 1536-d rows: +224 MB peak RSS with 4096-row batches,
    +89 MB with 325-row ones, +23 to +56 MB reading row group by row group). Our dumps
    write one row group per page, so a row group is small; a file with large row
    groups (another writer) is read in bounded batches within each group."""
    for i in range(pf.num_row_groups):
        if pf.metadata.row_group(i).num_rows <= max_rows:
            yield from pf.read_row_group(i).to_batches(max_chunksize=max_rows)
        else:
            yield from pf.iter_batches(batch_size=max_rows, row_groups=[i])


def _lock_collection(name: str) -> str:
    if not _VALID_LOCK_NAME.match(name):
        raise EngineError(f"lock name {name!r} must be letters, digits, '.', '_' or '-' and end in a letter or digit")
    return STACK_LOCK_PREFIX + name


def _arrow_schema(dim: int) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32(), dim)),
        pa.field("document", pa.string()),
        pa.field("metadata", pa.string()),
        pa.field("uri", pa.string()),
    ])


def _parquet_writer(path: Path, dim: int) -> Any:
    import pyarrow.parquet as pq

    # No compression: the archive step zstd-compresses the whole dump anyway.
    return pq.ParquetWriter(path, _arrow_schema(dim), compression="none", use_dictionary=False,
                            write_page_checksum=True)


def _page_table(page: _Page, dim: int) -> pa.Table:
    import pyarrow as pa

    if page.embeddings.shape[1] != dim:
        raise EngineError(f"embedding dimension changed during export ({page.embeddings.shape[1]} != {dim})")
    flat = pa.array(page.embeddings.reshape(-1), type=pa.float32())
    return pa.Table.from_arrays([
        pa.array(page.ids, type=pa.string()),
        pa.FixedSizeListArray.from_arrays(flat, dim),
        pa.array(page.documents, type=pa.string()),
        pa.array(page.metadatas, type=pa.string()),
        pa.array(page.uris, type=pa.string()),
    ], schema=_arrow_schema(dim))


def _read_manifest(src: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((src / COLLECTIONS_FILE).read_text(encoding="utf-8"))
        if manifest.get("format") != DUMP_FORMAT or not isinstance(manifest.get("collections"), list):
            raise ValueError(f"unsupported format {manifest.get('format')!r}")
        for entry in manifest["collections"]:
            if not {"name", "file", "count"} <= entry.keys():
                raise ValueError("collection entry without name/file/count")
            if Path(entry["file"]).is_absolute() or ".." in Path(entry["file"]).parts:
                raise ValueError(f"file path escapes the dump: {entry['file']!r}")
        return dict(manifest)
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise EngineError(f"chroma dump {COLLECTIONS_FILE} is unreadable: {exc}") from None
