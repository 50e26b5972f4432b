"""Preseeding: a database found on a new, empty volume is restored from the
newest verified backup set — and nothing else ever is.

Per database, from what the server shows (we cannot see its volume):

    no user data, no stack marker  -> "new"        -> restore (or initialise empty)
    stack marker but no user data  -> "emptied"    -> warn; someone emptied it on purpose
    user data                      -> "has_data"   -> skip
    unreachable / auth refused     -> "not_ready"  -> do nothing (the gate retries)

A data directory that is not mounted looks exactly like a new volume, which is
why the compose volumes are named and mandatory (docs/runbook.md).

Two preseeds racing for one database: each takes the restore lock in the
database itself and re-checks the state under it, so exactly one restores.
Source order is `restore.SetSources.candidates`: newest verified local set,
then the newest off-site set, then older ones. No set anywhere (and every
configured source answered) -> the database is initialised empty with the
marker, and the report says so. Pending migrations follow once no database
of the stack waits any more (`restore.migrate_stack`).

`preseed` is one pass (the Dagster job and sensor); `preseed_gate` is the
startup gate: it waits for the servers and retries the not-ready ones.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from rpger_ops.engines import build_engine
from rpger_ops.engines.base import Engine, EngineError, EngineName, NotReadyError, Progress, no_progress
from rpger_ops.restore import (
    LOCK_WAIT_S,
    Candidate,
    DatabaseRestore,
    MigrationOutcome,
    RefusedError,
    RestoreError,
    SetSources,
    State,
    database_locks,
    lock_owner,
    migrate_stack,
    migration_lines,
    parse_databases,
    probe,
    restore_database,
    write_marker,
)
from rpger_ops.schema import code_schema_version

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
                "seconds": round(self.restore.seconds, 3) if self.restore else 0.0}


@dataclass
class PreseedReport:
    databases: dict[str, DatabasePreseed] = field(default_factory=dict)
    migrations: MigrationOutcome = field(default_factory=MigrationOutcome)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.databases) and all(d.ok for d in self.databases.values()) and not self.migrations.error

    @property
    def not_ready(self) -> list[str]:
        return [n for n, d in self.databases.items() if d.state == "not_ready"]

    def lines(self) -> list[str]:
        out = [f"{d.db}: {d.state} -> {d.action}: {d.message}" for d in self.databases.values()]
        out += migration_lines(self.migrations)
        out += [f"note: {n}" for n in dict.fromkeys(self.notes)]
        return out


def preseed(settings: Settings, dbs: Iterable[str] | None = None, progress: Progress = no_progress,
            lock_wait_s: float = LOCK_WAIT_S, migrate: bool = True) -> PreseedReport:
    """Seed every new, empty database among `dbs` (default: all three), then
    (`migrate`) bring what was seeded up to the code's schema version."""
    names = parse_databases(dbs)
    report = PreseedReport()
    engines = {n: build_engine(n, settings) for n in names}
    sources = SetSources(settings, "auto", progress)
    try:
        new: list[EngineName] = []
        for name, engine in engines.items():
            state, reason = probe(engine)
            if state == "new":
                progress(f"{name}: {reason}", 0, None)
                new.append(name)
            report.databases[name] = _leave_alone(name, state, reason)
        # The databases restore side by side: the servers do the work, not this process.
        with ThreadPoolExecutor(max_workers=max(1, len(new)), thread_name_prefix="preseed") as pool:
            futures = {name: pool.submit(_seed_locked, settings, name, engines[name], sources, progress,
                                         lock_wait_s) for name in new}
        for name, future in futures.items():
            report.databases[name] = future.result()
        if migrate:
            migrate_after(report, settings, progress)
        report.notes += sources.notes
        return report
    finally:
        for e in engines.values():
            e.close()


def migrate_after(report: PreseedReport, settings: Settings, progress: Progress = no_progress) -> None:
    """Pending migrations after a successful seed (see `restore.migrate_stack`)."""
    seeded = any(d.action in ("restored", "initialized_empty") for d in report.databases.values())
    if seeded and report.ok:
        report.migrations = migrate_stack(settings, progress)


