"""A store in memory: the same contract as the local and S3 stores, for unit
tests of everything written against `SetStore` (selection, retention,
monitoring). `corrupt()` and `fail_next` let tests damage it on purpose."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from rpger_ops.sets import BackupSet, SetIdError, set_time
from rpger_ops.store.base import (
    ArchiveMissing,
    BlobInfo,
    CorruptArchive,
    SetNotFound,
    StoredArchive,
    StoreError,
    archive_name,
    blob_path,
    check_blob_id,
    sorted_ids,
)
from rpger_ops.store.local import dump_manifest, parse_manifest


class MemoryStore:
    def __init__(self, label: str = "memory") -> None:
        self.label = label
        self.manifests: dict[str, str] = {}
        self.archives: dict[tuple[str, str], bytes] = {}
        self.blobs: dict[str, tuple[bytes, str, datetime]] = {}  # id -> (bytes, recorded sha256, written)
        self.fail_next: StoreError | None = None  # raised by the next call, once
        self._lock = threading.Lock()

    def where(self) -> str:
        return f"memory:{self.label}"

    def _fail_if_told(self) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    def _check(self, set_id: str) -> None:
        self._fail_if_told()
        try:
            set_time(set_id)
        except SetIdError as exc:
            raise StoreError(str(exc)) from None

    def set_ids(self) -> list[str]:
        self._fail_if_told()
        return sorted_ids(self.manifests)

    def incomplete_set_ids(self) -> list[str]:
        self._fail_if_told()
        return sorted_ids(s for s, _ in self.archives if s not in self.manifests)

    def read(self, set_id: str) -> BackupSet:
        self._check(set_id)
        try:
            text = self.manifests[set_id]
        except KeyError:
            raise SetNotFound(f"{self.where()}: backup set {set_id} not found") from None
        return parse_manifest(text, set_id, self.label)

    def write(self, backup_set: BackupSet) -> None:
        self._check(backup_set.set_id)
        with self._lock:
            self.manifests[backup_set.set_id] = dump_manifest(backup_set)

    def put_archive(self, set_id: str, db: str, path: Path, sha256: str) -> StoredArchive:
        self._check(set_id)
        started = time.monotonic()
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise StoreError(f"{self.where()}: {path.name} does not hash to {sha256[:12]}…")
        written = self.archives.get((set_id, db)) != data
        self.archives[(set_id, db)] = data
        return StoredArchive(f"{set_id}/{archive_name(db)}", sha256, len(data), written, time.monotonic() - started)

    def fetch_archive(self, set_id: str, db: str, sha256: str, work: Path) -> Path:
        self._check(set_id)
        data = self.archives.get((set_id, db))
        if data is None:
            raise ArchiveMissing(f"{self.where()}: set {set_id} has no {db} archive")
        if hashlib.sha256(data).hexdigest() != sha256:
            raise CorruptArchive(f"{self.where()}: set {set_id} {db} archive is corrupt")
        work.mkdir(parents=True, exist_ok=True)
        dest = work / f"{set_id}-{archive_name(db)}"
        dest.write_bytes(data)
        return dest

    def archive_sha256(self, set_id: str, db: str) -> str | None:
        data = self.archives.get((set_id, db))
        return None if data is None else hashlib.sha256(data).hexdigest()

    def delete(self, set_id: str) -> None:
        self._check(set_id)
        with self._lock:
            self.manifests.pop(set_id, None)
            for key in [k for k in self.archives if k[0] == set_id]:
                del self.archives[key]

    # --- blobs -----------------------------------------------------------------------
    def blob_info(self, blob_id: str) -> BlobInfo | None:
        self._fail_if_told()
        check_blob_id(blob_id)
        found = self.blobs.get(blob_id)
        return None if found is None else BlobInfo(blob_id, found[1], len(found[0]), found[2])

    def put_blob(self, blob_id: str, path: Path, stored_sha256: str) -> StoredArchive:
        self._fail_if_told()
        check_blob_id(blob_id)
        started = time.monotonic()
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != stored_sha256:
            raise StoreError(f"{self.where()}: blob {blob_id[:12]}… does not hash to {stored_sha256[:12]}…")
        with self._lock:
            current = self.blobs.get(blob_id)
            written = current is None or current[0] != data
            if written:
                self.blobs[blob_id] = (data, stored_sha256, datetime.now(UTC))
        return StoredArchive(blob_path(blob_id), stored_sha256, len(data), written, time.monotonic() - started)

    def fetch_blob(self, blob_id: str, stored_sha256: str, work: Path) -> Path:
        self._fail_if_told()
        found = self.blobs.get(check_blob_id(blob_id))
        if found is None:
            raise ArchiveMissing(f"{self.where()}: blob {blob_id[:12]}… missing")
        if hashlib.sha256(found[0]).hexdigest() != stored_sha256:
            raise CorruptArchive(f"{self.where()}: blob {blob_id[:12]}… is corrupt")
        work.mkdir(parents=True, exist_ok=True)
        dest = work / f"{blob_id}.blob"
        dest.write_bytes(found[0])
        return dest

    def blob_sha256(self, blob_id: str) -> str | None:
        found = self.blobs.get(check_blob_id(blob_id))
        return None if found is None else hashlib.sha256(found[0]).hexdigest()

    def keep_blob(self, blob_id: str) -> None:
        with self._lock:
            found = self.blobs.get(check_blob_id(blob_id))
            if found is not None:
                self.blobs[blob_id] = (found[0], found[1], datetime.now(UTC))

    def list_blobs(self) -> list[BlobInfo]:
        self._fail_if_told()
        return [BlobInfo(i, None, len(b), t) for i, (b, _, t) in sorted(self.blobs.items())]

    def delete_blob(self, blob_id: str) -> None:
        self._fail_if_told()
        with self._lock:
            self.blobs.pop(check_blob_id(blob_id), None)

    # --- for tests -------------------------------------------------------------------
    def corrupt_blob(self, blob_id: str) -> None:
        data, sha, when = self.blobs[blob_id]
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0xFF
        self.blobs[blob_id] = (bytes(flipped), sha, when)

    def corrupt(self, set_id: str, db: str) -> None:
        data = bytearray(self.archives[(set_id, db)])
        data[len(data) // 2] ^= 0xFF
        self.archives[(set_id, db)] = bytes(data)
