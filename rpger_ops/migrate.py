"""The migration runner: status, plan, up, down — per database.

Each database keeps its own migrations ledger in its stack marker (one
entry per step applied to it: version, name, checksum, applied_at,
duration), and its schema version is the highest version applied to it. So
the runner can be scoped to some databases (`dbs`): restoring or preseeding
only Redis runs only Redis's pending steps, and a backup records each
database's version as its data has it.

Safety rules, checked under the locks before anything runs (for the
databases in scope):
- one migrator per database at a time: a `migrate` lock in each database,
  kept alive by a heartbeat (`locks.LockHolder`), so a killed migrator's lock
  expires by itself; `lock_wait_s` says how long to wait for another one;
- an applied step whose migration's source changed (checksum drift) stops
  everything (unless the migration lists the old checksum as equivalent);
- ledger versions this code does not know (data newer than code) are refused;
- a pending step numbered below one already applied to that database is refused;
- a failing step stops the run and is reported; the steps before it stay
  recorded, so the next run continues with it.

A combined migration (one step for several databases at once) runs only when
all its databases are in scope; otherwise the run stops before it, with a note.

Markers written by rpger-ops 0.1 carry no ledger (it was the MongoDB collection
`_rpger_migrations`): for those the ledger is taken as every shipped step up to
the marker's schema version, and the old collection is dropped once the Mongo
ledger is in its marker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from rpger_ops.engines import build_engine
from rpger_ops.engines.base import (
    ENGINE_NAMES,
    Engine,
    EngineError,
    EngineName,
    LedgerEntry,
    Progress,
    StackMarker,
    no_progress,
)
from rpger_ops.locks import LockBusy, LockHolder
from rpger_ops.migrations.base import Migration, MigrationContext, Registry
from rpger_ops.settings import Settings

LOCK_NAME = "migrate"
DEFAULT_LOCK_TTL_S = 60.0
LEGACY_LEDGER = "_rpger_migrations"  # rpger-ops 0.1's ledger, in the app's MongoDB database

log = logging.getLogger("rpger_ops.migrate")

Direction = Literal["up", "down"]


class MigrateError(Exception):
    """Migrating is refused or failed; the message says why and what to do."""


class DriftError(MigrateError):
    pass


class UnknownVersionError(MigrateError):
    pass


class LockHeldError(MigrateError):
    pass


class IrreversibleError(MigrateError):
    pass


class OrderError(MigrateError):
    """A pending migration is numbered below an applied one."""


class TargetError(MigrateError):
    """The requested target version is not one this code can reach."""


class MigrationFailed(MigrateError):
    def __init__(self, message: str, version: int, applied: list[int]) -> None:
        super().__init__(message)
        self.version = version
        self.applied = applied


@dataclass(frozen=True)
class Drift:
    db: str
    version: int
    name: str
    ledger_checksum: str
    code_checksum: str


@dataclass
class DatabaseStatus:
    db: EngineName
    applied: list[LedgerEntry]
    pending: list[Migration]
    drift: list[Drift]
    unknown: list[LedgerEntry]  # in its ledger, not in the code: data newer than code
    marker: int | None  # the schema version in its marker (None: no marker)
    version: int = 0  # see `schema_version`
    legacy: bool = False  # the ledger was derived from a 0.1 marker


@dataclass
class Status:
    latest: int  # highest version the code ships
    databases: dict[EngineName, DatabaseStatus]

    @property
    def current(self) -> int:
        """The stack's version: the lowest of its databases'."""
        return min((d.version for d in self.databases.values()), default=0)

    @property
    def pending(self) -> list[Migration]:
        seen: dict[int, Migration] = {}
        for d in self.databases.values():
            for m in d.pending:
                seen.setdefault(m.version, m)
        return [seen[v] for v in sorted(seen)]

    @property
    def drift(self) -> list[Drift]:
        return [x for d in self.databases.values() for x in d.drift]

    @property
    def unknown(self) -> list[LedgerEntry]:
        seen: dict[int, LedgerEntry] = {}
        for d in self.databases.values():
            for e in d.unknown:
                seen.setdefault(e.version, e)
        return [seen[v] for v in sorted(seen)]

    @property
    def markers(self) -> dict[str, int | None]:
        return {db: d.marker for db, d in self.databases.items()}

    @property
    def ok(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        out = [f"checksum drift: migration {d.version:04d} {d.name} was applied to {d.db} with checksum "
               f"{d.ledger_checksum[:12]} but its source now hashes to {d.code_checksum[:12]}; "
               "restore the original file (write a new migration for new changes)" for d in self.drift]
        if self.unknown:
            names = ", ".join(f"{e.version:04d} {e.name}" for e in self.unknown)
            out.append(f"data newer than code: the ledger has migration(s) {names} that this code "
                       f"does not ship (code latest is {self.latest}); upgrade rpger-ops")
        for d in self.databases.values():
            newest = max((e.version for e in d.applied), default=0)
            late = [m for m in d.pending if m.version < newest]
            if late:
                out.append(f"out of order: pending migration(s) {', '.join(m.label for m in late)} are older "
                           f"than {newest:04d}, already applied to {d.db}; new migrations go at the end "
                           "(renumber them above the latest)")
        newer = {k: v for k, v in self.markers.items() if v is not None and v > self.latest}
        if newer:
            out.append("data newer than code: stack marker(s) "
                       + ", ".join(f"{k} at {v}" for k, v in newer.items())
                       + f" but code latest is {self.latest}; upgrade rpger-ops")
        return out

    def lines(self) -> list[str]:
        marks = ", ".join(f"{k} {'-' if v is None else v}" for k, v in self.markers.items())
        out = [f"schema version {self.current} (code ships {self.latest}); stack markers: {marks}"]
        applied = sorted({(e.version, e.name) for d in self.databases.values() for e in d.applied})
        out.append("applied:" if applied else "applied: none")
        for version, name in applied:
            where = [db for db, d in self.databases.items() if any(e.version == version for e in d.applied)]
            out.append(f"  {version:04d} {name:<32} {', '.join(where)}")
        out.append("pending:" if self.pending else "pending: none")
        for m in self.pending:
            where = [db for db, d in self.databases.items() if m in d.pending]
            out.append(f"  {m.label:<37} {', '.join(where)}")
        out += [f"note: {db}: ledger taken from its 0.1 marker (schema {d.marker})"
                for db, d in self.databases.items() if d.legacy]
        out += [f"PROBLEM: {p}" for p in self.problems()]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "current": self.current, "latest": self.latest,
            "databases": {db: {"version": d.version, "marker": d.marker,
                               "applied": [e.as_dict() for e in d.applied],
                               "pending": [m.version for m in d.pending]} for db, d in self.databases.items()},
            "pending": [{"version": m.version, "name": m.name} for m in self.pending],
            "drift": [asdict(d) for d in self.drift],
            "unknown": [e.as_dict() for e in self.unknown],
            "markers": self.markers, "problems": self.problems(),
        }


@dataclass(frozen=True)
class Step:
    version: int
    name: str
    direction: Direction
    db: EngineName


@dataclass
class RunReport:
    direction: Direction
    from_version: int
    to_version: int
    applied: list[int]  # versions run, in order (down: in the order they were reverted)
    seconds: float
    notes: list[str] = field(default_factory=list)
    by_database: dict[str, list[int]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        ran = ", ".join(f"{v:04d}" for v in self.applied) or "nothing to do"
        out = [f"migrate {self.direction}: {ran}; schema version {self.from_version} -> {self.to_version} "
               f"in {self.seconds:.1f} s"]
        return out + [f"note: {n}" for n in self.notes]


# --- reading state -------------------------------------------------------------

def _registry(registry: Registry | None) -> Registry:
    if registry is not None:
        return registry
    from rpger_ops.migrations import registry as shipped

    return shipped.default_registry()


def _scope(dbs: Iterable[str] | None) -> list[EngineName]:
    chosen = set(dbs or ENGINE_NAMES)
    unknown = sorted(chosen - set(ENGINE_NAMES))
    if unknown:
        raise TargetError(f"unknown database(s) {', '.join(unknown)}; expected {', '.join(ENGINE_NAMES)}")
    return [db for db in ENGINE_NAMES if db in chosen]


def ledger_of(marker: StackMarker | None, db: EngineName, reg: Registry) -> tuple[list[LedgerEntry], bool]:
    """A database's ledger from its marker; (entries, derived from a 0.1 marker)."""
    if marker is None:
        return [], False
    if marker.migrations is not None:
        return sorted(marker.migrations, key=lambda e: e.version), False
    return [LedgerEntry(m.version, m.name, m.checksum) for m in reg
            if db in m.databases and m.version <= marker.schema_version], True


