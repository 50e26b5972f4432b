"""Restore backup sets into the databases — never over data.

`restore_set` is the manual restore (job, CLI): it refuses a non-empty target
unless `force`, and with `force` it first takes a safety backup set of the
current contents. Preseeding (`preseed.py`) reuses the pieces here:
`SetSources` (where verified sets come from, in fallback order),
`restore_database` (fetch, checksum, extract, load, compare digests) and
`database_locks` (one lock per database, taken in the database itself).

Order after loading a database: digest compared with the manifest's
`source_digest` (a mismatch is a failure), then the stack marker (schema
version from the manifest), then pending migrations for the whole stack
(only when every database of the run came back: the migration runner writes
the markers of all three databases, and a marker on a database that is still
waiting for its restore would make it look "emptied on purpose").
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rpger_ops.catalog import VERIFIED, Catalog, CatalogError
from rpger_ops.digestcheck import matches_backup
from rpger_ops.engines import build_engine
from rpger_ops.engines.base import (
    ENGINE_NAMES,
    Engine,
    EngineError,
    EngineName,
    NotReadyError,
    Progress,
    StackMarker,
    no_progress,
    safe_error,
)
from rpger_ops.schema import code_schema_version

if TYPE_CHECKING:
    from rpger_ops.offsite import OffsiteStore
    from rpger_ops.settings import Settings

log = logging.getLogger(__name__)

Source = Literal["auto", "local", "offsite"]
Origin = Literal["local", "offsite"]
SOURCES: tuple[Source, ...] = ("auto", "local", "offsite")

# One lock per database guards every restore into it (preseed and manual),
# so a preseed and a manual restore never load the same database at once.
RESTORE_LOCK = "preseed"
LOCK_TTL_S = 15 * 60.0  # renewed while loading; a crashed holder frees it after this
LOCK_WAIT_S = 10 * 60.0


class RestoreError(Exception):
    """A restore could not be done; the message is safe to show."""


class RefusedError(RestoreError):
    """Refused on purpose to protect data (non-empty target, newer schema, lock held)."""


class SourceError(RestoreError):
    """A set's archive could not be fetched, checksummed or extracted (try the next one)."""


# --- where sets come from ----------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    set_id: str
    origin: Origin
    manifest: dict[str, Any] = field(compare=False, hash=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.set_id} ({self.origin})"


def order_candidates(local_ids: Sequence[str], offsite_ids: Sequence[str]) -> list[tuple[str, Origin]]:
    """Fallback order: newest local set, then newest off-site set (a corrupt or
    missing local copy is replaced by the off-site one), then the remaining sets
    newest first, a local copy before the off-site copy of the same set.
    Ids sort by time because they are UTC timestamps."""
    local = sorted(set(local_ids), reverse=True)
    offsite = sorted(set(offsite_ids), reverse=True)
    head: list[tuple[str, Origin]] = []
    if local:
        head.append((local[0], "local"))
    if offsite:
        head.append((offsite[0], "offsite"))
    rest: list[tuple[str, Origin]] = [(i, "local") for i in local] + [(i, "offsite") for i in offsite]
    rest.sort(key=lambda c: (c[0], c[1] == "local"), reverse=True)
    out: list[tuple[str, Origin]] = []
    for c in head + rest:
        if c not in out:
            out.append(c)
    return out


def is_verified_for(manifest: dict[str, Any], dbs: Iterable[str]) -> bool:
    entries = manifest.get("databases", {})
    return all(entries.get(db, {}).get("status") == VERIFIED for db in dbs)


