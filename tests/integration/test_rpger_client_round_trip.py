"""Acceptance for issue 11: data made the way RPGer's backend makes it survives backup ->
new empty volumes -> preseed, and `verify --deep`, exactly.

Thin over the plain pipeline functions (BackupPipeline.take_set / verify_deep, preseed). "Exactly" is checked through the plain clients, not our
digests: every Chroma collection's configuration (embedding function included), metadata,
schema and records (chromadb); Mongo documents as raw BSON, indexes and options (pymongo);
Redis values, types and absolute expiry times (redis-py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chroma_shapes import differences, read_database
from conftest import make_settings
from readback import mongo_state, redis_state
from restore_support import settings_env

from rpger_ops import migrate, testdata
from rpger_ops.connect import chroma_client
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.pipeline import BackupPipeline
from rpger_ops.preseed import preseed
from rpger_ops.sets import SetKind
from rpger_ops.settings import Settings

SCALE = 12
DIM = 16


def read_all(settings: Settings) -> dict[str, Any]:
    return {"chroma": read_database(chroma_client(settings)), "mongo": mongo_state(settings),
            "redis": redis_state(settings)}


@pytest.mark.parametrize(("who_first", "chroma_style"), [
    ("app", "1.x"),    # RPGer ran on the stack before its migrations (the case)
    ("app", "0.4"),    # ... with the distance as hnsw:space metadata, as its 0.4 client wrote it
    ("stack", "1.x"),  # the stack's migrations first, then RPGer's own start-up
])
def test_client_shaped_data_backup_new_volumes_preseed_identical(
        settings: Settings, tmp_path: Path, fresh_servers: Any, who_first: str, chroma_style: str) -> None:
    if who_first == "stack":
        assert migrate.apply_pending(settings) == [1, 2]
    testdata.load_rpger_client(settings, scale=SCALE, dim=DIM, chroma_style=chroma_style)
    if who_first == "app":  # the stack's gate migrates before the next backup
        assert migrate.apply_pending(settings) == [1, 2]
    source = read_all(settings)
    assert source["chroma"]["spells"]["configuration"].count('"name": "default"') == 1
    assert set(source["mongo"]) >= set(testdata.rpger_client_documents(2)) and source["redis"][0]

    pipeline = BackupPipeline(settings)
    outcome = pipeline.take_set(SetKind.MANUAL, ENGINE_NAMES, offsite=False)
    assert outcome.ok, outcome.problems()
    checks = pipeline.verify_deep(outcome.set_id, ENGINE_NAMES)  # `verify --deep`
    assert {db: c.ok for db, c in checks.items()} == dict.fromkeys(ENGINE_NAMES, True), checks

    mongo, redis_ep, chroma = fresh_servers
    rebuilt = make_settings(tmp_path, mongo, redis_ep, chroma, RPGER_BACKUP_DIR=str(settings.backup_dir),
                            MONGODB_DATABASE=settings.mongodb_database, CHROMA_DATABASE=settings.chroma_database)
    report = preseed(rebuilt)

    assert report.ok, report.lines()  # `rpger-ops preseed` exits 0 exactly when this holds
    assert {d.action for d in report.databases.values()} == {"restored"}, report.lines()
    restored = read_all(rebuilt)
    assert differences(source["chroma"], restored["chroma"]) == []
    assert restored["mongo"] == source["mongo"]
    assert restored["redis"] == source["redis"]
    ttl = restored["redis"][0]
    assert all(ttl[k]["expires_at_ms"] > 0 for k in ttl if k.startswith(b"dashboard:default:"))
    assert ttl[b"game:state:environment"]["expires_at_ms"] == -1
    assert len(ttl[b"memory:conversation"]["value"]) == 100


def test_the_fixture_never_needs_onnxruntime(settings: Settings, tmp_path: Path) -> None:
    """The stock client's default embedding function is recorded, never run: with
    onnxruntime made unimportable, the whole fixture still loads."""
    script = (
        "import sys\n"
        "sys.modules['onnxruntime'] = None  # any import of it now raises ImportError\n"
        "from rpger_ops import testdata\n"
        "from rpger_ops.settings import load_settings\n"
        "report = testdata.load_rpger_client_chroma(load_settings(_env_file=None), scale=3, dim=4)\n"
        "assert sys.modules['onnxruntime'] is None\n"
        "print(sorted(report.chroma_counts))\n")
    result = subprocess.run([sys.executable, "-c", script], env={**settings_env(settings), "PATH": "/usr/bin:/bin"},
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "monsters" in result.stdout
    configs = {c.name: c.configuration_json["embedding_function"] for c in chroma_client(settings).list_collections()}
    assert configs["monsters"] == {"type": "known", "name": "default", "config": {}}
