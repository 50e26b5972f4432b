"""How a restore is proven (digestcheck.check_restored), on the in-memory engine: by the
server's own hash once a deep verification has recorded one proven by digest (MongoDB's
dbHash), else by the full digest; a hash that differs falls back to the digest, which
alone can fail a restore. The real-server side: test_mongo_engine's dbHash tests."""

from __future__ import annotations

import uuid
from pathlib import Path

from rpger_ops.archive import extract_archive
from rpger_ops.blobs import unpack_entry
from rpger_ops.pipeline import BackupPipeline
from rpger_ops.restore import DatabaseRestore, load_database
from rpger_ops.sets import SetKind
from rpger_ops.settings import load_settings
from tests.memory_engine import MemoryEngine, MemoryServer


def _backup(tmp_path: Path, deep: bool) -> tuple[BackupPipeline, str, str]:
    name = f"check-{uuid.uuid4().hex[:6]}"
    MemoryServer.get(name).data = {"a": {str(i): f"v{i}" for i in range(5)}, "b": {"x": "y"}}
    settings = load_settings(_env_file=None, RPGER_BACKUP_DIR=str(tmp_path / "backups"), RPGER_STACK_ID="check")
    pipeline = BackupPipeline(settings, engine_factory=lambda db, s: MemoryEngine(name, db))
    set_id = pipeline.take_set(SetKind.MANUAL, ["mongo"], offsite=False).set_id
    if deep:
        assert pipeline.verify_deep(set_id, ["mongo"])["mongo"].ok
    return pipeline, set_id, name


def _restore(pipeline: BackupPipeline, set_id: str, tmp_path: Path, target: str) -> DatabaseRestore:
    work = tmp_path / f"dump-{target}"
    entry = pipeline.local.read(set_id).databases["mongo"]
    if entry.layout == "blobs":
        unpack_entry(pipeline.local, entry, work, tmp_path / f"blobs-{target}", None, f"set {set_id} mongo")
    else:
        extract_archive(pipeline.local.archive_path(set_id, "mongo"), work)
    return load_database(MemoryEngine(target, "mongo"), "mongo", work, entry, set_id, "local")


def test_deep_verification_records_the_server_hash_and_a_restore_is_proven_by_it(tmp_path: Path) -> None:
    pipeline, set_id, source = _backup(tmp_path, deep=True)
    check = pipeline.local.read(set_id).databases["mongo"].restore_check
    assert check is not None and check.ok and check.digest and check.server_hash
    target = f"{source}-new"
    outcome = _restore(pipeline, set_id, tmp_path, target)
    assert outcome.ok and outcome.check_method == "server hash", outcome
    assert MemoryServer.get(target).data == MemoryServer.get(source).data


def test_without_a_recorded_hash_the_restore_is_proven_by_digest(tmp_path: Path) -> None:
    pipeline, set_id, source = _backup(tmp_path, deep=False)
    outcome = _restore(pipeline, set_id, tmp_path, f"{source}-new")
    assert outcome.ok and outcome.check_method == "digest"


def test_a_server_without_its_own_hash_is_checked_by_digest_and_says_so(tmp_path: Path) -> None:
    pipeline, set_id, source = _backup(tmp_path, deep=True)
    target = f"{source}-new"
    MemoryServer.get(target).has_server_hash = False
    outcome = _restore(pipeline, set_id, tmp_path, target)
    assert outcome.ok and outcome.check_method == "digest"
    assert "this memory server has no hash of its own" in outcome.notes


def test_a_differing_server_hash_falls_back_to_the_digest_which_fails_the_restore(tmp_path: Path) -> None:
    pipeline, set_id, source = _backup(tmp_path, deep=True)
    target = f"{source}-new"
    MemoryServer.get(target).stored_wrong = True
    outcome = _restore(pipeline, set_id, tmp_path, target)
    assert not outcome.ok and outcome.status == "failed" and outcome.check_method == "digest"
    assert any("hash differs" in n for n in outcome.notes) and "digest" in str(outcome.error)
