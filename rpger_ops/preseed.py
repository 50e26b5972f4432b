"""Preseeding: databases found on new, empty volumes are restored from the
newest usable backup set — and nothing else ever is.

What each database's state means is `dbstate.probe`'s: only "new" ones (no
data, no stack marker) are seeded; "emptied" ones get a warning; databases
holding data and unreachable ones are left alone.

All databases seeded in one pass come from ONE set: the newest scheduled or
manual set in which every one of them is verified (`sources.SetSources`).
Newer sets that cannot serve (a database failed, a safety set, only some of
the databases) are passed over and named in the report. When only some
databases are new, the others keep their (newer) data and the report warns.
No set anywhere that holds the database (and every configured store
answered) -> the database is initialised empty with the marker. Sets exist
but none is usable -> failure: an operator decides (restore a set by id, or
start empty with `rpger-ops migrate up`).

Two preseeds racing: each takes the restore lock of its databases (in the
databases themselves) and re-checks the state under it, so exactly one
restores each database.

`preseed` is one pass (the Dagster asset and the sensor's runs);
`preseed_gate` is the startup gate: it waits for the servers and retries the
not-ready ones.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from rpger_ops.dbstate import State, probe, write_marker
from rpger_ops.engines import build_engine
from rpger_ops.engines.base import (
    ENGINE_NAMES,
    Engine,
    EngineError,
    EngineName,
    NotReadyError,
    Progress,
    no_progress,
)
from rpger_ops.locks import LockBusy, LockHolder, LockLost
from rpger_ops.restore import (
    LOCK_WAIT_S,
    RESTORE_LOCK,
    DatabaseRestore,
    MigrationOutcome,
    check_schema,
    load_database,
    migrate_databases,
    migration_lines,
    parse_databases,
    partial_warning,
)
from rpger_ops.schema import code_schema_version
from rpger_ops.sources import RestoreError, SetSources, SourceError

if TYPE_CHECKING:
    from rpger_ops.settings import Settings

Action = Literal["restored", "initialized_empty", "skipped", "warned", "failed"]
# Outcomes after which the app may start.
GOOD_ACTIONS: frozenset[str] = frozenset({"restored", "initialized_empty", "skipped", "warned"})


@dataclass
class DatabasePreseed:
    db: str
    state: State
    action: Action
    message: str
    set_id: str | None = None
    origin: str | None = None
    restore: DatabaseRestore | None = None

    @property
    def ok(self) -> bool:
        return self.action in GOOD_ACTIONS and self.state != "not_ready"

    def as_dict(self) -> dict[str, Any]:
        return {"db": self.db, "state": self.state, "action": self.action, "message": self.message,
                "set_id": self.set_id, "origin": self.origin,
                "counts": self.restore.counts if self.restore else {},
                "seconds": round(self.restore.seconds, 3) if self.restore else 0.0,
                "schema_version": self.restore.schema_version if self.restore else None,
                "notes": self.restore.notes if self.restore else []}


@dataclass
class PreseedReport:
    databases: dict[str, DatabasePreseed] = field(default_factory=dict)
    migrations: MigrationOutcome = field(default_factory=MigrationOutcome)
    notes: list[str] = field(default_factory=list)

    @property
    def seeded_ok(self) -> bool:
        """Every database is fine as far as its data goes (whatever its migrations did)."""
        return bool(self.databases) and all(d.ok for d in self.databases.values())

    @property
    def ok(self) -> bool:
        return self.seeded_ok and not self.migrations.error

    @property
    def not_ready(self) -> list[str]:
        return [n for n, d in self.databases.items() if d.state == "not_ready"]

    @property
    def seeded(self) -> list[str]:
        return [n for n, d in self.databases.items() if d.action in ("restored", "initialized_empty")]

    def lines(self) -> list[str]:
        out = [f"{d.db}: {d.state} -> {d.action}: {d.message}" for d in self.databases.values()]
        out += migration_lines(self.migrations)
        out += [n if n.startswith("WARNING") else f"note: {n}" for n in dict.fromkeys(self.notes)]
        return out

    @property
    def ready(self) -> list[str]:
        """Databases whose data is in place (seeded now, held data, emptied on purpose)."""
        return [n for n, d in self.databases.items() if d.ok and d.state != "not_ready"]

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "seeded_ok": self.seeded_ok,
                "databases": {n: d.as_dict() for n, d in self.databases.items()},
                "migrations": vars(self.migrations), "notes": list(dict.fromkeys(self.notes))}


Migrate = Literal["seeded", "ready", "none"]


def preseed(settings: Settings, dbs: Iterable[str] | None = None, progress: Progress = no_progress,
            lock_wait_s: float = LOCK_WAIT_S, migrate: Migrate = "seeded") -> PreseedReport:
    """Seed every new, empty database among `dbs` (default: all three) from one set,
    then bring databases up to the code's schema: `seeded` the ones seeded now
    (the sensor's runs), `ready` every one whose data is in place (the startup
    gate: the app never starts on a pending migration), `none` nothing."""
    names = parse_databases(dbs)
    report = PreseedReport()
    engines = {n: build_engine(n, settings) for n in names}
    try:
        new: list[EngineName] = []
        for name, engine in engines.items():
            state, reason = probe(engine)
            if state == "new":
                progress(f"{name}: {reason}", 0, None)
                new.append(name)
            report.databases[name] = _leave_alone(name, state, reason)
        if new:
            _seed_locked(settings, {n: engines[n] for n in new}, report, progress, lock_wait_s)
        migrate_after(report, settings, progress, migrate)
        return report
    finally:
        for e in engines.values():
            e.close()


def migrate_after(report: PreseedReport, settings: Settings, progress: Progress = no_progress,
                  which: Migrate = "seeded") -> None:
    """Pending migration steps of the seeded (or all ready) databases, each database on
    its own (`restore.migrate_databases`); nothing while a seed failed."""
    dbs = {"seeded": report.seeded, "ready": report.ready, "none": []}[which]
    if dbs and report.seeded_ok:
        report.migrations = migrate_databases(settings, dbs, progress)  # type: ignore[arg-type]


def _leave_alone(name: str, state: State, reason: str) -> DatabasePreseed:
    if state == "emptied":
        return DatabasePreseed(name, state, "warned", "WARNING: " + reason)
    return DatabasePreseed(name, state, "skipped", reason)


def _seed_locked(settings: Settings, engines: dict[EngineName, Engine], report: PreseedReport,
                 progress: Progress, lock_wait_s: float) -> None:
    """Under the databases' locks: re-check, then restore (one set) or initialise empty."""
    try:
        with LockHolder(engines, RESTORE_LOCK, "preseed", wait_s=lock_wait_s, on_wait=progress) as lock:
            still_new: dict[EngineName, Engine] = {}
            for name, engine in engines.items():
                state, reason = probe(engine)
                if state == "new":
                    still_new[name] = engine
                elif state == "not_ready":
                    report.databases[name] = DatabasePreseed(name, state, "skipped", reason)
                else:  # another preseed got here first
                    report.databases[name] = _leave_alone(
                        name, state, f"{reason} (seen when re-checked under the lock: a concurrent preseed "
                                     "got there first)")
            if still_new:
                _seed(settings, still_new, report, progress, lock)
    except NotReadyError as exc:
        for db in _unsettled(report, engines):
            report.databases[db] = DatabasePreseed(db, "not_ready", "skipped", str(exc))
    except (LockBusy, LockLost, RestoreError, EngineError) as exc:
        for db in _unsettled(report, engines):
            report.databases[db] = DatabasePreseed(db, "new", "failed", str(exc))


