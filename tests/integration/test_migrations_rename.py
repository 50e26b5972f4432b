"""A field rename over many documents: batched, resumable after SIGKILL, reverted by down.

N is 100,000 on a real MongoDB. FerretDB v1 (SQLite backend) rewrites each
updated document at ~20-70 ms (growing with collection size), so 100k would take
well over an hour there; the FerretDB run uses RENAME_N_FERRETDB documents,
the largest that keeps this test near a minute on the shared 2-core machine.
Override with RPGER_TEST_RENAME_N.
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

RENAME_N_MONGODB = 100_000
RENAME_N_FERRETDB = 1500
LOCK_TTL_S = 3.0
MODULES = ("m0003_notes_text_to_body",)


def rename_n(is_ferret: bool) -> int:
    if os.environ.get("RPGER_TEST_RENAME_N"):
        return int(os.environ["RPGER_TEST_RENAME_N"])
    return RENAME_N_FERRETDB if is_ferret else RENAME_N_MONGODB


def counts(notes) -> tuple[int, int, int]:
    return (notes.count_documents({"text": {"$exists": True}}),
            notes.count_documents({"body": {"$exists": True}}),
            notes.count_documents({"text": {"$exists": True}, "body": {"$exists": True}}))


def settled_counts(notes) -> tuple[int, int, int]:
    """Counts once the server has finished the killed client's last in-flight batch."""
    last = counts(notes)
    for _ in range(100):
        time.sleep(0.3)
        now = counts(notes)
        if now == last:
            return now
        last = now
    raise AssertionError(f"counts never settled: {last}")


def test_rename_is_batched_resumable_after_sigkill_and_reverted_by_down(settings):
    reg = registry(*MODULES)
    assert migrate.apply_pending(settings, target=1, registry=reg) == [1]
    client = mongo_client(settings)
    notes = client[settings.mongodb_database]["notes"]
    try:
        n = rename_n("ferretdbVersion" in client.admin.command("buildInfo"))
        for start in range(0, n, 5000):
            notes.insert_many([{"userId": f"u{i % 50}", "i": i, "text": f"note {i}"}
                               for i in range(start, min(n, start + 5000))], ordered=False)

        # Start the migrator in its own process and SIGKILL it once some batches are done.
        t0 = time.monotonic()
        child = subprocess.Popen([sys.executable, str(HERE / "run_migrator.py"), str(LOCK_TTL_S), *MODULES],
                                 env=child_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            while notes.count_documents({"body": {"$exists": True}}) < min(n // 4, 2 * 200):
                assert child.poll() is None, child.communicate()
                assert time.monotonic() - t0 < 300, "migrator made no progress"
                time.sleep(0.05)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(30)
        killed_after = time.monotonic() - t0
        left, renamed, both = settled_counts(notes)
        assert 0 < renamed < n and left + renamed == n and both == 0
        assert 3 not in {e.version for e in migrate.read_ledger(settings)}  # not recorded: it did not finish

        # Re-run: waits out the dead migrator's lock, then renames only what is left.
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
        assert seen[0] == (0, left) and seen[-1] == (left, left)  # no document renamed twice
        assert counts(notes) == (0, n, 0)
        sample = notes.find_one({"i": n - 1})
        assert sample is not None and sample["body"] == f"note {n - 1}" and "text" not in sample

        t2 = time.monotonic()
        report = migrate.migrate(settings, "down", target=1, registry=reg)
        down_s = time.monotonic() - t2
        assert report.applied == [3]
        assert counts(notes) == (n, 0, 0)
        assert notes.find_one({"i": 0})["text"] == "note 0"
        assert [e.version for e in migrate.read_ledger(settings)] == [1]
        print(f"\nrename N={n}: killed after {killed_after:.1f}s with {renamed} renamed; "
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
