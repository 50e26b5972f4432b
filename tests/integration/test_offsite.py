"""The off-site store on a real MinIO: upload + read-back verify, idempotence,
checked downloads, corruption, list/delete, retention off-site, S3 down."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rpger_ops.catalog import Catalog, new_set_id
from rpger_ops.offsite import OffsiteError, OffsiteStore
from rpger_ops.retention import Policy, prune_offsite, set_info
from rpger_ops.settings import Settings, load_settings

DBS = ("mongo", "redis", "chroma")


def s3_settings(tmp_path: Path, s3: Any, **overrides: Any) -> Settings:
    env: dict[str, Any] = {
        "RPGER_BACKUP_DIR": str(tmp_path / "backups"),
        "RPGER_S3_ENDPOINT": f"{s3.host}:{s3.port}",
        "RPGER_S3_BUCKET": f"rpger-t{uuid.uuid4().hex[:10]}",  # fresh: the store must create it
        "RPGER_S3_PREFIX": "stack-a",
        "RPGER_S3_ACCESS_KEY": s3.secrets["access_key"],
        "RPGER_S3_SECRET_KEY": s3.secrets["secret_key"],
        "RPGER_S3_SECURE": False,
    }
    env.update(overrides)
    return load_settings(_env_file=None, **env)


def make_set(catalog: Catalog, when: datetime, size: int = 200_000, status: str = "verified") -> str:
    """A finished local set with random archives (what the pipeline leaves behind)."""
    set_id = new_set_id(when)
    catalog.create_set(set_id, kind="scheduled", stack_id="test-stack")
    for db in DBS:
        data = os.urandom(size)
        catalog.archive_path(set_id, db).write_bytes(data)
        catalog.update_database(set_id, db, status=status, sha256=hashlib.sha256(data).hexdigest(),
                                archive_bytes=size, counts={"x": 1})
    return set_id


def upload_set(store: OffsiteStore, catalog: Catalog, set_id: str) -> list[dict[str, Any]]:
    results = [store.upload_archive(catalog, set_id, db) for db in DBS]
    store.upload_manifest(catalog, set_id)
    return results


@pytest.fixture
def env(tmp_path: Path, s3_endpoint: Any) -> tuple[Settings, OffsiteStore, Catalog]:
    settings = s3_settings(tmp_path, s3_endpoint)
    return settings, OffsiteStore.from_settings(settings), Catalog(settings.backup_dir)


def test_upload_verifies_remote_checksum(env: tuple[Settings, OffsiteStore, Catalog]) -> None:
    settings, store, catalog = env
    set_id = make_set(catalog, datetime.now(UTC))
    assert store.list_set_ids() == []  # bucket absent yet: empty, not an error

    results = [store.upload_archive(catalog, set_id, db) for db in DBS]
    assert store.list_set_ids() == []  # archives alone are not a set
    store.upload_manifest(catalog, set_id)
    assert store.list_set_ids() == [set_id]

    manifest = catalog.read(set_id)
    for db, result in zip(DBS, results, strict=True):
        entry = manifest["databases"][db]
        key = f"stack-a/sets/{set_id}/{db}.tar.zst"
        assert result["uploaded"] is True and result["key"] == key
        assert result["sha256"] == entry["sha256"] and result["bytes"] == 200_000
        assert entry["offsite"]["key"] == key and entry["offsite"]["sha256"] == entry["sha256"]
        stat = store.client.stat_object(settings.s3_bucket, key)
        assert stat.metadata["x-amz-meta-sha256"] == entry["sha256"]
        assert store.remote_sha256(key) == (entry["sha256"], 200_000)
    assert store.read_manifest(set_id) == catalog.read(set_id)


def test_reupload_is_idempotent(env: tuple[Settings, OffsiteStore, Catalog]) -> None:
    settings, store, catalog = env
    set_id = make_set(catalog, datetime.now(UTC))
    upload_set(store, catalog, set_id)
    keys = [f"stack-a/sets/{set_id}/{db}.tar.zst" for db in DBS] + [f"stack-a/sets/{set_id}/manifest.json"]
    before = {k: store.client.stat_object(settings.s3_bucket, k) for k in keys}
    manifest_before = catalog.read(set_id)
    time.sleep(1.1)  # last-modified has one-second resolution

    again = upload_set(store, catalog, set_id)
    assert [r["uploaded"] for r in again] == [False, False, False]
    assert catalog.read(set_id) == manifest_before
    for k in keys:
        after = store.client.stat_object(settings.s3_bucket, k)
        assert (after.etag, after.last_modified) == (before[k].etag, before[k].last_modified), k


def test_refuses_unverified_or_corrupt_local_archive(env: tuple[Settings, OffsiteStore, Catalog]) -> None:
    _, store, catalog = env
    failed = make_set(catalog, datetime.now(UTC) - timedelta(hours=1), status="failed")
    with pytest.raises(OffsiteError, match="not verified"):
        store.upload_archive(catalog, failed, "mongo")
    good = make_set(catalog, datetime.now(UTC))
    path = catalog.archive_path(good, "redis")
    path.write_bytes(b"x" + path.read_bytes()[1:])
    with pytest.raises(OffsiteError, match="does not match its manifest"):
        store.upload_archive(catalog, good, "redis")


def test_partial_upload_marks_entries_local_only(env: tuple[Settings, OffsiteStore, Catalog],
                                                 tmp_path: Path) -> None:
    """Chains upload in parallel: a manifest uploaded after mongo alone must not offer redis/chroma."""
    _, store, catalog = env
    set_id = make_set(catalog, datetime.now(UTC))
    store.upload_archive(catalog, set_id, "mongo")
    store.upload_manifest(catalog, set_id)
    assert store.list_set_ids() == [set_id]
    remote = store.read_manifest(set_id)["databases"]
    assert remote["mongo"]["status"] == "verified"
    assert (remote["redis"]["status"], remote["redis"]["local_status"]) == ("local_only", "verified")
    assert catalog.read(set_id)["databases"]["redis"]["status"] == "verified"  # local copy unchanged
    assert not set_info(store.read_manifest(set_id), datetime.now(UTC), require_offsite=True).verified
    with pytest.raises(OffsiteError, match="has no redis archive"):
        store.download_set(set_id, Catalog(tmp_path / "elsewhere"), ["redis"])
    store.download_set(set_id, Catalog(tmp_path / "elsewhere"), ["mongo"])

    for db in ("redis", "chroma"):
        store.upload_archive(catalog, set_id, db)
        store.upload_manifest(catalog, set_id)
    assert store.read_manifest(set_id) == catalog.read(set_id)
    assert set_info(store.read_manifest(set_id), datetime.now(UTC), require_offsite=True).verified


def test_download_set_and_detect_corruption(env: tuple[Settings, OffsiteStore, Catalog], tmp_path: Path) -> None:
    settings, store, catalog = env
    set_id = make_set(catalog, datetime.now(UTC))
    upload_set(store, catalog, set_id)

    fresh = Catalog(tmp_path / "restore-host")
    store.download_set(set_id, fresh, DBS)
    assert fresh.set_ids() == [set_id]
    for db in DBS:
        assert fresh.archive_path(set_id, db).read_bytes() == catalog.archive_path(set_id, db).read_bytes()
    assert fresh.read(set_id) == catalog.read(set_id)

    # Bit rot / tampering: same size and metadata, different bytes.
    key = f"stack-a/sets/{set_id}/chroma.tar.zst"
    data = bytearray(catalog.archive_path(set_id, "chroma").read_bytes())
    data[1000] ^= 0xFF
    sha_meta = catalog.read(set_id)["databases"]["chroma"]["sha256"]
    store.client.put_object(settings.s3_bucket, key, io.BytesIO(bytes(data)), len(data),
                            metadata={"sha256": sha_meta})
    other = Catalog(tmp_path / "other-host")
    with pytest.raises(OffsiteError, match="corrupt remote copy"):
        store.download_set(set_id, other, DBS)
    assert other.set_ids() == []  # no manifest: nothing half-downloaded is listed
    assert not other.archive_path(set_id, "chroma").exists()
    assert not list(other.set_dir(set_id).glob(".*.part"))
    # the corrupt object is re-uploaded on the next run (backfill after an incident)
    assert store.upload_archive(catalog, set_id, "chroma")["uploaded"] is True
    store.download_set(set_id, other, DBS)
    assert other.set_ids() == [set_id]


def test_list_and_delete(env: tuple[Settings, OffsiteStore, Catalog]) -> None:
    settings, store, catalog = env
    now = datetime.now(UTC).replace(microsecond=0)
    ids = [make_set(catalog, now - timedelta(days=d), size=1000) for d in (2, 0, 1)]
    for set_id in ids:
        upload_set(store, catalog, set_id)
    orphan = make_set(catalog, now - timedelta(days=3), size=1000)
    store.upload_archive(catalog, orphan, "mongo")  # no manifest: not a set
    assert store.list_set_ids() == sorted(ids, reverse=True)

    assert store.delete_set(ids[2]) == 4
    assert store.list_set_ids() == [ids[1], ids[0]]
    left = [o.object_name for o in store.client.list_objects(settings.s3_bucket, "stack-a/", recursive=True)]
    assert not [k for k in left if ids[2] in k]
    with pytest.raises(OffsiteError, match="not found"):
        store.read_manifest(ids[2])


def test_prune_offsite(env: tuple[Settings, OffsiteStore, Catalog]) -> None:
    settings, store, catalog = env
    now = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    ids = [make_set(catalog, now.replace(hour=3) - timedelta(days=d), size=100) for d in range(5)]
    for set_id in ids:
        upload_set(store, catalog, set_id)
    # newest remote set missing one archive upload: not verified off-site
    partial = make_set(catalog, now.replace(hour=5), size=100)
    store.upload_archive(catalog, partial, "mongo")
    store.client.put_object(settings.s3_bucket, f"stack-a/sets/{partial}/manifest.json",
                            io.BytesIO(b'{"set_id": "%s", "databases": {"mongo": {"status": "failed"}}}'
                                       % partial.encode()), -1, part_size=5 * 1024 * 1024)
    # archives without a manifest: one from a dead upload (old), one still uploading (young)
    dead = make_set(catalog, now - timedelta(days=10), size=100)
    store.upload_archive(catalog, dead, "redis")
    uploading = make_set(catalog, now - timedelta(minutes=30), size=100)
    store.upload_archive(catalog, uploading, "redis")
    assert store.incomplete_set_ids() == [uploading, dead]

    policy = Policy(keep_last=2)
    blocked = prune_offsite(settings, now=now, policy=policy)
    assert blocked.remove == [] and partial in blocked.note
    assert store.incomplete_set_ids() == [uploading, dead]  # blocked means nothing at all
    store.delete_set(partial)

    dry = prune_offsite(settings, dry_run=True, now=now, policy=policy)
    assert dry.keep == ids[:2] and dry.remove == [*ids[2:], dead] and dry.deleted == []
    assert dry.reasons[dead][0].startswith("removed: incomplete upload")
    assert store.list_set_ids() == ids and store.incomplete_set_ids() == [uploading, dead]
    real = prune_offsite(settings, now=now, policy=policy)
    assert real.deleted == [*ids[2:], dead]
    assert store.list_set_ids() == ids[:2]
    assert store.incomplete_set_ids() == [uploading]

    # an unreadable remote manifest is kept and reported, and does not block the rest
    garbled = new_set_id(now - timedelta(days=20))
    store.client.put_object(settings.s3_bucket, f"stack-a/sets/{garbled}/manifest.json",
                            io.BytesIO(b"{not json"), 9)
    again = prune_offsite(settings, now=now, policy=Policy(keep_last=1))
    assert garbled in again.keep and again.reasons[garbled][0].startswith("kept: off-site backup set")
    assert again.deleted == [ids[1]] and again.note == ""
    assert set(ids) <= set(catalog.set_ids())  # local copies untouched


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_s3_down_fails_fast_with_safe_message(tmp_path: Path, s3_endpoint: Any) -> None:
    port = closed_port()
    settings = s3_settings(tmp_path, s3_endpoint, RPGER_S3_ENDPOINT=f"127.0.0.1:{port}")  # no region: lookup path too
    store = OffsiteStore.from_settings(settings)
    catalog = Catalog(settings.backup_dir)
    set_id = make_set(catalog, datetime.now(UTC), size=1000)
    for call in (lambda: store.upload_archive(catalog, set_id, "mongo"), store.list_set_ids, store.ping):
        started = time.monotonic()
        with pytest.raises(OffsiteError) as info:
            call()
        assert time.monotonic() - started < 10
        message = str(info.value)
        assert f"127.0.0.1:{port}" in message and settings.s3_bucket in message
        assert s3_endpoint.secrets["secret_key"] not in message
        assert s3_endpoint.secrets["access_key"] not in message
    assert catalog.read(set_id)["databases"]["mongo"]["status"] == "verified"  # local set intact
    assert "offsite" not in catalog.read(set_id)["databases"]["mongo"]


def test_wrong_credentials_is_a_clear_error(tmp_path: Path, s3_endpoint: Any) -> None:
    settings = s3_settings(tmp_path, s3_endpoint, RPGER_S3_SECRET_KEY="not-the-right-secret-123")
    store = OffsiteStore.from_settings(settings)
    with pytest.raises(OffsiteError, match="SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied") as info:
        store.ping()
    assert "not-the-right-secret-123" not in str(info.value)


def test_retention_job_keeps_partitions_of_sets_still_off_site(
        tmp_path: Path, s3_endpoint: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Local policy keeps 1, off-site keeps 2: the middle set leaves the disk but
    stays in the bucket, so only the oldest set's partition goes."""
    import dagster as dg

    from rpger_ops.defs.partitions import BACKUP_SETS_PARTITION
    from rpger_ops.defs.resources import StackResource
    from rpger_ops.defs.retention import retention

    settings = s3_settings(tmp_path, s3_endpoint)
    env = {"RPGER_BACKUP_DIR": str(settings.backup_dir), "RPGER_S3_ENDPOINT": settings.s3_endpoint,
           "RPGER_S3_BUCKET": settings.s3_bucket, "RPGER_S3_PREFIX": settings.s3_prefix,
           "RPGER_S3_ACCESS_KEY": s3_endpoint.secrets["access_key"],
           "RPGER_S3_SECRET_KEY": s3_endpoint.secrets["secret_key"], "RPGER_S3_SECURE": "false",
           "RPGER_KEEP_LAST": "1", "RPGER_OFFSITE_KEEP_LAST": "2"}
    for name in ("DAILY", "WEEKLY", "MONTHLY"):
        env[f"RPGER_KEEP_{name}"] = env[f"RPGER_OFFSITE_KEEP_{name}"] = "0"
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    store, catalog = OffsiteStore.from_settings(settings), Catalog(settings.backup_dir)
    now = datetime.now(UTC).replace(microsecond=0)
    ids = [make_set(catalog, now - timedelta(days=d), size=100) for d in (1, 2, 3)]
    for set_id in ids:
        upload_set(store, catalog, set_id)

    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(BACKUP_SETS_PARTITION, ids)
        result = retention.execute_in_process(instance=instance, resources={"stack": StackResource()})
        assert result.success
        assert catalog.set_ids() == ids[:1]
        assert store.list_set_ids() == ids[:2]
        assert sorted(instance.get_dynamic_partitions(BACKUP_SETS_PARTITION)) == sorted(ids[:2])

        # store down: local pruning still reported, the run fails visibly, no partition dropped
        monkeypatch.setenv("RPGER_S3_ENDPOINT", f"127.0.0.1:{closed_port()}")
        monkeypatch.setenv("RPGER_S3_REGION", "us-east-1")
        failed = retention.execute_in_process(instance=instance, resources={"stack": StackResource()},
                                              raise_on_error=False)
        assert not failed.success
        assert sorted(instance.get_dynamic_partitions(BACKUP_SETS_PARTITION)) == sorted(ids[:2])
