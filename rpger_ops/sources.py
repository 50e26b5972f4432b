"""Where a restore's data comes from: choosing one backup set, fetching its archives.

Every store (local catalogue, off-site bucket) is read through the same
contract (`rpger_ops.store`). A set may have a copy in each; its databases
are usable from whichever copy holds them verified (the local copy first).

Choosing (`SetSources.select`) follows the one definition in
`rpger_ops.sets`: an explicit id is that set (a safety set too); `latest` is
the newest scheduled or manual set usable for every requested database, and
each newer set passed over is named with its reason.

Fetching (`SetSources.fetch`) brings every requested database of ONE set into
local dump folders before anything is loaded, so a restore of several
databases never mixes sets: when one archive of a set cannot be had from any
of its copies, the whole set is given up and (for `latest`) the next older
usable set is tried. An archive found damaged is written back into that
store's manifest as `corrupt`, so `sets` shows it and nothing picks it again.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rpger_ops.archive import ArchiveError, extract_archive
from rpger_ops.blobs import BlobError, identities_for, readable_entry, unpack_entry
from rpger_ops.crypto import CryptoError, IdentityMissing, WrongIdentity
from rpger_ops.engines.base import EngineName, Progress, no_progress, safe_error
from rpger_ops.sets import (
    AUTOMATIC_KINDS,
    BackupSet,
    DatabaseEntry,
    EntryStatus,
    PassedOver,
    SetIdError,
    set_time,
)
from rpger_ops.store import (
    ArchiveMissing,
    CorruptArchive,
    LocalStore,
    SetNotFound,
    SetStore,
    StoreError,
    offsite_store,
    update,
)

if TYPE_CHECKING:
    from rpger_ops.settings import Settings

log = logging.getLogger(__name__)

Source = Literal["auto", "local", "offsite"]
SOURCES: tuple[Source, ...] = ("auto", "local", "offsite")
_FROM_SETTINGS = object()


class RestoreError(Exception):
    """A restore could not be done; the message is safe to show."""


class RefusedError(RestoreError):
    """Refused on purpose to protect data (non-empty target, newer schema, lock held)."""


class SourceError(RestoreError):
    """A set's archives could not be had from any of its copies."""


class IdentityError(RestoreError):
    """An encrypted set, and no identity (or the wrong one) to read it: no older set is
    tried instead, and nothing has been loaded."""


@dataclass(frozen=True)
class Copy:
    store: SetStore
    backup_set: BackupSet

    @property
    def origin(self) -> str:
        return self.store.label


@dataclass
class CandidateSet:
    """One set id with its copies, local first."""

    set_id: str
    copies: list[Copy]

    @property
    def backup_set(self) -> BackupSet:
        return self.copies[0].backup_set

    def copies_for(self, db: str) -> list[Copy]:
        return [c for c in self.copies if (e := c.backup_set.entry(db)) is not None and e.verified]

    def problems(self, dbs: Iterable[str], explicit: bool = False) -> list[str]:
        """Why no copy can serve `dbs` (empty when they can)."""
        out: list[str] = []
        if not explicit and self.backup_set.kind not in AUTOMATIC_KINDS:
            out.append(f"{self.backup_set.kind} set (only restored by explicit id)")
        for db in dbs:
            if self.copies_for(db):
                continue
            per_copy = [(c.origin, p) for c in self.copies for p in c.backup_set.problems([db], explicit=True)]
            if len(self.copies) == 1:
                out += [p for _, p in per_copy]
            else:
                out.append("; ".join(f"{origin}: {p}" for origin, p in per_copy))
        return out

    def label(self, db: str | None = None) -> str:
        where = "+".join(c.origin for c in (self.copies_for(db) if db else self.copies))
        return f"{self.set_id} ({where})"


@dataclass
class Fetched:
    """One set's archives for the requested databases, checked and extracted."""

    candidate: CandidateSet
    dumps: dict[EngineName, Path]
    origins: dict[EngineName, str]
    entries: dict[EngineName, DatabaseEntry]

    @property
    def set_id(self) -> str:
        return self.candidate.set_id


