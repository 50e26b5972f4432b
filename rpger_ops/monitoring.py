"""What the operator must hear about before data is at risk (plain functions).

- freshness of the newest complete local set and of the newest complete
  off-site set (scheduled or manual: a safety set is not a backup schedule);
- suspicious sets: counts or archive size dropping sharply versus the
  previous verified set (RPGER_SHRINK_ALERT_RATIO, default 0.5).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rpger_ops.sets import AUTOMATIC_KINDS, BackupSet, DatabaseEntry, newest_complete, set_time
from rpger_ops.settings import Settings


@dataclass(frozen=True)
class Finding:
    ok: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


def _age_hours(set_id: str, now: datetime) -> float:
    return (now - set_time(set_id)).total_seconds() / 3600


def freshness(sets: Iterable[BackupSet], limit_hours: float, where: str, now: datetime | None = None) -> Finding:
    """Is the newest complete set of `sets` younger than `limit_hours`?"""
    now = now or datetime.now(UTC)
    newest = newest_complete(sets)
    if newest is None:
        return Finding(False, f"no complete backup set {where}", {"max_age_hours": limit_hours})
    age = _age_hours(newest.set_id, now)
    details = {"set_id": newest.set_id, "age_hours": round(age, 2), "max_age_hours": limit_hours}
    if age > limit_hours:
        return Finding(False, f"newest complete backup {where} ({newest.set_id}) is {age:.1f} h old "
                              f"(limit {limit_hours:g} h)", details)
    return Finding(True, f"newest complete backup {where} ({newest.set_id}) is {age:.1f} h old", details)


def local_freshness(settings: Settings, now: datetime | None = None) -> Finding:
    from rpger_ops.store import local_store, read_sets

    return freshness(read_sets(local_store(settings)), settings.backup_max_age_hours,
                     f"in {settings.backup_dir}", now)


def offsite_freshness(settings: Settings, now: datetime | None = None) -> Finding:
    from rpger_ops.store import StoreError, offsite_store, read_sets

    if not settings.offsite_enabled:
        return Finding(True, "off-site copy not configured (RPGER_S3_ENDPOINT unset)", {"configured": False})
    limit = settings.offsite_max_age_hours
    try:
        store = offsite_store(settings)
        assert store is not None
        sets = read_sets(store)
    except StoreError as exc:
        return Finding(False, f"off-site store unreachable: {exc}", {"max_age_hours": limit})
    return freshness(sets, limit, "off-site", now)


OFFSITE_NOT_CONFIGURED = "offsite:not_configured"


def offsite_configured(settings: Settings) -> Finding:
    """Backups that exist only on this host die with it (and with `down -v` of
    the wrong volume): not having an off-site store is a standing warning."""
    if settings.offsite_enabled:
        return Finding(True, f"off-site copies go to {settings.safe_summary()['offsite']}", {"configured": True})
    return Finding(False, "off-site copy not configured (RPGER_S3_ENDPOINT unset): every backup set exists "
                          "only on this host", {"configured": False})


def _totals(entry: DatabaseEntry) -> tuple[int, int]:
    return entry.items, int(entry.archive_bytes or 0)


def shrink_finding(settings: Settings, sets: Iterable[BackupSet], set_id: str, db: str) -> Finding:
    """Compare one database's entry in `set_id` with the previous set where it is verified.

    Flags when the item count or the archive size falls below
    RPGER_SHRINK_ALERT_RATIO times the previous set's."""
    ordered = sorted(sets, key=lambda s: s.set_id, reverse=True)
    current_set = next((s for s in ordered if s.set_id == set_id), None)
    current = current_set.entry(db) if current_set else None
    if current is None:
        return Finding(True, f"{db}: no entry in set {set_id}")
    previous = next((s for s in ordered if s.set_id < set_id and s.kind in AUTOMATIC_KINDS
                     and s.verified_for([db])), None)
    if previous is None:
        return Finding(True, f"{db}: no earlier verified set to compare with")
    prev_entry = previous.entry(db)
    assert prev_entry is not None
    (count, size), (prev_count, prev_size) = _totals(current), _totals(prev_entry)
    ratio = settings.shrink_alert_ratio
    details = {"set_id": set_id, "previous_set_id": previous.set_id, "count": count,
               "previous_count": prev_count, "archive_bytes": size, "previous_archive_bytes": prev_size,
               "ratio_limit": ratio}
    problems = []
    if prev_count and count < prev_count * ratio:
        problems.append(f"items {prev_count} -> {count}")
    if prev_size and size < prev_size * ratio:
        problems.append(f"archive bytes {prev_size} -> {size}")
    if problems:
        return Finding(False, f"{db}: set {set_id} shrank sharply vs {previous.set_id}: "
                              + "; ".join(problems), details)
    return Finding(True, f"{db}: set {set_id} is in line with {previous.set_id}", details)


@dataclass(frozen=True)
class StorageReport:
    """What a store holds: `logical_bytes` is what the sets would weigh as full copies,
    `stored_bytes` what the store really holds (blobs once, plus archives)."""

    where: str
    sets: int
    logical_bytes: int
    stored_bytes: int
    blobs: int

    @property
    def dedup_ratio(self) -> float:
        return round(self.logical_bytes / self.stored_bytes, 2) if self.stored_bytes else 1.0

    def metadata(self, prefix: str) -> dict[str, Any]:
        return {f"{prefix}_sets": self.sets, f"{prefix}_logical_bytes": self.logical_bytes,
                f"{prefix}_stored_bytes": self.stored_bytes, f"{prefix}_blobs": self.blobs,
                f"{prefix}_dedup_ratio": self.dedup_ratio}


def storage_report(store: Any) -> StorageReport:
    """Sizes of one store (`SetStore`): one listing of its blobs and a read of each manifest."""
    from rpger_ops.store import read_sets

    sets = read_sets(store)
    logical = sum(e.stored_bytes for s in sets for e in s.databases.values())
    archives = sum(int(e.archive_bytes or 0) for s in sets for e in s.databases.values() if e.layout != "blobs")
    blobs = store.list_blobs()
    return StorageReport(store.where(), len(sets), logical, archives + sum(b.stored_bytes for b in blobs), len(blobs))


def newest_set_shrink(settings: Settings) -> list[Finding]:
    """Shrink findings for every database of the newest scheduled or manual set."""
    from rpger_ops.store import local_store, read_sets

    sets = read_sets(local_store(settings))
    newest = next((s for s in sets if s.kind in AUTOMATIC_KINDS), None)
    if newest is None:
        return []
    return [shrink_finding(settings, sets, newest.set_id, db) for db in newest.databases]