def schema_version(db: EngineName, ledger: Iterable[LedgerEntry], reg: Registry) -> int:
    """A database's schema version: the highest code version whose schema it fully has,
    i.e. just below the first shipped step for it that is not applied (a version
    whose migrations do not touch it changes nothing there). Data from newer code
    keeps its higher version."""
    applied = {e.version for e in ledger}
    first_missing = next((m.version for m in reg if db in m.databases and m.version not in applied), None)
    version = reg.latest_version() if first_missing is None else first_missing - 1
    return max([version, *(v for v in applied if reg.get(v) is None)])


def _database_status(db: EngineName, marker: StackMarker | None, reg: Registry) -> DatabaseStatus:
    ledger, legacy = ledger_of(marker, db, reg)
    applied, unknown, drift = [], [], []
    for entry in ledger:
        migration = reg.get(entry.version)
        if migration is None or db not in migration.databases:
            unknown.append(entry)
            continue
        applied.append(entry)
        if not migration.accepts(entry.checksum):
            drift.append(Drift(db, entry.version, migration.name, entry.checksum, migration.checksum))
    done = {e.version for e in ledger}
    pending = [m for m in reg if db in m.databases and m.version not in done]
    version = schema_version(db, ledger, reg) if marker is not None else 0
    return DatabaseStatus(db, applied, pending, drift, unknown, marker.schema_version if marker else None,
                          version, legacy)


