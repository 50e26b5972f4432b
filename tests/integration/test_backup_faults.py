"""Fault tests on real servers: a server dying mid-backup, a corrupted archive,
an unreachable S3 store. None may leave a usable ("verified") set behind that
isn't one, and none may destroy the local set."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from rpger_ops import devservers, testdata
from rpger_ops.backup import BackupError, check_archive, take_backup_set
from rpger_ops.catalog import FAILED, VERIFIED, Catalog
from rpger_ops.definitions import defs
from rpger_ops.defs.partitions import BACKUP_SETS_PARTITION
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.settings import Settings
from tests.conftest import Endpoint, make_settings
from tests.integration.backup_support import check_evaluations, export_settings, s3_object_sha256


def _assert_no_leftovers(settings: Settings) -> None:
    tmp = settings.backup_dir / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == [], list(tmp.iterdir())


def test_redis_killed_mid_backup_leaves_no_usable_set(settings: Settings, redis_endpoint: Endpoint) -> None:
    testdata.load_mongo(settings, scale=20)
    testdata.load_redis(settings, scale=20)
    assert redis_endpoint.server is not None

    def kill_redis_when_its_dump_starts(message: str, done: int, total: int | None) -> None:
        if message.startswith("redis: dumping"):
            redis_endpoint.server.kill()  # type: ignore[union-attr]

    with pytest.raises(BackupError, match="redis dump failed") as info:
        take_backup_set(settings, dbs=("mongo", "redis"), offsite=False, progress=kill_redis_when_its_dump_starts)
    catalog = Catalog(settings.backup_dir)
    manifest = catalog.read(str(info.value.set_id))
    assert manifest["databases"]["redis"]["status"] == FAILED
    assert not catalog.archive_path(manifest["set_id"], "redis").exists()
    assert manifest["databases"]["mongo"]["status"] == VERIFIED  # the healthy database is still backed up
    assert catalog.latest_verified(["mongo", "redis"]) is None
    assert catalog.latest_verified(["redis"]) is None
    _assert_no_leftovers(settings)


@pytest.fixture
def own_chroma(servers_root: Path) -> Endpoint:
    """A Chroma server of this test's own: it gets killed (the session one is shared)."""
    server = devservers.start_chroma(servers_root / f"chroma-kill-{secrets.token_hex(4)}")
    yield Endpoint(server.host, server.port, server, {})
    server.stop()


def test_chroma_killed_between_collections_removes_the_partial_dump(
        tmp_path: Path, mongo_endpoint: Endpoint, redis_endpoint: Endpoint, own_chroma: Endpoint) -> None:
    settings = make_settings(tmp_path, mongo_endpoint, redis_endpoint, own_chroma)
    testdata.load_chroma(settings, scale=20)
    assert own_chroma.server is not None
    seen: list[str] = []

    def kill_after_first_collection(message: str, done: int, total: int | None) -> None:
        seen.append(message)
        if message.startswith("chroma: ") and message.endswith("records)"):  # one collection exported
            own_chroma.server.kill()  # type: ignore[union-attr]

    with pytest.raises(BackupError, match="chroma dump failed") as info:
        take_backup_set(settings, dbs=("chroma",), offsite=False, progress=kill_after_first_collection)
    assert any(m.endswith("records)") for m in seen), seen  # the kill really came mid-export
    catalog = Catalog(settings.backup_dir)
    assert catalog.read(str(info.value.set_id))["databases"]["chroma"]["status"] == FAILED
    assert not catalog.archive_path(str(info.value.set_id), "chroma").exists()
    assert catalog.latest_verified(["chroma"]) is None
    _assert_no_leftovers(settings)


def _kill_when_dumping(catalog: Catalog, db: str, server: devservers.Server, stop: threading.Event) -> None:
    while not stop.is_set():
        for manifest in catalog.list_sets():
            if manifest.get("databases", {}).get(db, {}).get("status") == "dumping":
                server.kill()
                return
        time.sleep(0.005)


def test_chroma_killed_mid_backup_fails_the_run(tmp_path: Path, mongo_endpoint: Endpoint, redis_endpoint: Endpoint,
                                               own_chroma: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path, mongo_endpoint, redis_endpoint, own_chroma)
    testdata.load_chroma(settings, scale=60)
    export_settings(monkeypatch, settings, tmp_path)
    catalog = Catalog(settings.backup_dir)
    stop = threading.Event()
    assert own_chroma.server is not None
    killer = threading.Thread(target=_kill_when_dumping, args=(catalog, "chroma", own_chroma.server, stop))
    killer.start()
    instance = dg.DagsterInstance.ephemeral()
    try:
        result = defs.resolve_job_def("backup_all").execute_in_process(instance=instance, raise_on_error=False)
    finally:
        stop.set()
        killer.join()
    assert not result.success
    (set_id,) = catalog.set_ids()
    manifest = catalog.read(set_id)
    assert manifest["databases"]["chroma"]["status"] == FAILED
    assert "chroma dump failed" in manifest["databases"]["chroma"]["error"]
    assert not catalog.archive_path(set_id, "chroma").exists()
    assert catalog.latest_verified(ENGINE_NAMES) is None
    assert instance.get_latest_materialization_event(dg.AssetKey(["chroma", "archive"])) is None
    _assert_no_leftovers(settings)


