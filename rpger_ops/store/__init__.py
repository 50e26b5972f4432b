"""Where backup sets live: one contract (`base.SetStore`), three stores.

- `local.LocalStore`: the backup directory (the `rpger-backups` volume);
- `s3.S3Store`: the off-site bucket (S3-compatible, minio SDK);
- `memory.MemoryStore`: in memory, for unit tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rpger_ops.store.base import (
    ArchiveMissing,
    BlobInfo,
    CorruptArchive,
    ManifestError,
    ObjectLocked,
    SetNotFound,
    SetStore,
    StoredArchive,
    StoreError,
    archive_name,
    read_sets,
    update,
)
from rpger_ops.store.local import LocalStore

if TYPE_CHECKING:
    from rpger_ops.settings import Settings


def local_store(settings: Settings) -> LocalStore:
    return LocalStore(settings.backup_dir)


def offsite_store(settings: Settings) -> SetStore | None:
    """The off-site store, or None when RPGER_S3_ENDPOINT is unset."""
    if not settings.offsite_enabled:
        return None
    from rpger_ops.store.s3 import S3Store

    return S3Store.from_settings(settings)


__all__ = ["ArchiveMissing", "BlobInfo", "CorruptArchive", "LocalStore", "ManifestError", "ObjectLocked",
           "SetNotFound", "SetStore",
           "StoreError", "StoredArchive", "archive_name", "local_store", "offsite_store", "read_sets", "update"]
