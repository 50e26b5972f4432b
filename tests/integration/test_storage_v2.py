"""Content-addressed sets on the real servers: thirty daily sets cost about one,
restores from any of them are exact (before and after retention swept the
middle of the history), and with age recipients set nothing in either store is
readable without the identity."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson
import pytest

from rpger_ops import migrate, testdata
from rpger_ops.blobs import dump_files
from rpger_ops.connect import chroma_client
from rpger_ops.crypto import generate_identity
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.monitoring import storage_report
from rpger_ops.pipeline import BackupPipeline
from rpger_ops.restore import RestoreError, restore_set
from rpger_ops.retention import Policy, prune
from rpger_ops.sets import SetKind, new_set_id
from rpger_ops.settings import Settings
from rpger_ops.store import LocalStore
from rpger_ops.store.s3 import S3Store
from tests.integration.chroma_shapes import read_database
from tests.integration.readback import mongo_state, redis_state
from tests.integration.restore_support import wipe

SCALE = 20
DAYS = 30


def state(settings: Settings) -> dict[str, Any]:
    """Everything the three databases hold, read back through the plain clients."""
    client = chroma_client(settings)
    return {"mongo": mongo_state(settings), "redis": redis_state(settings), "chroma": read_database(client)}


def restore_exactly(settings: Settings, set_id: str, expected: dict[str, Any]) -> None:
    wipe(settings)
    report = restore_set(settings, set_id, list(ENGINE_NAMES))
    assert report.ok, report.lines()
    assert state(settings) == expected


def test_thirty_daily_sets_cost_about_one_and_restore_exactly(settings: Settings) -> None:
    testdata.load_rpger_client(settings, scale=SCALE)
    migrate.apply_pending(settings)  # a live stack is migrated: restores then change nothing
    pipeline = BackupPipeline(settings, offsite=None)
    local = LocalStore(settings.backup_dir)
    # Day 1 is the last day of a month, days 2..30 the month after: monthly buckets keep 1 and 30.
    first = datetime(2026, 10, 31, 3, 0, tzinfo=UTC)
    ids, states, full = [], {}, 0
    for day in range(DAYS):
        if day:
            changed = testdata.change_a_day(settings, day)
            assert changed.mongo_docs and changed.redis_keys
        set_id = new_set_id(first + timedelta(days=day))
        outcome = pipeline.take_set(SetKind.SCHEDULED, offsite=False, set_id=set_id)
        assert outcome.complete, outcome.problems()
        ids.append(set_id)
        if day in (0, DAYS - 1):
            states[set_id] = state(settings)
        if day == 0:
            full = storage_report(local).stored_bytes
            assert full > 0
    report = storage_report(local)
    assert report.sets == DAYS and report.logical_bytes >= DAYS * full * 0.95
    # Reference collections and their embeddings never changed: thirty sets cost about one.
    assert report.stored_bytes <= 1.5 * full, (report, full)
    newest = local.read(ids[-1])
    assert newest.databases["chroma"].new_bytes == 0  # nothing in Chroma changed: no new bytes at all
    assert 0 < int(newest.databases["mongo"].new_bytes or 0) < newest.databases["mongo"].stored_bytes / 2

    restore_exactly(settings, ids[-1], states[ids[-1]])
    restore_exactly(settings, ids[0], states[ids[0]])

    # Retention removes sets 2..29 and sweeps the blobs only they held.
    decision = prune(local, lambda kind: Policy(keep_last=1, keep_monthly=2), "local",
                     blob_lock=lambda: local.blob_lock(exclusive=True), blob_grace=timedelta(0))
    assert sorted(decision.deleted) == ids[1:-1]
    assert decision.sweep is not None and decision.sweep.deleted > 0 and not decision.sweep.skipped
    after = storage_report(local)
    assert after.sets == 2 and after.stored_bytes < report.stored_bytes
    referenced = local.read(ids[0]).blob_ids | local.read(ids[-1]).blob_ids
    assert {b.id for b in local.list_blobs()} == referenced  # exactly what the kept sets reference
    for set_id in (ids[-1], ids[0]):
        assert all(o.passed for db in ENGINE_NAMES for o in pipeline.check(set_id, db))
        restore_exactly(settings, set_id, states[set_id])


def test_an_interrupted_sweep_loses_nothing(settings: Settings) -> None:
    testdata.load_redis(settings, scale=20)
    testdata.load_mongo(settings, scale=20)
    pipeline = BackupPipeline(settings, offsite=None)
    local = LocalStore(settings.backup_dir)
    older = pipeline.take_set(SetKind.MANUAL, ["mongo", "redis"], offsite=False).set_id
    testdata.change_a_day(settings, 1)
    newer = pipeline.take_set(SetKind.MANUAL, ["mongo", "redis"], offsite=False,
                              set_id=new_set_id(datetime.now(UTC) + timedelta(minutes=1))).set_id
    keep = local.read(newer).blob_ids

    class Interrupted(Exception):
        pass

    calls = []

    def delete_then_die(blob_id: str) -> None:
        calls.append(blob_id)
        if len(calls) > 1:
            raise Interrupted
        LocalStore.delete_blob(local, blob_id)

    local.delete(older)
    local.delete_blob = delete_then_die  # type: ignore[method-assign]
    with pytest.raises(Interrupted):
        prune(local, lambda kind: Policy(keep_last=1), "local", blob_lock=lambda: local.blob_lock(exclusive=True),
              blob_grace=timedelta(0))
    assert calls and not set(calls) & keep
    del local.delete_blob
    assert all(o.passed for db in ("mongo", "redis") for o in pipeline.check(newer, db))
    decision = prune(local, lambda kind: Policy(keep_last=1), "local", blob_lock=lambda: local.blob_lock(exclusive=True),
                     blob_grace=timedelta(0))  # the next run finishes the job
    assert decision.sweep is not None and {b.id for b in local.list_blobs()} == keep


def _plaintext_needles(settings: Settings) -> list[bytes]:
    """Strings RPGer's data holds, and the magic bytes of the dump formats."""
    docs = testdata.rpger_client_documents(SCALE)
    user = docs["users"][1]
    needles = [user["email"].encode(), user["username"].encode(), b"Phandalin", b"Aric 3",
               b"REDIS0", b"PAR1", b'"collectionName"', b"\x28\xb5\x2f\xfd"]  # zstd frames: compressed plaintext
    # A BSON string element as the dump holds it.
    needles.append(bson.encode({"email": user["email"]})[4:-1])
    return needles


