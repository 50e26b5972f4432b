"""Choosing what a restore uses, without servers: the typed set model's rules,
`latest` and the sets passed over, one set for several databases, copies in
two stores with corruption written back, the sensor's run keys, schema and
database-name checks. Stores are the in-memory store of the contract."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rpger_ops.preseed import sensor_step
from rpger_ops.restore import RefusedError, RestoreError, check_schema, parse_databases
from rpger_ops.schema import code_schema_version
from rpger_ops.sets import BackupSet, DatabaseEntry, EntryStatus, SetKind, choose_latest, newest_complete
from rpger_ops.settings import load_settings
from rpger_ops.sources import SetSources, SourceError
from rpger_ops.store import LocalStore
from rpger_ops.store.memory import MemoryStore

A, B, C, D = "20261126T030000Z", "20261127T030000Z", "20261128T030000Z", "20261128T040000Z"
ALL = ("mongo", "redis", "chroma")


def make(set_id: str, statuses: dict[str, str] | None = None, kind: str = "scheduled",
         planned: tuple[str, ...] = ALL) -> BackupSet:
    statuses = statuses if statuses is not None else dict.fromkeys(planned, "verified")
    return BackupSet(set_id=set_id, kind=SetKind(kind), planned=list(planned),  # type: ignore[arg-type]
                     databases={db: DatabaseEntry(status=EntryStatus(st), error="boom" if st == "failed" else None)
                                for db, st in statuses.items()})


# --- the model --------------------------------------------------------------------------------

def test_a_format_1_manifest_still_reads() -> None:
    """Exactly what rpger-ops 0.1 wrote (catalog.py + backup.py)."""
    v1 = {"created_at": "2026-11-28T03:00:01+00:00", "format": 1, "kind": "manual", "schema_version": 1,
          "set_id": C, "stack_id": "rpger", "tool_version": "0.1.0",
          "databases": {
              "mongo": {"status": "verified", "source_digest": "ab" * 32, "sha256": "cd" * 32, "dump_dir": None,
                        "counts": {"monsters": 3}, "archive": "mongo.tar.zst", "archive_bytes": 10,
                        "checks": {"sha256": {"passed": True, "description": "ok"}}, "offsite": None,
                        "error": None, "extra": {"digest": "ab" * 32}, "notes": []},
              "redis": {"status": "failed", "error": "redis dump failed: refused", "checks": None,
                        "archive": None, "counts": None}}}
    s = BackupSet.model_validate(v1)
    assert s.format == 2 and s.kind == SetKind.MANUAL and s.planned == ["mongo", "redis"]
    assert s.databases["mongo"].digest == "ab" * 32 and s.databases["mongo"].schema_version == 1
    assert s.schema_version_of("redis") == 1 and s.code_schema_version == 1
    assert not s.complete and s.usable_for(["mongo"]) and not s.usable_for(["redis"])
    assert s.problems(["redis"]) == ["redis failed: redis dump failed: refused"]
    again = BackupSet.model_validate_json(s.model_dump_json())
    assert again == s  # and what this code writes reads back the same


def test_complete_usable_and_unfinished() -> None:
    assert make(C).complete and make(C).usable_for(ALL)
    partial = make(C, {"mongo": "verified", "redis": "failed", "chroma": "verified"})
    assert not partial.complete and partial.usable_for(["mongo", "chroma"]) and not partial.usable_for(ALL)
    running = make(C, {"mongo": "verified"})  # redis and chroma not started yet
    assert running.unfinished and not running.complete
    safety = make(C, kind="safety")
    assert safety.complete and not safety.usable_for(ALL) and safety.usable_for(ALL, explicit=True)


def test_latest_is_the_newest_usable_set_and_names_what_it_passed_over() -> None:
    sets = [make(A), make(B, {"mongo": "verified", "redis": "failed", "chroma": "verified"}),
            make(C, {"redis": "verified"}, kind="safety", planned=("redis",)),
            make(D, {"mongo": "verified", "redis": "verified", "chroma": "corrupt"})]
    whole = choose_latest(sets, ALL)
    assert whole.set_id == A
    assert [(p.set_id, p.reasons) for p in whole.passed_over] == [
        (D, ("chroma corrupt",)),
        (C, ("safety set (only restored by explicit id)", "does not hold mongo", "does not hold chroma")),
        (B, ("redis failed: boom",))]
    assert choose_latest(sets, ["mongo"]).set_id == D  # one database: the newest set where it is verified
    assert choose_latest(sets, ["redis"]).set_id == D  # never the safety set
    assert newest_complete(sets) is not None and newest_complete(sets).set_id == A  # type: ignore[union-attr]
    assert choose_latest([], ALL).set_id is None


# --- sources over two stores ---------------------------------------------------------------------

class Stack:
    """A local and an off-site MemoryStore-backed view, as SetSources sees them."""

    def __init__(self, tmp_path: Path) -> None:
        self.settings = load_settings(_env_file=None, RPGER_BACKUP_DIR=str(tmp_path / "b"))
        self.local = LocalStore(self.settings.backup_dir)
        self.offsite = MemoryStore("offsite")
        self.tmp = tmp_path

    def add(self, store: Any, s: BackupSet) -> BackupSet:
        for db, entry in s.databases.items():
            if entry.status in (EntryStatus.VERIFIED, EntryStatus.CORRUPT):
                data = _archive(self.tmp, f"{s.set_id}-{db}")
                entry.sha256 = hashlib.sha256(data.read_bytes()).hexdigest()
                store.put_archive(s.set_id, db, data, entry.sha256)
        store.write(s)
        return s

    def sources(self, source: str = "auto") -> SetSources:
        return SetSources(self.settings, source, local=self.local, offsite=self.offsite)  # type: ignore[arg-type]


def _archive(tmp: Path, label: str) -> Path:
    """A real tar.zst holding one file, so extraction works."""
    from rpger_ops.archive import create_archive

    out = tmp / f"{label}.tar.zst"
    if out.exists():  # the same set in two stores holds the same bytes
        return out
    src = tmp / f"src-{label}"
    src.mkdir(parents=True)
    (src / "data.txt").write_text(label)
    create_archive(src, out)
    return out


def test_several_databases_are_fetched_from_one_set_only(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add(stack.local, make(A))
    stack.add(stack.local, make(B, {"mongo": "verified", "redis": "failed", "chroma": "verified"}))
    sources = stack.sources()
    candidates = sources.select("latest", ALL)
    assert [c.set_id for c in candidates] == [A]
    assert [p.set_id for p in sources.passed_over] == [B]
    fetched = sources.fetch_first(candidates, list(ALL), tmp_path / "work")  # type: ignore[arg-type]
    assert fetched.set_id == A and set(fetched.origins.values()) == {"local"}
    assert all((p / "data.txt").read_text() == f"{A}-{db}" for db, p in fetched.dumps.items())


def test_a_damaged_local_copy_falls_back_to_the_offsite_copy_of_the_same_set(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add(stack.local, make(B))
    stack.add(stack.offsite, make(B))
    stack.add(stack.local, make(A))
    archive = stack.local.archive_path(B, "redis")
    archive.write_bytes(archive.read_bytes()[:-3] + b"xyz")
    sources = stack.sources()
    fetched = sources.fetch_first(sources.select("latest", ALL), list(ALL), tmp_path / "work")  # type: ignore[arg-type]
    assert fetched.set_id == B  # the same set, not an older one
    assert fetched.origins == {"mongo": "local", "redis": "offsite", "chroma": "local"}
    # Written back: the local copy is corrupt from now on; the off-site copy is untouched.
    assert stack.local.read(B).databases["redis"].status == EntryStatus.CORRUPT
    assert stack.offsite.read(B).databases["redis"].verified


def test_when_no_copy_of_a_set_works_the_next_set_serves_all_databases(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add(stack.local, make(A))
    stack.add(stack.local, make(B))
    stack.add(stack.offsite, make(B))
    stack.offsite.corrupt(B, "chroma")
    archive = stack.local.archive_path(B, "chroma")
    archive.write_bytes(b"garbage")
    sources = stack.sources()
    fetched = sources.fetch_first(sources.select("latest", ALL), list(ALL), tmp_path / "work")  # type: ignore[arg-type]
    assert fetched.set_id == A and set(fetched.origins.values()) == {"local"}
    assert any(B in n and "chroma archive unusable" in n for n in sources.notes), sources.notes
    assert stack.offsite.read(B).databases["chroma"].status == EntryStatus.CORRUPT
    # Written back in both stores: asked for by id, the set now says why it cannot serve.
    with pytest.raises(RestoreError, match="local: chroma corrupt: found by a restore.*offsite: chroma corrupt"):
        stack.sources().select(B, ALL)


def test_an_explicit_set_never_falls_back_to_another(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add(stack.local, make(A))
    stack.add(stack.local, make(B))
    stack.local.archive_path(B, "mongo").write_bytes(b"garbage")
    sources = stack.sources()
    with pytest.raises(SourceError, match=f"tried: {B}"):
        sources.fetch_first(sources.select(B, ALL), list(ALL), tmp_path / "work")  # type: ignore[arg-type]


def test_explicit_ids_allow_safety_sets_and_explain_refusals(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    stack.add(stack.local, make(C, {"redis": "verified"}, kind="safety", planned=("redis",)))
    sources = stack.sources()
    assert sources.select("latest", ["redis"]) == []
    assert [c.set_id for c in sources.select(C, ["redis"])] == [C]
    with pytest.raises(RestoreError, match="does not hold mongo"):
        sources.select(C, ["mongo"])
    with pytest.raises(RestoreError, match="not found"):
        sources.select(A, ["mongo"])
    with pytest.raises(RestoreError, match="not a backup set id"):
        sources.select("yesterday", ["mongo"])


def test_an_unreachable_store_is_reported_not_taken_for_empty(tmp_path: Path) -> None:
    from rpger_ops.store import StoreError

    stack = Stack(tmp_path)
    stack.add(stack.offsite, make(A))
    stack.offsite.fail_next = StoreError("offsite down")
    sources = stack.sources()
    assert sources.select("latest", ALL) == []
    assert sources.unavailable == ["offsite store"] and "offsite down" in sources.notes[0]


# --- schema, names, the sensor -------------------------------------------------------------------

def test_set_newer_than_code_is_refused(tmp_path: Path) -> None:
    from rpger_ops.sources import CandidateSet, Fetched

    code = code_schema_version()
    entries = {"mongo": DatabaseEntry(status=EntryStatus.VERIFIED, schema_version=code)}
    fetched = Fetched(CandidateSet(C, []), {}, {}, entries)  # type: ignore[arg-type]
    assert check_schema(fetched) == {"mongo": code}
    entries["mongo"].schema_version = code + 1
    with pytest.raises(RefusedError, match=f"newer schema \\(mongo at {code + 1}\\) than this code's {code}"):
        check_schema(fetched)


def test_parse_databases_defaults_to_all_in_stack_order() -> None:
    assert parse_databases(None) == ["mongo", "redis", "chroma"]
    assert parse_databases(["chroma", "mongo", "chroma"]) == ["mongo", "chroma"]
    with pytest.raises(RestoreError, match="unknown database"):
        parse_databases(["postgres"])


def test_sensor_one_run_key_per_new_volume_event() -> None:
    t0 = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    states: dict[str, Any] = {"mongo": "new", "redis": "has_data", "chroma": "has_data"}
    reqs, cursor = sensor_step(states, {}, now=t0)
    assert [dbs for dbs, _ in reqs] == [["mongo"]]
    key = reqs[0][1]
    # Next tick, same episode: the same run key (Dagster runs it once).
    reqs2, cursor2 = sensor_step(states, cursor, now=t0 + timedelta(seconds=30))
    assert reqs2 == [(["mongo"], key)]
    # Not ready in between does not end the episode.
    reqs3, cursor3 = sensor_step({**states, "mongo": "not_ready"}, cursor2, now=t0 + timedelta(minutes=1))
    assert reqs3 == [] and cursor3 == cursor2
    # Seeded: episode over. A later new volume is a new event with a new key.
    _, cursor4 = sensor_step({**states, "mongo": "has_data"}, cursor3, now=t0 + timedelta(minutes=2))
    assert cursor4 == {}
    reqs5, _ = sensor_step(states, cursor4, now=t0 + timedelta(days=3))
    assert reqs5[0][0] == ["mongo"] and reqs5[0][1] != key


def test_sensor_emptied_volume_is_no_event() -> None:
    reqs, cursor = sensor_step({"mongo": "emptied", "redis": "has_data", "chroma": "not_ready"}, {})
    assert reqs == [] and cursor == {}


def test_sensor_seeds_databases_found_new_together_in_one_run() -> None:
    """One run for the databases of one event, so they come from one set; a later
    event gets its own run, and the first run's key stays stable while it works."""
    t0 = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    reqs, cursor = sensor_step({"mongo": "new", "redis": "new", "chroma": "new"}, {}, now=t0)
    assert len(reqs) == 1 and reqs[0][0] == ["mongo", "redis", "chroma"]
    key = reqs[0][1]
    # Redis is done, the others are still being seeded: the same run, not a second one.
    reqs2, cursor2 = sensor_step({"mongo": "new", "redis": "has_data", "chroma": "new"}, cursor,
                                 now=t0 + timedelta(seconds=30))
    assert reqs2 == [(["mongo", "chroma"], key)]
    assert json.dumps(cursor2, sort_keys=True)  # the cursor stays JSON
