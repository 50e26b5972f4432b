"""The migration runner: status, plan, up, down.

The ledger is the MongoDB collection `_rpger_migrations` (one document per
applied migration: `_id`/version, name, checksum, applied_at, duration_s); it
is dumped and restored with the data, so a restored set carries its version.
After every run the schema version is also written into the stack markers of
MongoDB, Redis and Chroma.

Safety rules, checked under the lock before anything runs:
- one migrator at a time: the `migrate` lock in MongoDB (`_rpger_stack`),
  kept alive by a heartbeat, so a killed migrator's lock expires by itself;
- an applied migration whose source changed (checksum drift) stops everything;
- ledger versions this code does not know (data newer than code) are refused;
- a failing migration stops the run at the version before it and is reported.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from rpger_ops.engines import build_engine
from rpger_ops.engines.base import ENGINE_NAMES, Engine, EngineName, Progress, StackMarker, no_progress
from rpger_ops.migrations.base import Migration, MigrationContext, Registry
from rpger_ops.settings import Settings

LEDGER = "_rpger_migrations"
LOCK_NAME = "migrate"
DEFAULT_LOCK_TTL_S = 60.0

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
class LedgerEntry:
    version: int
    name: str
    checksum: str
    applied_at: str
    duration_s: float


@dataclass(frozen=True)
class Drift:
    version: int
    name: str
    ledger_checksum: str
    code_checksum: str


@dataclass
class Status:
    current: int  # highest applied version (0: none)
    latest: int  # highest version the code ships
    applied: list[LedgerEntry]
    pending: list[Migration]
    drift: list[Drift]
    unknown: list[LedgerEntry]  # in the ledger, not in the code: data newer than code
    markers: dict[str, int | None] = field(default_factory=dict)  # engine -> schema_version in its marker

    @property
    def ok(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        out = [f"checksum drift: migration {d.version:04d} {d.name} was applied with checksum "
               f"{d.ledger_checksum[:12]} but its source now hashes to {d.code_checksum[:12]}; "
               "restore the original file (write a new migration for new changes)" for d in self.drift]
        if self.unknown:
            names = ", ".join(f"{e.version:04d} {e.name}" for e in self.unknown)
            out.append(f"data newer than code: the ledger has migration(s) {names} that this code "
                       f"does not ship (code latest is {self.latest}); upgrade rpger-ops")
        late = [m for m in self.pending if m.version < self.current]
        if late:
            out.append("out of order: pending migration(s) "
                       + ", ".join(m.label for m in late)
                       + f" are older than the applied version {self.current}; new migrations go at the end "
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
        out.append("applied:" if self.applied else "applied: none")
        out += [f"  {e.version:04d} {e.name:<32} {e.applied_at}  {e.duration_s:.2f} s" for e in self.applied]
        out.append("pending:" if self.pending else "pending: none")
        out += [f"  {m.label}" for m in self.pending]
        out += [f"PROBLEM: {p}" for p in self.problems()]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "current": self.current, "latest": self.latest,
            "applied": [asdict(e) for e in self.applied],
            "pending": [{"version": m.version, "name": m.name} for m in self.pending],
            "drift": [asdict(d) for d in self.drift],
            "unknown": [asdict(e) for e in self.unknown],
            "markers": self.markers, "problems": self.problems(),
        }


@dataclass(frozen=True)
class Step:
    version: int
    name: str
    direction: Direction


@dataclass
class RunReport:
    direction: Direction
    from_version: int
    to_version: int
    applied: list[int]  # versions run, in order (down: in the order they were reverted)
    seconds: float
    notes: list[str] = field(default_factory=list)

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


def read_ledger(settings: Settings) -> list[LedgerEntry]:
    from rpger_ops.connect import mongo_client

    client = mongo_client(settings)
    try:
        docs = client[settings.mongodb_database][LEDGER].find({})
        entries = [LedgerEntry(version=int(d["_id"]), name=str(d.get("name", "")),
                               checksum=str(d.get("checksum", "")), applied_at=str(d.get("applied_at", "")),
                               duration_s=float(d.get("duration_s", 0.0))) for d in docs]
    finally:
        client.close()
    return sorted(entries, key=lambda e: e.version)


def current_version(settings: Settings) -> int:
    """Highest applied migration version in the ledger (0 when none)."""
    ledger = read_ledger(settings)
    return ledger[-1].version if ledger else 0


def _read_markers(engines: dict[EngineName, Engine]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for name, engine in engines.items():
        marker = engine.read_marker()
        out[name] = marker.schema_version if marker else None
    return out


def _status(ledger: list[LedgerEntry], reg: Registry, markers: dict[str, int | None]) -> Status:
    applied, unknown, drift = [], [], []
    for entry in ledger:
        migration = reg.get(entry.version)
        if migration is None:
            unknown.append(entry)
            continue
        applied.append(entry)
        if migration.checksum != entry.checksum:
            drift.append(Drift(entry.version, migration.name, entry.checksum, migration.checksum))
    done = {e.version for e in ledger}
    pending = [m for m in reg if m.version not in done]
    return Status(current=ledger[-1].version if ledger else 0, latest=reg.latest_version(),
                  applied=applied, pending=pending, drift=drift, unknown=unknown, markers=markers)


def status(settings: Settings, registry: Registry | None = None) -> Status:
    reg = _registry(registry)
    with _engines(settings) as engines:
        markers = _read_markers(engines)
    return _status(read_ledger(settings), reg, markers)


def plan(settings: Settings, target: int | None = None, registry: Registry | None = None,
         direction: Direction | None = None) -> list[Step]:
    """What `up` (to target or latest) or `down` (to target) would run, in order.
    Without a direction: down when the target is below the current version."""
    reg = _registry(registry)
    st = status(settings, reg)
    _refuse_problems(st)
    if direction is None:
        direction = "down" if target is not None and target < st.current else "up"
    return _steps(st, reg, target, direction)


def _steps(st: Status, reg: Registry, target: int | None, direction: Direction) -> list[Step]:
    if direction == "up":
        goal = reg.latest_version() if target is None else target
        if goal > reg.latest_version() or goal < 0:
            raise TargetError(f"target {goal} is outside 0..{reg.latest_version()} (the versions this code ships)")
        return [Step(m.version, m.name, "up") for m in st.pending if m.version <= goal]
    if target is None or not 0 <= target <= reg.latest_version():
        raise TargetError(f"down needs a target version in 0..{reg.latest_version()} (e.g. --to 1)")
    to_revert = [e for e in reversed(st.applied) if e.version > target]
    steps = []
    for entry in to_revert:
        migration = reg.get(entry.version)
        assert migration is not None  # unknown versions were refused before
        if migration.down is None:
            raise IrreversibleError(f"migration {migration.label} has no down(); cannot go below "
                                    f"version {migration.version}")
        steps.append(Step(migration.version, migration.name, "down"))
    return steps


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
                  progress: Progress = no_progress, lock_ttl_s: float = DEFAULT_LOCK_TTL_S) -> list[int]:
    """Apply pending migrations up to `target` (default: latest); returns the versions applied."""
    return migrate(settings, "up", target, registry, progress, lock_ttl_s).applied


def migrate(settings: Settings, direction: Direction, target: int | None = None,
            registry: Registry | None = None, progress: Progress = no_progress,
            lock_ttl_s: float = DEFAULT_LOCK_TTL_S) -> RunReport:
    """Run `up` or `down` under the lock; raises MigrateError subclasses on refusal or failure."""
    reg = _registry(registry)
    started = time.monotonic()
    with _engines(settings) as engines, _migrate_lock(engines["mongo"], lock_ttl_s) as lost:
        st = _status(read_ledger(settings), reg, _read_markers(engines))
        _refuse_problems(st)
        steps = _steps(st, reg, target, direction)
        ctx = MigrationContext(settings=settings, progress=progress)
        done: list[int] = []
        try:
            for step in steps:
                if lost.is_set():
                    raise LockHeldError("lost the migrate lock (heartbeat failed); stopped before "
                                        f"{step.version:04d} {step.name}")
                migration = reg.get(step.version)
                assert migration is not None
                _run_step(settings, ctx, migration, step.direction, done)
                done.append(step.version)
        finally:
            ctx.close()
            version = _settle_markers(settings, engines)
        return RunReport(direction=direction, from_version=st.current,
                         to_version=st.current if version is None else version, applied=done,
                         seconds=round(time.monotonic() - started, 3), notes=ctx.notes)


def _run_step(settings: Settings, ctx: MigrationContext, migration: Migration, direction: Direction,
              done: list[int]) -> None:
    log.info("migration %s %s", migration.label, direction)
    ctx.progress(f"{direction} {migration.label}", 0, None)
    t0 = time.monotonic()
    fn = migration.up if direction == "up" else migration.down
    assert fn is not None
    try:
        fn(ctx)
    except Exception as exc:
        at = current_version(settings)
        raise MigrationFailed(
            f"migration {migration.label} failed during {direction}: {type(exc).__name__}: {exc}; "
            f"stopped at version {at}"
            + (f" after running {', '.join(map(str, done))}" if done else "")
            + "; fix the cause and run migrate again (completed batches are not redone)",
            version=migration.version, applied=list(done)) from exc
    duration = round(time.monotonic() - t0, 3)
    _record(settings, migration, direction, duration)
    ctx.progress(f"{direction} {migration.label} done in {duration} s", 1, 1)


def _record(settings: Settings, migration: Migration, direction: Direction, duration_s: float) -> None:
    from rpger_ops.connect import mongo_client

    client = mongo_client(settings)
    try:
        ledger = client[settings.mongodb_database][LEDGER]
        if direction == "up":
            ledger.replace_one({"_id": migration.version}, {
                "_id": migration.version, "version": migration.version, "name": migration.name,
                "checksum": migration.checksum, "applied_at": datetime.now(UTC).isoformat(),
                "duration_s": duration_s,
            }, upsert=True)
        else:
            ledger.delete_one({"_id": migration.version})
    finally:
        client.close()


def _settle_markers(settings: Settings, engines: dict[EngineName, Engine]) -> int | None:
    """Write the ledger's version into the markers; never masks the run's own error."""
    try:
        version = current_version(settings)
        _write_markers(settings, engines, version)
        return version
    except Exception as exc:
        log.warning("could not record the schema version in the stack markers (%s); "
                    "the next migrate run writes them", type(exc).__name__)
        return None


def _write_markers(settings: Settings, engines: dict[EngineName, Engine], version: int) -> None:
    """Record the schema version in every database's stack marker (keeping its first init time)."""
    for engine in engines.values():
        old = engine.read_marker()
        if old is not None and old.schema_version == version and old.stack_id == settings.stack_id:
            continue
        marker = (StackMarker(settings.stack_id, version, old.initialized_at) if old
                  else StackMarker(settings.stack_id, version))
        engine.write_marker(marker)