class SetSources:
    """Verified backup sets from the local catalogue and the off-site store."""

    def __init__(self, settings: Settings, source: Source = "auto", progress: Progress = no_progress) -> None:
        if source not in SOURCES:
            raise RestoreError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
        self.settings = settings
        self.source = source
        self.catalog = Catalog(settings.backup_dir)
        self.progress = progress
        self.notes: list[str] = []  # why a source was unusable
        # Sources that could not be listed: "no sets" is then unknown, not proven.
        self.unavailable: list[str] = []
        self._store: OffsiteStore | None = None
        self._remote_manifests: dict[str, dict[str, Any]] = {}

    # --- listing ---------------------------------------------------------------
    def _local_sets(self, dbs: Sequence[str]) -> dict[str, dict[str, Any]]:
        if self.source == "offsite":
            return {}
        if not self.catalog.sets_dir.is_dir():
            self.notes.append(f"local backup directory {self.catalog.sets_dir} is missing")
            return {}
        try:
            manifests = self.catalog.list_sets()
        except OSError as exc:
            self.notes.append(f"local backup directory unreadable: {safe_error(exc)}")
            self.unavailable.append("local backup directory")
            return {}
        return {m["set_id"]: m for m in manifests if is_verified_for(m, dbs)}

    def store(self) -> OffsiteStore | None:
        if self._store is None and self.settings.offsite_enabled:
            from rpger_ops.offsite import OffsiteStore

            self._store = OffsiteStore.from_settings(self.settings)
        return self._store

    def _offsite_sets(self, dbs: Sequence[str]) -> dict[str, dict[str, Any]]:
        if self.source == "local":
            return {}
        if not self.settings.offsite_enabled:
            if self.source == "offsite":
                raise RestoreError("off-site store not configured (set RPGER_S3_ENDPOINT)")
            return {}
        store = self.store()
        assert store is not None
        try:
            ids = store.list_set_ids()
        except Exception as exc:  # the store is a fallback: report, don't crash
            self.notes.append(f"off-site store unavailable: {safe_error(exc)}")
            self.unavailable.append("off-site store")
            return {}
        found: dict[str, dict[str, Any]] = {}
        for set_id in ids:
            try:
                manifest = self._remote_manifests.get(set_id) or store.read_manifest(set_id)
            except Exception as exc:
                self.notes.append(f"off-site set {set_id}: manifest unreadable ({safe_error(exc)})")
                continue
            self._remote_manifests[set_id] = manifest
            if is_verified_for(manifest, dbs):
                found[set_id] = manifest
        return found

    def candidates(self, dbs: Sequence[str]) -> list[Candidate]:
        """Every verified set holding all of `dbs`, in fallback order."""
        local = self._local_sets(dbs)
        remote = self._offsite_sets(dbs)
        return [Candidate(i, o, (local if o == "local" else remote)[i])
                for i, o in order_candidates(list(local), list(remote))]

    def candidates_for(self, set_ref: str, dbs: Sequence[str]) -> list[Candidate]:
        """The copies (local first, then off-site) of one set: `latest` or an id."""
        all_candidates = self.candidates(dbs)
        if set_ref == "latest":
            if not all_candidates:
                raise RestoreError(self._nothing_found(dbs))
            newest = max(c.set_id for c in all_candidates)
            chosen = [c for c in all_candidates if c.set_id == newest]
        else:
            try:
                from rpger_ops.catalog import set_time

                set_time(set_ref)
            except CatalogError as exc:
                raise RestoreError(str(exc)) from None
            chosen = [c for c in all_candidates if c.set_id == set_ref]
            if not chosen:
                raise RestoreError(f"backup set {set_ref} is not available as a verified set for "
                                   f"{', '.join(dbs)} ({self._where()})" + self._notes_suffix())
        return sorted(chosen, key=lambda c: c.origin != "local")

    def _where(self) -> str:
        return {"auto": "local or off-site", "local": "local only", "offsite": "off-site only"}[self.source]

    def _notes_suffix(self) -> str:
        return ("; " + "; ".join(self.notes)) if self.notes else ""

    def _nothing_found(self, dbs: Sequence[str]) -> str:
        return f"no verified backup set for {', '.join(dbs)} ({self._where()})" + self._notes_suffix()

    # --- fetching ----------------------------------------------------------------
    def fetch(self, candidate: Candidate, db: str, work: Path) -> Path:
        """Checksum and extract one database's archive into a fresh folder under
        `work`; returns the dump directory. Raises SourceError when unusable."""
        dest = work / f"{candidate.set_id}-{candidate.origin}-{db}"
        shutil.rmtree(dest, ignore_errors=True)
        try:
            if candidate.origin == "local":
                return self._extract_checked(self.catalog, candidate, db, dest)
            return self._fetch_offsite(candidate, db, work, dest)
        except SourceError:
            shutil.rmtree(dest, ignore_errors=True)
            raise

    def _fetch_offsite(self, candidate: Candidate, db: str, work: Path, dest: Path) -> Path:
        store = self.store()
        if store is None:
            raise SourceError("off-site store not configured")
        # A private catalogue: the download never replaces anything in the local one.
        download = Catalog(work / f"download-{candidate.set_id}-{db}")
        self.progress(f"{db}: downloading set {candidate.set_id} from the off-site store", 0, None)
        try:
            store.download_set(candidate.set_id, download, [db])
        except Exception as exc:
            raise SourceError(f"off-site set {candidate.set_id}: download failed ({safe_error(exc)})") from None
        try:
            return self._extract_checked(download, candidate, db, dest)
        finally:
            shutil.rmtree(download.root, ignore_errors=True)

    def _extract_checked(self, catalog: Catalog, candidate: Candidate, db: str, dest: Path) -> Path:
        from rpger_ops.archive import extract_archive, sha256_file

        entry = candidate.manifest.get("databases", {}).get(db, {})
        path = catalog.archive_path(candidate.set_id, db)
        where = f"{candidate.origin} set {candidate.set_id}"
        if not path.is_file():
            raise SourceError(f"{where}: archive {path.name} is missing")
        expected = entry.get("sha256")
        if not expected:
            raise SourceError(f"{where}: manifest has no sha256 for {db}")
        self.progress(f"{db}: checking sha256 of {where}", 0, None)
        actual = sha256_file(path)
        if actual != expected:
            raise SourceError(f"{where}: {path.name} is corrupt (sha256 {actual[:12]}… != manifest {expected[:12]}…)")
        dest.mkdir(parents=True)
        try:
            extract_archive(path, dest)
        except Exception as exc:
            raise SourceError(f"{where}: {path.name} cannot be extracted ({safe_error(exc)})") from None
        return dest


