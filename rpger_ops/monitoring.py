"""What the operator must hear about before data is at risk (plain functions).

- freshness of the newest verified local set and of the newest off-site copy;
- suspicious sets: counts or archive size dropping sharply versus the
  previous verified set (RPGER_SHRINK_ALERT_RATIO, default 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rpger_ops.catalog import Catalog, set_time
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.settings import Settings


@dataclass(frozen=True)
class Finding:
    ok: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


def _age_hours(set_id: str, now: datetime) -> float:
    return (now - set_time(set_id)).total_seconds() / 3600


def local_freshness(settings: Settings, now: datetime | None = None) -> Finding:
    now = now or datetime.now(UTC)
    newest = Catalog(settings.backup_dir).latest_verified(ENGINE_NAMES)
    limit = settings.backup_max_age_hours
    if newest is None:
        return Finding(False, f"no verified backup set in {settings.backup_dir}", {"max_age_hours": limit})
    age = _age_hours(newest["set_id"], now)
    details = {"set_id": newest["set_id"], "age_hours": round(age, 2), "max_age_hours": limit}
    if age > limit:
        return Finding(False, f"newest verified backup {newest['set_id']} is {age:.1f} h old (limit {limit:g} h)",
                       details)
    return Finding(True, f"newest verified backup {newest['set_id']} is {age:.1f} h old", details)


def offsite_freshness(settings: Settings, now: datetime | None = None) -> Finding:
    now = now or datetime.now(UTC)
    limit = settings.offsite_max_age_hours
    if not settings.offsite_enabled:
        return Finding(True, "off-site copy not configured (RPGER_S3_ENDPOINT unset)", {"configured": False})
    from rpger_ops.offsite import OffsiteStore

    try:
        ids = OffsiteStore.from_settings(settings).list_set_ids()
    except Exception as exc:
        return Finding(False, f"off-site store unreachable ({type(exc).__name__})", {"max_age_hours": limit})
    if not ids:
        return Finding(False, "no backup set in the off-site store", {"max_age_hours": limit})
    age = _age_hours(ids[0], now)
    details = {"set_id": ids[0], "age_hours": round(age, 2), "max_age_hours": limit}
    if age > limit:
        return Finding(False, f"newest off-site set {ids[0]} is {age:.1f} h old (limit {limit:g} h)", details)
    return Finding(True, f"newest off-site set {ids[0]} is {age:.1f} h old", details)


def _totals(entry: dict[str, Any]) -> tuple[int, int]:
    counts = entry.get("counts") or {}
    return sum(int(v) for v in counts.values()), int(entry.get("archive_bytes") or 0)


def shrink_finding(settings: Settings, set_id: str, db: str) -> Finding:
    """Compare one database's entry in `set_id` with the previous verified set.

    Flags when the item count or the archive size falls below
    RPGER_SHRINK_ALERT_RATIO times the previous set's."""
    catalog = Catalog(settings.backup_dir)
    current = catalog.read(set_id).get("databases", {}).get(db)
    if not current:
        return Finding(True, f"{db}: no entry in set {set_id}")
    previous = next((m for m in catalog.verified_sets([db]) if m["set_id"] < set_id), None)
    if previous is None:
        return Finding(True, f"{db}: no earlier verified set to compare with")
    prev_entry = previous["databases"][db]
    (count, size), (prev_count, prev_size) = _totals(current), _totals(prev_entry)
    ratio = settings.shrink_alert_ratio
    details = {"set_id": set_id, "previous_set_id": previous["set_id"], "count": count,
               "previous_count": prev_count, "archive_bytes": size, "previous_archive_bytes": prev_size,
               "ratio_limit": ratio}
    problems = []
    if prev_count and count < prev_count * ratio:
        problems.append(f"items {prev_count} -> {count}")
    if prev_size and size < prev_size * ratio:
        problems.append(f"archive bytes {prev_size} -> {size}")
    if problems:
        return Finding(False, f"{db}: set {set_id} shrank sharply vs {previous['set_id']}: "
                              + "; ".join(problems), details)
    return Finding(True, f"{db}: set {set_id} is in line with {previous['set_id']}", details)


def newest_set_shrink(settings: Settings) -> list[Finding]:
    """Shrink findings for every database of the newest set that has entries."""
    catalog = Catalog(settings.backup_dir)
    ids = catalog.set_ids()
    if not ids:
        return []
    manifest = catalog.read(ids[0])
    return [shrink_finding(settings, ids[0], db) for db in manifest.get("databases", {})]