def _all_bytes(settings: Settings) -> dict[str, bytes]:
    out = {}
    for path in settings.backup_dir.rglob("*"):
        if path.is_file() and "keys" not in path.parts and not path.name.startswith("."):
            out[str(path.relative_to(settings.backup_dir))] = path.read_bytes()
    store = S3Store.from_settings(settings)
    for obj in store.client.list_objects(store.bucket, recursive=True):
        response = store.client.get_object(store.bucket, str(obj.object_name))
        try:
            out["s3:" + str(obj.object_name)] = response.read()
        finally:
            response.close()
            response.release_conn()
    return out


def test_encrypted_sets_hold_no_plaintext_and_restore_only_with_the_identity(
        settings_s3: Settings, tmp_path: Path) -> None:
    identity, recipient = generate_identity()
    other_identity, _ = generate_identity()
    (tmp_path / "recipients.txt").write_text(f"# backups\n{recipient}\n")
    (tmp_path / "identity.txt").write_text(identity + "\n")
    (tmp_path / "wrong.txt").write_text(other_identity + "\n")
    host = settings_s3.model_copy(update={"age_recipients_file": tmp_path / "recipients.txt"})
    testdata.load_rpger_client(host, scale=SCALE)
    migrate.apply_pending(host)
    expected = state(host)

    outcome = BackupPipeline(host).take_set(SetKind.MANUAL)
    assert outcome.ok, outcome.problems()
    backup_set = outcome.backup_set
    for db in ENGINE_NAMES:
        entry = backup_set.databases[db]
        assert entry.encrypted and entry.digest is None and entry.sealed and entry.blob_key_id
        # Checked without any key: the ciphertext by hash, the plaintext checks made before encryption.
        assert {o.name: o.passed for o in BackupPipeline(host, offsite=None).check(outcome.set_id, db)} == {
            "sha256": True, "readable": True, "counts": True}

    stored = _all_bytes(host)
    assert any(k.startswith("s3:") and "/blobs/" in k for k in stored)
    assert any(k.endswith("manifest.json") for k in stored)
    for needle in _plaintext_needles(host):
        leaks = [name for name, data in stored.items() if needle in data]
        assert not leaks, (needle, leaks)

    # No blob address is the sha256 of a dump file (the keyed hash hides them).
    with_identity = host.model_copy(update={"age_identity_file": tmp_path / "identity.txt"})
    scratch = tmp_path / "dump"
    from rpger_ops.blobs import unpack_entry

    local = LocalStore(host.backup_dir)
    from rpger_ops.crypto import load_identities

    unpack_entry(local, backup_set.databases["mongo"], scratch, tmp_path / "w",
                 load_identities(tmp_path / "identity.txt"), "mongo")
    plain_hashes = {hashlib.sha256((scratch / rel).read_bytes()).hexdigest() for rel in dump_files(scratch)}
    assert plain_hashes and not plain_hashes & backup_set.blob_ids
    assert not any(h.encode() in data for h in plain_hashes for data in stored.values())

    # Without the identity, or with the wrong one: a clear error, and nothing loaded.
    wipe(host)
    for settings, why in ((host, "RPGER_AGE_IDENTITY_FILE"),
                          (host.model_copy(update={"age_identity_file": tmp_path / "wrong.txt"}), "cannot decrypt")):
        with pytest.raises(RestoreError, match=why):
            restore_set(settings, outcome.set_id, list(ENGINE_NAMES))
        assert state(host) == {"mongo": {}, "redis": {}, "chroma": {}}

    report = restore_set(with_identity, outcome.set_id, list(ENGINE_NAMES), source="offsite")
    assert report.ok
    assert state(host) == expected
    deep = BackupPipeline(with_identity, offsite=None).verify_deep(outcome.set_id, list(ENGINE_NAMES))
    assert all(c.ok for c in deep.values()), deep
    assert local.read(outcome.set_id).databases["mongo"].restore_check.digest is None  # type: ignore[union-attr]
    # A check with the identity reads the plaintext; one without it afterwards still stands on it.
    for settings in (with_identity, host):
        outcomes = BackupPipeline(settings, offsite=None).check(outcome.set_id, "chroma")
        assert all(o.passed for o in outcomes), outcomes
    assert local.read(outcome.set_id).databases["chroma"].verified


