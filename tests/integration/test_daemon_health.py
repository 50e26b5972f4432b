"""The daemon healthcheck on a real Dagster instance (SQLite storage in a temp
DAGSTER_HOME): live while every required daemon beats, not live when one stops,
one alert past the startup grace, one recovery when the beats come back."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._daemon.types import DaemonHeartbeat

from rpger_ops.daemonhealth import INCIDENT, check_and_alert, container_uptime_s, liveness
from rpger_ops.settings import load_settings
from tests.integration.test_alerts import Receiver


@pytest.fixture
def instance(tmp_path: Path) -> dg.DagsterInstance:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.from_config(str(home))


def beat(instance: dg.DagsterInstance, at: float, skip: str | None = None) -> None:
    for daemon_type in instance.get_required_daemon_types():
        if daemon_type != skip:
            instance.add_daemon_heartbeat(DaemonHeartbeat(at, daemon_type, "test-daemon", None))


def test_liveness_follows_the_heartbeats(instance: dg.DagsterInstance) -> None:
    required = list(instance.get_required_daemon_types())
    assert "SCHEDULER" in required and "SENSOR" in required
    now = time.time()
    never = liveness(instance, 60, now=now)
    assert not never.live and set(never.stale) == set(required) and "never" in never.summary

    beat(instance, now - 10)
    assert liveness(instance, 60, now=now).live
    beat(instance, now - 5, skip="SENSOR")  # the sensor thread is stuck; the others beat on
    stuck = liveness(instance, 60, now=now + 53)  # others beat 58 s ago, SENSOR 63 s ago
    assert not stuck.live and list(stuck.stale) == ["SENSOR"] and stuck.stale["SENSOR"] == 63.0


def test_alert_once_after_grace_then_recover(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        s = load_settings(_env_file=None, RPGER_BACKUP_DIR=str(tmp_path / "b"), RPGER_ALERT_WEBHOOK_URL=receiver.url,
                          RPGER_DAEMON_HEARTBEAT_TOLERANCE_S="60", RPGER_DAEMON_STARTUP_GRACE_S="120")
        # Starting up: not live, but no alert yet.
        assert not check_and_alert(s, instance, uptime_s=30).live
        assert receiver.bodies == []
        for _ in range(3):
            assert not check_and_alert(s, instance, uptime_s=300).live
        assert receiver.events() == [("alert", INCIDENT)]
        assert "schedules, sensors and alerts are stopped" in receiver.bodies[0]["summary"]
        beat(instance, time.time())
        assert check_and_alert(s, instance, uptime_s=400).live
        assert check_and_alert(s, instance, uptime_s=430).live
        assert receiver.events() == [("alert", INCIDENT), ("recovery", INCIDENT)]
    finally:
        receiver.server.shutdown()


def test_command_exit_codes(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    env = {"DAGSTER_HOME": str(tmp_path / "dagster_home"), "RPGER_BACKUP_DIR": str(tmp_path / "b"),
           "PATH": "/usr/bin:/bin", "RPGER_DAEMON_STARTUP_GRACE_S": "0"}
    cmd = [sys.executable, "-m", "rpger_ops", "daemon-health"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 1 and "not live" in p.stdout, p.stdout + p.stderr
    beat(instance, time.time())
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0 and "live" in p.stdout, p.stdout + p.stderr


def test_container_uptime_is_known_on_linux() -> None:
    uptime = container_uptime_s()
    assert uptime is not None and uptime >= 0
