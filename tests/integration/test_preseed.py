"""Preseeding on real servers: new empty volumes are restored, nothing else is touched."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import Endpoint, make_settings
from restore_support import digests, manifest_digests, new_volume, take_set, wipe

from rpger_ops import devservers, testdata
from rpger_ops.connect import mongo_client, redis_client
from rpger_ops.engines import build_engine
from rpger_ops.engines.base import ENGINE_NAMES, StackMarker
from rpger_ops.migrations.registry import default_registry
from rpger_ops.preseed import preseed
from rpger_ops.schema import code_schema_version
from rpger_ops.settings import Settings
from rpger_ops.store import LocalStore
from tests.integration.backup_support import damage_stored_dump, own_blob_id

SCALE = 30


def marker_of(settings: Settings, name: Any) -> StackMarker | None:
    engine = build_engine(name, settings)
    try:
        return engine.read_marker()
    finally:
        engine.close()


def test_round_trip_backup_then_fresh_volumes_then_preseed(settings: Settings, tmp_path: Path,
                                                           fresh_servers: Any) -> None:
    testdata.load_all(settings, scale=SCALE)
    set_id = take_set(settings)
    expected = manifest_digests(settings, set_id)
    assert set(expected) == set(ENGINE_NAMES)

    # A rebuilt host: new empty servers, the same backup directory.
    mongo, redis_ep, chroma = fresh_servers
    rebuilt = make_settings(tmp_path, mongo, redis_ep, chroma,
                            RPGER_BACKUP_DIR=str(settings.backup_dir),
                            MONGODB_DATABASE=settings.mongodb_database,
                            CHROMA_DATABASE=settings.chroma_database)
    report = preseed(rebuilt)

    assert report.ok, report.lines()
    for name in ENGINE_NAMES:
        d = report.databases[name]
        assert (d.state, d.action, d.set_id, d.origin) == ("new", "restored", set_id, "local"), d
        marker = marker_of(rebuilt, name)
        assert marker is not None and marker.stack_id == "test-stack"
        assert marker.schema_version == code_schema_version()
    assert digests(rebuilt) == expected
    r = redis_client(rebuilt)
    try:  # TTLs come back as remaining time of the original absolute expiry
        assert 0 < r.ttl("dashboard:default:user0") <= 3600
        assert 0 < r.pttl("session:abc") <= 7_200_000
        assert r.ttl("game:state:environment") == -1
    finally:
        r.close()

    # Seeded now: a second preseed (the next start) leaves everything alone.
    again = preseed(rebuilt)
    assert {d.action for d in again.databases.values()} == {"skipped"}
    assert digests(rebuilt) == expected


def test_preseed_never_touches_a_database_with_data(settings: Settings) -> None:
    testdata.load_all(settings, scale=20)
    take_set(settings)
    r = redis_client(settings)  # newer data than the set
    r.set("game:state:environment", '{"weather": "snow"}')
    r.close()
    before = digests(settings)
    report = preseed(settings)
    assert report.ok
    assert {n: (d.state, d.action) for n, d in report.databases.items()} == {
        n: ("has_data", "skipped") for n in ENGINE_NAMES}
    assert digests(settings) == before


def test_emptied_on_purpose_is_a_warning_not_a_restore(settings: Settings) -> None:
    testdata.load_all(settings, scale=20)
    take_set(settings)
    for name in ENGINE_NAMES:
        engine = build_engine(name, settings)
        engine.write_marker(StackMarker("test-stack", code_schema_version()))
        engine.close()
    wipe(settings)
    report = preseed(settings)
    assert report.ok  # the app may start; the operator is warned
    for d in report.databases.values():
        assert (d.state, d.action) == ("emptied", "warned")
        assert "emptied on purpose" in d.message
    for name in ENGINE_NAMES:
        engine = build_engine(name, settings)
        assert engine.is_empty()
        engine.close()


def test_local_directory_gone_restores_from_offsite(settings_s3: Settings) -> None:
    testdata.load_all(settings_s3, scale=20)
    set_id = take_set(settings_s3, offsite=True)
    expected = manifest_digests(settings_s3, set_id)
    shutil.rmtree(settings_s3.backup_dir)
    new_volume(settings_s3)
    report = preseed(settings_s3)
    assert report.ok, report.lines()
    assert {(d.action, d.set_id, d.origin) for d in report.databases.values()} == {("restored", set_id, "offsite")}
    assert digests(settings_s3) == expected


def test_corrupt_newest_set_falls_back_to_the_previous(settings: Settings) -> None:
    testdata.load_mongo(settings, scale=20)
    older = take_set(settings, dbs=["mongo"], age_minutes=10)
    older_digest = manifest_digests(settings, older)["mongo"]
    client = mongo_client(settings)  # more data, newer set
    client[settings.mongodb_database]["loot"].insert_many([{"n": i} for i in range(5)])
    client.close()
    newer = take_set(settings, dbs=["mongo"])
    assert newer > older and manifest_digests(settings, newer)["mongo"] != older_digest
    # One flipped byte in what only the newer set holds: the sha256 check must catch it.
    damage_stored_dump(LocalStore(settings.backup_dir), newer, "mongo")
    new_volume(settings, ["mongo"])

    report = preseed(settings, ["mongo"])
    d = report.databases["mongo"]
    assert (d.action, d.set_id, d.origin) == ("restored", older, "local"), d
    assert any(newer in n and "corrupt" in n for n in report.notes), report.notes
    assert digests(settings, ["mongo"])["mongo"] == older_digest
    # The damage is written back: the newer set no longer counts as verified.
    entry = LocalStore(settings.backup_dir).read(newer).databases["mongo"]
    assert entry.status == "corrupt" and "found by a restore" in str(entry.error)


def test_nothing_anywhere_initialises_empty_with_marker(settings_s3: Settings) -> None:
    report = preseed(settings_s3)
    assert report.ok, report.lines()
    for name in ENGINE_NAMES:
        d = report.databases[name]
        assert (d.state, d.action) == ("new", "initialized_empty")
        assert "no backup set anywhere" in d.message
        marker = marker_of(settings_s3, name)
        # The migrations that follow an init move the marker to the code's schema version.
        assert marker is not None and marker.schema_version == code_schema_version()
    # Initialised: the next start never treats it as a new volume again.
    assert {d.action for d in preseed(settings_s3).databases.values()} <= {"skipped", "warned"}


def test_two_preseeds_at_once_restore_once(settings: Settings) -> None:
    testdata.load_all(settings, scale=20)
    set_id = take_set(settings)
    expected = manifest_digests(settings, set_id)
    new_volume(settings)
    barrier = threading.Barrier(2)
    reports: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            reports.append(preseed(settings))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and len(reports) == 2
    for name in ENGINE_NAMES:
        actions = sorted(r.databases[name].action for r in reports)
        assert actions == ["restored", "skipped"], (name, [r.lines() for r in reports])
    assert digests(settings) == expected


def test_not_ready_database_is_left_alone(settings: Settings, tmp_path: Path, mongo_endpoint: Endpoint,
                                          chroma_endpoint: Endpoint) -> None:
    testdata.load_redis(settings, scale=20)
    take_set(settings, dbs=["redis"])
    down = Endpoint("127.0.0.1", devservers.free_port(), None, {"password": "not-the-password-1"})
    unreachable = make_settings(tmp_path, mongo_endpoint, down, chroma_endpoint,
                                RPGER_BACKUP_DIR=str(settings.backup_dir))
    report = preseed(unreachable, ["redis"])
    assert not report.ok and report.not_ready == ["redis"]
    assert report.databases["redis"].action == "skipped"


def test_startup_gate_exit_codes(settings: Settings, tmp_path: Path, mongo_endpoint: Endpoint,
                                 chroma_endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from restore_support import settings_env

    from rpger_ops import cli

    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    testdata.load_redis(settings, scale=20)
    take_set(settings, dbs=["redis"])
    new_volume(settings, ["redis"])
    assert cli.main(["preseed", "--db", "redis", "--timeout", "5"]) == 0
    out = capsys.readouterr().out
    assert "redis: new -> restored" in out

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{devservers.free_port()}/0")
    assert cli.main(["preseed", "--db", "redis", "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert "not ready after 1s: redis" in err and "nothing was changed" in err


def test_migrations_run_per_database_as_each_is_seeded(settings: Settings) -> None:
    # Each database keeps its own ledger: seeding one migrates that one and touches no other
    # (a marker written on a database still waiting would make it look emptied on purpose).
    testdata.load_all(settings, scale=20)
    take_set(settings)
    new_volume(settings)
    first = preseed(settings, ["mongo"])
    assert first.ok and first.databases["mongo"].action == "restored"
    assert first.migrations.databases == ["mongo"] and first.migrations.applied == []  # the set was migrated
    for name in ("redis", "chroma"):
        assert marker_of(settings, name) is None
    rest = preseed(settings, ["redis", "chroma"])
    assert {d.action for d in rest.databases.values()} == {"restored"}
    assert rest.migrations.databases == ["redis", "chroma"] and rest.migrations.error is None
    for name in ENGINE_NAMES:
        marker = marker_of(settings, name)
        assert marker is not None and marker.schema_version == code_schema_version()
        steps = [m.version for m in default_registry() if name in m.databases]  # 0002 has no Redis step
        assert [e.version for e in marker.migrations or ()] == steps


def test_per_database_preseeds_at_once_do_not_fail_each_other(settings: Settings) -> None:
    testdata.load_all(settings, scale=20)
    take_set(settings)
    new_volume(settings)
    reports: dict[str, Any] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run(db: str) -> None:
        try:
            barrier.wait()
            reports[db] = preseed(settings, [db])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(db,)) for db in ENGINE_NAMES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    for db in ENGINE_NAMES:
        assert reports[db].ok, reports[db].lines()
        assert reports[db].databases[db].action == "restored" and reports[db].migrations.error is None


def test_a_failing_migration_after_a_good_restore_is_its_own_failure_and_stays_visible(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from migrations_support import load
    from restore_support import settings_env

    from rpger_ops import cli
    from rpger_ops.migrations import registry

    testdata.load_all(settings, scale=20)
    set_id = take_set(settings)
    expected = manifest_digests(settings, set_id)
    new_volume(settings)
    failing = tmp_path / "m0003_breaks.py"
    failing.write_text('VERSION = 3\nNAME = "breaks"\n\ndef up_chroma(ctx):\n    raise RuntimeError("no space left")\n')
    shipped = list(registry.MIGRATIONS)
    monkeypatch.setattr(registry, "MIGRATIONS", [*shipped, load("m0003_breaks", failing)])
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)

    assert cli.main(["preseed", "--timeout", "5", "--json"]) == 4
    report = json.loads(capsys.readouterr().out)
    assert report["seeded_ok"] and not report["ok"]
    assert {d["action"] for d in report["databases"].values()} == {"restored"}
    assert "no space left" in report["migrations"]["error"]
    assert digests(settings) == expected  # the data is back; only the schema step failed
    # The next start: nothing to seed, but the migration is still pending: the same failure, never 0.
    assert cli.main(["preseed", "--timeout", "5"]) == 4
    captured = capsys.readouterr()
    assert "data in place; schema migration failed" in captured.err and "no space left" in captured.err
    # Fixed: the gate applies it and lets the app start.
    failing.write_text('VERSION = 3\nNAME = "breaks"\n\ndef up_chroma(ctx):\n    return None\n')
    monkeypatch.setattr(registry, "MIGRATIONS", [*shipped, load("m0003_breaks", failing)])
    assert cli.main(["preseed", "--timeout", "5"]) == 0
    assert "migrations applied (mongo, redis, chroma): [3]" in capsys.readouterr().out


def test_corrupt_offsite_copy_falls_back_to_the_previous_offsite_set(settings_s3: Settings) -> None:
    import io

    from rpger_ops.store.s3 import S3Store

    testdata.load_redis(settings_s3, scale=20)
    older = take_set(settings_s3, dbs=["redis"], offsite=True)
    older_digest = manifest_digests(settings_s3, older)["redis"]
    r = redis_client(settings_s3)
    r.set("game:state:environment", '{"weather": "snow"}')
    r.close()
    newer = take_set(settings_s3, dbs=["redis"], offsite=True)
    assert newer > older
    store = S3Store.from_settings(settings_s3)
    junk = b"not the archive"  # a damaged remote object: its sha256 no longer matches the manifest
    key = store.blob_key(own_blob_id(LocalStore(settings_s3.backup_dir), newer, "redis"))
    store.client.put_object(store.bucket, key, io.BytesIO(junk), len(junk))
    shutil.rmtree(settings_s3.backup_dir)
    new_volume(settings_s3, ["redis"])

    report = preseed(settings_s3, ["redis"])
    d = report.databases["redis"]
    assert (d.action, d.set_id, d.origin) == ("restored", older, "offsite"), d
    assert any(newer in n and "corrupt remote copy" in n for n in report.notes), report.notes
    assert digests(settings_s3, ["redis"])["redis"] == older_digest
    # Written back into the off-site manifest: that copy is never picked again.
    assert store.read(newer).databases["redis"].status == "corrupt"