def _status(engines: dict[EngineName, Engine], reg: Registry) -> Status:
    return Status(reg.latest_version(), {db: _database_status(db, e.read_marker(), reg) for db, e in engines.items()})


def status(settings: Settings, registry: Registry | None = None, dbs: Iterable[str] | None = None) -> Status:
    reg = _registry(registry)
    with _engines(settings, _scope(dbs)) as engines:
        return _status(engines, reg)


def read_ledger(settings: Settings, db: EngineName = "mongo") -> list[LedgerEntry]:
    """The migrations applied to one database (from its stack marker)."""
    return status(settings, dbs=[db]).databases[db].applied


def current_version(settings: Settings, dbs: Iterable[str] | None = None) -> int:
    """The lowest schema version of the databases in scope (0 when none is applied)."""
    return status(settings, dbs=dbs).current


def plan(settings: Settings, target: int | None = None, registry: Registry | None = None,
         direction: Direction | None = None, dbs: Iterable[str] | None = None) -> list[Step]:
    """What `up` (to target or latest) or `down` (to target) would run, in order.
    Without a direction: down when the target is below the current version."""
    reg = _registry(registry)
    st = status(settings, reg, dbs)
    _refuse_problems(st)
    if direction is None:
        direction = "down" if target is not None and target < st.current else "up"
    return _steps(st, reg, target, direction)[0]


def _steps(st: Status, reg: Registry, target: int | None, direction: Direction) -> tuple[list[Step], list[str]]:
    """The steps, in order, and notes on what was held back."""
    notes: list[str] = []
    if direction == "up":
        goal = reg.latest_version() if target is None else target
        if goal > reg.latest_version() or goal < 0:
            raise TargetError(f"target {goal} is outside 0..{reg.latest_version()} (the versions this code ships)")
        steps: list[Step] = []
        for migration in reg:
            if migration.version > goal:
                break
            waiting = [db for db in migration.databases if db in st.databases and migration in st.databases[db].pending]
            if not waiting:
                continue
            missing = [db for db in migration.databases if db not in st.databases]
            if migration.combined and missing:
                notes.append(f"stopped before {migration.label}: it changes {', '.join(migration.databases)} "
                             f"together and {', '.join(missing)} is not part of this run; run "
                             "`rpger-ops migrate up` for the whole stack")
                break
            steps += [Step(migration.version, migration.name, "up", db) for db in waiting]
        return steps, notes
    if target is None or not 0 <= target <= reg.latest_version():
        raise TargetError(f"down needs a target version in 0..{reg.latest_version()} (e.g. --to 1)")
    steps = []
    for version in sorted({e.version for d in st.databases.values() for e in d.applied if e.version > target},
                          reverse=True):
        reverted = reg.get(version)
        assert reverted is not None  # unknown versions were refused before
        for db, d in st.databases.items():
            if not any(e.version == version for e in d.applied):
                continue
            if reverted.steps[db].down is None:
                raise IrreversibleError(f"migration {reverted.label} has no down(); cannot go below "
                                        f"version {reverted.version}")
            steps.append(Step(version, reverted.name, "down", db))
    return steps, notes


