"""End to end on the real servers: RPGer-shaped data -> `backup_all` (Dagster, in
process) -> every check passes -> off-site objects match -> `verify_restore`
proves the scratch restore digests equal the backup's digests."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from rpger_ops import testdata
from rpger_ops.connect import redis_client
from rpger_ops.definitions import defs
from rpger_ops.defs.partitions import BACKUP_SETS_PARTITION
from rpger_ops.engines import build_engine
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.pipeline import BackupError, BackupPipeline
from rpger_ops.sets import EntryStatus, SetKind
from rpger_ops.settings import Settings
from rpger_ops.store import LocalStore
from tests.integration.backup_support import (
    check_evaluations,
    export_settings,
    offsite_matches,
)

SCALE = 30


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


def _job(name: str) -> dg.JobDefinition:
    return defs.resolve_job_def(name)


def test_backup_all_then_verify_restore(settings_s3: Settings, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path, instance: dg.DagsterInstance) -> None:
    settings = settings_s3
    testdata.load_all(settings, scale=SCALE)
    export_settings(monkeypatch, settings, tmp_path)

    result = _job("backup_all").execute_in_process(instance=instance)
    assert result.success
    set_id = result.output_for_node("close_set")
    assert set_id in instance.get_dynamic_partitions(BACKUP_SETS_PARTITION)

    # One run (no nested run): it recorded every chain's materializations and checks for the set.
    assert [r.job_name for r in instance.get_runs()] == ["backup_all"]
    checks = check_evaluations(instance, result.run_id)
    expected = {(f"{db}/archive", name) for db in ENGINE_NAMES for name in ("sha256", "readable", "counts")}
    expected |= {(f"{db}/offsite", "offsite_copy") for db in ENGINE_NAMES}
    expected |= {(f"{db}/archive", "not_shrunk") for db in ENGINE_NAMES}
    assert set(checks) == expected
    assert all(checks.values()), checks
    for db in ENGINE_NAMES:
        for step in ("dump", "archive", "offsite"):
            mat = instance.get_latest_materialization_event(dg.AssetKey([db, step]))
            assert mat is not None and mat.asset_materialization is not None
            assert mat.asset_materialization.partition == set_id

    store = LocalStore(settings.backup_dir)
    backup_set = store.read(set_id)
    assert backup_set.tool_version and backup_set.stack_id == "test-stack"
    assert backup_set.kind == "manual" and backup_set.complete and backup_set.planned == list(ENGINE_NAMES)
    for db in ENGINE_NAMES:
        entry = backup_set.databases[db]
        assert entry.status == EntryStatus.VERIFIED, entry
        assert entry.server_version and entry.digest and entry.archive_bytes
        assert entry.work_dir is None
        assert entry.layout == "blobs" and entry.files
        assert sum(store.blob_file(r.id).stat().st_size for r in entry.files.values()) == entry.archive_bytes
        # The off-site objects exist and hold exactly the local blobs.
        assert entry.offsite is not None and entry.offsite.sha256 == entry.sha256
        assert offsite_matches(settings, entry)
    assert backup_set.databases["mongo"].counts["monsters"] == SCALE
    assert backup_set.databases["chroma"].counts["monsters"] == SCALE
    # Nothing left behind in tmp/.
    assert list((settings.backup_dir / "tmp").iterdir()) == []

    verify = _job("verify_restore").execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"restore_into_scratch": {"config": {"set": set_id}}}})
    backup_set = store.read(set_id)
    assert verify.success, {db: backup_set.databases[db].restore_check for db in ENGINE_NAMES}
    assert verify.output_for_node("restore_into_scratch") == {db: True for db in ENGINE_NAMES}
    for db in ENGINE_NAMES:
        check = backup_set.databases[db].restore_check
        assert check is not None and check.ok and check.digest == backup_set.databases[db].digest


def test_verify_restore_detects_a_changed_source(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """The proof can fail: a manifest digest that no longer matches the archive is caught."""
    testdata.load_redis(settings, scale=20)
    export_settings(monkeypatch, settings, tmp_path)
    set_id = BackupPipeline(settings).take_set(SetKind.MANUAL, ["redis"], offsite=False).set_id
    # Change the source after the fact and record its digest as if the dump had it.
    r = redis_client(settings)
    r.persist("dashboard:default:user0")  # only a TTL disappears
    r.close()
    engine = build_engine("redis", settings)
    changed = engine.digest()
    engine.close()
    store = LocalStore(settings.backup_dir)

    def record(s: object) -> None:
        s.databases["redis"].digest = changed  # type: ignore[attr-defined]

    store.update(set_id, record)
    result = _job("verify_restore").execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"restore_into_scratch": {"config": {"set": set_id, "databases": ["redis"]}}}})
    assert not result.success
    entry = store.read(set_id).databases["redis"]
    assert entry.restore_check is not None and entry.restore_check.ok is False
    assert entry.restore_check.digest != changed
    # Written back: the entry is no longer usable.
    assert entry.status == EntryStatus.RESTORE_FAILED and not store.read(set_id).complete


def test_a_verified_set_is_never_redumped_and_stale_work_is_cleared(settings: Settings) -> None:
    import os
    import time

    testdata.load_mongo(settings, scale=20)
    pipeline = BackupPipeline(settings, offsite=None)
    set_id = pipeline.take_set(SetKind.MANUAL, ["mongo"]).set_id
    store = pipeline.local
    before = store.read(set_id).databases["mongo"]
    with pytest.raises(BackupError, match="already holds a verified mongo archive"):
        pipeline.dump(set_id, "mongo")
    assert store.read(set_id).databases["mongo"] == before  # untouched

    dead = store.work_dir("dead-run-dump")
    (dead / "part.bson").write_bytes(b"x")
    live = store.work_dir("live-run-dump")
    old = time.time() - 25 * 3600
    os.utime(dead, (old, old))
    pipeline.start_set(SetKind.MANUAL)
    assert not dead.exists() and live.exists()
