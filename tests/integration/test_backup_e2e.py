"""End to end on the real servers: RPGer-shaped data -> `backup_all` (Dagster, in
process) -> every check passes -> off-site objects match -> `verify_restore`
proves the scratch restore digests equal the source digests."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from rpger_ops import testdata
from rpger_ops.backup import take_backup_set
from rpger_ops.catalog import VERIFIED, Catalog
from rpger_ops.connect import redis_client
from rpger_ops.definitions import defs
from rpger_ops.defs.partitions import BACKUP_SETS_PARTITION
from rpger_ops.engines import build_engine
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.settings import Settings
from tests.integration.backup_support import check_evaluations, export_settings, s3_object_sha256

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
    set_id = result.output_for_node("back_up_new_set")
    assert set_id in instance.get_dynamic_partitions(BACKUP_SETS_PARTITION)

    # The chains ran as a partitioned run of the real assets.
    chains_run = next(r for r in instance.get_runs() if r.tags.get("rpger/parent_run_id") == result.run_id)
    assert chains_run.job_name == "backup_chains" and chains_run.tags["dagster/partition"] == set_id
    checks = check_evaluations(instance, chains_run.run_id)
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

    manifest = Catalog(settings.backup_dir).read(set_id)
    assert manifest["tool_version"] and manifest["stack_id"] == "test-stack"
    assert manifest["kind"] == "manual"
    for db in ENGINE_NAMES:
        entry = manifest["databases"][db]
        assert entry["status"] == VERIFIED, entry
        assert entry["server_version"] and entry["source_digest"] and entry["archive_bytes"] > 0
        assert entry["dump_dir"] is None
        assert (Catalog(settings.backup_dir).archive_path(set_id, db)).stat().st_size == entry["archive_bytes"]
        # The off-site object exists and holds exactly the local archive.
        assert entry["offsite"]["sha256"] == entry["sha256"]
        assert s3_object_sha256(settings, entry["offsite"]["key"]) == entry["sha256"]
    assert manifest["databases"]["mongo"]["counts"]["monsters"] == SCALE
    assert manifest["databases"]["chroma"]["counts"]["monsters"] == SCALE
    # Nothing left behind in tmp/.
    assert list((settings.backup_dir / "tmp").iterdir()) == []

    verify = _job("verify_restore").execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"restore_into_scratch": {"config": {"set": set_id}}}})
    manifest = Catalog(settings.backup_dir).read(set_id)
    assert verify.success, {db: manifest["databases"][db]["restore_check"] for db in ENGINE_NAMES}
    assert verify.output_for_node("restore_into_scratch") == {db: True for db in ENGINE_NAMES}
    for db in ENGINE_NAMES:
        check = manifest["databases"][db]["restore_check"]
        assert check["ok"] and check["digest"] == manifest["databases"][db]["source_digest"]


def test_verify_restore_detects_a_changed_source(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """The proof can fail: a manifest digest that no longer matches the archive is caught."""
    testdata.load_redis(settings, scale=20)
    export_settings(monkeypatch, settings, tmp_path)
    set_id = take_backup_set(settings, dbs=("redis",), offsite=False)
    # Change the source after the fact and record its digest as if the dump had it.
    r = redis_client(settings)
    r.persist("dashboard:default:user0")  # only a TTL disappears
    r.close()
    engine = build_engine("redis", settings)
    changed = engine.digest()
    engine.close()
    Catalog(settings.backup_dir).update_database(set_id, "redis", source_digest=changed)
    result = _job("verify_restore").execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"restore_into_scratch": {"config": {"set": set_id, "databases": ["redis"]}}}})
    assert not result.success
    entry = Catalog(settings.backup_dir).read(set_id)["databases"]["redis"]
    assert entry["restore_check"]["ok"] is False
    assert entry["restore_check"]["digest"] != changed


def test_a_verified_set_is_never_redumped_and_stale_work_is_cleared(settings: Settings) -> None:
    import os
    import time

    from rpger_ops.backup import BackupError, dump_database, start_set

    testdata.load_mongo(settings, scale=20)
    set_id = take_backup_set(settings, dbs=("mongo",), offsite=False)
    catalog = Catalog(settings.backup_dir)
    before = catalog.read(set_id)["databases"]["mongo"]
    with pytest.raises(BackupError, match="already holds a verified mongo archive"):
        dump_database(settings, set_id, "mongo")
    assert catalog.read(set_id)["databases"]["mongo"] == before  # untouched

    dead = catalog.work_dir("dead-run-dump")
    (dead / "part.bson").write_bytes(b"x")
    live = catalog.work_dir("live-run-dump")
    old = time.time() - 25 * 3600
    os.utime(dead, (old, old))
    start_set(settings, "manual")
    assert not dead.exists() and live.exists()
