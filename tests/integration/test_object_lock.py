"""S3 Object Lock on a real MinIO: sets uploaded with the ops credentials of
docs/s3-ops-policy.json (write, read, delete, but no governance bypass) cannot
be removed by those credentials while their lock holds, and retention reports
them as kept by their lock."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from minio import Minio
from minio.credentials import StaticProvider
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from minio.minioadmin import MinioAdmin

from rpger_ops import testdata
from rpger_ops.pipeline import BackupPipeline
from rpger_ops.retention import Policy, format_decision, prune_offsite
from rpger_ops.sets import SetKind, new_set_id
from rpger_ops.settings import Settings
from rpger_ops.store import ObjectLocked
from rpger_ops.store.s3 import S3Store

POLICY = Path(__file__).resolve().parents[2] / "docs" / "s3-ops-policy.json"


def _ops_credentials(settings: Settings, s3: Any, tmp_path: Path) -> tuple[str, str]:
    """A MinIO user with the documented ops policy for this test's bucket."""
    access, secret = "ops-" + secrets.token_hex(4), secrets.token_urlsafe(18)
    admin = MinioAdmin(endpoint=f"{s3.host}:{s3.port}", secure=False,
                       credentials=StaticProvider(s3.secrets["access_key"], s3.secrets["secret_key"]))
    admin.user_add(access, secret)
    policy = POLICY.read_text().replace("rpger-backups", settings.s3_bucket)
    (tmp_path / "policy.json").write_text(policy)
    name = f"rpger-ops-{settings.s3_bucket}"
    admin.policy_add(name, str(tmp_path / "policy.json"))
    admin.attach_policy([name], user=access)
    return access, secret


def test_ops_credentials_cannot_remove_a_locked_set(settings_s3: Settings, s3_endpoint: Any, tmp_path: Path) -> None:
    admin_settings = settings_s3.model_copy(update={"s3_object_lock_days": 1})
    S3Store.from_settings(admin_settings).ensure_bucket()  # the administrator creates the locked bucket
    access, secret = _ops_credentials(settings_s3, s3_endpoint, tmp_path)
    from pydantic import SecretStr

    ops = admin_settings.model_copy(update={"s3_access_key": SecretStr(access), "s3_secret_key": SecretStr(secret)})
    testdata.load_redis(ops, scale=20)
    pipeline = BackupPipeline(ops)
    older = pipeline.take_set(SetKind.MANUAL, ["redis"], set_id=new_set_id(datetime.now(UTC) - timedelta(days=3)))
    newer = pipeline.take_set(SetKind.MANUAL, ["redis"])
    assert older.ok and newer.ok, (older.problems(), newer.problems())
    store = S3Store.from_settings(ops)
    entry = older.backup_set.databases["redis"]
    stat = store.client.stat_object(store.bucket, store.blob_key(next(iter(entry.files.values())).id))
    assert stat.metadata.get("x-amz-object-lock-mode") == "GOVERNANCE"
    until = store._retain_until(stat)
    assert until is not None and until > datetime.now(UTC) + timedelta(hours=23)

    with pytest.raises(ObjectLocked, match="Object Lock until"):
        store.delete(older.set_id)
    assert older.set_id in store.set_ids() and store.read(older.set_id).complete  # nothing removed

    # Not even by asking for the governance bypass: these credentials lack it.
    client = Minio(f"{s3_endpoint.host}:{s3_endpoint.port}", access_key=access, secret_key=secret, secure=False)
    key = store.manifest_key(older.set_id)
    versions = [o for o in client.list_objects(store.bucket, prefix=key, include_version=True)]
    errors = list(client.remove_objects(store.bucket, [DeleteObject(key, o.version_id) for o in versions],
                                        bypass_governance_mode=True))
    assert errors and all(e.code == "AccessDenied" for e in errors)
    with pytest.raises(S3Error):
        client.remove_object(store.bucket, key, version_id=versions[0].version_id)
    assert store.read(older.set_id).complete

    decision = prune_offsite(ops, policy=Policy(keep_last=1))
    assert older.set_id in decision.kept_by_lock and not decision.deleted
    assert decision.kept_by_lock[older.set_id] > datetime.now(UTC).isoformat()
    assert f"{older.set_id} until" in format_decision(decision)
    assert older.set_id in store.set_ids()
    assert json.loads(POLICY.read_text())  # the documented policy is what the test used
