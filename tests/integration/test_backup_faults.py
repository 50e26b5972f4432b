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
from rpger_ops.definitions import defs
from rpger_ops.defs.partitions import BACKUP_SETS_PARTITION
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.pipeline import BackupPipeline
from rpger_ops.sets import BackupSet, EntryStatus, SetKind, choose_latest
from rpger_ops.settings import Settings
from rpger_ops.store import LocalStore, read_sets
from tests.conftest import Endpoint, make_settings
from tests.integration.backup_support import (
    check_evaluations,
    damage_stored_dump,
    export_settings,
    offsite_matches,
    stored_dump_exists,
)


def _latest(settings: Settings, dbs: list[str]) -> str | None:
    return choose_latest(read_sets(LocalStore(settings.backup_dir)), dbs).set_id


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

    outcome = BackupPipeline(settings).take_set(SetKind.MANUAL, ["mongo", "redis"], offsite=False,
                                                progress=kill_redis_when_its_dump_starts)
    assert "redis dump failed" in outcome.failures["redis"] and not outcome.complete
    store = LocalStore(settings.backup_dir)
    backup_set = store.read(outcome.set_id)
    assert backup_set.databases["redis"].status == EntryStatus.FAILED
    assert not stored_dump_exists(store, outcome.set_id, "redis")
    assert backup_set.databases["mongo"].verified  # the healthy database is still backed up
    assert _latest(settings, ["mongo", "redis"]) is None
    assert _latest(settings, ["redis"]) is None
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

    outcome = BackupPipeline(settings).take_set(SetKind.MANUAL, ["chroma"], offsite=False,
                                                progress=kill_after_first_collection)
    assert "chroma dump failed" in outcome.failures["chroma"]
    assert any(m.endswith("records)") for m in seen), seen  # the kill really came mid-export
    store = LocalStore(settings.backup_dir)
    assert store.read(outcome.set_id).databases["chroma"].status == EntryStatus.FAILED
    assert not stored_dump_exists(store, outcome.set_id, "chroma")
    assert _latest(settings, ["chroma"]) is None
    _assert_no_leftovers(settings)


def _kill_when_dumping(store: LocalStore, db: str, server: devservers.Server, stop: threading.Event) -> None:
    while not stop.is_set():
        for backup_set in read_sets(store):
            entry = backup_set.entry(db)
            if entry is not None and entry.status == EntryStatus.DUMPING:
                server.kill()
                return
        time.sleep(0.005)


def test_chroma_killed_mid_backup_fails_the_run(tmp_path: Path, mongo_endpoint: Endpoint, redis_endpoint: Endpoint,
                                               own_chroma: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path, mongo_endpoint, redis_endpoint, own_chroma)
    testdata.load_chroma(settings, scale=60)
    export_settings(monkeypatch, settings, tmp_path)
    store = LocalStore(settings.backup_dir)
    stop = threading.Event()
    assert own_chroma.server is not None
    killer = threading.Thread(target=_kill_when_dumping, args=(store, "chroma", own_chroma.server, stop))
    killer.start()
    instance = dg.DagsterInstance.ephemeral()
    try:
        result = defs.resolve_job_def("backup_all").execute_in_process(instance=instance, raise_on_error=False)
    finally:
        stop.set()
        killer.join()
    assert not result.success
    (set_id,) = store.set_ids()
    entry = store.read(set_id).databases["chroma"]
    assert entry.status == EntryStatus.FAILED and "chroma dump failed" in str(entry.error)
    assert not stored_dump_exists(store, set_id, "chroma")
    assert _latest(settings, list(ENGINE_NAMES)) is None
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
    set_id = BackupPipeline(settings).take_set(SetKind.MANUAL, ["mongo"], offsite=False).set_id
    store = LocalStore(settings.backup_dir)
    assert _run_checks(set_id) == {
        ("mongo/archive", "sha256"): True, ("mongo/archive", "readable"): True, ("mongo/archive", "counts"): True,
        ("mongo/archive", "not_shrunk"): True}

    damage_stored_dump(store, set_id, "mongo", flip=0x5A)
    checks = _run_checks(set_id)
    assert checks[("mongo/archive", "sha256")] is False
    assert checks[("mongo/archive", "readable")] is False
    # It was verified: a later failure marks it corrupt, and nothing uses it any more.
    assert store.read(set_id).databases["mongo"].status == EntryStatus.CORRUPT
    assert _latest(settings, ["mongo"]) is None
    _assert_no_leftovers(settings)


def test_counts_check_catches_a_dump_that_lost_items(settings: Settings) -> None:
    testdata.load_mongo(settings, scale=20)
    pipeline = BackupPipeline(settings, offsite=None)
    set_id = pipeline.take_set(SetKind.MANUAL, ["mongo"]).set_id

    def lose_one(s: BackupSet) -> None:
        s.databases["mongo"].counts["monsters"] += 1

    pipeline.local.update(set_id, lose_one)
    outcomes = {o.name: o.passed for o in pipeline.check(set_id, "mongo")}
    assert outcomes == {"sha256": True, "readable": True, "counts": False}
    assert pipeline.local.read(set_id).databases["mongo"].status == EntryStatus.CORRUPT


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
    store = LocalStore(settings.backup_dir)
    (set_id,) = store.set_ids()
    backup_set = store.read(set_id)
    for db in ENGINE_NAMES:
        entry = backup_set.databases[db]
        assert entry.verified  # the local set is intact and usable
        assert "off-site copy failed" in str(entry.offsite_error)
        assert entry.offsite is None
        assert instance.get_latest_materialization_event(dg.AssetKey([db, "offsite"])) is None
        assert instance.get_latest_materialization_event(dg.AssetKey([db, "archive"])) is not None
    assert _latest(settings, list(ENGINE_NAMES)) == set_id
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
    backup_set = store.read(set_id)
    for db in ENGINE_NAMES:
        entry = backup_set.databases[db]
        assert entry.offsite is not None and entry.offsite.sha256 == entry.sha256 and entry.offsite_error is None
        assert offsite_matches(good, entry)
