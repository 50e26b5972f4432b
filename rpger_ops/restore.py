"""Restore backup sets into the databases — never over data.

`restore_set` is the manual restore (job, CLI): it refuses a non-empty target
unless `force`, and with `force` it first takes a safety backup set of the
current contents. Preseeding (`preseed.py`) shares the pieces here:
`load_database` (load one fetched dump, compare digests, remove a partial
load) and the database lock (`RESTORE_LOCK`, held through `locks.LockHolder`).

Order of a restore: choose the set (`sources.SetSources.select`), take the
locks, refuse occupied targets (unless force), fetch and check every
archive of the one set, and only then take the safety backup, wipe and
load. So a damaged or missing archive never leaves a database wiped.

After loading a database: its digest compared with the backup's (a mismatch
is a failure), then its stack marker (the schema version and migrations
ledger the set recorded), then the pending migration steps of the restored
databases only. A migration failure after a good restore is reported as such
("data in place; schema migration failed"), with its own exit code.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rpger_ops.dbstate import describe_contents, write_marker
from rpger_ops.digestcheck import check_restored
from rpger_ops.engines import build_engine
from rpger_ops.engines.base import (
    ENGINE_NAMES,
    Engine,
    EngineError,
    EngineName,
    Progress,
    no_progress,
    safe_error,
)
from rpger_ops.locks import LockBusy, LockHolder, LockLost
from rpger_ops.schema import code_schema_version
from rpger_ops.sets import DatabaseEntry, SetKind
from rpger_ops.sources import Fetched, RefusedError, RestoreError, SetSources, Source, SourceError

if TYPE_CHECKING:
    from rpger_ops.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["RESTORE_LOCK", "DatabaseRestore", "MigrationOutcome", "RefusedError", "RestoreError", "RestoreReport",
           "SourceError", "check_schema", "load_database", "migrate_databases", "parse_databases", "restore_set"]

# One lock per database guards every restore into it (preseed and manual), so a
# preseed and a manual restore never load the same database at once.
RESTORE_LOCK = "preseed"
LOCK_WAIT_S = 10 * 60.0


@dataclass
class DatabaseRestore:
    db: str
    status: Literal["restored", "failed"]
    set_id: str | None = None
    origin: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # loading into the server
    digest_ok: bool = False
    schema_version: int | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    digest_seconds: float = 0.0  # comparing the result with the manifest
    check_method: str = "digest"  # how: "digest" (read back) or "server hash" (see digestcheck)

    @property
    def ok(self) -> bool:
        return self.status == "restored" and self.digest_ok

    def summary(self) -> str:
        if self.ok:
            total = sum(self.counts.values())
            return (f"{self.db}: restored {total} items in {len(self.counts)} namespaces from "
                    f"{self.set_id} ({self.origin}) in {self.seconds:.1f}s; matches the backup by "
                    f"{self.check_method} ({self.digest_seconds:.1f}s)")
        return f"{self.db}: FAILED: {self.error}"

    def as_dict(self) -> dict[str, Any]:
        return {"db": self.db, "ok": self.ok, "status": self.status, "set_id": self.set_id, "origin": self.origin,
                "counts": self.counts, "seconds": round(self.seconds, 3), "check_seconds": round(self.digest_seconds, 3),
                "check_method": self.check_method, "schema_version": self.schema_version,
                "notes": self.notes, "error": self.error}


def check_schema(fetched: Fetched) -> dict[EngineName, int]:
    """Each database's schema version in the set; refuses data written by newer code."""
    code = code_schema_version()
    versions = {db: (e.schema_version or 0) for db, e in fetched.entries.items()}
    newer = {db: v for db, v in versions.items() if v > code}
    if newer:
        what = ", ".join(f"{db} at {v}" for db, v in newer.items())
        raise RefusedError(f"backup set {fetched.set_id} holds data of a newer schema ({what}) than this code's "
                           f"{code}; upgrade rpger-ops before restoring it")
    return versions


def load_database(engine: Engine, db: EngineName, dump_dir: Path, entry: DatabaseEntry, set_id: str,
                  origin: str, progress: Progress = no_progress, lock: LockHolder | None = None) -> DatabaseRestore:
    """Load one fetched dump into `engine` (empty: the caller checked) and compare the
    result with the backup's digest. A load that fails half-way is wiped again, so
    the database never looks seeded with partial data."""
    started = time.monotonic()
    try:
        if lock is not None:
            lock.check()
        result = engine.restore(dump_dir, progress)
        loaded = time.monotonic()
        check = check_restored(engine, dump_dir, result, entry)
        if lock is not None:
            lock.check()
    except Exception as exc:  # whatever broke (LockLost too), partial data must not look like a seeded database
        _wipe_quietly(engine, db)
        return DatabaseRestore(db, "failed", set_id, origin,
                               error=f"loading {set_id} ({origin}) failed: {safe_error(exc)}; "
                                     "the partial load was removed")
    outcome = DatabaseRestore(db, "restored", set_id, origin, dict(result.counts), loaded - started, check.ok,
                              entry.schema_version or 0, list(result.notes) + check.notes,
                              digest_seconds=time.monotonic() - loaded, check_method=check.method)
    if not check.ok:
        outcome.status = "failed"
        outcome.error = (f"restored {set_id} ({origin}), but its digest {str(check.digest)[:12]}… differs from the "
                         f"backup's {str(entry.digest)[:12]}…; the data was left in place for inspection")
    progress(outcome.summary(), 1, 1)
    return outcome


