"""Retention: which backup sets to keep, restic-style, applied to local and off-site copies.

`apply_policy` is pure (no clock, no server): give it the sets and a policy,
get back what to keep, what to remove and why. The rules are OR-ed: a set is
kept when any rule selects it. Buckets are calendar buckets in UTC; within a
bucket the newest verified set is the one kept; `keep_daily=N` means the N most
recent days that have a verified set (not the last N calendar days).

Safety rules on top of the policy:
- the newest verified set is always kept, whatever the policy (even all zeros);
- when the newest finished set is not verified (the last backup failed), or no
  set is verified at all, nothing is deleted, and the decision says why;
- a set still being written (an entry "dumping"/"archived", younger than
  `IN_PROGRESS_GRACE`) is kept and ignored by the rules, as is a set held
  for another reason (e.g. an unreadable remote manifest);
- unverified sets older than the newest verified set are removed: no restore
  would ever pick them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from rpger_ops.catalog import ARCHIVED, DUMPING, VERIFIED, Catalog, CatalogError, set_time

if TYPE_CHECKING:
    from rpger_ops.settings import Settings

# A set with unfinished entries younger than this is assumed to be running.
IN_PROGRESS_GRACE = timedelta(hours=6)


@dataclass(frozen=True)
class Policy:
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 0:
                raise ValueError(f"retention {name} must be >= 0, got {value}")

    @classmethod
    def local(cls, settings: Settings) -> Policy:
        return cls(settings.keep_last, settings.keep_daily, settings.keep_weekly, settings.keep_monthly)

    @classmethod
    def offsite(cls, settings: Settings) -> Policy:
        return cls(settings.offsite_keep_last, settings.offsite_keep_daily,
                   settings.offsite_keep_weekly, settings.offsite_keep_monthly)

    def describe(self) -> str:
        return (f"last {self.keep_last}, daily {self.keep_daily}, "
                f"weekly {self.keep_weekly}, monthly {self.keep_monthly}")


@dataclass(frozen=True)
class SetInfo:
    set_id: str
    time: datetime  # UTC
    verified: bool
    in_progress: bool = False
    hold: str = ""  # another reason to keep the set and leave it out of the rules


@dataclass
class Decision:
    keep: list[str]  # newest first
    remove: list[str]  # newest first
    reasons: dict[str, list[str]]  # every set id -> why it is kept or removed
    note: str = ""  # set when the safety rules stopped all deletion
    where: str = ""  # "local" or "offsite"
    dry_run: bool = False
    deleted: list[str] = field(default_factory=list)  # what was actually removed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# (rule name, bucket of a UTC time, label of a bucket)
_Bucketer = Callable[[datetime], Hashable]
_CALENDAR_RULES: tuple[tuple[str, _Bucketer, Callable[[Any], str]], ...] = (
    ("daily", lambda t: t.date(), lambda b: b.isoformat()),
    ("weekly", lambda t: t.isocalendar()[:2], lambda b: f"{b[0]}-W{b[1]:02d}"),
    ("monthly", lambda t: (t.year, t.month), lambda b: f"{b[0]}-{b[1]:02d}"),
)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _select(verified: list[SetInfo], policy: Policy, reasons: dict[str, list[str]]) -> set[str]:
    """The sets the OR-ed rules pick from `verified` (newest first), with a reason each."""
    kept: set[str] = set()
    for rank, s in enumerate(verified[: policy.keep_last], start=1):
        kept.add(s.set_id)
        reasons[s.set_id].append(f"last ({rank} of {policy.keep_last})")
    for name, bucket_of, label in _CALENDAR_RULES:
        remaining = getattr(policy, f"keep_{name}")
        previous: Hashable = object()
        for s in verified:
            if remaining <= 0:
                break
            bucket = bucket_of(_utc(s.time))
            if bucket == previous:
                continue  # an older set in a bucket already served by a newer one
            previous = bucket
            remaining -= 1
            kept.add(s.set_id)
            reasons[s.set_id].append(f"{name} {label(bucket)}")
    return kept


def apply_policy(sets: Iterable[SetInfo], policy: Policy) -> Decision:
    ordered = sorted(sets, key=lambda s: (_utc(s.time), s.set_id), reverse=True)
    reasons: dict[str, list[str]] = {s.set_id: [] for s in ordered}
    held = [s for s in ordered if s.in_progress or s.hold]
    finished = [s for s in ordered if not (s.in_progress or s.hold)]
    for s in held:
        reasons[s.set_id].append(s.hold or "in progress (unfinished entries, recent)")

    def keep_everything(note: str) -> Decision:
        for s in finished:
            reasons[s.set_id].append("kept: " + note)
        return Decision([s.set_id for s in ordered], [], reasons, note)

    verified = [s for s in finished if s.verified]
    if not verified:
        return keep_everything("no verified set exists; nothing is deleted")
    if not finished[0].verified:
        return keep_everything(f"the newest set {finished[0].set_id} is not verified; nothing is deleted "
                               "until a newer set verifies")

    kept = _select(verified, policy, reasons)
    newest = verified[0].set_id
    kept.add(newest)
    reasons[newest].insert(0, "newest verified set (always kept)")
    kept.update(s.set_id for s in held)

    for s in finished:
        if s.set_id in kept:
            continue
        if s.verified:
            reasons[s.set_id].append("removed: no rule selects it")
        else:
            reasons[s.set_id].append(f"removed: not verified and older than the newest verified set {newest}")
    return Decision(
        keep=[s.set_id for s in ordered if s.set_id in kept],
        remove=[s.set_id for s in ordered if s.set_id not in kept],
        reasons=reasons,
    )


def set_info(manifest: dict[str, Any], now: datetime, require_offsite: bool = False) -> SetInfo:
    """What retention needs to know about one set, from its manifest.

    A set is verified when it has entries and all are verified; with
    `require_offsite` (the remote copy) each entry must also have been uploaded
    with the same sha256 the checks verified."""
    set_id = str(manifest["set_id"])
    time = set_time(set_id)
    entries: dict[str, dict[str, Any]] = manifest.get("databases") or {}
    statuses = [e.get("status") for e in entries.values()]
    verified = bool(entries) and all(s == VERIFIED for s in statuses)
    if verified and require_offsite:
        verified = all((e.get("offsite") or {}).get("sha256") == e.get("sha256") for e in entries.values())
    unfinished = not entries or any(s in (DUMPING, ARCHIVED) for s in statuses)
    in_progress = unfinished and _utc(now) - time < IN_PROGRESS_GRACE
    return SetInfo(set_id, time, verified, in_progress)


def prune_local(settings: Settings, dry_run: bool = False, now: datetime | None = None,
                policy: Policy | None = None) -> Decision:
    """Apply the local policy (settings.keep_*) to the backup directory."""
    catalog = Catalog(settings.backup_dir)
    now = now or datetime.now(UTC)
    infos = [set_info(m, now) for m in catalog.list_sets()]
    decision = apply_policy(infos, policy or Policy.local(settings))
    decision.where, decision.dry_run = "local", dry_run
    if not dry_run:
        for set_id in decision.remove:
            try:
                catalog.delete(set_id)
            except (OSError, CatalogError) as exc:
                raise CatalogError(f"retention: cannot delete local set {set_id}: {exc}") from None
            decision.deleted.append(set_id)
    return decision


def prune_offsite(settings: Settings, dry_run: bool = False, now: datetime | None = None,
                  policy: Policy | None = None) -> Decision:
    """Apply the off-site policy (settings.offsite_keep_*) to the bucket."""
    from rpger_ops.offsite import ManifestError, OffsiteStore

    store = OffsiteStore.from_settings(settings)
    now = now or datetime.now(UTC)
    infos = []
    for sid in store.list_set_ids():
        try:
            infos.append(set_info(store.read_manifest(sid), now, require_offsite=True))
        except ManifestError as exc:  # keep what we cannot judge; don't block the rest
            infos.append(SetInfo(sid, set_time(sid), False, hold=f"kept: {exc}"))
    decision = apply_policy(infos, policy or Policy.offsite(settings))
    decision.where, decision.dry_run = "offsite", dry_run
    # Archives left without a manifest by an upload that died: unusable, and
    # invisible to the policy. Cleared once older than the in-progress grace.
    for set_id in [] if decision.note else store.incomplete_set_ids():
        if _utc(now) - set_time(set_id) < IN_PROGRESS_GRACE:
            continue
        decision.remove.append(set_id)
        decision.reasons[set_id] = ["removed: incomplete upload (no manifest), older than "
                                    f"{IN_PROGRESS_GRACE.total_seconds() / 3600:g} h"]
    decision.remove.sort(reverse=True)
    if not dry_run:
        for set_id in decision.remove:
            store.delete_set(set_id)
            decision.deleted.append(set_id)
    return decision


def format_decision(decision: Decision) -> str:
    """Human-readable report, one line per set."""
    head = f"{decision.where or 'retention'}: keep {len(decision.keep)}, "
    head += f"{'would remove' if decision.dry_run else 'removed'} {len(decision.remove)}"
    lines = [head]
    if decision.note:
        lines.append(f"  note: {decision.note}")
    for set_id in sorted(decision.reasons, reverse=True):
        mark = "keep  " if set_id in decision.keep else "remove"
        lines.append(f"  {mark} {set_id}  {'; '.join(decision.reasons[set_id])}")
    return "\n".join(lines)


def partitions_to_drop(deleted: Iterable[str], local_ids: Iterable[str], remote_ids: Iterable[str] | None) -> list[str]:
    """Deleted sets that are now gone both locally and off-site (their Dagster
    partition can go). `remote_ids=None` means the remote listing is unknown
    (store down): then nothing is dropped."""
    if remote_ids is None:
        return []
    present = set(local_ids) | set(remote_ids)
    return sorted({s for s in deleted if s not in present}, reverse=True)