def _refuse_problems(st: Status) -> None:
    problems = st.problems()
    if not problems:
        return
    cls: type[MigrateError] = OrderError
    if st.drift:
        cls = DriftError
    elif st.unknown or any(v is not None and v > st.latest for v in st.markers.values()):
        cls = UnknownVersionError
    raise cls("refusing to migrate: " + "; ".join(problems))


# --- running ------------------------------------------------------------------

def apply_pending(settings: Settings, target: int | None = None, registry: Registry | None = None,
                  progress: Progress = no_progress, lock_ttl_s: float = DEFAULT_LOCK_TTL_S,
                  lock_wait_s: float = 0.0, dbs: Iterable[str] | None = None) -> list[int]:
    """Apply pending migrations up to `target` (default: latest); returns the versions applied."""
    return migrate(settings, "up", target, registry, progress, lock_ttl_s, lock_wait_s, dbs).applied


def migrate(settings: Settings, direction: Direction, target: int | None = None,
            registry: Registry | None = None, progress: Progress = no_progress,
            lock_ttl_s: float = DEFAULT_LOCK_TTL_S, lock_wait_s: float = 0.0,
            dbs: Iterable[str] | None = None) -> RunReport:
    """Run `up` or `down` for the databases in `dbs` (default: all three) under their
    locks; raises MigrateError subclasses on refusal or failure. `lock_wait_s`: how
    long to wait for another migrator of the same database (0: refuse at once)."""
    reg = _registry(registry)
    started = time.monotonic()
    scope = _scope(dbs)
    with _engines(settings, scope) as engines, _locks(engines, lock_ttl_s, lock_wait_s, progress) as lost:
        st = _status(engines, reg)
        _refuse_problems(st)
        steps, notes = _steps(st, reg, target, direction)
        ledgers = {db: list(d.applied) for db, d in st.databases.items()}
        ctx = MigrationContext(settings=settings, progress=progress)
        ctx.notes += notes
        done: list[int] = []
        by_db: dict[str, list[int]] = {db: [] for db in scope}
        try:
            _convert_legacy(st, engines, ledgers, ctx, reg)
            for step in steps:
                if lost.is_set():
                    raise LockHeldError("lost the migrate lock (heartbeat failed); stopped before "
                                        f"{step.version:04d} {step.name} on {step.db}")
                migration = reg.get(step.version)
                assert migration is not None
                # A combined step runs once for all its databases, then is recorded in each.
                run = not (migration.combined and migration.version in done)
                _run_step(ctx, migration, step, engines[step.db], ledgers, reg, run)
                by_db[step.db].append(migration.version)
                if migration.version not in done:
                    done.append(migration.version)
            _settle_markers(st, engines, ledgers, reg, settings)
        finally:
            ctx.close()
        return RunReport(direction=direction, from_version=st.current,
                         to_version=min((schema_version(db, ledgers[db], reg) for db in scope), default=0),
                         applied=done, seconds=round(time.monotonic() - started, 3), notes=ctx.notes,
                         by_database=by_db)