def _wipe_quietly(engine: Engine, db: str) -> None:
    try:
        engine.wipe()
    except EngineError as exc:
        log.error("%s: could not remove a partial restore: %s", db, exc)


def partial_warning(restored: Iterable[str], set_id: str, others: Iterable[str]) -> str | None:
    """Databases restored from a set while others keep newer data: say so."""
    others = [o for o in others if o not in set(restored)]
    if not others:
        return None
    return (f"WARNING: only {', '.join(restored)} came from set {set_id}; {', '.join(others)} kept "
            f"{'its' if len(others) == 1 else 'their'} current data, which is newer than that set: "
            "references between the databases may not line up")


# --- migrations after a restore ------------------------------------------------------

@dataclass
class MigrationOutcome:
    databases: list[str] = field(default_factory=list)  # the databases migrated (the run's scope)
    applied: list[int] | None = None  # None: not run
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def migrate_databases(settings: Settings, dbs: Iterable[EngineName], progress: Progress = no_progress,
                      lock_wait_s: float = LOCK_WAIT_S) -> MigrationOutcome:
    """Apply the pending migration steps of `dbs` only (a restore of Redis alone touches
    nothing else). Another run migrating the same database is waited for, not failed on."""
    from rpger_ops import migrate

    scope = [db for db in ENGINE_NAMES if db in set(dbs)]
    outcome = MigrationOutcome(databases=list(scope))
    if not scope:
        return outcome
    progress(f"applying pending migrations of {', '.join(scope)}", 0, None)
    try:
        report = migrate.migrate(settings, "up", progress=progress, lock_wait_s=lock_wait_s, dbs=scope)
    except Exception as exc:  # the data is in place; the schema step is what failed
        outcome.error = f"schema migration failed: {exc if isinstance(exc, migrate.MigrateError) else safe_error(exc)}"
        return outcome
    outcome.applied, outcome.notes = report.applied, report.notes
    progress(f"migrations applied to {', '.join(scope)}: {report.applied or 'none pending'}", 1, 1)
    return outcome


def migration_lines(outcome: MigrationOutcome) -> list[str]:
    where = ", ".join(outcome.databases)
    if outcome.error:
        return [f"FAILED: data in place; {outcome.error} ({where}); fix the cause and run "
                "`rpger-ops migrate up` (or this command again)"]
    lines = [f"migrations applied ({where}): {outcome.applied or 'none pending'}"] if outcome.applied is not None else []
    return lines + [f"note: {n}" for n in outcome.notes]


# --- manual restore -------------------------------------------------------------------

@dataclass
class RestoreReport:
    set_id: str | None
    databases: dict[str, DatabaseRestore] = field(default_factory=dict)
    safety_set_id: str | None = None
    migrations: MigrationOutcome = field(default_factory=MigrationOutcome)
    notes: list[str] = field(default_factory=list)

    @property
    def restored(self) -> bool:
        """Every database's data came back (whatever its migrations did)."""
        return bool(self.databases) and all(d.ok for d in self.databases.values())

    @property
    def ok(self) -> bool:
        return self.restored and not self.migrations.error

    def lines(self) -> list[str]:
        out = [d.summary() for d in self.databases.values()]
        if self.safety_set_id:
            out.append(f"safety backup of the replaced contents: set {self.safety_set_id} "
                       f"(restore it with: rpger-ops restore --set {self.safety_set_id} --force)")
        out += migration_lines(self.migrations)
        out += [n if n.startswith("WARNING") else f"note: {n}" for n in dict.fromkeys(self.notes)]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "restored": self.restored, "set_id": self.set_id, "safety_set_id": self.safety_set_id,
                "databases": {n: d.as_dict() for n, d in self.databases.items()},
                "migrations": vars(self.migrations), "notes": list(dict.fromkeys(self.notes))}


def parse_databases(dbs: Iterable[str] | None) -> list[EngineName]:
    """Validate database names; None or empty means all three, in stack order."""
    chosen = list(dict.fromkeys(dbs or ()))
    bad = [d for d in chosen if d not in ENGINE_NAMES]
    if bad:
        raise RestoreError(f"unknown database(s) {', '.join(bad)}; expected {', '.join(ENGINE_NAMES)}")
    return [n for n in ENGINE_NAMES if not chosen or n in chosen]


