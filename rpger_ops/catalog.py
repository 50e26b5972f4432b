"""The local backup catalogue: backup sets on disk and their manifests.

Layout under `Settings.backup_dir`:

    sets/<set_id>/manifest.json       one per set (set_id: UTC "20261128T030000Z")
    sets/<set_id>/<db>.tar.zst        one archive per database
    tmp/                              work in progress; never listed

A database's entry in a set is usable (restore, preseed, "latest") only when
its status is "verified": the archive exists, its sha256, decompression and
counts checks passed. Everything else ("dumping", "archived", "failed") is
never picked. The manifest is updated under an exclusive file lock because
the three database chains of one set run in parallel processes.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SET_ID_FORMAT = "%Y%m%dT%H%M%SZ"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1

# Database entry statuses.
DUMPING, ARCHIVED, VERIFIED, FAILED = "dumping", "archived", "verified", "failed"


class CatalogError(Exception):
    pass


def new_set_id(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).strftime(SET_ID_FORMAT)


def set_time(set_id: str) -> datetime:
    """The UTC time a set id names; raises CatalogError for a malformed id."""
    try:
        return datetime.strptime(set_id[:16], SET_ID_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise CatalogError(f"not a backup set id: {set_id!r} (expected like 20261128T030000Z)") from None


def archive_name(db: str) -> str:
    return f"{db}.tar.zst"


class Catalog:
    def __init__(self, backup_dir: Path | str) -> None:
        self.root = Path(backup_dir)
        self.sets_dir = self.root / "sets"
        self.tmp_dir = self.root / "tmp"

    # --- paths ---------------------------------------------------------------
    def set_dir(self, set_id: str) -> Path:
        set_time(set_id)  # validates; also keeps ids from escaping the folder
        return self.sets_dir / set_id

    def archive_path(self, set_id: str, db: str) -> Path:
        return self.set_dir(set_id) / archive_name(db)

    def manifest_path(self, set_id: str) -> Path:
        return self.set_dir(set_id) / MANIFEST

    def work_dir(self, label: str) -> Path:
        """A fresh private scratch folder under tmp/ (same filesystem: renames are atomic)."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        import tempfile

        return Path(tempfile.mkdtemp(prefix=label + "-", dir=self.tmp_dir))

    # --- manifests -------------------------------------------------------------
    def create_set(self, set_id: str, **fields: Any) -> dict[str, Any]:
        """Create the set folder and its manifest if absent (idempotent)."""
        d = self.set_dir(set_id)
        d.mkdir(parents=True, exist_ok=True)

        def init(m: dict[str, Any]) -> None:
            if not m:
                m.update({"format": MANIFEST_FORMAT, "set_id": set_id,
                          "created_at": datetime.now(UTC).isoformat(), "databases": {}})
            for k, v in fields.items():
                m.setdefault(k, v)

        return self.update(set_id, init)

    def read(self, set_id: str) -> dict[str, Any]:
        path = self.manifest_path(set_id)
        try:
            return dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise CatalogError(f"backup set {set_id} not found in {self.sets_dir}") from None
        except json.JSONDecodeError as exc:
            raise CatalogError(f"backup set {set_id}: manifest is not valid JSON ({exc})") from None

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

    def update(self, set_id: str, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read-modify-write the manifest under an exclusive lock; atomic replace."""
        with self.lock(set_id):
            path = self.manifest_path(set_id)
            manifest: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
            mutate(manifest)
            tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            return manifest

    def update_database(self, set_id: str, db: str, **fields: Any) -> dict[str, Any]:
        def mutate(m: dict[str, Any]) -> None:
            m.setdefault("databases", {}).setdefault(db, {}).update(fields)

        return self.update(set_id, mutate)

    # --- queries ---------------------------------------------------------------
    def set_ids(self) -> list[str]:
        """All set ids with a manifest, newest first."""
        if not self.sets_dir.exists():
            return []
        ids = []
        for p in self.sets_dir.iterdir():
            try:
                set_time(p.name)
            except CatalogError:
                continue
            if (p / MANIFEST).exists():
                ids.append(p.name)
        return sorted(ids, reverse=True)

    def list_sets(self) -> list[dict[str, Any]]:
        out = []
        for sid in self.set_ids():
            try:
                out.append(self.read(sid))
            except CatalogError:
                continue  # an unreadable manifest is never a usable set
        return out

    @staticmethod
    def is_verified(manifest: dict[str, Any], dbs: Iterable[str]) -> bool:
        entries = manifest.get("databases", {})
        return all(entries.get(db, {}).get("status") == VERIFIED for db in dbs)

    def verified_sets(self, dbs: Iterable[str]) -> list[dict[str, Any]]:
        """Sets whose entries for all of `dbs` are verified, newest first."""
        dbs = list(dbs)
        return [m for m in self.list_sets() if self.is_verified(m, dbs)]

    def latest_verified(self, dbs: Iterable[str]) -> dict[str, Any] | None:
        sets = self.verified_sets(dbs)
        return sets[0] if sets else None

    def delete(self, set_id: str) -> None:
        shutil.rmtree(self.set_dir(set_id), ignore_errors=False)
