"""A field rename over many documents: batched, resumable after SIGKILL, reverted by down.

Both strategies of `helpers.rename_field` run here:
- `copy` (what `auto` picks on FerretDB): 100,000 documents.
- `in_place` (what `auto` picks on MongoDB): 100,000 documents on a real MongoDB.
  FerretDB v1 (SQLite backend) rewrites each updated document at 5-70 ms,
  growing with collection size (3,000 documents: ~100 s for the whole test), so
  on FerretDB this case uses IN_PLACE_N_FERRETDB documents, the largest that
  keeps it near a minute on the shared 2-core machine.
Override N with RPGER_TEST_RENAME_N.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from migrations_support import HERE, child_env, registry

from rpger_ops import migrate
from rpger_ops.connect import mongo_client
from rpger_ops.migrations.helpers import staging_name

FULL_N = 100_000
IN_PLACE_N_FERRETDB = 1_500
LOCK_TTL_S = 3.0
MODULES = ("m0003_notes_text_to_body",)
BATCH = 200  # the test migration's batch size


def rename_n(strategy: str, is_ferret: bool) -> int:
    if os.environ.get("RPGER_TEST_RENAME_N"):
        return int(os.environ["RPGER_TEST_RENAME_N"])
    return IN_PLACE_N_FERRETDB if strategy == "in_place" and is_ferret else FULL_N


def counts(notes) -> tuple[int, int, int]:
    """(with text, with body, with both) in one pass (FerretDB scans for each count)."""
    text = body = both = 0
    for doc in notes.find({}, {"_id": 0, "text": 1, "body": 1}, batch_size=10_000):
        text += "text" in doc
        body += "body" in doc
        both += "text" in doc and "body" in doc
    return text, body, both


def settled(read):  # type: ignore[no-untyped-def]
    """A reading once the server has finished the killed client's last in-flight batch."""
    last = read()
    for _ in range(100):
        time.sleep(0.3)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError(f"never settled: {last}")


@pytest.mark.parametrize("strategy", ["in_place", "copy"])
def test_rename_is_batched_resumable_after_sigkill_and_reverted_by_down(settings, monkeypatch, strategy):
    monkeypatch.setenv("RPGER_TEST_RENAME_STRATEGY", strategy)
    reg = registry(*MODULES)
    assert migrate.apply_pending(settings, target=1, registry=reg) == [1]
    client = mongo_client(settings)
    db = client[settings.mongodb_database]
    notes, staging = db["notes"], db[staging_name("notes")]
    try:
        n = rename_n(strategy, "ferretdbVersion" in client.admin.command("buildInfo"))
        for start in range(0, n, 5000):
            notes.insert_many([{"userId": f"u{i % 50}", "i": i, "text": f"note {i}"}
                               for i in range(start, min(n, start + 5000))], ordered=False)
        # in_place: renamed documents in the collection; copy: documents copied into staging.
        if strategy == "in_place":
            def work_done() -> int:
                return notes.count_documents({"body": {"$exists": True}})
        else:
            def work_done() -> int:
                return staging.count_documents({})

        # Start the migrator in its own process and SIGKILL it once some batches are done.
        t0 = time.monotonic()
        child = subprocess.Popen([sys.executable, str(HERE / "run_migrator.py"), str(LOCK_TTL_S), *MODULES],
                                 env=child_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            while work_done() < min(n // 4, 2 * BATCH if strategy == "in_place" else n // 4):
                assert child.poll() is None, child.communicate()
                assert time.monotonic() - t0 < 300, "migrator made no progress"
                time.sleep(0.05)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(30)
        killed_after = time.monotonic() - t0
        if strategy == "in_place":
            left, renamed, both = settled(lambda: counts(notes))
            assert 0 < renamed < n and left + renamed == n and both == 0
        else:
            copied = settled(work_done)
            assert 0 < copied < n
            assert counts(notes) == (n, 0, 0)  # the source is untouched until the swap
            left = n - copied
        assert 3 not in {e.version for e in migrate.read_ledger(settings)}  # not recorded: it did not finish

        # Re-run: waits out the dead migrator's lock, then does only what is left.
        seen: list[tuple[int, int | None]] = []

        def progress(message: str, done: int, total: int | None) -> None:
            if message.startswith("notes: rename text -> body"):
                seen.append((done, total))

        t1 = time.monotonic()
        deadline = t1 + LOCK_TTL_S + 30
        while True:
            try:
                applied = migrate.apply_pending(settings, registry=reg, progress=progress)
                break
            except migrate.LockHeldError as exc:
                assert "another migrator is running" in str(exc)
                assert time.monotonic() < deadline, "the killed migrator's lock never expired"
                time.sleep(0.5)
        resumed_s = time.monotonic() - t1
        assert applied == [3]
        assert seen[0] == (0, left) and seen[-1] == (left, left)  # nothing done twice
        assert counts(notes) == (0, n, 0)
        sample = notes.find_one({"i": n - 1})
        assert sample is not None and sample["body"] == f"note {n - 1}" and "text" not in sample
        assert {"userId_1", "userId_1_tags_1"} <= {ix["name"] for ix in notes.list_indexes()}
        assert staging_name("notes") not in db.list_collection_names()

        t2 = time.monotonic()
        report = migrate.migrate(settings, "down", target=1, registry=reg)
        down_s = time.monotonic() - t2
        assert report.applied == [3]
        assert counts(notes) == (n, 0, 0)
        assert notes.find_one({"i": 0})["text"] == "note 0"
        assert [e.version for e in migrate.read_ledger(settings)] == [1]
        print(f"\nrename {strategy} N={n}: killed after {killed_after:.1f}s with {n - left} done; "
              f"resume ({left} docs) {resumed_s:.1f}s; down ({n} docs) {down_s:.1f}s")
    finally:
        client.close()


@pytest.mark.parametrize("batch", [1, 7])
def test_rename_helper_counts_each_document_once(settings, batch):
    from rpger_ops.migrations.base import MigrationContext
    from rpger_ops.migrations.helpers import rename_field

    ctx = MigrationContext(settings=settings)
    try:
        coll = ctx.mongo["things"]
        coll.insert_many([{"a": i} for i in range(20)] + [{"other": 1}])
        assert rename_field(ctx, "things", "a", "b", batch_size=batch) == 20
        assert rename_field(ctx, "things", "a", "b", batch_size=batch) == 0  # re-run: nothing left
        assert sorted(d["b"] for d in coll.find({"b": {"$exists": True}})) == list(range(20))
    finally:
        ctx.close()
