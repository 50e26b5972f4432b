"""Backup sets: dump -> archive -> checks -> off-site copy, as plain functions.

One function per pipeline step so the Dagster assets (rpger_ops/defs/backup.py)
and the CLI/restore code run exactly the same code. Every step records what it
did in the set's manifest (rpger_ops/catalog.py). A database entry moves
"dumping" -> "archived" -> "verified" | "failed"; only "verified" entries are
ever used by restore/preseed, and a failure anywhere removes the step's
partial files.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import rpger_ops
from rpger_ops.archive import ArchiveError, create_archive, extract_archive, sha256_file
from rpger_ops.catalog import ARCHIVED, DUMPING, FAILED, VERIFIED, Catalog, archive_name, new_set_id
from rpger_ops.digestcheck import matches_backup
from rpger_ops.engines import build_engine
from rpger_ops.engines.base import ENGINE_NAMES, EngineError, EngineName, Progress, no_progress, safe_error
from rpger_ops.settings import Settings

BackupKind = Literal["scheduled", "safety", "manual"]
CHECK_NAMES = ("sha256", "readable", "counts")
# Work folders older than this belong to runs that died (a dump takes minutes).
STALE_WORK_HOURS = 24.0


class BackupError(Exception):
    """A backup step failed; the message is safe to show. `set_id` names the set."""

    def __init__(self, message: str, set_id: str | None = None) -> None:
        super().__init__(message)
        self.set_id = set_id


class OffsiteCopyError(BackupError):
    """The local set is complete and verified, but its off-site copy failed."""


@dataclass(frozen=True)
class CheckOutcome:
    name: str  # one of CHECK_NAMES
    passed: bool
    description: str


# --- helpers -------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(UTC).isoformat()


def _entry(catalog: Catalog, set_id: str, db: str) -> dict[str, Any]:
    entry = catalog.read(set_id).get("databases", {}).get(db)
    if not entry:
        raise BackupError(f"backup set {set_id} has no {db} entry", set_id)
    return dict(entry)


def _fail(catalog: Catalog, set_id: str, db: str, step: str, exc: BaseException) -> BackupError:
    message = f"{db} {step} failed: {safe_error(exc)}"
    catalog.update_database(set_id, db, status=FAILED, error=message, failed_at=_now())
    return BackupError(f"backup set {set_id}: {message}", set_id)


# --- the set -------------------------------------------------------------------------

def start_set(settings: Settings, kind: BackupKind = "scheduled", set_id: str | None = None) -> str:
    """Create a new set (a fresh UTC id, never an existing one) or open `set_id`
    (idempotent: Dagster steps of one set each call it)."""
    from rpger_ops.schema import code_schema_version

    catalog = Catalog(settings.backup_dir)
    if set_id is None:
        remove_stale_work(catalog)
        set_id = _reserve_set_id(catalog)
    catalog.create_set(set_id, kind=kind, stack_id=settings.stack_id, tool_version=rpger_ops.__version__,
                       schema_version=code_schema_version())
    return set_id


def remove_stale_work(catalog: Catalog, older_than_hours: float = STALE_WORK_HOURS) -> list[str]:
    """Remove tmp/ folders and files left by runs that died (a killed process cannot
    clean up after itself). Work of live runs is young and stays."""
    if not catalog.tmp_dir.exists():
        return []
    cutoff = time.time() - older_than_hours * 3600
    removed = []
    for path in catalog.tmp_dir.iterdir():
        try:
            if path.lstat().st_mtime >= cutoff:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path.name)
        except FileNotFoundError:
            continue
    return removed


def _reserve_set_id(catalog: Catalog) -> str:
    # Ids have one-second resolution; two backups in one second (e.g. a safety
    # backup right after a manual one) take the next free second.
    catalog.sets_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    for offset in range(120):
        set_id = new_set_id(now + timedelta(seconds=offset))
        try:
            catalog.set_dir(set_id).mkdir()
            return set_id
        except FileExistsError:
            continue
    raise BackupError("could not allocate a new backup set id (120 sets in two minutes?)")


# --- step 1: dump ----------------------------------------------------------------------

def dump_database(settings: Settings, set_id: str, db: EngineName,
                  progress: Progress = no_progress) -> dict[str, Any]:
    """Dump one database into a private work folder and record it (status "dumping",
    `dump_dir`). Raises BackupError (entry "failed", folder removed) on any failure,
    including a non-empty database whose dump came out empty."""
    catalog = Catalog(settings.backup_dir)
    previous = catalog.read(set_id).get("databases", {}).get(db, {})
    if previous.get("status") in (ARCHIVED, VERIFIED):
        # A set id is a point in time: re-dumping would put today's data under an old name.
        raise BackupError(f"backup set {set_id} already holds a {previous['status']} {db} archive; "
                          "take a new set instead of re-dumping an old one", set_id)
    _discard_dump(previous)
    catalog.archive_path(set_id, db).unlink(missing_ok=True)
    catalog.update_database(set_id, db, status=DUMPING, started_at=_now(), error=None, dump_dir=None,
                            checks=None, archive=None, sha256=None, archive_bytes=None, offsite=None)
    dest = catalog.work_dir(f"{set_id}-{db}-dump")
    engine = build_engine(db, settings)
    try:
        ping = engine.ping()
        source_items = sum(s.count for s in engine.stats().values())
        # Taken right before the dump. On a busy database the digest and the dump are
        # not the same instant unless the dump is point-in-time; verify_restore's
        # equality proof is exact only for a quiet (or point-in-time) database.
        source_digest = engine.digest()
        progress(f"{db}: dumping ({source_items} items)", 0, source_items or None)
        started = time.monotonic()
        result = engine.dump(dest, progress)
        seconds = time.monotonic() - started
        dumped = sum(result.counts.values())
        if source_items > 0 and dumped == 0:
            raise EngineError(f"dump came out empty although the database holds {source_items} items")
    except BaseException as exc:
        shutil.rmtree(dest, ignore_errors=True)
        engine.close()
        failure = _fail(catalog, set_id, db, "dump", exc)
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt and friends keep their meaning
        raise failure from None
    engine.close()
    manifest = catalog.update_database(
        set_id, db, status=DUMPING, dump_dir=str(dest), server_version=result.server_version or ping.server_version,
        server_kind=ping.server_kind, counts=result.counts, source_items=source_items,
        source_digest=source_digest, point_in_time=result.point_in_time, dumped_at=_now(),
        dump_seconds=round(seconds, 3), dump_bytes=result.bytes_written, notes=list(result.notes),
        extra=result.extra,
    )
    progress(f"{db}: dumped {dumped} items, {result.bytes_written} bytes in {seconds:.1f}s", 1, 1)
    return dict(manifest["databases"][db])


def _discard_dump(entry: dict[str, Any]) -> None:
    if entry.get("dump_dir"):
        shutil.rmtree(entry["dump_dir"], ignore_errors=True)


# --- step 2: archive -------------------------------------------------------------------

def archive_database(settings: Settings, set_id: str, db: EngineName,
                     progress: Progress = no_progress) -> dict[str, Any]:
    """Turn the recorded dump folder into `sets/<id>/<db>.tar.zst` (written under
    tmp/, renamed into place), then remove the dump folder. Status "archived"."""
    catalog = Catalog(settings.backup_dir)
    entry = _entry(catalog, set_id, db)
    dump_dir = Path(entry.get("dump_dir") or "")
    if entry.get("status") != DUMPING or not entry.get("dump_dir") or not dump_dir.is_dir():
        raise BackupError(f"backup set {set_id}: no finished {db} dump to archive "
                          f"(status {entry.get('status')!r}); run the dump again", set_id)
    work = catalog.work_dir(f"{set_id}-{db}-archive")
    try:
        progress(f"{db}: compressing (zstd level {settings.zstd_level})", 0, None)
        started = time.monotonic()
        tmp_file = work / archive_name(db)
        info = create_archive(dump_dir, tmp_file, level=settings.zstd_level)
        os.replace(tmp_file, catalog.archive_path(set_id, db))  # same filesystem: atomic
        seconds = time.monotonic() - started
    except BaseException as exc:
        _discard_dump(entry)
        failure = _fail(catalog, set_id, db, "archive", exc)
        if not isinstance(exc, Exception):
            raise
        raise failure from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _discard_dump(entry)
    manifest = catalog.update_database(
        set_id, db, status=ARCHIVED, dump_dir=None, archive=archive_name(db), archive_bytes=info.bytes,
        sha256=info.sha256, archived_at=_now(), archive_seconds=round(seconds, 3), zstd_level=settings.zstd_level,
    )
    progress(f"{db}: archive {info.bytes} bytes in {seconds:.1f}s", 1, 1)
    return dict(manifest["databases"][db])


# --- step 3: checks ----------------------------------------------------------------------

def check_archive(settings: Settings, set_id: str, db: EngineName) -> list[CheckOutcome]:
    """sha256 matches the manifest; the archive decompresses and the engine parses it;
    parsed counts equal the counts recorded at dump time. Marks the entry
    "verified" when all pass, else "failed"."""
    catalog = Catalog(settings.backup_dir)
    entry = _entry(catalog, set_id, db)
    path = catalog.archive_path(set_id, db)
    outcomes = [_check_sha256(path, entry)]
    parsed: dict[str, int] | None = None
    work = catalog.work_dir(f"{set_id}-{db}-check")
    try:
        extract_archive(path, work)
        parsed = build_engine(db, settings).count_dump(work)
        outcomes.append(CheckOutcome("readable", True, f"decompressed and parsed {len(parsed)} namespaces"))
    except (ArchiveError, EngineError, OSError, ValueError) as exc:
        outcomes.append(CheckOutcome("readable", False, f"cannot read archive: {safe_error(exc)}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    outcomes.append(_check_counts(parsed, entry.get("counts")))
    passed = all(o.passed for o in outcomes)
    catalog.update_database(
        set_id, db, status=VERIFIED if passed else FAILED, checked_at=_now(),
        checks={o.name: {"passed": o.passed, "description": o.description} for o in outcomes},
        error=None if passed else "; ".join(f"{o.name}: {o.description}" for o in outcomes if not o.passed),
    )
    return outcomes


def _check_sha256(path: Path, entry: dict[str, Any]) -> CheckOutcome:
    expected = entry.get("sha256")
    if not path.exists():
        return CheckOutcome("sha256", False, f"archive {path.name} is missing")
    if not expected:
        return CheckOutcome("sha256", False, "manifest records no sha256 (archive step did not finish)")
    actual = sha256_file(path)
    if actual != expected:
        return CheckOutcome("sha256", False, f"sha256 {actual[:16]}… differs from manifest {expected[:16]}…")
    return CheckOutcome("sha256", True, f"sha256 {actual[:16]}… matches the manifest")


def _check_counts(parsed: dict[str, int] | None, recorded: dict[str, int] | None) -> CheckOutcome:
    if parsed is None:
        return CheckOutcome("counts", False, "archive could not be parsed, counts unknown")
    if recorded is None:
        return CheckOutcome("counts", False, "manifest records no counts")
    if parsed != recorded:
        diff = {ns: (recorded.get(ns), parsed.get(ns)) for ns in sorted(set(parsed) | set(recorded))
                if recorded.get(ns) != parsed.get(ns)}
        shown = ", ".join(f"{ns}: recorded {r} archived {p}" for ns, (r, p) in list(diff.items())[:5])
        return CheckOutcome("counts", False, f"{len(diff)} namespace(s) differ: {shown}")
    return CheckOutcome("counts", True, f"{sum(parsed.values())} items in {len(parsed)} namespaces, as recorded")


# --- step 4: off-site ---------------------------------------------------------------------

def upload_offsite(settings: Settings, set_id: str, db: EngineName,
                   progress: Progress = no_progress) -> dict[str, Any] | None:
    """Copy one verified archive off-site, then the manifest (manifest last, so the
    remote set counts only once complete). None when no off-site store is configured.
    Raises OffsiteCopyError on failure; the local set is left as it was."""
    if not settings.offsite_enabled:
        return None
    from rpger_ops.offsite import OffsiteStore

    catalog = Catalog(settings.backup_dir)
    progress(f"{db}: uploading off-site", 0, None)
    try:
        store = OffsiteStore.from_settings(settings)
        # One uploader at a time per set, so the last manifest uploaded lists every copy.
        with catalog.lock(set_id, "offsite"):
            result = store.upload_archive(catalog, set_id, db)
            store.upload_manifest(catalog, set_id)
    except Exception as exc:
        message = f"{db} off-site copy failed: {safe_error(exc)}"
        catalog.update_database(set_id, db, offsite_error=message, offsite_failed_at=_now())
        raise OffsiteCopyError(f"backup set {set_id}: {message} (the local set is intact)", set_id) from None
    catalog.update_database(set_id, db, offsite_error=None)
    progress(f"{db}: off-site copy {result.get('key')} verified", 1, 1)
    return result


# --- the whole set, without Dagster ------------------------------------------------------------

def take_backup_set(settings: Settings, dbs: Iterable[EngineName] = ENGINE_NAMES, kind: BackupKind = "scheduled",
                    offsite: bool = True, progress: Progress = no_progress) -> str:
    """Take a new backup set of `dbs`: dump, archive and check each; then the off-site
    copy when `offsite` and a store is configured. Returns the set id.

    Raises BackupError (with `.set_id`) when any database fails; the other
    databases are still backed up. Raises OffsiteCopyError when only the off-site
    copy failed (the local set is verified)."""
    set_id = start_set(settings, kind)
    failures: list[str] = []
    for db in dbs:
        try:
            dump_database(settings, set_id, db, progress)
            archive_database(settings, set_id, db, progress)
            outcomes = check_archive(settings, set_id, db)
        except BackupError as exc:
            failures.append(str(exc))
            continue
        bad = [f"{o.name}: {o.description}" for o in outcomes if not o.passed]
        if bad:
            failures.append(f"{db} checks failed: {'; '.join(bad)}")
    if failures:
        raise BackupError(f"backup set {set_id} is not usable: {' | '.join(failures)}", set_id)
    if offsite and settings.offsite_enabled:
        for db in dbs:
            upload_offsite(settings, set_id, db, progress)
    return set_id


# --- deep verification ------------------------------------------------------------------------

def verify_restore(settings: Settings, set_id: str, dbs: Iterable[EngineName] = ENGINE_NAMES,
                   progress: Progress = no_progress) -> dict[str, bool]:
    """Restore each database's archive into a scratch target and compare its digest with
    the manifest's `source_digest`: the only proof a backup really restores. The
    result is recorded as `restore_check` in each entry; never raises for one db."""
    catalog = Catalog(settings.backup_dir)
    results: dict[str, bool] = {}
    for db in dbs:
        started = time.monotonic()
        record: dict[str, Any] = {"checked_at": _now()}
        work = catalog.work_dir(f"{set_id}-{db}-verify")
        try:
            entry = _entry(catalog, set_id, db)
            path = catalog.archive_path(set_id, db)
            if sha256_file(path) != entry.get("sha256"):
                raise BackupError(f"{db} archive sha256 differs from the manifest")
            extract_archive(path, work)
            engine = build_engine(db, settings)
            try:
                with engine.scratch() as scratch:
                    progress(f"{db}: restoring into a scratch target", 0, None)
                    restored = scratch.restore(work, progress)
                    digest = scratch.digest()
                    ok, digest_notes = matches_backup(scratch, work, restored, digest, entry.get("source_digest"))
            finally:
                engine.close()
            record.update(ok=ok, digest=digest, expected=entry.get("source_digest"),
                          restored_counts=restored.counts, notes=restored.notes + digest_notes)
        except Exception as exc:
            ok = False
            record.update(ok=False, error=safe_error(exc))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        record["seconds"] = round(time.monotonic() - started, 3)
        catalog.update_database(set_id, db, restore_check=record)
        progress(f"{db}: scratch restore digest {'matches' if ok else 'DIFFERS'}", 1, 1)
        results[db] = ok
    return results
