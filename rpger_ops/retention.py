"""Retention: which backup sets to keep, restic-style, applied to local and off-site copies.

`apply_policy` is pure (no clock, no server): give it the sets of one group
and a policy, get back what to keep, what to remove and why. The rules are
OR-ed: a set is kept when any rule selects it. Buckets are calendar buckets in
UTC; within a bucket the newest verified set is the one kept; `keep_daily=N`
means the N most recent days that have a verified set (not the last N
calendar days). Here "verified" means complete: every database the set was
meant to hold is verified in that store.

Sets are grouped before the policy runs (`plan`, like restic's snapshot
groups): by kind and by the databases they hold. A Redis-only manual set
never takes a full set's daily bucket, and safety sets (taken before a forced
restore) have their own small policy (RPGER_SAFETY_KEEP_LAST/_DAILY) and never
count in the full-set tiers. Before pruning the local store, the newest
complete set of each group has its archives hashed again: a damaged one is
marked corrupt and the next one becomes the set that is always kept.

Blobs (sets of layout "blobs" share them) are removed by mark-and-sweep
(`sweep`), after the sets: every manifest left is read (one that cannot be
read stops the sweep: its references are unknown), and a blob goes only when
no manifest references it and it is older than RPGER_BLOB_GRACE_HOURS. Set
writers hold the store's blob lock shared from a blob's write until the
manifest naming it is written, the sweep holds it exclusively, and a set is
deleted manifest first: interrupted anywhere, a sweep has removed only blobs
no kept set needs.

S3 Object Lock: a set or blob whose lock has not expired cannot be deleted;
retention keeps it, says until when (`Decision.kept_by_lock`), and tries
again on a later run.

Safety rules on top of the policy, per group:
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
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from rpger_ops.blobs import stored_problem
from rpger_ops.sets import BackupSet, EntryStatus, SetKind, set_time
from rpger_ops.store import ObjectLocked, SetStore, StoreError, read_sets, update

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

    @classmethod
    def safety(cls, settings: Settings) -> Policy:
        return cls(keep_last=settings.safety_keep_last, keep_daily=settings.safety_keep_daily)

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
    kept_by_lock: dict[str, str] = field(default_factory=dict)  # set id -> locked until (ISO), not deletable yet
    sweep: Sweep | None = None  # the blobs' mark-and-sweep after the sets

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Sweep:
    """What the mark-and-sweep of a store's blobs did (or, dry run, would do)."""

    referenced: int = 0  # blobs some manifest references
    unreferenced: int = 0
    deleted: int = 0
    freed_bytes: int = 0
    kept_young: int = 0  # unreferenced, but younger than the grace
    kept_by_lock: dict[str, str] = field(default_factory=dict)  # blob id -> locked until (ISO)
    skipped: str = ""  # why nothing was swept

    def describe(self, dry_run: bool = False) -> str:
        if self.skipped:
            return f"blob sweep skipped: {self.skipped}"
        verb = "would delete" if dry_run else "deleted"
        out = (f"blobs: {self.referenced} referenced, {self.unreferenced} unreferenced: {verb} {self.deleted} "
               f"({self.freed_bytes} bytes), {self.kept_young} kept (younger than the grace)")
        if self.kept_by_lock:
            until = max(self.kept_by_lock.values())
            out += f", {len(self.kept_by_lock)} kept by their Object Lock (latest until {until})"
        return out


def sweep(store: SetStore, lock: Callable[[], AbstractContextManager[Any]], grace: timedelta,
          now: datetime | None = None, dry_run: bool = False) -> Sweep:
    """Mark every blob a manifest of `store` references, then delete the others that are
    older than `grace`. Holds `lock` (exclusive) throughout, so no set writer is between
    a blob's write and its manifest. An unreadable manifest stops the sweep."""
    now = _utc(now or datetime.now(UTC))
    result = Sweep()
    with lock():
        referenced: set[str] = set()
        for set_id in store.set_ids():
            try:
                referenced |= store.read(set_id).blob_ids
            except StoreError as exc:
                result.skipped = f"manifest of set {set_id} unreadable, its blobs unknown ({exc})"
                return result
        result.referenced = len(referenced)
        for blob in store.list_blobs():
            if blob.id in referenced:
                continue
            result.unreferenced += 1
            if now - _utc(blob.modified) < grace:
                result.kept_young += 1
                continue
            if dry_run:
                result.deleted += 1
                result.freed_bytes += blob.stored_bytes
                continue
            try:
                store.delete_blob(blob.id)
            except ObjectLocked as exc:
                result.kept_by_lock[blob.id] = exc.until.isoformat() if exc.until else "unknown"
                continue
            result.deleted += 1
            result.freed_bytes += blob.stored_bytes
    return result


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