# --- one database ------------------------------------------------------------------

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

    @property
    def ok(self) -> bool:
        return self.status == "restored" and self.digest_ok

    def summary(self) -> str:
        if self.ok:
            total = sum(self.counts.values())
            return (f"{self.db}: restored {total} items in {len(self.counts)} namespaces from "
                    f"{self.set_id} ({self.origin}) in {self.seconds:.1f}s; digest matches the manifest "
                    f"({self.digest_seconds:.1f}s)")
        return f"{self.db}: FAILED: {self.error}"


def check_schema(manifest: dict[str, Any]) -> int:
    """The set's schema version; refuses a set written by newer code."""
    version = int(manifest.get("schema_version", 0) or 0)
    code = code_schema_version()
    if version > code:
        raise RefusedError(
            f"backup set {manifest.get('set_id')} has schema version {version}, newer than this code's "
            f"{code}; upgrade rpger-ops before restoring it")
    return version


def describe_contents(engine: Engine) -> str:
    """'3 collections, 1,204 items' — what a refused target holds."""
    try:
        stats = engine.stats()
    except EngineError as exc:
        return f"data ({exc})"
    total = sum(s.count for s in stats.values())
    names = ", ".join(sorted(stats)[:5]) + (", …" if len(stats) > 5 else "")
    return f"{len(stats)} namespaces ({names}), {total:,} items"


def restore_database(engine: Engine, db: str, candidates: Sequence[Candidate], sources: SetSources,
                     work: Path, progress: Progress = no_progress,
                     keepalive: Callable[[], None] = lambda: None) -> DatabaseRestore:
    """Load the first usable candidate into `engine` (empty: the caller checked).

    An unusable source (missing, corrupt, download failed) moves on to the
    next candidate. A load that fails half-way is wiped again so the database
    never looks seeded with partial data."""
    notes: list[str] = []
    for cand in candidates:
        entry = cand.manifest.get("databases", {}).get(db, {})
        schema_version = check_schema(cand.manifest)
        try:
            dump_dir = sources.fetch(cand, db, work)
        except SourceError as exc:
            log.warning("%s: %s; trying the next set", db, exc)
            progress(f"{db}: {exc}; trying the next set", 0, None)
            notes.append(str(exc))
            continue

        def tick(message: str, done: int, total: int | None) -> None:
            keepalive()
            progress(message, done, total)

        started = time.monotonic()
        expected = entry.get("source_digest")
        try:
            result = engine.restore(dump_dir, tick)
            loaded = time.monotonic()
            digest = engine.digest()
            digest_ok, digest_notes = matches_backup(engine, dump_dir, result, digest, expected)
        except Exception as exc:  # whatever broke, partial data must not look like a seeded database
            _wipe_quietly(engine, db)
            return DatabaseRestore(db, "failed", cand.set_id, cand.origin, notes=notes,
                                   error=f"loading {cand.label} failed: {safe_error(exc)}; the partial load was removed")
        finally:
            shutil.rmtree(dump_dir, ignore_errors=True)
        outcome = DatabaseRestore(db, "restored", cand.set_id, cand.origin, dict(result.counts),
                                  loaded - started, digest_ok, schema_version,
                                  notes + list(result.notes) + digest_notes,
                                  digest_seconds=time.monotonic() - loaded)
        if not digest_ok:
            outcome.status = "failed"
            outcome.error = (f"restored {cand.label}, but its digest {digest[:12]}… differs from the "
                             f"manifest's {str(expected)[:12]}…; the data was left in place for inspection")
        progress(outcome.summary(), 1, 1)
        return outcome
    tried = ", ".join(c.label for c in candidates) or "none"
    return DatabaseRestore(db, "failed", notes=notes,
                           error=f"no usable backup set (tried: {tried})" + (f": {'; '.join(notes)}" if notes else ""))