def _leave_alone(name: str, state: State, reason: str) -> DatabasePreseed:
    if state == "emptied":
        return DatabasePreseed(name, state, "warned", "WARNING: " + reason)
    return DatabasePreseed(name, state, "skipped", reason)


def _seed_locked(settings: Settings, name: EngineName, engine: Engine, sources: SetSources,
                 progress: Progress, lock_wait_s: float) -> DatabasePreseed:
    """Under the database's lock: re-check, then restore or initialise empty."""
    try:
        with database_locks({name: engine}, lock_owner("preseed"), wait_s=lock_wait_s,
                            on_wait=progress) as keepalive:
            state, reason = probe(engine)
            if state != "new":
                # Another preseed got here first (or the server went away).
                return _leave_alone(name, state, f"{reason} (seen when re-checked under the lock: "
                                    "a concurrent preseed got there first)" if state != "not_ready" else reason)
            return _seed(settings, name, engine, sources, progress, keepalive)
    except NotReadyError as exc:
        return DatabasePreseed(name, "not_ready", "skipped", str(exc))
    except RefusedError as exc:
        return DatabasePreseed(name, "new", "failed", str(exc))
    except (RestoreError, EngineError) as exc:
        return DatabasePreseed(name, "new", "failed", str(exc))


def _seed(settings: Settings, name: EngineName, engine: Engine, sources: SetSources,
          progress: Progress, keepalive: Any) -> DatabasePreseed:
    candidates: list[Candidate] = sources.candidates([name])
    if not candidates:
        if sources.unavailable:
            return DatabasePreseed(name, "new", "failed",
                                   f"cannot tell whether a backup exists ({', '.join(sources.unavailable)} "
                                   f"unavailable); not initialising empty: {'; '.join(sources.notes)}")
        # Version 0: nothing is applied yet; the migrations that follow move it up.
        write_marker(engine, settings, 0)
        return DatabasePreseed(name, "new", "initialized_empty",
                               "no verified backup set anywhere (local or off-site): initialised empty "
                               f"with the stack marker; migrations bring it to schema {code_schema_version()}")
    work = sources.catalog.work_dir(f"preseed-{name}")
    try:
        outcome = restore_database(engine, name, candidates, sources, work, progress, keepalive)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not outcome.ok:
        return DatabasePreseed(name, "new", "failed", outcome.error or "restore failed",
                               outcome.set_id, outcome.origin, outcome)
    write_marker(engine, settings, outcome.schema_version or 0)
    fell_back = f" (fell back: {'; '.join(outcome.notes)})" if outcome.notes else ""
    return DatabasePreseed(name, "new", "restored", outcome.summary() + fell_back,
                           outcome.set_id, outcome.origin, outcome)


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
        step = preseed(settings, pending, progress, migrate=False)
        report.databases.update(step.databases)
        report.notes += step.notes
        pending = step.not_ready
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(2.0)
    migrate_after(report, settings, progress)
    return report


# --- sensor logic (pure; the Dagster sensor in defs/restore.py calls it) ----------

def sensor_step(states: dict[str, State], cursor: dict[str, Any],
                now: datetime | None = None) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """One sensor tick: (db, run_key) requests and the next cursor.

    A "new" episode starts when a database is first seen new; its run key names
    the database and the episode's start, so every tick of the same episode
    asks for the same run (Dagster runs a run key once) and a later new volume
    gets a new run. A not-ready database keeps its episode unchanged."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    nxt: dict[str, Any] = {}
    requests: list[tuple[str, str]] = []
    for db in sorted(set(states) | set(cursor)):
        state = states.get(db)
        episode = cursor.get(db)
        if state == "new":
            episode = episode or stamp
            requests.append((db, f"preseed:{db}:{episode}"))
        elif state in ("has_data", "emptied"):
            episode = None  # the episode is over; the next new volume is a new event
        if episode:
            nxt[db] = episode
    return requests, nxt
