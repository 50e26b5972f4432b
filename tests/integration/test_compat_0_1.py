"""Today's code against what rpger-ops 0.1 left behind, on the real servers: a backup set
written by 0.1 (tests/fixtures/sets-0.1) lists, verifies deep and preseeds; and the
stack's own state (markers, ledgers, locks) stays out of the app's namespaces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from restore_support import digests, settings_env, take_set

from rpger_ops import cli, testdata
from rpger_ops.archive import extract_archive
from rpger_ops.connect import chroma_client, mongo_client, redis_client
from rpger_ops.engines import build_engine
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.engines.redis import RedisEngine
from rpger_ops.settings import Settings

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sets-0.1"
SET_ID = "20261201T210634Z"


def _cli(monkeypatch: pytest.MonkeyPatch, settings: Settings, cwd: Path, *argv: str) -> int:
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(cwd)
    return cli.main(list(argv))


def assert_app_namespaces_hold_no_stack_state(settings: Settings) -> None:
    client = mongo_client(settings)
    try:
        names = client[settings.mongodb_database].list_collection_names()
    finally:
        client.close()
    assert not [n for n in names if n.startswith("_rpger")], names  # RPGer's status route lists them all
    r = redis_client(settings, db=0)
    try:
        assert not list(r.scan_iter(match="_rpger:*")), "db0 (the app's DBSIZE and KEYS) holds stack keys"
    finally:
        r.close()
    collections = [c.name for c in chroma_client(settings).list_collections()]
    assert not [n for n in collections if n.startswith("rpger__")], collections


def test_a_set_written_by_0_1_lists_verifies_and_preseeds(settings: Settings, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(FIXTURE / SET_ID, settings.backup_dir / "sets" / SET_ID)
    expected = {db: e["source_digest"] for db, e in
                json.loads((FIXTURE / SET_ID / "manifest.json").read_text())["databases"].items()}

    assert _cli(monkeypatch, settings, tmp_path, "sets", "--json") == 0
    (row,) = json.loads(capsys.readouterr().out)["sets"]
    assert row["set_id"] == SET_ID and row["kind"] == "scheduled"
    assert row["local"]["complete"] and row["local"]["schema_versions"] == {"chroma": 1, "mongo": 1, "redis": 1}
    assert _cli(monkeypatch, settings, tmp_path, "verify", "--set", SET_ID, "--deep") == 0
    capsys.readouterr()

    # The test's databases are new, empty volumes: the startup gate seeds them from the 0.1 set.
    assert _cli(monkeypatch, settings, tmp_path, "preseed", "--json", "--timeout", "10") == 0
    report = json.loads(capsys.readouterr().out)
    assert {n: (d["action"], d["set_id"]) for n, d in report["databases"].items()} == {
        n: ("restored", SET_ID) for n in ENGINE_NAMES}
    # The 0.1 ledger moved into the markers (its collection dropped), the schema is current.
    assert any("ledger moved into its stack marker" in n for n in report["migrations"]["notes"])
    for name in ENGINE_NAMES:
        engine = build_engine(name, settings)
        marker = engine.read_marker()
        engine.close()
        expected_ledger = [1] if name == "redis" else [1, 2]  # 0002 has no Redis step
        assert marker is not None and [e.version for e in marker.migrations or ()] == expected_ledger, name
    after = digests(settings)
    assert after["chroma"] == expected["chroma"]  # the same digest algorithm as 0.1
    assert after["mongo"] != expected["mongo"]  # exactly the dropped _rpger_migrations collection
    # Redis digests changed algorithm (version 2): the archive itself is the reference.
    extract_archive(FIXTURE / SET_ID / "redis.tar.zst", tmp_path / "redis-dump")
    assert after["redis"] == RedisEngine.digest_dump(tmp_path / "redis-dump") != expected["redis"]
    assert any("digest of the archive recomputed" in n for n in report["databases"]["redis"]["notes"])
    assert_app_namespaces_hold_no_stack_state(settings)


def test_stack_state_stays_out_of_the_app_namespaces(settings: Settings) -> None:
    testdata.load_all(settings, scale=10)
    take_set(settings)  # migrates first, and takes its locks while it works
    for name in ENGINE_NAMES:
        engine = build_engine(name, settings)
        try:
            assert engine.acquire_lock("restore", "someone", 60)
            assert engine.read_marker() is not None
        finally:
            engine.close()
    assert_app_namespaces_hold_no_stack_state(settings)
