"""The local catalogue: backup sets in a directory (the `rpger-backups` volume).

    sets/<set_id>/manifest.json       the set (rpger_ops.sets.BackupSet, JSON)
    sets/<set_id>/<db>.tar.zst        one archive per database (layout "archive")
    blobs/<ab>/<id>                   content-addressed dump files (layout "blobs")
    blobs/<ab>/<id>.sha256            the blob's stored sha256 and size, written before it
    keys/blob-id.key                  the keyed-address key of encrypted blobs (made on first use)
    tmp/                              work in progress; never listed

Manifests are updated under an exclusive file lock (`lock`), because the three
database chains of one set run in parallel processes, and replaced
atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from rpger_ops.archive import sha256_file
from rpger_ops.sets import BackupSet, SetIdError, set_time
from rpger_ops.store.base import (
    MANIFEST,
    ArchiveMissing,
    BlobInfo,
    CorruptArchive,
    ManifestError,
    SetNotFound,
    StoredArchive,
    StoreError,
    archive_name,
    blob_path,
    check_blob_id,
    scanned_ids,
)

# Work folders older than this belong to runs that died (a dump takes minutes).
STALE_WORK_HOURS = 24.0


class LocalStore:
    label = "local"

    def __init__(self, backup_dir: Path | str) -> None:
        self.root = Path(backup_dir)
        self.sets_dir = self.root / "sets"
        self.tmp_dir = self.root / "tmp"

    def where(self) -> str:
        return str(self.sets_dir)

    # --- paths ---------------------------------------------------------------------
    def set_dir(self, set_id: str) -> Path:
        try:
            set_time(set_id)  # also keeps ids from escaping the folder
        except SetIdError as exc:
            raise StoreError(str(exc)) from None
        return self.sets_dir / set_id

    def archive_path(self, set_id: str, db: str) -> Path:
        return self.set_dir(set_id) / archive_name(db)

    def manifest_path(self, set_id: str) -> Path:
        return self.set_dir(set_id) / MANIFEST

    def work_dir(self, label: str) -> Path:
        """A fresh private scratch folder under tmp/ (same filesystem: renames are atomic)."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=label + "-", dir=self.tmp_dir))

    def remove_stale_work(self, older_than_hours: float = STALE_WORK_HOURS) -> list[str]:
        """Remove tmp/ entries left by runs that died (a killed process cannot clean up
        after itself). Work of live runs is young and stays."""
        if not self.tmp_dir.exists():
            return []
        cutoff = time.time() - older_than_hours * 3600
        removed = []
        for path in self.tmp_dir.iterdir():
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

    # --- listing -------------------------------------------------------------------
    def _scan(self) -> dict[str, bool]:
        if not self.sets_dir.is_dir():
            return {}
        found = {}
        try:
            for p in self.sets_dir.iterdir():
                try:
                    set_time(p.name)
                except SetIdError:
                    continue
                found[p.name] = (p / MANIFEST).exists()
        except OSError as exc:
            raise StoreError(f"local backup directory {self.sets_dir} unreadable: {exc.strerror}") from None
        return found

    def set_ids(self) -> list[str]:
        return scanned_ids(self._scan(), complete=True)

    def incomplete_set_ids(self) -> list[str]:
        return scanned_ids(self._scan(), complete=False)

    # --- manifests -----------------------------------------------------------------
    def read(self, set_id: str) -> BackupSet:
        path = self.manifest_path(set_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SetNotFound(f"backup set {set_id} not found in {self.sets_dir}") from None
        except OSError as exc:
            raise StoreError(f"backup set {set_id}: manifest unreadable ({exc.strerror})") from None
        return _parse(text, set_id, "local")

    @contextmanager
    def lock(self, set_id: str, name: str = "manifest") -> Iterator[None]:
        """Serialise one kind of work on a set across processes (exclusive flock)."""
        lock_path = self.set_dir(set_id) / f".{name}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def write(self, backup_set: BackupSet) -> None:
        with self.lock(backup_set.set_id):
            self._write_unlocked(backup_set)

    def _write_unlocked(self, backup_set: BackupSet) -> None:
        path = self.manifest_path(backup_set.set_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
        tmp.write_text(dump_manifest(backup_set), encoding="utf-8")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def update(self, set_id: str, mutate: Callable[[BackupSet], None]) -> BackupSet:
        """Read-modify-write under the set's lock."""
        with self.lock(set_id):
            backup_set = self.read(set_id)
            mutate(backup_set)
            self._write_unlocked(backup_set)
            return backup_set

    def create(self, backup_set: BackupSet) -> BackupSet:
        """Write the manifest unless the set exists already (idempotent); returns the stored set."""
        with self.lock(backup_set.set_id):
            try:
                return self.read(backup_set.set_id)
            except SetNotFound:
                self._write_unlocked(backup_set)
                return backup_set

    # --- archives ------------------------------------------------------------------
    def install_archive(self, tmp_file: Path, set_id: str, db: str) -> Path:
        """Move a finished archive written under tmp/ into its set (atomic rename)."""
        dest = self.archive_path(set_id, db)
        os.replace(tmp_file, dest)
        return dest

    def put_archive(self, set_id: str, db: str, path: Path, sha256: str) -> StoredArchive:
        started = time.monotonic()
        dest = self.archive_path(set_id, db)
        size = path.stat().st_size
        if dest.exists() and dest.stat().st_size == size and sha256_file(dest) == sha256:
            return StoredArchive(str(dest), sha256, size, False, time.monotonic() - started)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        try:
            shutil.copyfile(path, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            actual = sha256_file(tmp)
            if actual != sha256:
                raise StoreError(f"local copy of {path.name} hashes to {actual[:12]}…, expected {sha256[:12]}…")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return StoredArchive(str(dest), sha256, size, True, time.monotonic() - started)

    def fetch_archive(self, set_id: str, db: str, sha256: str, work: Path) -> Path:
        path = self.archive_path(set_id, db)
        if not path.is_file():
            raise ArchiveMissing(f"local set {set_id}: archive {path.name} is missing")
        return _checked(path, sha256, f"local set {set_id}: {path.name}")

    def archive_sha256(self, set_id: str, db: str) -> str | None:
        path = self.archive_path(set_id, db)
        try:
            return sha256_file(path)
        except FileNotFoundError:
            return None

    # --- blobs ---------------------------------------------------------------------
    def blob_file(self, blob_id: str) -> Path:
        return self.root / blob_path(blob_id)

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.with_name(path.name + ".sha256")

    @contextmanager
    def blob_lock(self, exclusive: bool) -> Iterator[None]:
        """Writers of sets (shared) against the sweep (exclusive), across processes. One
        host writes both stores, so this lock also guards the off-site sweep."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".blobs.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def blob_info(self, blob_id: str) -> BlobInfo | None:
        path = self.blob_file(blob_id)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        try:
            recorded, _, size = self._sidecar(path).read_text(encoding="ascii").strip().partition(" ")
            stored_sha: str | None = recorded if int(size) == st.st_size else None
        except (OSError, ValueError):
            stored_sha = None
        return BlobInfo(blob_id, stored_sha, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def install_blob(self, tmp_file: Path, blob_id: str, stored_sha256: str) -> None:
        """Move a finished blob written under tmp/ into place: the sidecar first, then
        the blob (atomic renames, fsynced), so a blob present has its recorded hash."""
        dest = self.blob_file(blob_id)
        dest.parent.mkdir(parents=True, exist_ok=True)
        side_tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.sha256.tmp")  # threads share a pid
        side_tmp.write_text(f"{stored_sha256} {tmp_file.stat().st_size}\n", encoding="ascii")
        with open(side_tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(side_tmp, self._sidecar(dest))
        with open(tmp_file, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_file, dest)
        _fsync_dir(dest.parent)

    def put_blob(self, blob_id: str, path: Path, stored_sha256: str) -> StoredArchive:
        started = time.monotonic()
        dest = self.blob_file(blob_id)
        size = path.stat().st_size
        info = self.blob_info(blob_id)
        if info is not None and info.stored_sha256 == stored_sha256 and sha256_file(dest) == stored_sha256:
            return StoredArchive(str(dest), stored_sha256, size, False, time.monotonic() - started)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp_dir / f".{blob_id}.{uuid.uuid4().hex}.part"
        try:
            shutil.copyfile(path, tmp)
            actual = sha256_file(tmp)
            if actual != stored_sha256:
                raise StoreError(f"local copy of blob {blob_id[:12]}… hashes to {actual[:12]}…, "
                                 f"expected {stored_sha256[:12]}…")
            self.install_blob(tmp, blob_id, stored_sha256)
        finally:
            tmp.unlink(missing_ok=True)
        return StoredArchive(str(dest), stored_sha256, size, True, time.monotonic() - started)

    def fetch_blob(self, blob_id: str, stored_sha256: str, work: Path) -> Path:
        path = self.blob_file(blob_id)
        if not path.is_file():
            raise ArchiveMissing(f"local blob {blob_id[:12]}… is missing")
        return _checked(path, stored_sha256, f"local blob {blob_id[:12]}…")

    def blob_sha256(self, blob_id: str) -> str | None:
        try:
            return sha256_file(self.blob_file(blob_id))
        except FileNotFoundError:
            return None

    def keep_blob(self, blob_id: str) -> None:
        with suppress(FileNotFoundError):
            os.utime(self.blob_file(blob_id))

    def list_blobs(self) -> list[BlobInfo]:
        out = []
        base = self.root / "blobs"
        if not base.is_dir():
            return []
        for fan in sorted(base.iterdir()):
            if not fan.is_dir():
                continue
            for path in sorted(fan.iterdir()):
                name = path.name
                if name.endswith(".sha256") or name.startswith("."):
                    continue
                try:
                    check_blob_id(name)
                    st = path.stat()
                except (StoreError, FileNotFoundError):
                    continue
                out.append(BlobInfo(name, None, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        return out

    def delete_blob(self, blob_id: str) -> None:
        path = self.blob_file(blob_id)
        try:
            path.unlink(missing_ok=True)  # the blob first: a sidecar alone means "absent"
            self._sidecar(path).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot delete local blob {blob_id[:12]}…: {exc.strerror}") from None

    def delete(self, set_id: str) -> None:
        d = self.set_dir(set_id)
        try:
            self.manifest_path(set_id).unlink(missing_ok=True)
            shutil.rmtree(d)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot delete local set {set_id}: {exc.strerror}") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dump_manifest(backup_set: BackupSet) -> str:
    return json.dumps(backup_set.model_dump(mode="json", exclude_none=True), indent=2, sort_keys=True)


def _parse(text: str, set_id: str, where: str) -> BackupSet:
    try:
        backup_set = BackupSet.model_validate_json(text)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        loc = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        msg = errors[0]["msg"] if errors else "invalid"
        raise ManifestError(f"{where} backup set {set_id}: manifest is not a backup set "
                            f"({loc or 'document'}: {msg})") from None
    if backup_set.set_id != set_id:
        raise ManifestError(f"{where} backup set {set_id}: manifest describes set {backup_set.set_id}")
    return backup_set


parse_manifest = _parse


def _checked(path: Path, sha256: str, what: str) -> Path:
    """`path` if its bytes hash to `sha256`; CorruptArchive otherwise."""
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise CorruptArchive(f"{what} unreadable ({exc.strerror})") from None
    if actual != sha256:
        raise CorruptArchive(f"{what} is corrupt (sha256 {actual[:12]}… != manifest {sha256[:12]}…)")
    return path
