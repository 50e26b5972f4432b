"""Retention: the pure policy on a fake clock, its safety rules, and local pruning on disk."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from rpger_ops.retention import (
    Policy,
    SetInfo,
    apply_policy,
    partitions_to_drop,
    plan,
    prune_local,
    set_info,
)
from rpger_ops.sets import BackupSet, DatabaseEntry, EntryStatus, SetKind, new_set_id
from rpger_ops.settings import load_settings
from rpger_ops.store import LocalStore


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def verified(text: str) -> SetInfo:
    t = at(text)
    return SetInfo(new_set_id(t), t, verified=True)


def unverified(text: str) -> SetInfo:
    t = at(text)
    return SetInfo(new_set_id(t), t, verified=False)


def ids(*texts: str) -> list[str]:
    return [new_set_id(at(t)) for t in texts]


# --- a small case with a hand-computed golden answer --------------------------------------

def test_golden_small_case() -> None:
    # 2026-11-28 is a Saturday in ISO week 48 (Mon 11-23 .. Sun 11-29); 11-20 is in W47,
    # 11-15 and 11-09 in W46.
    sets = [
        verified("2026-11-28T03:00"),
        verified("2026-11-27T15:00"),
        verified("2026-11-27T03:00"),
        unverified("2026-11-26T12:00"),  # would steal the 11-26 daily bucket if it counted
        verified("2026-11-26T03:00"),
        verified("2026-11-20T03:00"),
        verified("2026-11-15T03:00"),
        verified("2026-11-09T03:00"),
        verified("2026-10-31T03:00"),
        verified("2026-10-01T03:00"),
        verified("2026-09-15T03:00"),
    ]
    random.Random(1).shuffle(sets)  # input order must not matter
    d = apply_policy(sets, Policy(keep_last=2, keep_daily=3, keep_weekly=2, keep_monthly=3))
    assert d.keep == ids("2026-11-28T03:00", "2026-11-27T15:00", "2026-11-26T03:00",
                         "2026-11-20T03:00", "2026-10-31T03:00", "2026-09-15T03:00")
    assert d.remove == ids("2026-11-27T03:00", "2026-11-26T12:00", "2026-11-15T03:00",
                           "2026-11-09T03:00", "2026-10-01T03:00")
    r = d.reasons
    assert r[ids("2026-11-28T03:00")[0]] == ["newest verified set (always kept)", "last (1 of 2)",
                                              "daily 2026-11-28", "weekly 2026-W48", "monthly 2026-11"]
    assert r[ids("2026-11-27T15:00")[0]] == ["last (2 of 2)", "daily 2026-11-27"]
    assert r[ids("2026-11-26T03:00")[0]] == ["daily 2026-11-26"]
    assert r[ids("2026-11-20T03:00")[0]] == ["weekly 2026-W47"]
    assert r[ids("2026-10-31T03:00")[0]] == ["monthly 2026-10"]
    assert r[ids("2026-11-26T12:00")[0]][0].startswith("removed: not verified")
    assert r[ids("2026-11-15T03:00")[0]] == ["removed: no rule selects it"]
    assert d.note == ""


def test_buckets_are_utc_calendar_days() -> None:
    # 00:30 at +02:00 on the 28th is 22:30 UTC on the 27th: same UTC day as the 12:00 set.
    late = SetInfo("20261127T223000Z", datetime(2026, 11, 28, 0, 30, tzinfo=timezone(timedelta(hours=2))), True)
    noon = SetInfo("20261127T120000Z", at("2026-11-27T12:00"), True)
    d = apply_policy([late, noon], Policy(keep_daily=2))
    assert d.keep == ["20261127T223000Z"]
    assert d.remove == ["20261127T120000Z"]


# --- 400 days of daily sets + hourly sets, against an independent reference --------------

NOW = at("2026-11-28T06:00")


def history(seed: int = 7) -> list[SetInfo]:
    """400 daily sets at 03:00, 71 hourly sets at :30 over the last 3 days, ~5% failed at random."""
    rng = random.Random(seed)
    times = {NOW.replace(hour=3) - timedelta(days=d) for d in range(400)}
    times |= {NOW - timedelta(hours=h, minutes=30) for h in range(71)}
    sets = [SetInfo(new_set_id(t), t, verified=rng.random() > 0.05) for t in times]
    newest = max(sets, key=lambda s: s.time)
    return [SetInfo(s.set_id, s.time, True) if s is newest else s for s in sets]


def reference_keep(sets: list[SetInfo], policy: Policy) -> set[str]:
    """Group verified sets into buckets, take the newest per bucket, then the newest N buckets."""
    good = [s for s in sets if s.verified]
    keys = {
        "last": lambda t: t,
        "daily": lambda t: (t.year, t.month, t.day),
        "weekly": lambda t: tuple(t.isocalendar())[:2],
        "monthly": lambda t: (t.year, t.month),
    }
    keep: set[str] = {max(good, key=lambda s: s.time).set_id}
    for rule, key in keys.items():
        buckets: dict[object, list[SetInfo]] = defaultdict(list)
        for s in good:
            buckets[key(s.time)].append(s)
        newest_per_bucket = sorted((max(b, key=lambda s: s.time) for b in buckets.values()),
                                   key=lambda s: s.time, reverse=True)
        keep |= {s.set_id for s in newest_per_bucket[: getattr(policy, f"keep_{rule}")]}
    return keep


BIG_POLICIES = [
    Policy(7, 14, 8, 12),  # the local defaults
    Policy(7, 30, 12, 24),  # the off-site defaults
    Policy(0, 0, 0, 0),
    Policy(100, 0, 0, 0),
    Policy(0, 5, 0, 0),
    Policy(0, 0, 60, 0),
    Policy(0, 0, 0, 100),
    Policy(3, 3, 3, 3),
]


@pytest.mark.parametrize("policy", BIG_POLICIES, ids=lambda p: p.describe().replace(" ", ""))
def test_big_history_matches_reference(policy: Policy) -> None:
    sets = history()
    assert len(sets) == 400 + 71
    d = apply_policy(sets, policy)
    assert set(d.keep) == reference_keep(sets, policy)
    assert set(d.keep).isdisjoint(d.remove)
    assert set(d.keep) | set(d.remove) == {s.set_id for s in sets}
    assert d.keep == sorted(d.keep, reverse=True) and d.remove == sorted(d.remove, reverse=True)
    assert all(d.reasons[s] and not d.reasons[s][0].startswith("removed") for s in d.keep)
    assert all(d.reasons[s][-1].startswith("removed") for s in d.remove)
    by_id = {s.set_id: s for s in sets}
    assert all(by_id[s].verified for s in d.keep)
    # no rule keeps more than its count, plus the always-kept newest verified set
    assert len(d.keep) <= sum((policy.keep_last, policy.keep_daily, policy.keep_weekly, policy.keep_monthly)) + 1


def test_big_history_default_policy_counts() -> None:
    sets = [s for s in history() if s.verified]
    d = apply_policy(sets, Policy(7, 14, 8, 12))
    daily = [s for s in d.keep if any(r.startswith("daily") for r in d.reasons[s])]
    weekly = [s for s in d.keep if any(r.startswith("weekly") for r in d.reasons[s])]
    monthly = [s for s in d.keep if any(r.startswith("monthly") for r in d.reasons[s])]
    assert (len(daily), len(weekly), len(monthly)) == (14, 8, 12)
    # the daily sets are on 14 distinct UTC days, each the newest set of its day
    days = {by.time.date() for by in sets if by.set_id in daily}
    assert len(days) == 14
    for s in (x for x in sets if x.set_id in daily):
        assert s.time == max(x.time for x in sets if x.time.date() == s.time.date())


@pytest.mark.parametrize("policy", [Policy(*p) for p in itertools.product((0, 1, 3), repeat=4)],
                         ids=lambda p: p.describe().replace(" ", ""))
def test_newest_verified_set_survives_every_policy(policy: Policy) -> None:
    sets = history(seed=11)
    # make the newest sets a mix: newest verified, older ones partly failed
    newest = max(sets, key=lambda s: s.time)
    d = apply_policy(sets, policy)
    assert newest.set_id in d.keep
    assert d.reasons[newest.set_id][0] == "newest verified set (always kept)"


def test_all_zero_policy_keeps_only_the_newest_verified() -> None:
    sets = [verified("2026-11-28T03:00"), verified("2026-11-27T03:00"), unverified("2026-11-26T03:00")]
    d = apply_policy(sets, Policy(0, 0, 0, 0))
    assert d.keep == ids("2026-11-28T03:00")
    assert d.remove == ids("2026-11-27T03:00", "2026-11-26T03:00")


def test_unverified_newest_deletes_nothing() -> None:
    sets = history()
    failed = SetInfo(new_set_id(NOW), NOW, verified=False)
    d = apply_policy([*sets, failed], Policy(0, 0, 0, 0))
    assert d.remove == []
    assert len(d.keep) == len(sets) + 1
    assert failed.set_id in d.note and "not verified" in d.note


def test_no_verified_set_deletes_nothing() -> None:
    sets = [unverified("2026-11-28T03:00"), unverified("2026-11-27T03:00")]
    d = apply_policy(sets, Policy(1, 0, 0, 0))
    assert d.remove == [] and "no verified set" in d.note
    assert apply_policy([], Policy(1, 1, 1, 1)).keep == []


def test_in_progress_set_is_kept_and_does_not_count() -> None:
    running = SetInfo(new_set_id(NOW), NOW, verified=False, in_progress=True)
    done = [verified("2026-11-28T03:00"), verified("2026-11-27T03:00"), verified("2026-11-26T03:00")]
    d = apply_policy([running, *done], Policy(keep_last=1))
    # the run in progress neither blocks retention nor uses up keep-last
    assert d.keep == [running.set_id, *ids("2026-11-28T03:00")]
    assert d.remove == ids("2026-11-27T03:00", "2026-11-26T03:00")
    assert d.reasons[running.set_id] == ["in progress (unfinished entries, recent)"]


def test_unverified_sets_older_than_newest_verified_go() -> None:
    sets = [verified("2026-11-28T03:00"), unverified("2026-11-27T03:00"), verified("2026-11-26T03:00")]
    d = apply_policy(sets, Policy(keep_last=5))
    assert d.keep == ids("2026-11-28T03:00", "2026-11-26T03:00")
    assert d.remove == ids("2026-11-27T03:00")


def test_policy_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="keep_daily"):
        Policy(keep_daily=-1)


# --- manifests -> SetInfo --------------------------------------------------------------------

def backup_set(set_id: str, *statuses: str, planned: tuple[str, ...] = ("mongo", "redis", "chroma"),
               kind: str = "scheduled") -> BackupSet:
    entries = {db: DatabaseEntry(status=EntryStatus(status), sha256="ab" * 32)
               for db, status in zip(planned, statuses, strict=False)}
    return BackupSet(set_id=set_id, kind=SetKind(kind), planned=list(planned), databases=entries)  # type: ignore[arg-type]


def test_set_info_from_sets() -> None:
    now = at("2026-11-28T06:00")
    assert set_info(backup_set("20261128T030000Z", "verified", "verified", "verified"), now).verified
    partial = set_info(backup_set("20261128T030000Z", "verified", "failed", "verified"), now)
    assert not partial.verified and not partial.in_progress
    young = set_info(backup_set("20261128T030000Z", "verified", "dumping"), now)
    assert young.in_progress and not young.verified
    stale = set_info(backup_set("20261127T030000Z", "verified", "archived"), now)
    assert not stale.in_progress and not stale.verified  # abandoned: may be pruned
    # A planned database without an entry yet: still running.
    assert set_info(backup_set("20261128T050000Z"), now).in_progress
    # Corrupt or failed deep verification: not complete any more.
    assert not set_info(backup_set("20261128T030000Z", "verified", "corrupt", "verified"), now).verified
    assert not set_info(backup_set("20261128T030000Z", "restore_failed", "verified", "verified"), now).verified
    # Off-site copies not uploaded (local_only in that store's manifest) are not complete there.
    assert not set_info(backup_set("20261128T030000Z", "verified", "local_only", "verified"), now).verified


def test_groups_keep_partial_and_safety_sets_out_of_the_full_tiers() -> None:
    """restic-style groups: a Redis-only manual set and safety sets never take a
    full set's bucket, and keep-last=1 with every tier at 0 keeps the newest
    complete full set even when newer safety and partial sets exist."""
    now = at("2026-11-28T06:00")
    sets = [
        backup_set("20261125T030000Z", "verified", "verified", "verified"),
        backup_set("20261126T030000Z", "verified", "verified", "verified"),
        backup_set("20261127T030000Z", "verified", "verified", "verified"),
        backup_set("20261127T120000Z", "verified", planned=("redis",), kind="manual"),
        backup_set("20261127T130000Z", "verified", planned=("redis",), kind="safety"),
        backup_set("20261127T140000Z", "verified", planned=("redis",), kind="safety"),
    ]
    d = plan(sets, lambda kind: Policy(keep_last=1) if kind != SetKind.SAFETY else Policy(keep_last=1), now)
    assert d.keep == ["20261127T140000Z", "20261127T120000Z", "20261127T030000Z"]
    assert d.remove == ["20261127T130000Z", "20261126T030000Z", "20261125T030000Z"]
    assert d.reasons["20261127T030000Z"][0] == "[scheduled:mongo+redis+chroma] newest verified set (always kept)"
    assert d.reasons["20261127T120000Z"][0].startswith("[manual:redis]")
    # A newer partial full set freezes its own group only.
    blocked = plan([*sets, backup_set("20261128T030000Z", "verified", "failed", "verified")],
                   lambda kind: Policy(keep_last=1), now)
    assert "20261127T030000Z" in blocked.keep and "20261126T030000Z" in blocked.keep
    assert "scheduled:mongo+redis+chroma" in blocked.note
    assert "20261127T130000Z" in blocked.remove  # the safety group is pruned as usual


def test_partitions_to_drop_only_when_gone_everywhere() -> None:
    deleted = ["20261101T030000Z", "20261102T030000Z", "20261103T030000Z"]
    assert partitions_to_drop(deleted, ["20261102T030000Z"], ["20261103T030000Z"]) == ["20261101T030000Z"]
    assert partitions_to_drop(deleted, [], None) == []  # remote unknown: keep all partitions


# --- local pruning on disk ---------------------------------------------------------------------

def make_local_sets(backup_dir: Path, specs: list[tuple[str, str]]) -> LocalStore:
    import hashlib

    store = LocalStore(backup_dir)
    for text, status in specs:
        s = backup_set(new_set_id(at(text)), status, status, status)
        for db, entry in s.databases.items():
            path = store.archive_path(s.set_id, db)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"archive " + db.encode())
            entry.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        store.write(s)
    return store


def test_prune_local_dry_run_then_real(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, RPGER_BACKUP_DIR=str(tmp_path / "b"), RPGER_KEEP_LAST=1,
                             RPGER_KEEP_DAILY=2, RPGER_KEEP_WEEKLY=0, RPGER_KEEP_MONTHLY=0)
    catalog = make_local_sets(settings.backup_dir, [
        ("2026-11-28T03:00", "verified"), ("2026-11-27T15:00", "verified"),
        ("2026-11-27T03:00", "verified"), ("2026-11-26T03:00", "failed"), ("2026-11-25T03:00", "verified"),
    ])
    before = catalog.set_ids()
    dry = prune_local(settings, dry_run=True, now=NOW)
    assert dry.remove == ids("2026-11-27T03:00", "2026-11-26T03:00", "2026-11-25T03:00")
    assert dry.deleted == [] and catalog.set_ids() == before
    real = prune_local(settings, now=NOW)
    assert real.deleted == dry.remove
    assert catalog.set_ids() == ids("2026-11-28T03:00", "2026-11-27T15:00")
    assert not catalog.set_dir(ids("2026-11-25T03:00")[0]).exists()


def test_prune_local_newest_failed_deletes_nothing(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, RPGER_BACKUP_DIR=str(tmp_path / "b"), RPGER_KEEP_LAST=0,
                             RPGER_KEEP_DAILY=0, RPGER_KEEP_WEEKLY=0, RPGER_KEEP_MONTHLY=0)
    catalog = make_local_sets(settings.backup_dir, [
        ("2026-11-28T03:00", "failed"), ("2026-11-27T03:00", "verified"), ("2026-11-26T03:00", "verified"),
    ])
    d = prune_local(settings, now=NOW)
    assert d.remove == [] and d.deleted == [] and "not verified" in d.note
    assert len(catalog.set_ids()) == 3


def test_prune_local_rehashes_the_newest_set_before_relying_on_it(tmp_path: Path) -> None:
    """The newest complete set is always kept — unless its archive rotted: then it is
    marked corrupt and the next complete set is the one kept."""
    settings = load_settings(_env_file=None, RPGER_BACKUP_DIR=str(tmp_path / "b"), RPGER_KEEP_LAST=1,
                             RPGER_KEEP_DAILY=0, RPGER_KEEP_WEEKLY=0, RPGER_KEEP_MONTHLY=0)
    store = make_local_sets(settings.backup_dir, [
        ("2026-11-28T03:00", "verified"), ("2026-11-27T03:00", "verified"), ("2026-11-26T03:00", "verified"),
    ])
    newest, middle, _ = store.set_ids()
    store.archive_path(newest, "redis").write_bytes(b"rotten")
    d = prune_local(settings, dry_run=True, now=NOW)
    assert store.read(newest).databases["redis"].status == EntryStatus.CORRUPT
    assert "retention's re-check" in str(store.read(newest).databases["redis"].error)
    # The rotten set is the newest finished one and not complete: nothing is deleted.
    assert d.remove == [] and newest in d.note and middle in d.keep


# --- the Dagster job ---------------------------------------------------------------------------

def run_retention_job(instance: object, dry_run: bool) -> object:
    from rpger_ops.defs.resources import StackResource
    from rpger_ops.defs.retention import retention

    return retention.execute_in_process(
        run_config={"ops": {"apply_retention": {"config": {"dry_run": dry_run}}}},
        instance=instance, resources={"stack": StackResource()}, raise_on_error=False)


def test_retention_job_prunes_and_drops_partitions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from rpger_ops.defs.partitions import BACKUP_SETS_PARTITION

    monkeypatch.delenv("RPGER_S3_ENDPOINT", raising=False)
    for name, value in {"RPGER_BACKUP_DIR": str(tmp_path / "b"), "RPGER_KEEP_LAST": "1", "RPGER_KEEP_DAILY": "0",
                        "RPGER_KEEP_WEEKLY": "0", "RPGER_KEEP_MONTHLY": "0"}.items():
        monkeypatch.setenv(name, value)
    now = datetime.now(UTC).replace(microsecond=0)
    specs = [((now - timedelta(days=d)).isoformat(timespec="seconds")[:19], "verified") for d in (1, 2, 3)]
    catalog = make_local_sets(tmp_path / "b", specs)
    all_ids = catalog.set_ids()
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(BACKUP_SETS_PARTITION, [*all_ids, "20200101T000000Z"])

        dry = run_retention_job(instance, dry_run=True)
        assert dry.success
        assert catalog.set_ids() == all_ids
        assert set(instance.get_dynamic_partitions(BACKUP_SETS_PARTITION)) == {*all_ids, "20200101T000000Z"}

        real = run_retention_job(instance, dry_run=False)
        assert real.success
        assert catalog.set_ids() == all_ids[:1]
        assert real.output_for_node("apply_retention") == {"deleted": all_ids[1:], "partitions_dropped": all_ids[1:]}
        # the unrelated partition (not deleted by this run) stays
        assert set(instance.get_dynamic_partitions(BACKUP_SETS_PARTITION)) == {all_ids[0], "20200101T000000Z"}


def test_retention_in_definitions() -> None:
    from rpger_ops.definitions import defs

    assert defs.get_job_def("retention") is not None
    schedule = defs.get_schedule_def("retention_schedule")
    assert schedule.job_name == "retention"
    assert schedule.cron_schedule == "30 4 * * *"
    assert schedule.default_status.value == "RUNNING"


# --- the command line ----------------------------------------------------------------------------

def test_cli_dry_run_and_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from rpger_ops.cli import main

    monkeypatch.delenv("RPGER_S3_ENDPOINT", raising=False)
    monkeypatch.setenv("RPGER_BACKUP_DIR", str(tmp_path / "b"))
    monkeypatch.setenv("RPGER_KEEP_LAST", "1")
    for name in ("DAILY", "WEEKLY", "MONTHLY"):
        monkeypatch.setenv(f"RPGER_KEEP_{name}", "0")
    catalog = make_local_sets(tmp_path / "b", [("2026-11-28T03:00", "verified"), ("2026-11-27T03:00", "verified")])

    assert main(["retention", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "local: keep 1, would remove 1" in out and "remove 20261127T030000Z" in out
    assert len(catalog.set_ids()) == 2

    assert main(["retention", "--offsite"]) == 2
    assert "RPGER_S3_ENDPOINT is not set" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["retention", "--local", "--offsite"])
    assert exit_info.value.code == 2

    assert main(["retention", "--local", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report[0]["deleted"] == ["20261127T030000Z"]
    assert catalog.set_ids() == ["20261128T030000Z"]