class SetSources:
    """Backup sets in the local catalogue and the off-site store, through one contract."""

    def __init__(self, settings: Settings, source: Source = "auto", progress: Progress = no_progress,
                 local: LocalStore | None = None, offsite: SetStore | None | object = _FROM_SETTINGS) -> None:
        if source not in SOURCES:
            raise RestoreError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
        self.settings = settings
        self.source = source
        self.progress = progress
        self.local = local or LocalStore(settings.backup_dir)
        self._offsite = offsite
        self.notes: list[str] = []  # why a copy or a set was unusable
        # Stores that could not be listed: "no sets" is then unknown, not proven.
        self.unavailable: list[str] = []
        self.passed_over: list[PassedOver] = []
        self._candidates: list[CandidateSet] | None = None

    @property
    def offsite(self) -> SetStore | None:
        if self._offsite is _FROM_SETTINGS:
            self._offsite = offsite_store(self.settings)
        return self._offsite  # type: ignore[return-value]

    def stores(self) -> list[SetStore]:
        out: list[SetStore] = []
        if self.source != "offsite":
            out.append(self.local)
        if self.source != "local":
            if self.offsite is not None:
                out.append(self.offsite)
            elif self.source == "offsite":
                raise RestoreError("off-site store not configured (set RPGER_S3_ENDPOINT)")
        return out

    # --- listing -----------------------------------------------------------------------
    def candidates(self) -> list[CandidateSet]:
        """Every set with a readable manifest in some store, newest first."""
        if self._candidates is not None:
            return self._candidates
        by_id: dict[str, list[Copy]] = {}
        for store in self.stores():
            try:
                ids = store.set_ids()
            except StoreError as exc:  # a fallback store being down is reported, not fatal
                self.notes.append(f"{store.label} store unavailable: {safe_error(exc)}")
                self.unavailable.append(f"{store.label} store")
                continue
            for set_id in ids:
                try:
                    copy = Copy(store, store.read(set_id))
                except StoreError as exc:
                    self.notes.append(f"{store.label} set {set_id}: {safe_error(exc)}")
                    continue
                by_id.setdefault(set_id, []).append(copy)
        self._candidates = [CandidateSet(i, by_id[i]) for i in sorted(by_id, reverse=True)]
        return self._candidates

    def select(self, set_ref: str, dbs: Sequence[str]) -> list[CandidateSet]:
        """The set(s) a restore of `dbs` may use, in the order to try them.

        An explicit id gives that set alone (safety sets allowed); `latest`
        gives every usable set newest first (the first is the choice, the rest
        fallbacks when its archives cannot be fetched) and records the newer
        unusable ones in `passed_over`."""
        if set_ref != "latest":
            try:
                set_time(set_ref)
            except SetIdError as exc:
                raise RestoreError(str(exc)) from None
            chosen = [c for c in self.candidates() if c.set_id == set_ref]
            if not chosen:
                raise RestoreError(f"backup set {set_ref} not found ({self._where()})" + self._notes_suffix())
            problems = chosen[0].problems(dbs, explicit=True)
            if problems:
                raise RestoreError(f"backup set {set_ref} cannot restore {', '.join(dbs)}: {'; '.join(problems)}")
            return chosen
        usable: list[CandidateSet] = []
        self.passed_over = []
        for candidate in self.candidates():
            problems = candidate.problems(dbs)
            if problems:
                if not usable:
                    self.passed_over.append(PassedOver(candidate.set_id, tuple(problems)))
                continue
            usable.append(candidate)
        return usable

    def _where(self) -> str:
        return {"auto": "local or off-site", "local": "local only", "offsite": "off-site only"}[self.source]

    def _notes_suffix(self) -> str:
        return ("; " + "; ".join(self.notes)) if self.notes else ""

    def nothing_found(self, dbs: Sequence[str]) -> str:
        passed = f"; {len(self.passed_over)} set(s) passed over" if self.passed_over else ""
        return f"no usable backup set for {', '.join(dbs)} ({self._where()}){passed}" + self._notes_suffix()

    # --- fetching ------------------------------------------------------------------------
    def fetch_first(self, candidates: Sequence[CandidateSet], dbs: Sequence[EngineName], work: Path) -> Fetched:
        """Fetch `dbs` from the first candidate whose archives can all be had."""
        tried: list[str] = []
        for candidate in candidates:
            try:
                return self.fetch(candidate, dbs, work)
            except SourceError as exc:
                log.warning("%s; trying the next set", exc)
                self.progress(f"{exc}; trying the next set", 0, None)
                self.notes.append(str(exc))
                tried.append(candidate.set_id)
        raise SourceError(f"no usable backup set for {', '.join(dbs)} could be fetched "
                          f"(tried: {', '.join(tried) or 'none'})" + self._notes_suffix())

    def fetch(self, candidate: CandidateSet, dbs: Sequence[EngineName], work: Path) -> Fetched:
        """Every database of `dbs` from `candidate`, or SourceError (nothing kept)."""
        fetched = Fetched(candidate, {}, {}, {})
        try:
            for db in dbs:
                fetched.dumps[db], copy, entry = self._fetch_one(candidate, db, work)
                fetched.origins[db] = copy.origin
                fetched.entries[db] = entry
        except RestoreError:
            for path in fetched.dumps.values():
                shutil.rmtree(path, ignore_errors=True)
            raise
        return fetched

    def _fetch_one(self, candidate: CandidateSet, db: EngineName, work: Path) -> tuple[Path, Copy, DatabaseEntry]:
        """One database's dump from the first copy that gives it, with its entry as
        restore compares against (an encrypted entry's digest unsealed)."""
        problems = []
        for copy in candidate.copies_for(db):
            entry = copy.backup_set.entry(db)
            assert entry is not None and entry.sha256 is not None
            where = f"{copy.origin} set {candidate.set_id}"
            dest = work / f"{candidate.set_id}-{copy.origin}-{db}"
            shutil.rmtree(dest, ignore_errors=True)
            if entry.layout == "blobs":
                try:
                    return self._fetch_blobs(copy, entry, db, dest, work), copy, readable_entry(
                        entry, identities_for(entry, self.settings, f"{where} {db}"), f"{where} {db}")
                except (IdentityMissing, WrongIdentity) as exc:
                    shutil.rmtree(dest, ignore_errors=True)
                    raise IdentityError(str(exc)) from None
                except (CorruptArchive, ArchiveMissing, BlobError, CryptoError) as exc:
                    problems.append(f"{where}: {exc}")
                    self.mark_corrupt(copy, db, str(exc))
                except (StoreError, OSError) as exc:
                    problems.append(f"{where}: {db} blobs not fetched ({safe_error(exc)})")
                shutil.rmtree(dest, ignore_errors=True)
                continue
            archive: Path | None = None
            try:
                self.progress(f"{db}: fetching and checking {where}", 0, None)
                archive = copy.store.fetch_archive(candidate.set_id, db, entry.sha256, work)
                extract_archive(archive, dest)
                return dest, copy, entry
            except (CorruptArchive, ArchiveMissing, ArchiveError) as exc:  # messages name no secret
                problems.append(str(exc))
                self.mark_corrupt(copy, db, str(exc))
            except (StoreError, OSError) as exc:  # unreachable, disk full: not the archive's fault
                problems.append(f"{where}: {db} archive not fetched ({safe_error(exc)})")
            finally:
                if archive is not None and archive.parent == work:  # a download, not the local copy
                    archive.unlink(missing_ok=True)
            shutil.rmtree(dest, ignore_errors=True)
        raise SourceError(f"set {candidate.set_id}: {db} archive unusable: " + "; ".join(problems or ["no copy"]))

    def _fetch_blobs(self, copy: Copy, entry: DatabaseEntry, db: EngineName, dest: Path, work: Path) -> Path:
        self.progress(f"{db}: fetching and checking {len(entry.files)} blobs of {copy.origin} set "
                      f"{copy.backup_set.set_id}", 0, None)
        what = f"{copy.origin} set {copy.backup_set.set_id} {db}"
        blob_work = work / f".{dest.name}-blobs"
        try:
            unpack_entry(copy.store, entry, dest, blob_work, identities_for(entry, self.settings, what), what)
        finally:
            shutil.rmtree(blob_work, ignore_errors=True)
        return dest

    def mark_corrupt(self, copy: Copy, db: str, reason: str) -> None:
        """Write the damage back so `sets` tells the truth and nothing picks the copy again."""
        def in_store(s: BackupSet) -> None:
            entry = s.entry(db)
            if entry is not None and entry.status == EntryStatus.VERIFIED:
                entry.status, entry.error = EntryStatus.CORRUPT, f"found by a restore: {reason}"

        def in_local_record(s: BackupSet) -> None:
            entry = s.entry(db)
            if entry is not None and entry.offsite is not None:
                entry.offsite.status, entry.offsite.error = "corrupt", f"found by a restore: {reason}"

        try:
            update(copy.store, copy.backup_set.set_id, in_store)
            if copy.store is not self.local:
                update(self.local, copy.backup_set.set_id, in_local_record)
        except SetNotFound:
            pass
        except StoreError as exc:
            log.warning("could not record the damaged %s archive of %s in %s: %s", db,
                        copy.backup_set.set_id, copy.origin, exc)
        self._candidates = None  # re-read on the next listing
