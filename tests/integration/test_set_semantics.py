"""What a backup set means, on the real servers: which set a restore or preseed
uses, what retention keeps, and that later failures are written back.

The rules (README "Backup sets", docs/runbook.md):
- `latest` is the newest scheduled or manual set usable for every database
  asked for; a safety set is only ever restored by its id;
- a restore or preseed of several databases takes them all from one set; newer
  sets that cannot serve are passed over, each named with its reason;
- a preseed of some databases warns that the others hold newer data;
- retention groups sets by kind and databases, and keeps the newest complete set;
- a failed deep verify and a corrupt archive show in `sets --json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from restore_support import digests, manifest_digests, new_volume, settings_env, take_set

from rpger_ops import cli, testdata
from rpger_ops.connect import redis_client
from rpger_ops.pipeline import BackupPipeline
from rpger_ops.preseed import preseed
from rpger_ops.restore import restore_set
from rpger_ops.retention import Policy, prune_local
from rpger_ops.sets import SetKind
from rpger_ops.settings import Settings
from rpger_ops.store import LocalStore
from tests.integration.backup_support import damage_stored_dump


def _set_redis_state(settings: Settings, value: str) -> None:
    r = redis_client(settings)
    r.set("game:state:environment", value)
    r.close()


def _partial_set(settings: Settings) -> str:
    """A set whose Redis dump fails (wrong password), as after a botched secret rotation."""
    broken = settings.model_copy(update={"redis_password": SecretStr("not-the-password-123")})
    outcome = BackupPipeline(broken).take_set(SetKind.MANUAL, offsite=False)
    assert not outcome.complete and set(outcome.failures) == {"redis"}
    return outcome.set_id


def _cli(monkeypatch: pytest.MonkeyPatch, settings: Settings, cwd: Path, *argv: str) -> int:
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(cwd)
    return cli.main(list(argv))


def test_a_safety_set_is_never_latest(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    testdata.load_all(settings, scale=20)
    chosen = take_set(settings, age_minutes=5)
    expected = manifest_digests(settings, chosen)["redis"]
    _set_redis_state(settings, '{"weather": "replaced on purpose"}')
    # The operator deliberately puts set `chosen` back into Redis: a safety set keeps what it replaced.
    forced = restore_set(settings, chosen, ["redis"], force=True)
    assert forced.ok and forced.safety_set_id and forced.safety_set_id > chosen

    # Redis lands on a new volume: the preseed must not bring the replaced data back.
    new_volume(settings, ["redis"])
    report = preseed(settings, ["redis"])
    d = report.databases["redis"]
    assert (d.action, d.set_id) == ("restored", chosen), report.lines()
    assert digests(settings, ["redis"])["redis"] == expected
    assert any(forced.safety_set_id in n and "safety set" in n for n in report.notes), report.notes

    # `restore --set latest` means the same; the safety set is still restorable by its id.
    assert restore_set(settings, "latest", ["redis"], force=True).set_id == chosen
    by_id = restore_set(settings, forced.safety_set_id, ["redis"], force=True)
    assert by_id.ok and by_id.set_id == forced.safety_set_id

    # `sets` marks it, and never names it latest.
    assert _cli(monkeypatch, settings, tmp_path, "sets", "--json") == 0
    listing = json.loads(capsys.readouterr().out)
    kinds = {row["set_id"]: row["kind"] for row in listing["sets"]}
    assert kinds[forced.safety_set_id] == "safety" and listing["latest"]["local"] == chosen
    assert _cli(monkeypatch, settings, tmp_path, "sets") == 0
    table = capsys.readouterr().out
    assert "safety*" in table and f"latest local (whole stack): {chosen}" in table


def test_several_databases_come_from_one_set_and_newer_partial_sets_are_named(settings: Settings) -> None:
    testdata.load_all(settings, scale=20)
    full = take_set(settings, age_minutes=5)
    expected = manifest_digests(settings, full)
    _set_redis_state(settings, '{"weather": "after the full set"}')
    partial = _partial_set(settings)
    assert partial > full

    new_volume(settings)
    report = preseed(settings)
    assert report.ok, report.lines()
    assert {n: d.set_id for n, d in report.databases.items()} == {"mongo": full, "redis": full, "chroma": full}
    assert digests(settings) == expected  # no database from the half-failed set
    passed = [n for n in report.notes if n.startswith(f"{partial} passed over")]
    assert passed and "redis failed" in passed[0], report.notes

    # A manual restore of the whole stack says the same.
    restored = restore_set(settings, "latest", force=True)
    assert restored.set_id == full and any(n.startswith(f"{partial} passed over") for n in restored.notes)


def test_one_new_database_takes_the_newest_set_holding_it_and_warns(settings: Settings) -> None:
    testdata.load_all(settings, scale=20)
    take_set(settings, age_minutes=5)
    partial = _partial_set(settings)  # its mongo and chroma entries are verified
    expected_mongo = manifest_digests(settings, partial)["mongo"]
    new_volume(settings, ["mongo"])

    report = preseed(settings)
    d = report.databases["mongo"]
    assert (d.action, d.set_id) == ("restored", partial), report.lines()
    assert digests(settings, ["mongo"])["mongo"] == expected_mongo
    assert {n: report.databases[n].action for n in ("redis", "chroma")} == {"redis": "skipped", "chroma": "skipped"}
    warnings = [n for n in report.notes if n.startswith("WARNING")]
    assert warnings and "redis, chroma" in warnings[0] and "newer" in warnings[0], report.notes
    assert any(w in line for line in report.lines() for w in warnings)


def test_retention_keeps_the_newest_complete_set_past_newer_safety_and_partial_sets(settings: Settings) -> None:
    testdata.load_all(settings, scale=20)
    oldest = take_set(settings, age_minutes=30)
    complete = take_set(settings, age_minutes=20)
    partial = _partial_set(settings)
    safety = BackupPipeline(settings).take_set(SetKind.SAFETY, ["redis"], offsite=False).set_id
    assert oldest < complete < partial < safety

    decision = prune_local(settings, policy=Policy(keep_last=1))
    assert complete in decision.keep, decision.reasons
    assert safety in decision.keep and partial in decision.keep
    remaining = LocalStore(settings.backup_dir).set_ids()
    assert complete in remaining and safety in remaining
    # Safety sets live in their own group and never take a full set's place.
    assert any("[safety:redis]" in r for r in decision.reasons[safety])


def test_deep_verify_failure_and_corrupt_archive_show_in_sets_json(settings: Settings, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    testdata.load_all(settings, scale=20)
    set_id = take_set(settings)
    store = LocalStore(settings.backup_dir)

    # A recorded digest that no restore gives back: the deep verify must fail and say so.
    def wrong_digest(s: Any) -> None:
        s.databases["mongo"].digest = "0" * 64

    store.update(set_id, wrong_digest)
    assert _cli(monkeypatch, settings, tmp_path, "verify", "--set", set_id, "--db", "mongo", "--deep") == 1
    capsys.readouterr()
    # A damaged archive: the re-check marks it corrupt.
    damage_stored_dump(store, set_id, "redis")
    assert _cli(monkeypatch, settings, tmp_path, "verify", "--set", set_id, "--db", "redis") == 1
    capsys.readouterr()

    assert _cli(monkeypatch, settings, tmp_path, "sets", "--json") == 0
    row = next(r for r in json.loads(capsys.readouterr().out)["sets"] if r["set_id"] == set_id)
    entries = row["local"]["manifest"]["databases"]
    assert entries["mongo"]["status"] == "restore_failed" and "deep verify" in entries["mongo"]["error"]
    assert entries["redis"]["status"] == "corrupt"
    assert entries["chroma"]["status"] == "verified"
    assert row["local"]["complete"] is False and row["local"]["usable_for"] == ["chroma"]
    # Nothing picks them any more.
    with pytest.raises(Exception, match="no usable backup set"):
        restore_set(settings, "latest", ["redis"], force=True)


def test_preseed_and_restore_json_name_each_databases_set(settings: Settings, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    testdata.load_all(settings, scale=20)
    older = take_set(settings, dbs=["redis"], age_minutes=5)
    full = take_set(settings)
    new_volume(settings)
    assert _cli(monkeypatch, settings, tmp_path, "preseed", "--json", "--timeout", "5") == 0
    report = json.loads(capsys.readouterr().out)
    assert {n: d["set_id"] for n, d in report["databases"].items()} == {"mongo": full, "redis": full, "chroma": full}

    assert _cli(monkeypatch, settings, tmp_path, "restore", "--set", older, "--db", "redis", "--force",
                "--json") == 0
    restored = json.loads(capsys.readouterr().out)
    assert restored["databases"]["redis"]["set_id"] == older and restored["safety_set_id"]
    assert any(n.startswith("WARNING") for n in restored["notes"])