def _run_checks(set_id: str) -> dict[tuple[str, str], bool]:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BACKUP_SETS_PARTITION, [set_id])
    result = defs.resolve_job_def("backup_checks").execute_in_process(
        instance=instance, tags={"dagster/partition": set_id}, raise_on_error=False)
    return {k: v for k, v in check_evaluations(instance, result.run_id).items() if k[0] == "mongo/archive"}


def test_corrupted_archive_fails_its_check(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    testdata.load_mongo(settings, scale=20)
    export_settings(monkeypatch, settings, tmp_path)
    set_id = take_backup_set(settings, dbs=("mongo",), offsite=False)
    catalog = Catalog(settings.backup_dir)
    assert _run_checks(set_id) == {
        ("mongo/archive", "sha256"): True, ("mongo/archive", "readable"): True, ("mongo/archive", "counts"): True,
        ("mongo/archive", "not_shrunk"): True}

    path = catalog.archive_path(set_id, "mongo")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))
    checks = _run_checks(set_id)
    assert checks[("mongo/archive", "sha256")] is False
    assert checks[("mongo/archive", "readable")] is False
    assert catalog.read(set_id)["databases"]["mongo"]["status"] == FAILED
    assert catalog.latest_verified(["mongo"]) is None
    _assert_no_leftovers(settings)


def test_counts_check_catches_a_dump_that_lost_items(settings: Settings) -> None:
    testdata.load_mongo(settings, scale=20)
    set_id = take_backup_set(settings, dbs=("mongo",), offsite=False)
    catalog = Catalog(settings.backup_dir)
    counts = catalog.read(set_id)["databases"]["mongo"]["counts"]
    catalog.update_database(set_id, "mongo", counts={**counts, "monsters": counts["monsters"] + 1})
    outcomes = {o.name: o.passed for o in check_archive(settings, set_id, "mongo")}
    assert outcomes == {"sha256": True, "readable": True, "counts": False}
    assert catalog.read(set_id)["databases"]["mongo"]["status"] == FAILED


def test_s3_down_fails_offsite_visibly_and_keeps_the_local_set(
        tmp_path: Path, mongo_endpoint: Endpoint, redis_endpoint: Endpoint, chroma_endpoint: Endpoint,
        s3_endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    good = make_settings(tmp_path, mongo_endpoint, redis_endpoint, chroma_endpoint, s3_endpoint)
    # Same bucket and keys, but nothing listens on the port: S3 is "down".
    closed = Endpoint("127.0.0.1", devservers.free_port(), None, s3_endpoint.secrets)
    settings = good.model_copy(update={"s3_endpoint": f"{closed.host}:{closed.port}"})
    testdata.load_all(settings, scale=20)
    export_settings(monkeypatch, settings, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("backup_all").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    catalog = Catalog(settings.backup_dir)
    (set_id,) = catalog.set_ids()
    manifest = catalog.read(set_id)
    for db in ENGINE_NAMES:
        entry = manifest["databases"][db]
        assert entry["status"] == VERIFIED  # the local set is intact and usable
        assert "off-site copy failed" in entry["offsite_error"]
        assert not entry.get("offsite")
        assert instance.get_latest_materialization_event(dg.AssetKey([db, "offsite"])) is None
        assert instance.get_latest_materialization_event(dg.AssetKey([db, "archive"])) is not None
    assert catalog.latest_verified(ENGINE_NAMES)["set_id"] == set_id  # type: ignore[index]
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert failure is not None and "off-site copy failed" in str(failure.description)
    assert closed.secrets["secret_key"] not in str(failure.description)

    # S3 is back: re-running only the off-site assets for that set (a backfill) uploads it.
    export_settings(monkeypatch, good, tmp_path)
    instance.add_dynamic_partitions(BACKUP_SETS_PARTITION, [set_id])
    retry = defs.resolve_job_def("backup_chains").execute_in_process(
        instance=instance, partition_key=set_id,
        asset_selection=[dg.AssetKey([db, "offsite"]) for db in ENGINE_NAMES])
    assert retry.success
    manifest = catalog.read(set_id)
    for db in ENGINE_NAMES:
        entry = manifest["databases"][db]
        assert entry["offsite"]["sha256"] == entry["sha256"] and entry["offsite_error"] is None
        assert s3_object_sha256(good, entry["offsite"]["key"]) == entry["sha256"]