def _wipe_quietly(engine: Engine, db: str) -> None:
    try:
        engine.wipe()
    except EngineError as exc:
        log.error("%s: could not remove a partial restore: %s", db, exc)


def write_marker(engine: Engine, settings: Settings, schema_version: int) -> None:
    engine.write_marker(StackMarker(stack_id=settings.stack_id, schema_version=schema_version))


# --- what a database holds, and migrations -----------------------------------------

State = Literal["new", "emptied", "has_data", "not_ready"]


def probe(engine: Engine) -> tuple[State, str]:
    """The database's state and a one-line reason (see preseed.py for what each means)."""
    try:
        empty = engine.is_empty()
        marker = engine.read_marker()
    except NotReadyError as exc:
        return "not_ready", str(exc)
    if not empty:
        return "has_data", "holds data"
    if marker is None:
        return "new", "no data and no stack marker: a new volume"
    return "emptied", (f"no data but a stack marker from {marker.initialized_at or 'an earlier start'} "
                       f"(stack {marker.stack_id}): emptied on purpose, not restoring")


def waiting_databases(settings: Settings) -> dict[str, State]:
    """Databases of the stack still waiting for a preseed (new) or unreachable."""
    waiting: dict[str, State] = {}
    for name in ENGINE_NAMES:
        engine = build_engine(name, settings)
        try:
            state, _ = probe(engine)
        finally:
            engine.close()
        if state in ("new", "not_ready"):
            waiting[name] = state
    return waiting


@dataclass
class MigrationOutcome:
    applied: list[int] | None = None  # None: not run
    deferred: str | None = None
    error: str | None = None


def migrate_stack(settings: Settings, progress: Progress = no_progress) -> MigrationOutcome:
    """Apply pending migrations once no database of the stack waits for its
    restore. The runner writes the stack marker of all three databases, and a
    marker on a database still waiting would make it look emptied on purpose,
    so it never runs early; the last restore or preseed of the stack runs it."""
    try:  # the migrations issue may not have landed in this build
        migrate = importlib.import_module("rpger_ops.migrate")
    except ModuleNotFoundError as exc:
        if exc.name != "rpger_ops.migrate":
            raise
        return MigrationOutcome()
    waiting = waiting_databases(settings)
    if waiting:
        what = ", ".join(f"{n} is {'a new volume' if s == 'new' else 'not ready'}" for n, s in waiting.items())
        return MigrationOutcome(deferred=f"migrations deferred until every database is seeded ({what})")
    progress("applying pending migrations", 0, None)
    try:
        applied = list(migrate.apply_pending(settings, progress=progress))
    except Exception as exc:  # the data is back; the schema step is what failed
        return MigrationOutcome(error=f"pending migrations failed: {safe_error(exc)}")
    progress(f"migrations applied: {applied or 'none pending'}", 1, 1)
    return MigrationOutcome(applied)


# --- locks ----------------------------------------------------------------------------

def lock_owner(purpose: str) -> str:
    return f"{purpose}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@contextmanager
def database_locks(engines: dict[EngineName, Engine], owner: str, wait_s: float = LOCK_WAIT_S,
                   ttl_s: float = LOCK_TTL_S, on_wait: Progress = no_progress) -> Iterator[Callable[[], None]]:
    """Take the restore lock in every database (waiting up to `wait_s` for
    each); yields a keepalive that renews them at most every ttl/4."""
    held: list[EngineName] = []
    last_renew = [time.monotonic()]

    def keepalive() -> None:
        if time.monotonic() - last_renew[0] < ttl_s / 4:
            return
        last_renew[0] = time.monotonic()
        for name in held:
            if not engines[name].acquire_lock(RESTORE_LOCK, owner, ttl_s):
                log.warning("%s: restore lock was taken over by another owner", name)

    try:
        for name in sorted(engines):  # one order everywhere: no deadlock between restores
            deadline = time.monotonic() + wait_s
            while not engines[name].acquire_lock(RESTORE_LOCK, owner, ttl_s):
                if time.monotonic() >= deadline:
                    raise RefusedError(f"{name}: another restore or preseed holds the lock; "
                                       f"gave up after {wait_s:.0f}s")
                on_wait(f"{name}: waiting for another restore/preseed to finish", 0, None)
                time.sleep(0.5)
            held.append(name)
        yield keepalive
    finally:
        for name in held:
            try:
                engines[name].release_lock(RESTORE_LOCK, owner)
            except EngineError as exc:
                log.warning("%s: could not release the restore lock (expires by itself): %s", name, exc)