def test_a_damaged_shared_blob_is_found_and_written_again_by_the_next_set(settings: Settings) -> None:
    testdata.load_mongo(settings, scale=20)
    pipeline = BackupPipeline(settings, offsite=None)
    local = LocalStore(settings.backup_dir)
    first = pipeline.take_set(SetKind.MANUAL, ["mongo"], offsite=False).set_id
    entry = local.read(first).databases["mongo"]
    ref = max(entry.files.values(), key=lambda r: r.stored_bytes)
    path = local.blob_file(ref.id)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    second = pipeline.take_set(SetKind.MANUAL, ["mongo"], offsite=False,
                               set_id=new_set_id(datetime.now(UTC) + timedelta(minutes=1)))
    assert second.complete
    assert any("was damaged; written again" in n for n in second.backup_set.databases["mongo"].notes)
    # The blob is whole again: both sets check out.
    for set_id in (first, second.set_id):
        assert all(o.passed for o in pipeline.check(set_id, "mongo"))


def test_s3_blob_io_round_trips(settings_s3: Settings, tmp_path: Path) -> None:
    store = S3Store.from_settings(settings_s3)
    body = b"x" * 1000
    blob_id = hashlib.sha256(b"id").hexdigest()
    (tmp_path / "b").write_bytes(body)
    sha = hashlib.sha256(body).hexdigest()
    assert store.put_blob(blob_id, tmp_path / "b", sha).written
    assert not store.put_blob(blob_id, tmp_path / "b", sha).written
    info = store.blob_info(blob_id)
    assert info is not None and info.stored_sha256 == sha and info.stored_bytes == 1000
    assert [b.id for b in store.list_blobs()] == [blob_id]
    assert store.fetch_blob(blob_id, sha, tmp_path / "w").read_bytes() == body
    store.client.put_object(store.bucket, store.blob_key(blob_id), io.BytesIO(b"junk"), 4)
    from rpger_ops.store import CorruptArchive

    with pytest.raises(CorruptArchive):
        store.fetch_blob(blob_id, sha, tmp_path / "w")
    store.delete_blob(blob_id)
    assert store.blob_info(blob_id) is None and store.list_blobs() == []
