"""The off-site copy on a real MinIO: the pipeline's upload (read-back proof,
idempotence, the off-site manifest of a partial upload), corruption, retention
off-site, a store that is down, hung or refuses our keys. (What every store
must do is tests/integration/test_store_contract.py.)"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rpger_ops import devservers
from rpger_ops.pipeline import BackupPipeline, OffsiteCopyError, remote_view
from rpger_ops.retention import Policy, prune_offsite
from rpger_ops.sets import BackupSet, DatabaseEntry, EntryStatus, SetKind, new_set_id
from rpger_ops.settings import Settings, load_settings
from rpger_ops.store import CorruptArchive, LocalStore, StoreError
from rpger_ops.store.s3 import S3Store

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


def make_set(store: LocalStore, when: datetime, size: int = 200_000,
             status: EntryStatus = EntryStatus.VERIFIED) -> str:
    """A finished local set with random archives (what the pipeline leaves behind)."""
    backup_set = BackupSet(set_id=new_set_id(when), kind=SetKind.SCHEDULED, stack_id="test-stack", planned=list(DBS))
    for db in DBS:
        data = os.urandom(size)
        store.archive_path(backup_set.set_id, db).parent.mkdir(parents=True, exist_ok=True)
        store.archive_path(backup_set.set_id, db).write_bytes(data)
        backup_set.databases[db] = DatabaseEntry(status=status, sha256=hashlib.sha256(data).hexdigest(),  # type: ignore[index]
                                                 archive_bytes=size, counts={"x": 1})
    store.write(backup_set)
    return backup_set.set_id


class Env:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.s3 = S3Store.from_settings(settings)
        self.pipeline = BackupPipeline(settings, offsite=self.s3)
        self.local = self.pipeline.local

    def upload(self, set_id: str, dbs: tuple[str, ...] = DBS) -> list[Any]:
        return [self.pipeline.upload(set_id, db) for db in dbs]  # type: ignore[arg-type]


@pytest.fixture
def env(tmp_path: Path, s3_endpoint: Any) -> Env:
    return Env(s3_settings(tmp_path, s3_endpoint))


def test_upload_verifies_remote_checksum(env: Env) -> None:
    set_id = make_set(env.local, datetime.now(UTC))
    assert env.s3.set_ids() == []  # bucket absent yet: empty, not an error
    copies = env.upload(set_id)
    assert env.s3.set_ids() == [set_id]
    local = env.local.read(set_id)
    for db, copy in zip(DBS, copies, strict=True):
        entry = local.databases[db]  # type: ignore[index]
        key = f"stack-a/sets/{set_id}/{db}.tar.zst"
        assert copy.key == key and copy.sha256 == entry.sha256 and copy.bytes == 200_000
        assert entry.offsite == copy and entry.offsite_error is None
        stat = env.s3.client.stat_object(env.settings.s3_bucket, key)
        assert stat.metadata["x-amz-meta-sha256"] == entry.sha256
        assert env.s3.archive_sha256(set_id, db) == entry.sha256
    assert env.s3.read(set_id) == remote_view(local) and env.s3.read(set_id).complete


def test_reupload_is_idempotent(env: Env) -> None:
    set_id = make_set(env.local, datetime.now(UTC))
    env.upload(set_id)
    keys = [f"stack-a/sets/{set_id}/{db}.tar.zst" for db in DBS] + [f"stack-a/sets/{set_id}/manifest.json"]
    before = {k: env.s3.client.stat_object(env.settings.s3_bucket, k) for k in keys}
    manifest_before = env.local.read(set_id)
    time.sleep(1.1)  # last-modified has one-second resolution
    env.upload(set_id)
    assert env.local.read(set_id) == manifest_before
    for k in keys:
        after = env.s3.client.stat_object(env.settings.s3_bucket, k)
        assert (after.etag, after.last_modified) == (before[k].etag, before[k].last_modified), k


def test_refuses_unverified_or_corrupt_local_archive(env: Env) -> None:
    failed = make_set(env.local, datetime.now(UTC) - timedelta(hours=1), status=EntryStatus.FAILED)
    with pytest.raises(OffsiteCopyError, match="not verified"):
        env.pipeline.upload(failed, "mongo")
    good = make_set(env.local, datetime.now(UTC))
    path = env.local.archive_path(good, "redis")
    path.write_bytes(b"x" + path.read_bytes()[1:])
    with pytest.raises(OffsiteCopyError, match="does not match its manifest"):
        env.pipeline.upload(good, "redis")
    assert env.local.read(good).databases["redis"].status == EntryStatus.CORRUPT  # written back


def test_partial_upload_is_a_partial_set_off_site(env: Env, tmp_path: Path) -> None:
    """Chains upload in parallel: a manifest uploaded after mongo alone must not offer redis/chroma."""
    set_id = make_set(env.local, datetime.now(UTC))
    env.upload(set_id, ("mongo",))
    assert env.s3.set_ids() == [set_id]
    remote = env.s3.read(set_id)
    assert remote.databases["mongo"].verified
    assert remote.databases["redis"].status == EntryStatus.LOCAL_ONLY
    assert not remote.complete and remote.usable_for(["mongo"]) and not remote.usable_for(["redis"])
    assert env.local.read(set_id).databases["redis"].verified  # local copy unchanged
    env.upload(set_id, ("redis", "chroma"))
    assert env.s3.read(set_id).complete


def test_a_corrupt_remote_copy_is_detected_and_replaced(env: Env, tmp_path: Path) -> None:
    set_id = make_set(env.local, datetime.now(UTC))
    env.upload(set_id)
    # Bit rot / tampering: same size and metadata, different bytes.
    key = f"stack-a/sets/{set_id}/chroma.tar.zst"
    data = bytearray(env.local.archive_path(set_id, "chroma").read_bytes())
    data[1000] ^= 0xFF
    sha = env.local.read(set_id).databases["chroma"].sha256
    env.s3.client.put_object(env.settings.s3_bucket, key, io.BytesIO(bytes(data)), len(data),
                             metadata={"sha256": str(sha)})
    with pytest.raises(CorruptArchive, match="corrupt remote copy"):
        env.s3.fetch_archive(set_id, "chroma", str(sha), tmp_path / "w")
    assert not list((tmp_path / "w").glob(".*.part"))  # nothing half-downloaded left
    # The next upload (a backfill after an incident) finds the damage and replaces it.
    env.upload(set_id, ("chroma",))
    assert env.s3.fetch_archive(set_id, "chroma", str(sha), tmp_path / "w").read_bytes() == \
        env.local.archive_path(set_id, "chroma").read_bytes()


def test_prune_offsite(env: Env) -> None:
    settings, s3 = env.settings, env.s3
    now = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    ids = [make_set(env.local, now.replace(hour=3) - timedelta(days=d), size=100) for d in range(5)]
    for set_id in ids:
        env.upload(set_id)
    # The newest remote set is missing two archive uploads: not complete off-site.
    partial = make_set(env.local, now.replace(hour=5), size=100)
    env.upload(partial, ("mongo",))
    # Archives without a manifest: one from a dead upload (old), one still uploading (young).
    dead = make_set(env.local, now - timedelta(days=10), size=100)
    s3.put_archive(dead, "redis", env.local.archive_path(dead, "redis"), str(env.local.read(dead).databases["redis"].sha256))
    uploading = make_set(env.local, now - timedelta(minutes=30), size=100)
    s3.put_archive(uploading, "redis", env.local.archive_path(uploading, "redis"),
                   str(env.local.read(uploading).databases["redis"].sha256))
    assert s3.incomplete_set_ids() == [uploading, dead]

    policy = Policy(keep_last=2)
    blocked = prune_offsite(settings, now=now, policy=policy)
    assert blocked.remove == [] and partial in blocked.note
    assert s3.incomplete_set_ids() == [uploading, dead]  # blocked means nothing at all
    s3.delete(partial)

    dry = prune_offsite(settings, dry_run=True, now=now, policy=policy)
    assert dry.keep == ids[:2] and dry.remove == [*ids[2:], dead] and dry.deleted == []
    assert dry.reasons[dead][0].startswith("removed: incomplete")
    assert s3.set_ids() == ids and s3.incomplete_set_ids() == [uploading, dead]
    real = prune_offsite(settings, now=now, policy=policy)
    assert real.deleted == [*ids[2:], dead]
    assert s3.set_ids() == ids[:2] and s3.incomplete_set_ids() == [uploading]

    # An unreadable remote manifest is kept and reported, and does not block the rest.
    garbled = new_set_id(now - timedelta(days=20))
    s3.client.put_object(settings.s3_bucket, f"stack-a/sets/{garbled}/manifest.json", io.BytesIO(b"{not json"), 9)
    again = prune_offsite(settings, now=now, policy=Policy(keep_last=1))
    assert garbled in again.keep and again.reasons[garbled][0].startswith("kept: off-site backup set")
    assert again.deleted == [ids[1]] and again.note == ""
    assert set(ids) <= set(env.local.set_ids())  # local copies untouched


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_s3_down_fails_fast_with_safe_message(tmp_path: Path, s3_endpoint: Any) -> None:
    port = closed_port()
    settings = s3_settings(tmp_path, s3_endpoint, RPGER_S3_ENDPOINT=f"127.0.0.1:{port}")  # no region: lookup path too
    down = Env(settings)
    set_id = make_set(down.local, datetime.now(UTC), size=1000)
    for call in (lambda: down.pipeline.upload(set_id, "mongo"), down.s3.set_ids, down.s3.ping):
        started = time.monotonic()
        with pytest.raises((StoreError, OffsiteCopyError)) as info:
            call()
        assert time.monotonic() - started < 10
        message = str(info.value)
        assert f"127.0.0.1:{port}" in message and settings.s3_bucket in message
        assert s3_endpoint.secrets["secret_key"] not in message
        assert s3_endpoint.secrets["access_key"] not in message
    entry = down.local.read(set_id).databases["mongo"]
    assert entry.verified and entry.offsite is None and "off-site copy failed" in str(entry.offsite_error)


def test_a_hung_store_fails_each_upload_within_the_read_timeout(tmp_path: Path, servers_root: Path) -> None:
    """A store that accepts connections but never answers (frozen): every database's upload is
    still attempted, each fails after one read timeout instead of minutes of retries."""
    access, secret = "rpger-hung-" + uuid.uuid4().hex[:4], uuid.uuid4().hex
    server = devservers.start_minio(servers_root / f"minio-hung-{uuid.uuid4().hex[:6]}", access, secret)
    try:
        settings = load_settings(_env_file=None, RPGER_BACKUP_DIR=str(tmp_path / "b"), RPGER_S3_SECURE=False,
                                 RPGER_S3_ENDPOINT=f"{server.host}:{server.port}", RPGER_S3_ACCESS_KEY=access,
                                 RPGER_S3_SECRET_KEY=secret, RPGER_S3_BUCKET="rpger-hung")
        hung = Env(settings)
        hung.s3.ensure_bucket()
        set_id = make_set(hung.local, datetime.now(UTC), size=1000)
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            errors = []
            for db in DBS:
                with pytest.raises(OffsiteCopyError) as info:
                    hung.pipeline.upload(set_id, db)  # type: ignore[arg-type]
                errors.append(str(info.value))
            elapsed = time.monotonic() - started
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        print(f"hung store: {len(DBS)} uploads failed in {elapsed:.1f} s")
        assert elapsed < 90, elapsed
        assert all("read timeout (store hung?)" in e for e in errors), errors
        assert all(e.verified and e.offsite_error for e in hung.local.read(set_id).databases.values())
    finally:
        server.stop()


def test_wrong_credentials_is_a_clear_error(tmp_path: Path, s3_endpoint: Any) -> None:
    settings = s3_settings(tmp_path, s3_endpoint, RPGER_S3_SECRET_KEY="not-the-right-secret-123")
    with pytest.raises(StoreError, match="SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied") as info:
        S3Store.from_settings(settings).ping()
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
    e = Env(settings)
    now = datetime.now(UTC).replace(microsecond=0)
    ids = [make_set(e.local, now - timedelta(days=d), size=100) for d in (1, 2, 3)]
    for set_id in ids:
        e.upload(set_id)

    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(BACKUP_SETS_PARTITION, ids)
        result = retention.execute_in_process(instance=instance, resources={"stack": StackResource()})
        assert result.success
        assert e.local.set_ids() == ids[:1]
        assert e.s3.set_ids() == ids[:2]
        assert sorted(instance.get_dynamic_partitions(BACKUP_SETS_PARTITION)) == sorted(ids[:2])

        # store down: local pruning still reported, the run fails visibly, no partition dropped
        monkeypatch.setenv("RPGER_S3_ENDPOINT", f"127.0.0.1:{closed_port()}")
        monkeypatch.setenv("RPGER_S3_REGION", "us-east-1")
        failed = retention.execute_in_process(instance=instance, resources={"stack": StackResource()},
                                              raise_on_error=False)
        assert not failed.success
        assert sorted(instance.get_dynamic_partitions(BACKUP_SETS_PARTITION)) == sorted(ids[:2])
