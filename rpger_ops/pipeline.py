"""The backup pipeline: dump -> archive -> checks (+ shrink) -> off-site copy.

One object holds the steps; the CLI (`rpger-ops backup`), the safety backup a
forced restore takes, and the Dagster assets and jobs call the same methods,
so every path has the same behaviour. Every step records what it did in the
set's manifest (`rpger_ops.sets.BackupSet`) in the local store:

    entry:  dumping -> archived -> verified | failed
    later:  verified -> corrupt (a re-check, or a restore, found the archive damaged)
            verified -> restore_failed (a scratch restore did not give the content back)

A failure anywhere removes the step's partial files. Each database's off-site
copy is made once its own archive is verified; the off-site manifest is the
set as that store holds it (entries not copied there are `local_only`), so a
set whose other database failed is visibly partial off-site too and never
chosen where it cannot serve.

The content digest of each database comes from its dump (computed while the
dump is written), so a backup reads each database once.

New sets store each dump as content-addressed blobs (`rpger_ops.blobs`,
layout "blobs"; RPGER_SET_FORMAT=1 keeps the tar.zst archive of 0.1/0.2). With
RPGER_AGE_RECIPIENTS_FILE set, blobs and the entry's plaintext facts (digest,
plaintext hashes) are age-encrypted: the dump is parsed and counted, and each
new blob decompressed and compared, before encryption; the checks afterwards
hash the ciphertext, which needs no key.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

import rpger_ops
from rpger_ops import heartbeat
from rpger_ops.alerts import Alerter
from rpger_ops.archive import ArchiveError, create_archive, extract_archive, sha256_file
from rpger_ops.blobs import (
    SEALED_DIGEST,
    SEALED_PLAIN,
    BlobError,
    Codec,
    copy_blob,
    identities_for,
    pack_dump,
    readable_entry,
    seal_facts,
    stored_problem,
    tree_hash,
    unpack_entry,
)
from rpger_ops.crypto import CryptoError, IdentityMissing, WrongIdentity
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
from rpger_ops.monitoring import Finding, shrink_finding
from rpger_ops.schema import code_schema_version
from rpger_ops.sets import (
    BackupSet,
    CheckOutcome,
    DatabaseEntry,
    EntryStatus,
    OffsiteCopy,
    RestoreCheck,
    SetKind,
    new_set_id,
    now_iso,
)
from rpger_ops.settings import Settings
from rpger_ops.store import (
    CorruptArchive,
    LocalStore,
    SetStore,
    StoreError,
    archive_name,
    offsite_store,
    read_sets,
)

CHECK_NAMES = ("sha256", "readable", "counts")
EngineFactory = Callable[[EngineName, Settings], Engine]
_FROM_SETTINGS = object()


class BackupError(Exception):
    """A backup step failed; the message is safe to show. `set_id` names the set."""

    def __init__(self, message: str, set_id: str | None = None) -> None:
        super().__init__(message)
        self.set_id = set_id


class OffsiteCopyError(BackupError):
    """The local copy is verified, but its off-site copy failed."""


@dataclass
class SetOutcome:
    """What `take_set` did: the set as stored locally, and what failed where."""

    backup_set: BackupSet
    failures: dict[str, str] = field(default_factory=dict)  # db -> why its local backup failed
    offsite_failures: dict[str, str] = field(default_factory=dict)  # db -> why its off-site copy failed

    @property
    def set_id(self) -> str:
        return self.backup_set.set_id

    @property
    def complete(self) -> bool:
        return self.backup_set.complete

    @property
    def ok(self) -> bool:
        return self.complete and not self.offsite_failures

    def problems(self) -> list[str]:
        return list(self.failures.values()) + list(self.offsite_failures.values())


def remote_view(backup_set: BackupSet) -> BackupSet:
    """The set as an off-site store holds it: a verified entry whose archive is not
    (or no longer) there with the same sha256 is `local_only`."""
    remote = backup_set.model_copy(deep=True)
    for entry in remote.databases.values():
        entry.work_dir = None
        copy = entry.offsite
        if entry.verified and not (copy and copy.status == "verified" and copy.sha256 == entry.sha256):
            entry.status = EntryStatus.LOCAL_ONLY
    return remote


class BackupPipeline:
    def __init__(self, settings: Settings, local: LocalStore | None = None,
                 offsite: SetStore | None | object = _FROM_SETTINGS,
                 engine_factory: EngineFactory = build_engine, alerter: Alerter | None = None) -> None:
        self.settings = settings
        self.local = local or LocalStore(settings.backup_dir)
        self._offsite = offsite
        self.engine_factory = engine_factory
        self.alerter = alerter or Alerter(settings)
        self._codec: Codec | None = None

    @property
    def codec(self) -> Codec:
        """How new blobs are written (recipients and the address key loaded once)."""
        if self._codec is None:
            self._codec = Codec.from_settings(self.settings)
        return self._codec

    @property
    def offsite(self) -> SetStore | None:
        if self._offsite is _FROM_SETTINGS:
            self._offsite = offsite_store(self.settings)
        return self._offsite  # type: ignore[return-value]

    # --- the set ---------------------------------------------------------------------
    def start_set(self, kind: SetKind = SetKind.SCHEDULED, planned: Iterable[EngineName] = ENGINE_NAMES,
                  set_id: str | None = None) -> BackupSet:
        """Create a new set (a fresh UTC id, never an existing one), or open `set_id`
        (idempotent: each Dagster step of a set calls it)."""
        if set_id is None:
            self.local.remove_stale_work()
            set_id = self._reserve_set_id()
        return self.local.create(BackupSet(
            set_id=set_id, kind=kind, planned=[db for db in ENGINE_NAMES if db in set(planned)],
            stack_id=self.settings.stack_id, tool_version=rpger_ops.__version__,
            code_schema_version=code_schema_version()))

    def _reserve_set_id(self) -> str:
        # Ids have one-second resolution; two backups in one second (a safety
        # backup right after a manual one) take the next free second.
        self.local.sets_dir.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        for offset in range(120):
            set_id = new_set_id(now + timedelta(seconds=offset))
            try:
                self.local.set_dir(set_id).mkdir()
                return set_id
            except FileExistsError:
                continue
        raise BackupError("could not allocate a new backup set id (120 sets in two minutes?)")

    def read(self, set_id: str) -> BackupSet:
        try:
            return self.local.read(set_id)
        except StoreError as exc:
            raise BackupError(str(exc), set_id) from None

    def _entry(self, set_id: str, db: str) -> DatabaseEntry:
        entry = self.read(set_id).entry(db)
        if entry is None:
            raise BackupError(f"backup set {set_id} has no {db} entry", set_id)
        return entry

    def _set_entry(self, set_id: str, db: EngineName, **fields: object) -> DatabaseEntry:
        def mutate(s: BackupSet) -> None:
            current = s.databases.get(db)
            data = current.model_dump() if current is not None else {}
            data.update(fields)
            s.databases[db] = DatabaseEntry.model_validate(data)

        return self.local.update(set_id, mutate).databases[db]

    def _fail(self, set_id: str, db: EngineName, step: str, exc: BaseException) -> BackupError:
        message = f"{db} {step} failed: {safe_error(exc)}"
        self._set_entry(set_id, db, status=EntryStatus.FAILED, error=message, failed_at=now_iso())
        return BackupError(f"backup set {set_id}: {message}", set_id)

    def _raise_failed(self, set_id: str, db: EngineName, step: str, exc: BaseException) -> NoReturn:
        """Record the entry as failed, then raise: a BackupError for errors, while
        KeyboardInterrupt and friends keep their meaning."""
        failure = self._fail(set_id, db, step, exc)
        if not isinstance(exc, Exception):
            raise exc
        raise failure from None

    # --- step 1: dump -------------------------------------------------------------------
    def dump(self, set_id: str, db: EngineName, progress: Progress = no_progress) -> DatabaseEntry:
        """Dump one database into a private work folder (entry "dumping", `work_dir`).
        Raises BackupError (entry "failed", folder removed) on any failure, including a
        non-empty database whose dump came out empty."""
        previous = self.read(set_id).entry(db)
        if previous is not None and previous.status not in (EntryStatus.DUMPING, EntryStatus.FAILED):
            # A set id is a point in time: re-dumping would put today's data under an old name.
            raise BackupError(f"backup set {set_id} already holds a {previous.status} {db} archive; "
                              "take a new set instead of re-dumping an old one", set_id)
        if previous is not None and previous.work_dir:
            shutil.rmtree(previous.work_dir, ignore_errors=True)
        self.local.archive_path(set_id, db).unlink(missing_ok=True)
        self.local.update(set_id, lambda s: s.databases.__setitem__(
            db, DatabaseEntry(status=EntryStatus.DUMPING, started_at=now_iso())))
        dest = self.local.work_dir(f"{set_id}-{db}-dump")
        engine = self.engine_factory(db, self.settings)
        try:
            ping = engine.ping()
            # The server's own counts (cheap: no read of the data) guard against an empty dump.
            source_items = sum(s.count for s in engine.stats().values())
            marker = engine.read_marker()
            progress(f"{db}: dumping ({source_items} items)", 0, source_items or None)
            started = time.monotonic()
            result = engine.dump(dest, progress)
            seconds = time.monotonic() - started
            dumped = sum(result.counts.values())
            if source_items > 0 and dumped == 0:
                raise EngineError(f"dump came out empty although the database holds {source_items} items")
            if not result.digest:
                raise EngineError("the engine returned no digest of its dump")
        except BaseException as exc:
            shutil.rmtree(dest, ignore_errors=True)
            engine.close()
            self._raise_failed(set_id, db, "dump", exc)
        engine.close()
        layout = "blobs" if self.settings.set_format >= 2 else "archive"
        digest_fields: dict[str, object] = {"digest": result.digest, "encrypted": False, "sealed": {}}
        if layout == "blobs" and self.settings.encryption_enabled:
            try:
                recipients = self.codec.recipients
                assert recipients is not None
                digest_fields = {"digest": None, "encrypted": True,
                                 "sealed": seal_facts({SEALED_DIGEST: result.digest}, recipients)}
            except CryptoError as exc:
                shutil.rmtree(dest, ignore_errors=True)
                raise self._fail(set_id, db, "dump", exc) from None
        entry = self._set_entry(
            set_id, db, status=EntryStatus.DUMPING, work_dir=str(dest), counts=result.counts, layout=layout,
            source_items=source_items, **digest_fields, digest_version=type(engine).digest_version,
            schema_version=marker.schema_version if marker else 0,
            migrations=[e.as_dict() for e in marker.migrations] if marker and marker.migrations is not None else None,
            server_version=result.server_version or ping.server_version, server_kind=ping.server_kind,
            point_in_time=result.point_in_time, dumped_at=now_iso(), dump_seconds=round(seconds, 3),
            dump_bytes=result.bytes_written, notes=list(result.notes), extra=result.extra)
        progress(f"{db}: dumped {dumped} items, {result.bytes_written} bytes in {seconds:.1f}s", 1, 1)
        return entry

    # --- step 2: archive ------------------------------------------------------------------
    def archive(self, set_id: str, db: EngineName, progress: Progress = no_progress) -> DatabaseEntry:
        """Turn the recorded dump folder into `sets/<id>/<db>.tar.zst` (written under tmp/,
        renamed into place), then remove the dump folder. Status "archived"."""
        entry = self._entry(set_id, db)
        dump_dir = Path(entry.work_dir or "")
        if entry.status != EntryStatus.DUMPING or not entry.work_dir or not dump_dir.is_dir():
            raise BackupError(f"backup set {set_id}: no finished {db} dump to archive "
                              f"(status {entry.status!r}); run the dump again", set_id)
        if entry.layout == "blobs":
            return self._store_blobs(set_id, db, entry, dump_dir, progress)
        work = self.local.work_dir(f"{set_id}-{db}-archive")
        try:
            progress(f"{db}: compressing (zstd level {self.settings.zstd_level})", 0, None)
            started = time.monotonic()
            tmp_file = work / archive_name(db)
            info = create_archive(dump_dir, tmp_file, level=self.settings.zstd_level)
            self.local.install_archive(tmp_file, set_id, db)
            seconds = time.monotonic() - started
        except BaseException as exc:
            shutil.rmtree(dump_dir, ignore_errors=True)
            self._raise_failed(set_id, db, "archive", exc)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(dump_dir, ignore_errors=True)
        entry = self._set_entry(
            set_id, db, status=EntryStatus.ARCHIVED, work_dir=None, archive=archive_name(db),
            archive_bytes=info.bytes, sha256=info.sha256, archived_at=now_iso(),
            archive_seconds=round(seconds, 3), zstd_level=self.settings.zstd_level)
        progress(f"{db}: archive {info.bytes} bytes in {seconds:.1f}s", 1, 1)
        return entry

    def _store_blobs(self, set_id: str, db: EngineName, entry: DatabaseEntry, dump_dir: Path,
                     progress: Progress) -> DatabaseEntry:
        """Every file of the dump as a blob (new ones compressed, checked, encrypted);
        status "archived" with the blob list. Encrypted: the dump is parsed and counted
        here, before encryption (the later checks cannot read it without the identity)."""
        work = self.local.work_dir(f"{set_id}-{db}-blobs")
        pre_checks: dict[str, CheckOutcome] = {}
        try:
            codec = self.codec
            progress(f"{db}: storing blobs (zstd level {codec.level}"
                     f"{', age-encrypted' if codec.encrypted else ''})", 0, None)
            if codec.encrypted:
                pre_checks = self._pre_encryption_checks(db, dump_dir, entry)
            # Shared: the sweep (exclusive) never runs between a blob's write and the manifest naming it.
            with self.local.blob_lock(exclusive=False):
                packed = pack_dump(dump_dir, self.local, codec, work, lambda m: progress(f"{db}: {m}", 0, None))
                fields: dict[str, object] = {}
                if codec.encrypted:
                    assert codec.recipients is not None and codec.blob_key is not None
                    fields = {"blob_key_id": codec.blob_key.key_id,
                              "sealed": {**entry.sealed, **seal_facts({SEALED_PLAIN: packed.plain}, codec.recipients)}}
                entry = self._set_entry(
                    set_id, db, status=EntryStatus.ARCHIVED, work_dir=None, archive=None,
                    files={k: v.model_dump() for k, v in packed.files.items()}, sha256=tree_hash(packed.files),
                    archive_bytes=packed.stored_bytes, new_bytes=packed.new_bytes, archived_at=now_iso(),
                    archive_seconds=round(packed.seconds, 3), zstd_level=codec.level,
                    checks={k: v.model_dump() for k, v in pre_checks.items()},
                    notes=[*entry.notes, *packed.rewritten], **fields)
        except BaseException as exc:
            shutil.rmtree(dump_dir, ignore_errors=True)
            self._raise_failed(set_id, db, "archive", exc)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(dump_dir, ignore_errors=True)
        progress(f"{db}: {len(packed.files)} blobs, {packed.new_blobs} new ({packed.new_bytes} bytes), "
                 f"{packed.reused_blobs} shared ({packed.stored_bytes - packed.new_bytes} bytes) "
                 f"in {packed.seconds:.1f}s", 1, 1)
        return entry

    def _pre_encryption_checks(self, db: EngineName, dump_dir: Path, entry: DatabaseEntry) -> dict[str, CheckOutcome]:
        """The plaintext checks of an encrypted entry: the dump parses and holds the counts
        it was dumped with. A failure fails the archive step."""
        try:
            parsed = self.engine_factory(db, self.settings).count_dump(dump_dir)
        except (EngineError, OSError, ValueError) as exc:
            raise BackupError(f"{db} dump unreadable before encryption: {safe_error(exc)}") from None
        counts = _check_counts(parsed, entry.counts)
        if not counts.passed:
            raise BackupError(f"{db} dump before encryption: {counts.description}")
        return {
            "readable": CheckOutcome(name="readable", passed=True, description=(
                f"before encryption: parsed {len(parsed)} namespaces; every new blob decompressed to the dumped bytes")),
            "counts": counts.model_copy(update={"description": "before encryption: " + counts.description}),
        }

    # --- step 3: checks ----------------------------------------------------------------------
    def check(self, set_id: str, db: EngineName) -> list[CheckOutcome]:
        """sha256 matches the manifest; the archive decompresses and the engine parses it;
        parsed counts equal those recorded at dump time.

        First check of a new archive: "verified" when all pass, else "failed". A re-check
        of a verified archive that fails marks it "corrupt": it is never used again."""
        entry = self._entry(set_id, db)
        if entry.layout == "blobs":
            return self._record_checks(set_id, db, entry, self._check_blobs(set_id, db, entry))
        path = self.local.archive_path(set_id, db)
        outcomes = [_check_sha256(path, entry)]
        parsed: dict[str, int] | None = None
        if outcomes[0].passed:
            work = self.local.work_dir(f"{set_id}-{db}-check")
            try:
                extract_archive(path, work)
                parsed = self.engine_factory(db, self.settings).count_dump(work)
                outcomes.append(CheckOutcome(name="readable", passed=True,
                                             description=f"decompressed and parsed {len(parsed)} namespaces"))
            except (ArchiveError, EngineError, OSError, ValueError) as exc:
                outcomes.append(CheckOutcome(name="readable", passed=False,
                                             description=f"cannot read archive: {safe_error(exc)}"))
            finally:
                shutil.rmtree(work, ignore_errors=True)
        else:
            outcomes.append(CheckOutcome(name="readable", passed=False, description="not read: sha256 check failed"))
        outcomes.append(_check_counts(parsed, entry.counts if entry.dumped_at else None))
        return self._record_checks(set_id, db, entry, outcomes)

    def _record_checks(self, set_id: str, db: EngineName, entry: DatabaseEntry,
                       outcomes: list[CheckOutcome]) -> list[CheckOutcome]:
        passed = all(o.passed for o in outcomes)
        error = None if passed else "; ".join(f"{o.name}: {o.description}" for o in outcomes if not o.passed)
        self._set_entry(set_id, db, status=_after_check(entry.status, passed), checked_at=now_iso(),
                        checks={o.name: o for o in outcomes},
                        error=entry.error if passed and entry.status == EntryStatus.RESTORE_FAILED else error)
        return outcomes

    def _check_blobs(self, set_id: str, db: EngineName, entry: DatabaseEntry) -> list[CheckOutcome]:
        """sha256: every referenced blob is stored and hashes to the manifest (no key needed).
        readable + counts: the blobs decompress (decrypted, with the identity) to a dump the
        engine parses, with the counts dumped; encrypted and no identity here: the checks
        made before encryption stand."""
        if not entry.files or not entry.sha256:
            return [CheckOutcome(name="sha256", passed=False, description="manifest lists no blobs "
                                 "(archive step did not finish)"),
                    CheckOutcome(name="readable", passed=False, description="not read: no blobs"),
                    _check_counts(None, None)]
        problem = stored_problem(self.local, entry) or (
            None if tree_hash(entry.files) == entry.sha256 else "blob list does not match the entry's tree hash")
        stored = sum(r.stored_bytes for r in entry.files.values())
        outcomes = [CheckOutcome(name="sha256", passed=problem is None, description=problem or (
            f"{len(entry.files)} blobs ({stored} bytes{', encrypted' if entry.encrypted else ''}) "
            "hash to the manifest"))]
        if problem is not None:
            return [*outcomes, CheckOutcome(name="readable", passed=False, description="not read: sha256 check failed"),
                    _check_counts(None, entry.counts)]
        if entry.encrypted and self.settings.age_identity_file is None:
            # The stored bytes are proven unchanged, so the last plaintext check (before
            # encryption, or a later one with the identity) still stands.
            for name in ("readable", "counts"):
                before = entry.checks.get(name)
                ok = before is not None and before.passed
                outcomes.append(CheckOutcome(name=name, passed=ok, description=(
                    (before.description if before.description.startswith("before encryption")
                     else f"last checked with the identity: {before.description}")
                    if ok and before is not None
                    else "no plaintext check recorded, and no identity here to read the blobs")))
            return outcomes
        work = self.local.work_dir(f"{set_id}-{db}-check")
        parsed: dict[str, int] | None = None
        try:
            what = f"local set {set_id} {db}"
            unpack_entry(self.local, entry, work / "dump", work / "blobs", identities_for(entry, self.settings, what),
                         what)
            parsed = self.engine_factory(db, self.settings).count_dump(work / "dump")
            outcomes.append(CheckOutcome(name="readable", passed=True, description=(
                f"{'decrypted, ' if entry.encrypted else ''}decompressed and parsed {len(parsed)} namespaces")))
        except (StoreError, BlobError, CryptoError, EngineError, OSError, ValueError) as exc:
            outcomes.append(CheckOutcome(name="readable", passed=False,
                                         description=f"cannot read blobs: {safe_error(exc)}"))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        outcomes.append(_check_counts(parsed, entry.counts if entry.dumped_at else None))
        return outcomes

    def shrink(self, set_id: str, db: EngineName) -> Finding:
        """Items or archive size far below the previous verified set: suspicious, not invalid.
        Alerts once per incident (WARN); never changes the entry's status."""
        try:
            finding = shrink_finding(self.settings, read_sets(self.local), set_id, db)
        except StoreError as exc:
            finding = Finding(True, f"not compared: {exc}")
        self.alerter.update(f"shrunk:{db}", not finding.ok, finding.summary, finding.details, severity="warning")
        return finding

    # --- step 4: off-site ---------------------------------------------------------------------
    def upload(self, set_id: str, db: EngineName, progress: Progress = no_progress) -> OffsiteCopy | None:
        """Copy one verified archive off-site and prove it, then the set's off-site manifest.
        None when no off-site store is configured. Raises OffsiteCopyError on failure;
        the local copy is left as it was."""
        store = self.offsite
        if store is None:
            return None
        progress(f"{db}: uploading off-site to {store.where()}", 0, None)
        try:
            # One uploader at a time per set, so the last off-site manifest lists every copy.
            with self.local.lock(set_id, "offsite"):
                entry = self._entry(set_id, db)
                if not entry.verified or not entry.sha256:
                    raise BackupError(f"{db} is {entry.status}, not verified; only verified archives go off-site")
                if entry.layout == "blobs":
                    # Shared: no sweep between the blobs' upload and the manifest that names them.
                    with self.local.blob_lock(exclusive=False):
                        blob_copy = self._upload_blobs(store, set_id, db, entry, progress)
                        store.write(remote_view(self.read(set_id)))
                    progress(f"{db}: off-site copy of {len(entry.files)} blobs verified "
                             f"({blob_copy.new_bytes} bytes new)", 1, 1)
                    return blob_copy
                path = self.local.archive_path(set_id, db)
                if sha256_file(path) != entry.sha256:
                    self._set_entry(set_id, db, status=EntryStatus.CORRUPT,
                                    error="local archive no longer matches its sha256 (found before upload)")
                    raise BackupError(f"local {db} archive does not match its manifest sha256 (corrupt); not uploading")
                stored = store.put_archive(set_id, db, path, entry.sha256)
                copy = entry.offsite
                if stored.written or copy is None or copy.status != "verified" or copy.sha256 != stored.sha256:
                    copy = OffsiteCopy(key=stored.key, sha256=stored.sha256, bytes=stored.bytes, etag=stored.etag,
                                       uploaded_at=now_iso())
                    self._set_entry(set_id, db, offsite=copy.model_dump(), offsite_error=None)
                elif entry.offsite_error:
                    self._set_entry(set_id, db, offsite_error=None)
                # Unchanged manifest, unchanged bytes: the store does not rewrite it (idempotent re-runs).
                store.write(remote_view(self.read(set_id)))
        except (BackupError, StoreError, OSError) as exc:
            message = f"{db} off-site copy failed: {exc if isinstance(exc, BackupError | StoreError) else safe_error(exc)}"
            self._set_entry(set_id, db, offsite_error=message)
            raise OffsiteCopyError(f"backup set {set_id}: {message} (the local copy is intact)", set_id) from None
        progress(f"{db}: off-site copy {copy.key} verified", 1, 1)
        return copy

    def _upload_blobs(self, store: SetStore, set_id: str, db: EngineName, entry: DatabaseEntry,
                      progress: Progress) -> OffsiteCopy:
        """Each blob the store lacks is uploaded and read back; the others are reused
        (their stored hash and size as recorded) and, with Object Lock, kept longer."""
        work = self.local.work_dir(f"{set_id}-{db}-upload")
        new_bytes = 0
        try:
            for rel, ref in sorted(entry.files.items()):
                try:
                    if copy_blob(self.local, store, ref, work):
                        new_bytes += ref.stored_bytes
                        progress(f"{db}: uploaded {rel} ({ref.stored_bytes} bytes)", 0, None)
                except CorruptArchive as exc:
                    if "local blob" not in str(exc):
                        raise
                    self._set_entry(set_id, db, status=EntryStatus.CORRUPT, error=f"found before upload: {exc}")
                    raise BackupError(f"local {db} blob is corrupt ({exc}); not uploading") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        copy = OffsiteCopy(key=f"{store.where()} ({len(entry.files)} blobs)", sha256=entry.sha256 or "",
                           bytes=entry.stored_bytes, new_bytes=new_bytes, uploaded_at=now_iso())
        self._set_entry(set_id, db, offsite=copy.model_dump(), offsite_error=None)
        return copy

    # --- composites ----------------------------------------------------------------------------
    def back_up_database(self, set_id: str, db: EngineName, progress: Progress = no_progress) -> DatabaseEntry:
        """Dump, archive, check and shrink-check one database; BackupError when it is not verified."""
        self.dump(set_id, db, progress)
        self.archive(set_id, db, progress)
        failed = [f"{o.name}: {o.description}" for o in self.check(set_id, db) if not o.passed]
        if failed:
            raise BackupError(f"backup set {set_id}: {db} checks failed: {'; '.join(failed)}", set_id)
        self.shrink(set_id, db)
        return self._entry(set_id, db)

    def take_set(self, kind: SetKind = SetKind.MANUAL, dbs: Iterable[EngineName] = ENGINE_NAMES,
                 offsite: bool = True, progress: Progress = no_progress, set_id: str | None = None) -> SetOutcome:
        """A new set of `dbs`: each database dumped, archived, checked and (when `offsite`
        and a store is configured) copied off-site; one failing does not stop the
        others. Up to RPGER_BACKUP_CONCURRENCY databases at once. `set_id`: a new set
        under that id (benchmarks and tests of a history; it must not exist yet)."""
        planned = [db for db in ENGINE_NAMES if db in set(dbs)]
        if set_id is not None and set_id in self.local.set_ids():
            raise BackupError(f"backup set {set_id} exists already", set_id)
        set_id = self.start_set(kind, planned, set_id=set_id).set_id
        progress(f"backup set {set_id} ({kind}): {', '.join(planned)}", 0, None)
        outcome = SetOutcome(self.read(set_id))

        def chain(db: EngineName) -> None:
            try:
                self.back_up_database(set_id, db, progress)
            except BackupError as exc:
                outcome.failures[db] = str(exc)
                return
            if offsite and self.offsite is not None:
                try:
                    self.upload(set_id, db, progress)
                except OffsiteCopyError as exc:
                    outcome.offsite_failures[db] = str(exc)

        # The chains run side by side: the servers and the compressor do the work.
        with ThreadPoolExecutor(max_workers=min(self.settings.backup_concurrency, len(planned)) or 1,
                                thread_name_prefix="backup") as pool:
            for future in [pool.submit(chain, db) for db in planned]:
                future.result()
        outcome.backup_set = self.read(set_id)
        if outcome.complete:  # the dead man's switch (a no-op unless RPGER_HEARTBEAT_URL is set)
            heartbeat.after_complete_set(self.settings, set_id)
        return outcome

    # --- later verification ----------------------------------------------------------------------
    def verify_deep(self, set_id: str, dbs: Iterable[EngineName], progress: Progress = no_progress
                    ) -> dict[str, RestoreCheck]:
        """Restore each archive into a scratch target and compare its digest with the
        manifest's: the only proof a backup really restores. The result is written
        back (`restore_check`; a failure makes the entry "restore_failed")."""
        results: dict[str, RestoreCheck] = {}
        for db in dbs:
            started = time.monotonic()
            work = self.local.work_dir(f"{set_id}-{db}-verify")
            identity_problem = False
            try:
                entry = self._entry(set_id, db)
                if entry.layout == "blobs":
                    what = f"local set {set_id} {db}"
                    try:
                        identities = identities_for(entry, self.settings, what)
                        entry = readable_entry(entry, identities, what)
                    except (IdentityMissing, WrongIdentity) as exc:
                        identity_problem = True
                        raise BackupError(str(exc)) from None
                    problem = stored_problem(self.local, entry)
                    if problem:
                        raise _Corrupt(f"{db}: {problem}")
                    try:
                        unpack_entry(self.local, entry, work, work.parent / f"{work.name}-blobs", identities, what)
                    finally:
                        shutil.rmtree(work.parent / f"{work.name}-blobs", ignore_errors=True)
                else:
                    path = self.local.archive_path(set_id, db)
                    if not entry.sha256 or sha256_file(path) != entry.sha256:
                        raise _Corrupt(f"{db} archive sha256 differs from the manifest")
                    extract_archive(path, work)
                engine = self.engine_factory(db, self.settings)
                try:
                    with engine.scratch() as scratch:
                        progress(f"{db}: restoring into a scratch target", 0, None)
                        restored = scratch.restore(work, progress)
                        # Always the full digest here; the server's hash is recorded beside it.
                        result = check_restored(scratch, work, restored, entry, use_server_hash=False)
                finally:
                    engine.close()
                ok = result.ok
                # An encrypted entry keeps no plaintext digest (nor the server's hash of the
                # plaintext) in the manifest.
                if entry.encrypted:
                    shown: tuple[str | None, str | None, str | None] = (None, None, None)
                else:
                    shown = (result.digest, entry.digest, result.server_hash)
                check = RestoreCheck(ok=ok, digest=shown[0], expected=shown[1], server_hash=shown[2],
                                     restored_counts=restored.counts, notes=restored.notes + result.notes,
                                     error=None if ok else "scratch restore digest differs from the backup's")
            except _Corrupt as exc:
                check = RestoreCheck(ok=False, error=str(exc))
                self._set_entry(set_id, db, status=EntryStatus.CORRUPT, error=str(exc))
            except (BackupError, ArchiveError, EngineError, OSError, StoreError, BlobError, CryptoError) as exc:
                check = RestoreCheck(ok=False, error=safe_error(exc))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            if identity_problem:  # nothing is known about the set itself: it keeps its status
                progress(f"{db}: not deep-verified: {check.error}", 1, 1)
                results[db] = check
                continue
            check.checked_at, check.seconds = now_iso(), round(time.monotonic() - started, 3)
            current = self._entry(set_id, db).status
            status = current
            if current in (EntryStatus.VERIFIED, EntryStatus.RESTORE_FAILED):
                status = EntryStatus.VERIFIED if check.ok else EntryStatus.RESTORE_FAILED
            self._set_entry(set_id, db, restore_check=check.model_dump(), status=status,
                            **({"error": f"deep verify: {check.error}"} if not check.ok else {}))
            progress(f"{db}: scratch restore {'matches' if check.ok else 'FAILED'}", 1, 1)
            results[db] = check
        return results