# --- manual restore -----------------------------------------------------------------------

@dataclass
class RestoreReport:
    set_id: str | None
    databases: dict[str, DatabaseRestore] = field(default_factory=dict)
    safety_set_id: str | None = None
    migrations: MigrationOutcome = field(default_factory=MigrationOutcome)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.databases) and all(d.ok for d in self.databases.values()) and not self.migrations.error

    def lines(self) -> list[str]:
        out = [d.summary() for d in self.databases.values()]
        if self.safety_set_id:
            out.append(f"safety backup of the replaced contents: set {self.safety_set_id}")
        out += migration_lines(self.migrations)
        out += [f"note: {n}" for n in dict.fromkeys(self.notes)]
        return out


def migration_lines(outcome: MigrationOutcome) -> list[str]:
    if outcome.error:
        return [f"FAILED: {outcome.error}; run `rpger-ops migrate up` once the cause is fixed"]
    if outcome.deferred:
        return [f"note: {outcome.deferred}"]
    if outcome.applied is not None:
        return [f"migrations applied: {outcome.applied or 'none pending'}"]
    return []


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
    """Restore one set (`latest` verified, or an id) into the chosen databases.

    Raises RefusedError without touching anything when a target holds data and
    `force` is False, when the set's schema is newer than the code, or when
    another restore holds a database's lock. Loading failures are reported per
    database in the RestoreReport (`ok` False)."""
    names = parse_databases(dbs)
    sources = SetSources(settings, source, progress)
    candidates = sources.candidates_for(set_ref, names)
    set_id = candidates[0].set_id
    check_schema(candidates[0].manifest)
    report = RestoreReport(set_id)
    engines = {n: build_engine(n, settings) for n in names}
    try:
        _restore_locked(settings, engines, candidates, sources, report, force, progress, lock_wait_s)
    except EngineError as exc:  # unreachable, or a wipe failed: say where things stand
        kept = f" (the replaced data is in safety set {report.safety_set_id})" if report.safety_set_id else ""
        raise RestoreError(f"restore of set {set_id} stopped: {exc}{kept}") from None
    finally:
        for e in engines.values():
            e.close()
    if report.ok:
        report.migrations = migrate_stack(settings, progress)
    report.notes += sources.notes
    return report


def _restore_locked(settings: Settings, engines: dict[EngineName, Engine], candidates: list[Candidate],
                    sources: SetSources, report: RestoreReport, force: bool, progress: Progress,
                    lock_wait_s: float) -> None:
    with database_locks(engines, lock_owner("restore"), wait_s=lock_wait_s, on_wait=progress) as keepalive:
        occupied = {n: describe_contents(e) for n, e in engines.items() if not e.is_empty()}
        if occupied and not force:
            held = "; ".join(f"{n} holds {what}" for n, what in occupied.items())
            raise RefusedError(f"refusing to restore over existing data: {held}. "
                               "Use --force (run config force: true) to take a safety backup and replace it.")
        if occupied:
            report.safety_set_id = _safety_backup(settings, list(occupied), progress)
            for n in occupied:
                progress(f"{n}: removing current data (safety set {report.safety_set_id})", 0, None)
                engines[n].wipe()
        work = sources.catalog.work_dir("restore")
        try:
            for n, engine in engines.items():
                outcome = restore_database(engine, n, candidates, sources, work, progress, keepalive)
                report.databases[n] = outcome
                if outcome.ok:
                    write_marker(engine, settings, outcome.schema_version or 0)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _safety_backup(settings: Settings, dbs: list[EngineName], progress: Progress) -> str:
    from rpger_ops.backup import take_backup_set

    progress(f"taking a safety backup of {', '.join(dbs)} before replacing it", 0, None)
    try:
        return take_backup_set(settings, dbs=dbs, kind="safety", offsite=False, progress=progress)
    except Exception as exc:
        raise RestoreError(f"safety backup failed, nothing was replaced: {safe_error(exc)}") from None