def _unsettled(report: PreseedReport, names: Iterable[str]) -> list[str]:
    """New databases the seeding has not decided about yet (still the placeholder)."""
    return [n for n in names if report.databases[n].state == "new" and report.databases[n].action == "skipped"]


def _seed(settings: Settings, engines: dict[EngineName, Engine], report: PreseedReport, progress: Progress,
          lock: LockHolder) -> None:
    names = list(engines)
    sources = SetSources(settings, "auto", progress)
    candidates = sources.select("latest", names)
    report.notes += [p.describe() for p in sources.passed_over]
    if not candidates:
        _no_set(settings, engines, report, sources)
        report.notes += sources.notes
        return
    work = sources.local.work_dir("preseed")
    try:
        try:
            fetched = sources.fetch_first(candidates, names, work)
        except SourceError as exc:
            raise RestoreError(str(exc)) from None
        check_schema(fetched)
        # The databases load side by side: the servers do the work, not this process.
        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="preseed") as pool:
            futures = {n: pool.submit(load_database, engines[n], n, fetched.dumps[n], fetched.entries[n],
                                      fetched.set_id, fetched.origins[n], progress, lock) for n in names}
        for name, future in futures.items():
            outcome = future.result()
            if outcome.ok:
                write_marker(engines[name], settings, outcome.schema_version or 0, fetched.entries[name].migrations)
                report.databases[name] = DatabasePreseed(name, "new", "restored", outcome.summary(),
                                                         outcome.set_id, outcome.origin, outcome)
            else:
                report.databases[name] = DatabasePreseed(name, "new", "failed", outcome.error or "restore failed",
                                                         outcome.set_id, outcome.origin, outcome)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.notes += sources.notes
    restored = [n for n in names if report.databases[n].action == "restored"]
    holding = [n for n in ENGINE_NAMES if n not in names and n in report.databases
               and report.databases[n].state == "has_data"]
    warning = partial_warning(restored, fetched.set_id, holding) if restored else None
    if warning:
        report.notes.append(warning)


