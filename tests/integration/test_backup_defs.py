"""The backup definitions: what `defs` holds, the schedule, the off-site-disabled
path, and `backup_all` from the `dagster` command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from rpger_ops import testdata
from rpger_ops.definitions import defs
from rpger_ops.defs.partitions import BACKUP_SETS_PARTITION
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.settings import Settings
from rpger_ops.store import LocalStore
from tests.integration.backup_support import check_evaluations, export_settings, settings_env

REPO = Path(__file__).resolve().parents[2]


def test_defs_hold_the_backup_graph() -> None:
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    for db in ENGINE_NAMES:
        assert {f"{db}/dump", f"{db}/archive", f"{db}/offsite"} <= keys
        archive = dg.AssetKey([db, "archive"])
        assert graph.get(archive).parent_keys == {dg.AssetKey([db, "dump"])}
        assert graph.get(dg.AssetKey([db, "offsite"])).parent_keys == {archive}
        assert graph.get(archive).partitions_def.name == BACKUP_SETS_PARTITION  # type: ignore[union-attr]
        checks = {(c.asset_key, c.name) for c in graph.asset_check_keys}
        assert {(archive, n) for n in ("sha256", "readable", "counts")} <= checks
    specs = [spec for checks_def in defs.asset_checks or [] for spec in checks_def.check_specs]  # type: ignore[union-attr]
    archive_specs = [s for s in specs if s.asset_key.path[1] == "archive"]
    integrity = [s for s in archive_specs if s.name in ("sha256", "readable", "counts")]
    assert len(integrity) == 9 and all(s.blocking for s in integrity)
    # The shrink check warns; it must not block the off-site copy of a valid set.
    shrink = [s for s in archive_specs if s.name == "not_shrunk"]
    assert len(shrink) == 3 and not any(s.blocking for s in shrink)
    for job in ("backup_all", "backup_chains", "backup_checks", "verify_restore", "retention"):
        assert defs.resolve_job_def(job) is not None
    assert defs.resolve_schedule_def("backup_schedule").cron_schedule == "0 3 * * *"
    assert defs.resolve_schedule_def("retention_schedule") is not None


def test_backup_schedule_registers_the_set_before_requesting_it() -> None:
    from datetime import UTC, datetime

    schedule = defs.resolve_schedule_def("backup_schedule")
    when = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when,
                                       repository_def=defs.get_repository_def()) as context:
            request = schedule.evaluate_tick(context).run_requests[0]  # type: ignore[index]
        assert request.partition_key == "20261128T030000Z"
        assert request.job_name in (None, "backup_chains")
        assert "20261128T030000Z" in instance.get_dynamic_partitions(BACKUP_SETS_PARTITION)


def test_offsite_disabled_is_recorded_not_pretended(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    testdata.load_all(settings, scale=20)
    export_settings(monkeypatch, settings, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("backup_all").execute_in_process(instance=instance)
    assert result.success
    set_id = result.output_for_node("close_set")
    backup_set = LocalStore(settings.backup_dir).read(set_id)
    checks = check_evaluations(instance, result.run_id)
    for db in ENGINE_NAMES:
        assert backup_set.databases[db].verified
        assert backup_set.databases[db].offsite is None
        event = instance.get_latest_materialization_event(dg.AssetKey([db, "offsite"]))
        assert event is not None and event.asset_materialization is not None
        meta = event.asset_materialization.metadata
        assert meta["status"].value == "disabled" and meta["uploaded"].value is False
        assert checks[(f"{db}/offsite", "offsite_copy")] is False  # a WARN, not a pass
        assert all(checks[(f"{db}/archive", n)] for n in ("sha256", "readable", "counts"))


def test_backup_all_from_the_dagster_command_line(settings: Settings, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The command CI runs (see rpger_ops/defs/backup.py): no partition given."""
    testdata.load_all(settings, scale=20)
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "REDIS_", "CHROMA_", "RPGER_"))}
    env.update(settings_env(settings), DAGSTER_HOME=str(home), PYTHONPATH=str(REPO))
    dagster = str(Path(sys.executable).parent / "dagster")
    proc = subprocess.run([dagster, "job", "execute", "-m", "rpger_ops.definitions", "-a", "defs", "-j", "backup_all"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "RUN_SUCCESS" in output
    (set_id,) = LocalStore(settings.backup_dir).set_ids()
    assert LocalStore(settings.backup_dir).read(set_id).complete
    # The set is a registered partition of the persistent instance.
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert set_id in instance.get_dynamic_partitions(BACKUP_SETS_PARTITION)
    # No secret reached the run's output.
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() not in output
