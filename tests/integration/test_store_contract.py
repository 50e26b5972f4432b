"""One contract suite over every backup-set store (rpger_ops/store/base.py):
the in-memory store, the local catalogue, and the S3 store on a real MinIO.
Retention, restore source selection, monitoring and `sets` are written only
against this contract, so each of its rules is checked on all three."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rpger_ops.sets import BackupSet, DatabaseEntry, EntryStatus, new_set_id
from rpger_ops.settings import load_settings
from rpger_ops.store import (
    ArchiveMissing,
    CorruptArchive,
    LocalStore,
    ManifestError,
    SetNotFound,
    SetStore,
    StoreError,
    read_sets,
    update,
)
from rpger_ops.store.memory import MemoryStore
from rpger_ops.store.s3 import S3Store


@dataclass
class Harness:
    store: SetStore
    damage: Callable[[str, str], None]  # flip bytes of a stored archive
    garble: Callable[[str, bytes], None]  # replace a stored manifest with raw bytes
    secrets: tuple[str, ...] = ()


def _local(tmp_path: Path) -> Harness:
    store = LocalStore(tmp_path / "backups")

    def damage(set_id: str, db: str) -> None:
        path = store.archive_path(set_id, db)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    def garble(set_id: str, body: bytes) -> None:
        store.manifest_path(set_id).parent.mkdir(parents=True, exist_ok=True)
        store.manifest_path(set_id).write_bytes(body)

    return Harness(store, damage, garble)


def _memory(tmp_path: Path) -> Harness:
    store = MemoryStore()
    return Harness(store, store.corrupt, lambda set_id, body: store.manifests.__setitem__(set_id, body.decode()))


def _s3(tmp_path: Path, s3: Any) -> Harness:
    settings = load_settings(_env_file=None, RPGER_BACKUP_DIR=str(tmp_path / "b"), RPGER_S3_SECURE=False,
                             RPGER_S3_ENDPOINT=f"{s3.host}:{s3.port}", RPGER_S3_BUCKET=f"rpger-c{uuid.uuid4().hex[:10]}",
                             RPGER_S3_PREFIX="contract", RPGER_S3_ACCESS_KEY=s3.secrets["access_key"],
                             RPGER_S3_SECRET_KEY=s3.secrets["secret_key"])
    store = S3Store.from_settings(settings)

    def put(key: str, body: bytes) -> None:
        store.ensure_bucket()
        store.client.put_object(store.bucket, key, io.BytesIO(body), len(body))

    def damage(set_id: str, db: str) -> None:
        key = store.archive_key(set_id, db)
        data = bytearray(b"".join(store._iter_object(key)))
        data[len(data) // 2] ^= 0xFF
        put(key, bytes(data))

    return Harness(store, damage, lambda set_id, body: put(store.manifest_key(set_id), body),
                   (s3.secrets["access_key"], s3.secrets["secret_key"]))


@pytest.fixture(params=["memory", "local", "s3"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "s3":
        yield _s3(tmp_path, request.getfixturevalue("s3_endpoint"))
    else:
        yield {"memory": _memory, "local": _local}[request.param](tmp_path)


def _archive(tmp_path: Path, size: int = 50_000) -> tuple[Path, str]:
    path = tmp_path / f"archive-{uuid.uuid4().hex[:6]}.tar.zst"
    data = os.urandom(size)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _set(when: datetime, **entries: DatabaseEntry) -> BackupSet:
    return BackupSet(set_id=new_set_id(when), planned=list(entries) or ["mongo"], databases=entries)  # type: ignore[arg-type]


NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def test_an_empty_store_lists_nothing(harness: Harness) -> None:
    assert harness.store.set_ids() == [] and harness.store.incomplete_set_ids() == []
    with pytest.raises(SetNotFound):
        harness.store.read(new_set_id(NOW))


def test_manifests_round_trip_and_list_newest_first(harness: Harness) -> None:
    sets = [_set(NOW - timedelta(days=d), redis=DatabaseEntry(status=EntryStatus.VERIFIED, counts={"db0": d}))
            for d in (2, 0, 1)]
    for s in sets:
        harness.store.write(s)
    assert harness.store.set_ids() == sorted((s.set_id for s in sets), reverse=True)
    for s in sets:
        assert harness.store.read(s.set_id) == s
    assert [s.set_id for s in read_sets(harness.store)] == harness.store.set_ids()
    # A rewrite replaces the whole manifest.
    changed = sets[0].model_copy(deep=True)
    changed.databases["redis"].status = EntryStatus.CORRUPT
    harness.store.write(changed)
    assert harness.store.read(changed.set_id).databases["redis"].status == EntryStatus.CORRUPT


def test_update_is_read_modify_write(harness: Harness) -> None:
    s = _set(NOW, mongo=DatabaseEntry(status=EntryStatus.VERIFIED))
    harness.store.write(s)

    def mark(bs: BackupSet) -> None:
        bs.databases["mongo"].status = EntryStatus.RESTORE_FAILED

    updated = update(harness.store, s.set_id, mark)
    assert updated.databases["mongo"].status == EntryStatus.RESTORE_FAILED
    assert harness.store.read(s.set_id) == updated


def test_archives_are_stored_proven_idempotent_and_fetched(harness: Harness, tmp_path: Path) -> None:
    s = _set(NOW)
    path, sha = _archive(tmp_path)
    first = harness.store.put_archive(s.set_id, "mongo", path, sha)
    assert first.written and first.sha256 == sha and first.bytes == path.stat().st_size
    again = harness.store.put_archive(s.set_id, "mongo", path, sha)
    assert not again.written  # the same bytes are not rewritten
    assert harness.store.archive_sha256(s.set_id, "mongo") == sha
    assert harness.store.archive_sha256(s.set_id, "redis") is None
    fetched = harness.store.fetch_archive(s.set_id, "mongo", sha, tmp_path / "work")
    assert fetched.read_bytes() == path.read_bytes()
    # Archives without a manifest are an incomplete set, never a listed one.
    assert harness.store.set_ids() == [] and harness.store.incomplete_set_ids() == [s.set_id]
    harness.store.write(s)
    assert harness.store.set_ids() == [s.set_id] and harness.store.incomplete_set_ids() == []


def test_a_put_that_does_not_hash_right_is_refused(harness: Harness, tmp_path: Path) -> None:
    s = _set(NOW)
    path, _ = _archive(tmp_path)
    with pytest.raises(StoreError):
        harness.store.put_archive(s.set_id, "redis", path, "0" * 64)


def test_damage_and_absence_are_told_apart(harness: Harness, tmp_path: Path) -> None:
    s = _set(NOW)
    path, sha = _archive(tmp_path)
    harness.store.put_archive(s.set_id, "chroma", path, sha)
    with pytest.raises(ArchiveMissing):
        harness.store.fetch_archive(s.set_id, "redis", sha, tmp_path / "w1")
    with pytest.raises(CorruptArchive):  # not what the manifest says
        harness.store.fetch_archive(s.set_id, "chroma", "1" * 64, tmp_path / "w2")
    harness.damage(s.set_id, "chroma")
    with pytest.raises(CorruptArchive) as info:
        harness.store.fetch_archive(s.set_id, "chroma", sha, tmp_path / "w3")
    assert harness.store.archive_sha256(s.set_id, "chroma") not in (None, sha)
    for secret in harness.secrets:
        assert secret not in str(info.value)


def test_an_unreadable_manifest_is_an_error_never_a_half_set(harness: Harness) -> None:
    garbled, other = new_set_id(NOW), new_set_id(NOW - timedelta(days=1))
    harness.garble(garbled, b"{not json")
    with pytest.raises(ManifestError):
        harness.store.read(garbled)
    harness.garble(other, _set(NOW).model_dump_json().encode())  # describes another set
    with pytest.raises(ManifestError, match="describes set"):
        harness.store.read(other)
    problems: list[str] = []
    assert read_sets(harness.store, lambda set_id, exc: problems.append(set_id)) == []
    assert sorted(problems) == sorted([garbled, other])


def test_delete_removes_the_manifest_first_and_then_everything(harness: Harness, tmp_path: Path) -> None:
    keep, gone = _set(NOW - timedelta(days=1)), _set(NOW)
    for s in (keep, gone):
        for db in ("mongo", "redis"):
            path, sha = _archive(tmp_path, 1000)
            harness.store.put_archive(s.set_id, db, path, sha)
        harness.store.write(s)
    harness.store.delete(gone.set_id)
    assert harness.store.set_ids() == [keep.set_id] and harness.store.incomplete_set_ids() == []
    with pytest.raises(SetNotFound):
        harness.store.read(gone.set_id)
    assert harness.store.archive_sha256(gone.set_id, "mongo") is None
    assert harness.store.archive_sha256(keep.set_id, "mongo") is not None
    harness.store.delete(gone.set_id)  # deleting what is gone is not an error


def test_set_ids_never_escape_the_store(harness: Harness) -> None:
    with pytest.raises(StoreError):
        harness.store.read("../../etc")
    with pytest.raises(ValueError):
        BackupSet(set_id="../../etc")


# --- blobs ---------------------------------------------------------------------------------

def test_blobs_are_stored_proven_idempotent_listed_fetched_and_deleted(harness: Harness, tmp_path: Path) -> None:
    path, sha = _archive(tmp_path, 20_000)
    blob_id = hashlib.sha256(b"plaintext").hexdigest()
    assert harness.store.blob_info(blob_id) is None and harness.store.blob_sha256(blob_id) is None
    first = harness.store.put_blob(blob_id, path, sha)
    assert first.written and first.sha256 == sha
    assert not harness.store.put_blob(blob_id, path, sha).written
    info = harness.store.blob_info(blob_id)
    assert info is not None and info.stored_sha256 == sha and info.stored_bytes == 20_000
    assert [b.id for b in harness.store.list_blobs()] == [blob_id]
    assert harness.store.fetch_blob(blob_id, sha, tmp_path / "work").read_bytes() == path.read_bytes()
    harness.store.keep_blob(blob_id)  # a set reuses it: never an error
    # Blobs are not sets: a store of blobs alone lists none.
    assert harness.store.set_ids() == [] and harness.store.incomplete_set_ids() == []
    with pytest.raises(ArchiveMissing):
        harness.store.fetch_blob(hashlib.sha256(b"other").hexdigest(), sha, tmp_path / "work")
    with pytest.raises(StoreError):
        harness.store.put_blob(blob_id, path, "0" * 64)  # bytes that do not hash right are refused
    with pytest.raises(StoreError, match="not a blob id"):
        harness.store.blob_info("../../etc/passwd")
    harness.store.delete_blob(blob_id)
    assert harness.store.blob_info(blob_id) is None and harness.store.list_blobs() == []
    harness.store.delete_blob(blob_id)  # idempotent
