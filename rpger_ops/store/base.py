"""The contract every backup-set store implements: the local catalogue, the
off-site bucket and the in-memory store of the unit tests.

A store holds backup sets, each a manifest (`BackupSet`) plus one archive per
database. Rules every implementation keeps (the contract suite in
tests/contract/test_store_contract.py checks them on all three):

- A set exists only when its manifest does. `set_ids()` lists those, newest
  first; data without a manifest (an upload or a dump that died) is listed
  by `incomplete_set_ids()` and never by `set_ids()`.
- `read(id)` raises `SetNotFound` for an absent set and `ManifestError` for a
  manifest that cannot be read as a `BackupSet` (never a half-parsed set).
- `write(set)` replaces the manifest atomically: a reader sees the old or the
  new manifest, never a mix.
- `put_archive(id, db, path, sha256)` stores the file's bytes and proves them
  by hash (reading them back where the medium could alter them); it is
  idempotent: when the same bytes are already there, nothing is rewritten.
  It raises `StoreError` when the stored bytes do not hash to `sha256`.
- `fetch_archive(id, db, sha256, work)` returns a local path to bytes that
  hash to `sha256`, or raises `CorruptArchive` (wrong hash, unreadable) or
  `ArchiveMissing`. A local store may return the path in place: callers
  never modify it.
- `archive_sha256(id, db)` hashes what is stored now (None when absent).
- `delete(id)` removes the manifest first (the set stops counting), then the
  archives; interrupted, it leaves an incomplete set, never a listed one.
- Messages name the store and object, never credentials.

Blobs (content-addressed dump files, shared by sets; `rpger_ops.blobs`):

- `put_blob(id, path, stored_sha256)` stores the file's bytes under `id`,
  proven by hash like `put_archive`, idempotent; `blob_info(id)` says whether
  it is there and the stored sha256 recorded when it was written (None when a
  write never finished); `fetch_blob` and `blob_sha256` work like their
  archive counterparts; `list_blobs()` lists every blob with its modification
  time (for the sweep); `delete_blob(id)` removes one.
- `keep_blob(id)`: a new set is about to reference an existing blob: it must
  live as long as a new object would (Object Lock: the retention is extended;
  the local store refreshes its time so a sweep's grace covers it).
- Deleting something an S3 Object Lock still protects raises `ObjectLocked`,
  which says until when.
- A set's manifest is written after its blobs; `delete(id)` removes the
  manifest and per-set files, never blobs: only the sweep
  (`retention.sweep`) removes blobs, those no manifest references.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from rpger_ops.sets import BackupSet


class StoreError(Exception):
    """A store operation failed; the message is safe to show (no credentials)."""


class SetNotFound(StoreError):
    pass


class ManifestError(StoreError):
    """A manifest exists but is not a readable backup set."""


class ArchiveMissing(StoreError):
    pass


class CorruptArchive(StoreError):
    """The stored archive does not hash to what the manifest says, or cannot be read."""


class ObjectLocked(StoreError):
    """An S3 Object Lock keeps the object; `until` is when it may go (None: legal hold/unknown)."""

    def __init__(self, message: str, until: datetime | None = None) -> None:
        super().__init__(message)
        self.until = until


@dataclass(frozen=True)
class BlobInfo:
    id: str
    stored_sha256: str | None  # recorded when written; None when unknown (a write that died, a listing)
    stored_bytes: int
    modified: datetime
    retain_until: datetime | None = None  # S3 Object Lock


@dataclass(frozen=True)
class StoredArchive:
    key: str  # where in the store (object key or path)
    sha256: str
    bytes: int
    written: bool  # False when the same bytes were already there
    seconds: float = 0.0
    etag: str = ""


@runtime_checkable
class SetStore(Protocol):
    label: str  # "local", "offsite", "memory": says which copy a manifest describes

    def where(self) -> str:
        """Human-readable location (no credentials)."""
        ...

    def set_ids(self) -> list[str]: ...

    def incomplete_set_ids(self) -> list[str]: ...

    def read(self, set_id: str) -> BackupSet: ...

    def write(self, backup_set: BackupSet) -> None: ...

    def put_archive(self, set_id: str, db: str, path: Path, sha256: str) -> StoredArchive: ...

    def fetch_archive(self, set_id: str, db: str, sha256: str, work: Path) -> Path: ...

    def archive_sha256(self, set_id: str, db: str) -> str | None: ...

    def delete(self, set_id: str) -> None: ...

    def blob_info(self, blob_id: str) -> BlobInfo | None: ...

    def put_blob(self, blob_id: str, path: Path, stored_sha256: str) -> StoredArchive: ...

    def fetch_blob(self, blob_id: str, stored_sha256: str, work: Path) -> Path: ...

    def blob_sha256(self, blob_id: str) -> str | None: ...

    def keep_blob(self, blob_id: str) -> None: ...

    def list_blobs(self) -> list[BlobInfo]: ...

    def delete_blob(self, blob_id: str) -> None: ...


BLOBS = "blobs"
_BLOB_ID = re.compile(r"^[0-9a-f]{64}$")


def check_blob_id(blob_id: str) -> str:
    """Blob ids are 64 lowercase hex digits (keeps keys and paths inside the store)."""
    if not _BLOB_ID.match(blob_id):
        raise StoreError(f"not a blob id: {blob_id[:80]!r}")
    return blob_id


def blob_path(blob_id: str) -> str:
    """`blobs/ab/abcdef…`: a fan-out folder keeps directory listings short."""
    check_blob_id(blob_id)
    return f"{BLOBS}/{blob_id[:2]}/{blob_id}"


def archive_name(db: str) -> str:
    return f"{db}.tar.zst"


MANIFEST = "manifest.json"


def read_sets(store: SetStore, on_error: Callable[[str, StoreError], None] | None = None) -> list[BackupSet]:
    """Every readable set of a store, newest first. An unreadable manifest is
    never a usable set; `on_error` hears about it."""
    out = []
    for set_id in store.set_ids():
        try:
            out.append(store.read(set_id))
        except StoreError as exc:
            if on_error is not None:
                on_error(set_id, exc)
    return out


def update(store: SetStore, set_id: str, mutate: Callable[[BackupSet], None]) -> BackupSet:
    """Read-modify-write a manifest. Stores that can lock (the local one) override
    this with a locked version; for the others the writer is single (the set's
    uploader) or the change is idempotent (marking a copy corrupt)."""
    local_update = getattr(store, "update", None)
    if local_update is not None:
        return local_update(set_id, mutate)  # type: ignore[no-any-return]
    backup_set = store.read(set_id)
    mutate(backup_set)
    store.write(backup_set)
    return backup_set


def sorted_ids(ids: Iterable[str]) -> list[str]:
    return sorted(set(ids), reverse=True)


def scanned_ids(scan: Mapping[str, bool], complete: bool) -> list[str]:
    """From a store's scan (set id -> has a manifest): the complete or the incomplete ids, newest first."""
    return sorted_ids(set_id for set_id, has_manifest in scan.items() if has_manifest is complete)