@contextmanager
def _engines(settings: Settings) -> Iterator[dict[EngineName, Engine]]:
    engines: dict[EngineName, Engine] = {}
    try:
        for name in ENGINE_NAMES:
            engines[name] = build_engine(name, settings)
        yield engines
    finally:
        for engine in engines.values():
            engine.close()


def lock_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@contextmanager
def _migrate_lock(engine: Engine, ttl_s: float) -> Iterator[threading.Event]:
    """Hold the `migrate` lock, renewing it every ttl/3; yields an Event set if it is lost."""
    owner = lock_owner()
    if not engine.acquire_lock(LOCK_NAME, owner, ttl_s):
        raise LockHeldError(
            "another migrator is running (the migrate lock in MongoDB _rpger_stack is held); "
            f"wait for it to finish, or, if it died, for its lock to expire (at most {ttl_s:.0f} s)")
    lost, stop = threading.Event(), threading.Event()

    def heartbeat() -> None:
        while not stop.wait(ttl_s / 3):
            try:
                if not engine.acquire_lock(LOCK_NAME, owner, ttl_s):
                    lost.set()
                    return
            except Exception as exc:  # a blip: keep trying until the lock really expires
                log.warning("migrate lock renewal failed: %s", type(exc).__name__)

    thread = threading.Thread(target=heartbeat, name="migrate-lock", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join()
        engine.release_lock(LOCK_NAME, owner)