def group_of(backup_set: BackupSet) -> str:
    """Sets compete for the policy's buckets only within their group (restic groups
    snapshots before its policy runs): a set's kind and the databases it holds."""
    return f"{backup_set.kind}:{'+'.join(backup_set.planned) or 'nothing'}"


def set_info(backup_set: BackupSet, now: datetime) -> SetInfo:
    """What the policy needs to know about one set: complete (every database it was
    meant to hold verified in this store) or not, and whether it is still running."""
    in_progress = backup_set.unfinished and _utc(now) - backup_set.time < IN_PROGRESS_GRACE
    return SetInfo(backup_set.set_id, backup_set.time, backup_set.complete, in_progress)


def plan(sets: Iterable[BackupSet], policy_for: Callable[[SetKind], Policy], now: datetime,
         held: dict[str, str] | None = None) -> Decision:
    """The policy applied group by group (`group_of`); `held` sets (e.g. unreadable
    manifests) are kept and ignored by the rules. Each group keeps its newest
    complete set, so the newest complete set of the stack is always kept."""
    groups: dict[str, list[BackupSet]] = {}
    for s in sets:
        groups.setdefault(group_of(s), []).append(s)
    merged = Decision(keep=[], remove=[], reasons={})
    notes = []
    for name, members in sorted(groups.items()):
        decision = apply_policy([set_info(s, now) for s in members], policy_for(members[0].kind))
        merged.keep += decision.keep
        merged.remove += decision.remove
        for set_id, reasons in decision.reasons.items():
            merged.reasons[set_id] = [f"[{name}] {r}" for r in reasons]
        if decision.note:
            notes.append(f"{name}: {decision.note}")
    for set_id, why in (held or {}).items():
        merged.keep.append(set_id)
        merged.reasons[set_id] = [why]
    merged.keep.sort(reverse=True)
    merged.remove.sort(reverse=True)
    merged.note = "; ".join(notes)
    return merged


def _policies(settings: Settings, where: str, policy: Policy | None) -> Callable[[SetKind], Policy]:
    full = policy or (Policy.local(settings) if where == "local" else Policy.offsite(settings))
    safety = Policy.safety(settings)
    return lambda kind: safety if kind == SetKind.SAFETY else full


def _recheck_newest(store: SetStore, sets: list[BackupSet]) -> bool:
    """Before pruning relies on them, hash the archives of each group's newest complete
    set again; a damaged one is written back as corrupt. True when one was found."""
    found = False
    newest: dict[str, BackupSet] = {}
    for s in sets:
        if s.complete:
            newest.setdefault(group_of(s), s)
    for s in newest.values():
        for db, entry in s.databases.items():
            if entry.layout == "blobs":
                problem = stored_problem(store, entry)
                if problem is None:
                    continue
                why = problem
            else:
                actual = store.archive_sha256(s.set_id, db)
                if actual == entry.sha256:
                    continue
                why = ("archive missing" if actual is None
                       else f"sha256 {actual[:12]}… != manifest {str(entry.sha256)[:12]}…")

            def mark(bs: BackupSet, db: str = db, why: str = why) -> None:
                e = bs.entry(db)
                if e is not None and e.verified:
                    e.status, e.error = EntryStatus.CORRUPT, f"found by retention's re-check: {why}"

            update(store, s.set_id, mark)
            found = True
    return found