def _run_step(ctx: MigrationContext, migration: Migration, step: Step, engine: Engine,
              ledgers: dict[EngineName, list[LedgerEntry]], reg: Registry, run: bool = True) -> None:
    log.info("migration %s %s on %s", migration.label, step.direction, step.db)
    ctx.progress(f"{step.direction} {migration.label} on {step.db}", 0, None)
    fn = migration.steps[step.db].up if step.direction == "up" else migration.steps[step.db].down
    assert fn is not None
    ctx.database = None if migration.combined else step.db
    t0 = time.monotonic()
    try:
        if run:
            fn(ctx)
    except Exception as exc:
        at = schema_version(step.db, ledgers[step.db], reg)
        applied = sorted({e.version for entries in ledgers.values() for e in entries})
        raise MigrationFailed(
            f"migration {migration.label} failed during {step.direction} on {step.db}: {type(exc).__name__}: "
            f"{exc}; {step.db} stopped at version {at}"
            + "; fix the cause and run migrate again (completed steps are not redone)",
            version=migration.version, applied=applied) from exc
    duration = round(time.monotonic() - t0, 3)
    if step.direction == "up":
        entry = LedgerEntry(migration.version, migration.name, migration.checksum,
                            datetime.now(UTC).isoformat(), duration)
        ledgers[step.db] = sorted([*ledgers[step.db], entry], key=lambda e: e.version)
    else:
        ledgers[step.db] = [e for e in ledgers[step.db] if e.version != migration.version]
    _write_marker(ctx.settings, engine, step.db, ledgers[step.db], reg)
    ctx.progress(f"{step.direction} {migration.label} on {step.db} done in {duration} s", 1, 1)


def _write_marker(settings: Settings, engine: Engine, db: EngineName, ledger: list[LedgerEntry],
                  reg: Registry) -> None:
    """Record the ledger and its version in the database's marker (keeping its first init time)."""
    old = engine.read_marker()
    version = schema_version(db, ledger, reg)
    engine.write_marker(StackMarker(settings.stack_id, version,
                                    old.initialized_at if old else datetime.now(UTC).isoformat(), tuple(ledger)))


def _settle_markers(st: Status, engines: dict[EngineName, Engine], ledgers: dict[EngineName, list[LedgerEntry]],
                    reg: Registry, settings: Settings) -> None:
    """A database no step touched this run may still have moved up a version (newer
    code ships migrations that do not concern it): say so in its marker."""
    for db, d in st.databases.items():
        if d.marker is not None and d.marker != schema_version(db, ledgers[db], reg):
            _write_marker(settings, engines[db], db, ledgers[db], reg)


def _convert_legacy(st: Status, engines: dict[EngineName, Engine], ledgers: dict[EngineName, list[LedgerEntry]],
                    ctx: MigrationContext, reg: Registry) -> None:
    """0.1 markers get their ledger written into them; the 0.1 Mongo collection goes."""
    for db, d in st.databases.items():
        if d.legacy:
            _write_marker(ctx.settings, engines[db], db, ledgers[db], reg)
            ctx.note(f"{db}: migrations ledger moved into its stack marker (schema {d.marker})")
    if "mongo" in engines:
        mongo = ctx.mongo
        if LEGACY_LEDGER in mongo.list_collection_names():
            mongo.drop_collection(LEGACY_LEDGER)
            ctx.note(f"mongo: the 0.1 ledger collection {LEGACY_LEDGER} was dropped (the ledger is in the marker)")


@contextmanager
def _engines(settings: Settings, scope: list[EngineName]) -> Iterator[dict[EngineName, Engine]]:
    engines: dict[EngineName, Engine] = {}
    try:
        for name in scope:
            engines[name] = build_engine(name, settings)
        yield engines
    finally:
        for engine in engines.values():
            engine.close()


@contextmanager
def _locks(engines: dict[EngineName, Engine], ttl_s: float, wait_s: float, progress: Progress
           ) -> Iterator[threading.Event]:
    """Hold the `migrate` lock of every database in scope (renewed by a heartbeat);
    yields an Event set if one is lost."""
    holder = LockHolder(engines, LOCK_NAME, "migrate", ttl_s=ttl_s, wait_s=wait_s, on_wait=progress,
                        busy_message=f"another migrator is running (the migrate lock of {', '.join(engines)} is "
                                     f"held); wait for it to finish, or, if it died, for its lock to expire "
                                     f"(at most {ttl_s:.0f} s)")
    with ExitStack() as stack:
        try:
            stack.enter_context(holder)
        except LockBusy as exc:
            raise LockHeldError(str(exc)) from None
        except EngineError as exc:
            raise MigrateError(f"cannot take the migrate lock: {exc}") from None
        yield holder.lost