def restore_set(settings: Settings, set_ref: str = "latest", dbs: Iterable[str] | None = None,
                force: bool = False, source: Source = "auto", progress: Progress = no_progress,
                lock_wait_s: float = LOCK_WAIT_S) -> RestoreReport:
    """Restore one set (`latest` or an id) into the chosen databases, all from that set.

    Raises RefusedError without touching anything when a target holds data and
    `force` is False, when the set's schema is newer than the code, or when
    another restore holds a database's lock. Loading failures are reported per
    database in the RestoreReport (`ok` False)."""
    names = parse_databases(dbs)
    sources = SetSources(settings, source, progress)
    candidates = sources.select(set_ref, names)
    if not candidates:
        raise RestoreError(sources.nothing_found(names) + "".join(f"; {p.describe()}" for p in sources.passed_over))
    report = RestoreReport(candidates[0].set_id)
    report.notes += [p.describe() for p in sources.passed_over]
    engines = {n: build_engine(n, settings) for n in names}
    try:
        with LockHolder(engines, RESTORE_LOCK, "restore", wait_s=lock_wait_s, on_wait=progress,
                        busy_message="another restore or preseed holds the lock of "
                                     f"{', '.join(names)}; gave up after {lock_wait_s:.0f}s") as lock:
            _restore_locked(settings, engines, candidates, sources, report, force, progress, lock)
    except LockBusy as exc:
        raise RefusedError(str(exc)) from None
    except (EngineError, LockLost) as exc:  # unreachable, or a wipe failed: say where things stand
        kept = f" (the replaced data is in safety set {report.safety_set_id})" if report.safety_set_id else ""
        raise RestoreError(f"restore of set {report.set_id} stopped: {exc}{kept}") from None
    finally:
        for e in engines.values():
            e.close()
    if report.restored:
        report.migrations = migrate_databases(settings, names, progress)
        others = [n for n in ENGINE_NAMES if n not in names]
        warning = partial_warning(names, str(report.set_id), _holding_data(settings, others))
        if warning:
            report.notes.append(warning)
    report.notes += sources.notes
    return report


def _restore_locked(settings: Settings, engines: Mapping[EngineName, Engine], candidates: list[Any],
                    sources: SetSources, report: RestoreReport, force: bool, progress: Progress,
                    lock: LockHolder) -> None:
    occupied = {n: describe_contents(e) for n, e in engines.items() if not e.is_empty()}
    if occupied and not force:
        held = "; ".join(f"{n} holds {what}" for n, what in occupied.items())
        raise RefusedError(f"refusing to restore over existing data: {held}. "
                           "Use --force (run config force: true) to take a safety backup and replace it.")
    work = sources.local.work_dir("restore")
    try:
        try:  # every archive of the one set, checked, before anything is replaced
            fetched = sources.fetch_first(candidates, list(engines), work)
        except SourceError as exc:
            raise RestoreError(str(exc)) from None
        report.set_id = fetched.set_id
        check_schema(fetched)
        if occupied:
            report.safety_set_id = _safety_backup(settings, list(occupied), progress)
            for n in occupied:
                progress(f"{n}: removing current data (safety set {report.safety_set_id})", 0, None)
                engines[n].wipe()
        for n, engine in engines.items():
            outcome = load_database(engine, n, fetched.dumps[n], fetched.entries[n], fetched.set_id,
                                    fetched.origins[n], progress, lock)
            report.databases[n] = outcome
            if outcome.ok:
                write_marker(engine, settings, outcome.schema_version or 0, fetched.entries[n].migrations)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _holding_data(settings: Settings, dbs: Iterable[EngineName]) -> list[EngineName]:
    out: list[EngineName] = []
    for db in dbs:
        engine = build_engine(db, settings)
        try:
            if not engine.is_empty():
                out.append(db)
        except EngineError:
            continue
        finally:
            engine.close()
    return out


def _safety_backup(settings: Settings, dbs: list[EngineName], progress: Progress) -> str:
    from rpger_ops.pipeline import BackupPipeline

    progress(f"taking a safety backup of {', '.join(dbs)} before replacing it", 0, None)
    try:
        outcome = BackupPipeline(settings).take_set(SetKind.SAFETY, dbs, offsite=False, progress=progress)
    except Exception as exc:
        raise RestoreError(f"safety backup failed, nothing was replaced: {safe_error(exc)}") from None
    if not outcome.complete:
        raise RestoreError(f"safety backup {outcome.set_id} failed, nothing was replaced: "
                           + " | ".join(outcome.problems()))
    return outcome.set_id
