"""Alerts reach a real local HTTP receiver once per incident, with one recovery."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from rpger_ops.alerts import Alerter
from rpger_ops.defs import monitoring as mon
from rpger_ops.sets import BackupSet, DatabaseEntry, EntryStatus, new_set_id
from rpger_ops.settings import Settings, load_settings
from rpger_ops.store import LocalStore


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                outer.bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/secret-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, incident_prefix: str = "") -> list[tuple[str, str]]:
        return [(b["event"], b["incident"]) for b in self.bodies if b["incident"].startswith(incident_prefix)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def cfg(tmp_path: Path, receiver: Receiver) -> Settings:
    return load_settings(_env_file=None, RPGER_BACKUP_DIR=str(tmp_path / "backups"),
                         RPGER_ALERT_WEBHOOK_URL=receiver.url, RPGER_STACK_ID="alert-test")


def add_verified_set(settings: Settings, when: datetime, counts: dict[str, int], size: int) -> str:
    """A catalogue entry as the backup pipeline leaves it (files are not needed here)."""
    entries = {db: DatabaseEntry(status=EntryStatus.VERIFIED, counts=counts, archive_bytes=size)
               for db in ("mongo", "redis", "chroma")}
    backup_set = BackupSet(set_id=new_set_id(when), planned=list(entries), databases=entries)  # type: ignore[arg-type]
    LocalStore(settings.backup_dir).write(backup_set)
    return backup_set.set_id


def test_stale_backup_alerts_once_and_recovers_once(cfg: Settings, receiver: Receiver) -> None:
    add_verified_set(cfg, datetime.now(UTC) - timedelta(hours=30), {"users": 10}, 1000)
    for _ in range(3):
        finding = mon.evaluate(cfg, "local_backup_fresh")
        assert not finding.ok and "30.0 h old" in finding.summary
    assert receiver.events("stale:local") == [("alert", "stale:local")]
    body = receiver.bodies[0]
    assert body["text"].startswith("[rpger-dbstack alert-test] ERROR:") and body["severity"] == "error"

    add_verified_set(cfg, datetime.now(UTC) - timedelta(minutes=5), {"users": 10}, 1000)
    assert mon.evaluate(cfg, "local_backup_fresh").ok
    assert mon.evaluate(cfg, "local_backup_fresh").ok
    assert receiver.events("stale:local") == [("alert", "stale:local"), ("recovery", "stale:local")]


def test_no_backup_at_all_is_stale(cfg: Settings, receiver: Receiver) -> None:
    assert not mon.evaluate(cfg, "local_backup_fresh").ok
    assert receiver.events() == [("alert", "stale:local")]


def test_shrunken_set_alerts_once(cfg: Settings, receiver: Receiver) -> None:
    now = datetime.now(UTC)
    add_verified_set(cfg, now - timedelta(days=1), {"monsters": 1000, "users": 100}, 50_000)
    add_verified_set(cfg, now - timedelta(hours=1), {"monsters": 1010, "users": 101}, 50_500)
    assert mon.evaluate(cfg, "newest_set_not_shrunk").ok
    add_verified_set(cfg, now, {"monsters": 100, "users": 100}, 48_000)  # monsters lost 90 %
    for _ in range(2):
        finding = mon.evaluate(cfg, "newest_set_not_shrunk")
        assert not finding.ok and "items 1111 -> 200" in finding.summary
    assert receiver.events() == [("alert", "shrunk:newest")]


def test_monitoring_sensor_reports_check_evaluations(cfg: Settings, receiver: Receiver,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RPGER_BACKUP_DIR", str(cfg.backup_dir))
    monkeypatch.setenv("RPGER_ALERT_WEBHOOK_URL", receiver.url)
    add_verified_set(cfg, datetime.now(UTC), {"users": 1}, 10)
    with dg.build_sensor_context(resources={"stack": mon.StackResource()}) as ctx:
        result = mon.monitoring_sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    evaluations = {e.check_name: e.passed for e in result.asset_events  # type: ignore[union-attr]
                   if isinstance(e, dg.AssetCheckEvaluation)}
    # No off-site store in `cfg`: everything passes but the off-site warning.
    assert evaluations == {"local_backup_fresh": True, "offsite_backup_fresh": True, "newest_set_not_shrunk": True,
                           "offsite_configured": False}
    assert receiver.events() == [("alert", "offsite:not_configured")]
    assert receiver.bodies[0]["severity"] == "warning"
    # The catalogue's size is observed with them: sets, stored bytes, dedup ratio.
    (observation,) = [e for e in result.asset_events if isinstance(e, dg.AssetObservation)]
    assert observation.asset_key == dg.AssetKey(["backups", "catalog"])
    meta = {k: v.value for k, v in observation.metadata.items()}
    assert meta["local_sets"] == 1 and "local_dedup_ratio" in meta and "local_stored_bytes" in meta


def _failure_context(instance: dg.DagsterInstance, result: Any) -> Any:
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert", dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(), resources={"stack": mon.StackResource()},
    ).for_run_failure()


def test_failing_backup_run_alerts_once_and_success_recovers(settings: Settings, receiver: Receiver,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    from rpger_ops import testdata
    from rpger_ops.definitions import defs
    from tests.integration.backup_support import export_settings

    testdata.load_all(settings, scale=10)
    export_settings(monkeypatch, settings, tmp_path)
    monkeypatch.setenv("RPGER_ALERT_WEBHOOK_URL", receiver.url)
    good_redis = settings.redis_url.get_secret_value()
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # Redis unreachable: the backup fails
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("backup_all")
    for _ in range(2):  # two failures in a row: one incident, one alert
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        mon.run_failure_alert(_failure_context(instance, result))
    assert receiver.events() == [("alert", "run_failed:backup_all")]
    assert "redis" in receiver.bodies[0]["summary"]

    monkeypatch.setenv("REDIS_URL", good_redis)
    ok = job.execute_in_process(instance=instance)
    ctx = dg.build_run_status_sensor_context(
        sensor_name="run_recovery_alert", dagster_instance=instance, dagster_run=ok.dagster_run,
        dagster_event=ok.get_run_success_event(), resources={"stack": mon.StackResource()},
    )
    mon.run_recovery_alert(ctx)
    mon.run_recovery_alert(ctx)
    assert receiver.events() == [("alert", "run_failed:backup_all"), ("recovery", "run_failed:backup_all")]


def test_undeliverable_webhook_does_not_leak_url_or_flood(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = "http://127.0.0.1:1/hooks/SECRET-TOKEN-123"
    s = load_settings(_env_file=None, RPGER_BACKUP_DIR=str(tmp_path), RPGER_ALERT_WEBHOOK_URL=url)
    alerter = Alerter(s, timeout_s=1)
    assert alerter.raise_incident("down:redis", "redis is down") is True
    assert alerter.raise_incident("down:redis", "redis is down") is False
    assert "SECRET-TOKEN-123" not in caplog.text and "delivery failed" in caplog.text
    assert list(alerter.open_incidents()) == ["down:redis"]


def test_offsite_not_configured_warns_once_a_day_and_recovers(cfg: Settings, receiver: Receiver,
                                                              tmp_path: Path) -> None:
    alerter = Alerter(cfg)
    t0 = datetime.now(UTC)
    # The sensor ticks every 5 minutes: one WARN per day, not one per tick.
    for minutes in (0, 5, 10, 23 * 60):
        assert alerter.remind("offsite:not_configured", "no off-site", now=t0 + timedelta(minutes=minutes)) \
            is (minutes == 0)
    assert alerter.remind("offsite:not_configured", "no off-site", now=t0 + timedelta(hours=24, minutes=1))
    assert receiver.events() == [("alert", "offsite:not_configured")] * 2
    assert {b["severity"] for b in receiver.bodies} == {"warning"}
    assert receiver.bodies[0]["text"].startswith("[rpger-dbstack alert-test] WARNING:")

    assert not mon.remind_offsite(cfg).ok  # within the day: no third message
    assert len(receiver.bodies) == 2
    configured = load_settings(_env_file=None, RPGER_BACKUP_DIR=str(cfg.backup_dir),
                               RPGER_ALERT_WEBHOOK_URL=receiver.url, RPGER_STACK_ID="alert-test",
                               RPGER_S3_ENDPOINT="127.0.0.1:9", RPGER_S3_ACCESS_KEY="k" * 20,
                               RPGER_S3_SECRET_KEY="s" * 20)
    assert mon.remind_offsite(configured).ok
    assert mon.remind_offsite(configured).ok
    assert receiver.events()[-1] == ("recovery", "offsite:not_configured")
    assert len(receiver.bodies) == 3