def _no_set(settings: Settings, engines: dict[EngineName, Engine], report: PreseedReport,
            sources: SetSources) -> None:
    names = list(engines)
    if sources.unavailable:
        message = (f"cannot tell whether a backup exists ({', '.join(sources.unavailable)} unavailable); "
                   f"not initialising empty: {'; '.join(sources.notes)}")
        for name in names:
            report.databases[name] = DatabasePreseed(name, "new", "failed", message)
        return
    for name, engine in engines.items():
        holders = [c.set_id for c in sources.candidates() if any(cp.backup_set.entry(name) for cp in c.copies)]
        if holders:
            report.databases[name] = DatabasePreseed(
                name, "new", "failed",
                f"backup sets hold {name} ({', '.join(holders[:3])}{', …' if len(holders) > 3 else ''}) but none "
                "can restore it (see the passed-over notes); not initialising empty over a history. Restore a set "
                "by id (rpger-ops restore --set ID), or start empty on purpose with `rpger-ops migrate up`")
            continue
        # Version 0: nothing is applied yet; the migrations that follow move it up.
        write_marker(engine, settings, 0, [])
        report.databases[name] = DatabasePreseed(
            name, "new", "initialized_empty", "no backup set anywhere (local or off-site): initialised empty "
            f"with the stack marker; migrations bring it to schema {code_schema_version()}")


def wait_until_reachable(settings: Settings, dbs: Iterable[str] | None, timeout_s: float,
                         progress: Progress = no_progress, interval_s: float = 2.0) -> dict[str, str]:
    """Ping until every database answers or `timeout_s` passes; returns the
    databases still unreachable with their last error (empty when all are up)."""
    names = parse_databases(dbs)
    deadline = time.monotonic() + timeout_s
    down: dict[str, str] = {}
    while True:
        down = {}
        for name in names:
            engine = build_engine(name, settings)
            try:
                engine.ping()
            except EngineError as exc:
                down[name] = str(exc)
            finally:
                engine.close()
        if not down or time.monotonic() >= deadline:
            return down
        progress(f"waiting for {', '.join(down)}", 0, None)
        time.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))


def preseed_gate(settings: Settings, dbs: Iterable[str] | None = None, timeout_s: float = 300.0,
                 progress: Progress = no_progress) -> PreseedReport:
    """The startup gate: wait for the databases, preseed, retry the not-ready
    ones until `timeout_s`. `report.ok` tells whether the app may start."""
    names = parse_databases(dbs)
    deadline = time.monotonic() + timeout_s
    wait_until_reachable(settings, names, timeout_s, progress)
    report = PreseedReport()
    pending: list[str] = list(names)
    while True:
        step = preseed(settings, pending, progress, migrate="none")
        report.databases.update(step.databases)
        report.notes += step.notes
        pending = step.not_ready
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(2.0)
    # The app starts only on migrated databases: a migration pending anywhere is run (or fails) here.
    migrate_after(report, settings, progress, "ready")
    return report


# --- sensor logic (pure; the Dagster sensor in defs/live.py calls it) ----------

def sensor_step(states: dict[str, State], cursor: dict[str, Any],
                now: datetime | None = None) -> tuple[list[tuple[list[str], str]], dict[str, Any]]:
    """One sensor tick: ([dbs], run_key) requests and the next cursor.

    A "new" episode starts when a database is first seen new. Databases whose
    episodes start in the same tick are seeded by one run (from one set); the
    run key names the episode's start, so every later tick of the same
    episode asks for the same run (Dagster runs a run key once) and a later
    new volume gets a new run. A not-ready database keeps its episode."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    nxt: dict[str, Any] = {}
    groups: dict[str, list[str]] = {}
    for db in sorted(set(states) | set(cursor)):
        state = states.get(db)
        episode = cursor.get(db)
        if state == "new":
            episode = episode or stamp
            groups.setdefault(episode, []).append(db)
        elif state in ("has_data", "emptied"):
            episode = None  # the episode is over; the next new volume is a new event
        if episode:
            nxt[db] = episode
    requests = [(sorted(dbs, key=ENGINE_NAMES.index), f"preseed:{episode}") for episode, dbs in sorted(groups.items())]
    return requests, nxt