class _Corrupt(Exception):
    pass


def _after_check(status: EntryStatus, passed: bool) -> EntryStatus:
    """The checks define "verified"; a deep-verify failure is cleared only by a passing
    deep verify, and an archive that was verified and fails later is "corrupt"."""
    if passed:
        return EntryStatus.RESTORE_FAILED if status == EntryStatus.RESTORE_FAILED else EntryStatus.VERIFIED
    if status in (EntryStatus.VERIFIED, EntryStatus.RESTORE_FAILED, EntryStatus.CORRUPT):
        return EntryStatus.CORRUPT
    return EntryStatus.FAILED


def _check_sha256(path: Path, entry: DatabaseEntry) -> CheckOutcome:
    if not path.exists():
        return CheckOutcome(name="sha256", passed=False, description=f"archive {path.name} is missing")
    if not entry.sha256:
        return CheckOutcome(name="sha256", passed=False,
                            description="manifest records no sha256 (archive step did not finish)")
    actual = sha256_file(path)
    if actual != entry.sha256:
        return CheckOutcome(name="sha256", passed=False,
                            description=f"sha256 {actual[:16]}… differs from manifest {entry.sha256[:16]}…")
    return CheckOutcome(name="sha256", passed=True, description=f"sha256 {actual[:16]}… matches the manifest")


def _check_counts(parsed: dict[str, int] | None, recorded: dict[str, int] | None) -> CheckOutcome:
    if parsed is None:
        return CheckOutcome(name="counts", passed=False, description="archive could not be parsed, counts unknown")
    if recorded is None:
        return CheckOutcome(name="counts", passed=False, description="manifest records no counts")
    if parsed != recorded:
        diff = {ns: (recorded.get(ns), parsed.get(ns)) for ns in sorted(set(parsed) | set(recorded))
                if recorded.get(ns) != parsed.get(ns)}
        shown = ", ".join(f"{ns}: recorded {r} archived {p}" for ns, (r, p) in list(diff.items())[:5])
        return CheckOutcome(name="counts", passed=False, description=f"{len(diff)} namespace(s) differ: {shown}")
    return CheckOutcome(name="counts", passed=True,
                        description=f"{sum(parsed.values())} items in {len(parsed)} namespaces, as recorded")
