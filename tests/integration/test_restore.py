"""Manual restore on real servers: never over data without force; force keeps a safety set."""

from __future__ import annotations

import shutil

import pytest
from restore_support import digests, manifest_digests, take_set, wipe

from rpger_ops import testdata
from rpger_ops.connect import redis_client
from rpger_ops.engines import build_engine
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.restore import RefusedError, RestoreError, restore_set
from rpger_ops.schema import code_schema_version
from rpger_ops.sets import BackupSet
from rpger_ops.settings import Settings
from rpger_ops.store import LocalStore


def test_restore_refuses_a_non_empty_target_without_force(settings: Settings) -> None:
    testdata.load_all(settings, scale=20)
    take_set(settings)
    wipe(settings, ["redis"])  # one empty target is not enough: mongo and chroma hold data
    before = digests(settings)
    with pytest.raises(RefusedError) as refused:
        restore_set(settings, "latest")
    message = str(refused.value)
    assert "mongo holds" in message and "chroma holds" in message and "redis holds" not in message
    assert "campaigns" in message and "--force" in message
    assert digests(settings) == before  # nothing was touched, not even the empty one


def test_force_takes_a_safety_set_then_replaces(settings: Settings) -> None:
    testdata.load_all(settings, scale=20)
    set_id = take_set(settings, age_minutes=5)
    expected = manifest_digests(settings, set_id)
    r = redis_client(settings)  # changes after the backup
    r.set("game:state:environment", '{"weather": "snow"}')
    r.set("cache:new", "1", px=60_000)
    r.close()
    current = digests(settings)
    assert current["redis"] != expected["redis"]

    report = restore_set(settings, set_id, force=True)

    assert report.ok, report.lines()
    assert digests(settings) == expected
    assert report.safety_set_id and report.safety_set_id != set_id
    safety = LocalStore(settings.backup_dir).read(report.safety_set_id)
    assert safety.kind == "safety" and safety.complete
    # The safety set holds exactly what was replaced.
    assert {db: e.digest for db, e in safety.databases.items()} == current


def test_restore_one_database_into_an_empty_target_needs_no_force(settings: Settings) -> None:
    testdata.load_all(settings, scale=20)
    set_id = take_set(settings)
    wipe(settings, ["chroma"])
    others = digests(settings, ["mongo", "redis"])
    report = restore_set(settings, "latest", ["chroma"])
    assert report.ok and report.safety_set_id is None and list(report.databases) == ["chroma"]
    assert digests(settings, ["chroma"]) == {"chroma": manifest_digests(settings, set_id)["chroma"]}
    assert digests(settings, ["mongo", "redis"]) == others
    engine = build_engine("chroma", settings)
    marker = engine.read_marker()
    engine.close()
    assert marker is not None and marker.stack_id == "test-stack"


def test_set_with_a_newer_schema_is_refused(settings: Settings) -> None:
    testdata.load_redis(settings, scale=20)
    set_id = take_set(settings, dbs=["redis"])
    def newer(s: BackupSet) -> None:
        s.databases["redis"].schema_version = code_schema_version() + 1

    LocalStore(settings.backup_dir).update(set_id, newer)
    wipe(settings, ["redis"])
    with pytest.raises(RefusedError, match="newer schema"):
        restore_set(settings, set_id, ["redis"])
    engine = build_engine("redis", settings)
    assert engine.is_empty()
    engine.close()


def test_restore_a_chosen_set_from_offsite(settings_s3: Settings) -> None:
    testdata.load_all(settings_s3, scale=20)
    set_id = take_set(settings_s3, offsite=True)
    expected = manifest_digests(settings_s3, set_id)
    shutil.rmtree(settings_s3.backup_dir)
    wipe(settings_s3)
    report = restore_set(settings_s3, set_id, source="offsite")
    assert report.ok, report.lines()
    assert {d.origin for d in report.databases.values()} == {"offsite"}
    assert digests(settings_s3) == expected
    assert not LocalStore(settings_s3.backup_dir).set_ids()  # the download was private, not a local set


def test_unknown_set_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(RestoreError, match="20200101T000000Z not found"):
        restore_set(settings, "20200101T000000Z", list(ENGINE_NAMES))
    with pytest.raises(RestoreError, match="not a backup set id"):
        restore_set(settings, "yesterday")