def prune(store: SetStore, policy_for: Callable[[SetKind], Policy], where: str, dry_run: bool = False,
          now: datetime | None = None, recheck: bool = True,
          blob_lock: Callable[[], AbstractContextManager[Any]] | None = None,
          blob_grace: timedelta = timedelta(hours=24)) -> Decision:
    """Apply the policy to one store, then sweep its blobs (under `blob_lock`). Sets
    whose manifest cannot be read are kept (and stop the sweep); data without a
    manifest (a run that died) goes once older than the grace; a set an Object Lock
    keeps stays, reported in `kept_by_lock`."""
    now = now or datetime.now(UTC)
    held: dict[str, str] = {}
    sets = read_sets(store, lambda set_id, exc: held.__setitem__(set_id, f"kept: {exc}"))
    if recheck and _recheck_newest(store, sets):
        sets = read_sets(store)
    decision = plan(sets, policy_for, now, held)
    decision.where, decision.dry_run = where, dry_run
    # Data without a manifest is never usable; still, while a group is blocked (its
    # newest set failed) retention deletes nothing at all until a newer set verifies.
    for set_id in [] if decision.note else store.incomplete_set_ids():
        if _utc(now) - set_time(set_id) < IN_PROGRESS_GRACE:
            continue
        decision.remove.append(set_id)
        decision.reasons[set_id] = ["removed: incomplete (no manifest: its run died), older than "
                                    f"{IN_PROGRESS_GRACE.total_seconds() / 3600:g} h"]
    decision.remove.sort(reverse=True)
    if not dry_run:
        for set_id in decision.remove:
            try:
                store.delete(set_id)
            except ObjectLocked as exc:
                until = exc.until.isoformat() if exc.until else "unknown"
                decision.kept_by_lock[set_id] = until
                decision.reasons[set_id].append(f"kept by its Object Lock until {until} (deleted on a later run)")
                continue
            except StoreError as exc:
                raise StoreError(f"retention: cannot delete {where} set {set_id}: {exc}") from None
            decision.deleted.append(set_id)
        decision.remove = [s for s in decision.remove if s not in decision.kept_by_lock]
        decision.keep = sorted([*decision.keep, *decision.kept_by_lock], reverse=True)
    if held:
        decision.sweep = Sweep(skipped="a manifest is unreadable (its blobs are unknown): " + ", ".join(sorted(held)))
    else:
        decision.sweep = sweep(store, blob_lock or nullcontext, blob_grace, now, dry_run)
    return decision


def prune_local(settings: Settings, dry_run: bool = False, now: datetime | None = None,
                policy: Policy | None = None) -> Decision:
    """Apply the local policy (settings.keep_*, safety sets RPGER_SAFETY_KEEP_*) to the backup directory."""
    from rpger_ops.store import local_store

    store = local_store(settings)
    return prune(store, _policies(settings, "local", policy), "local", dry_run, now,
                 blob_lock=lambda: store.blob_lock(exclusive=True), blob_grace=_grace(settings))


def prune_offsite(settings: Settings, dry_run: bool = False, now: datetime | None = None,
                  policy: Policy | None = None) -> Decision:
    """Apply the off-site policy (settings.offsite_keep_*) to the bucket. No re-hash
    there: it would download the newest sets every run."""
    from rpger_ops.store import local_store, offsite_store

    store = offsite_store(settings)
    if store is None:
        raise StoreError("off-site store not configured (set RPGER_S3_ENDPOINT)")
    local = local_store(settings)
    # One host writes both stores: the local blob lock keeps its uploads out of this sweep too.
    return prune(store, _policies(settings, "offsite", policy), "offsite", dry_run, now, recheck=False,
                 blob_lock=lambda: local.blob_lock(exclusive=True), blob_grace=_grace(settings))


def _grace(settings: Settings) -> timedelta:
    return timedelta(hours=settings.blob_grace_hours)


def format_decision(decision: Decision) -> str:
    """Human-readable report, one line per set."""
    head = f"{decision.where or 'retention'}: keep {len(decision.keep)}, "
    head += f"{'would remove' if decision.dry_run else 'removed'} {len(decision.remove)}"
    lines = [head]
    if decision.note:
        lines.append(f"  note: {decision.note}")
    if decision.kept_by_lock:
        lines.append(f"  {len(decision.kept_by_lock)} set(s) kept by their Object Lock: "
                     + ", ".join(f"{k} until {v}" for k, v in sorted(decision.kept_by_lock.items())))
    for set_id in sorted(decision.reasons, reverse=True):
        mark = "keep  " if set_id in decision.keep else "remove"
        lines.append(f"  {mark} {set_id}  {'; '.join(decision.reasons[set_id])}")
    if decision.sweep is not None:
        lines.append("  " + decision.sweep.describe(decision.dry_run))
    return "\n".join(lines)


def partitions_to_drop(deleted: Iterable[str], local_ids: Iterable[str], remote_ids: Iterable[str] | None) -> list[str]:
    """Deleted sets that are now gone both locally and off-site (their Dagster
    partition can go). `remote_ids=None` means the remote listing is unknown
    (store down): then nothing is dropped."""
    if remote_ids is None:
        return []
    present = set(local_ids) | set(remote_ids)
    return sorted({s for s in deleted if s not in present}, reverse=True)
