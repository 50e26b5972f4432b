"""The dead man's switch: one GET per new complete set to a real local HTTP
server; nothing for incomplete sets, old sets or a second report of the same
set; an unreachable monitor never fails the caller nor leaks the URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from rpger_ops import heartbeat
from rpger_ops.defs.heartbeat import heartbeat_sensor
from rpger_ops.defs.resources import StackResource
from rpger_ops.sets import BackupSet, DatabaseEntry, EntryStatus, SetKind, new_set_id
from rpger_ops.settings import Settings, load_settings
from rpger_ops.store import LocalStore

VERIFIED, FAILED = EntryStatus.VERIFIED, EntryStatus.FAILED


class Monitor:
    """Records the paths of GET requests; answers `status`."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.paths.append(self.path)
                self.send_response(outer.status)
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ping/5bf6-SECRET-UUID"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    m = Monitor()
    yield m
    m.server.shutdown()


@pytest.fixture
def cfg(tmp_path: Path, monitor: Monitor) -> Settings:
    url_file = tmp_path / "heartbeat_url"
    url_file.write_text(monitor.url + "\n")
    return load_settings(_env_file=None, RPGER_BACKUP_DIR=str(tmp_path / "backups"),
                         RPGER_HEARTBEAT_URL_FILE=str(url_file))


def add_set(settings: Settings, when: datetime, statuses: dict[str, EntryStatus],
            kind: SetKind = SetKind.SCHEDULED) -> str:
    set_id = new_set_id(when)
    LocalStore(settings.backup_dir).write(BackupSet(
        set_id=set_id, kind=kind, planned=list(statuses),  # type: ignore[arg-type]
        databases={db: DatabaseEntry(status=status, counts={"x": 1}, archive_bytes=10)
                   for db, status in statuses.items()}))
    return set_id


ALL_VERIFIED = {"mongo": VERIFIED, "redis": VERIFIED, "chroma": VERIFIED}


def test_one_ping_per_new_complete_set(cfg: Settings, monitor: Monitor) -> None:
    now = datetime.now(UTC)
    first = add_set(cfg, now - timedelta(hours=2), ALL_VERIFIED)
    assert heartbeat.after_complete_set(cfg, first).outcome == "pinged"
    assert heartbeat.after_complete_set(cfg, first).outcome == "already_pinged"
    assert monitor.paths == ["/ping/5bf6-SECRET-UUID"]

    partial = add_set(cfg, now - timedelta(hours=1), {**ALL_VERIFIED, "redis": FAILED})
    result = heartbeat.after_complete_set(cfg, partial)
    assert result.outcome == "not_complete" and "redis failed" in result.detail, result.detail
    missing_db = add_set(cfg, now - timedelta(minutes=30), {"mongo": VERIFIED, "redis": VERIFIED})
    assert heartbeat.after_complete_set(cfg, missing_db).outcome == "not_complete"
    safety = add_set(cfg, now - timedelta(minutes=20), ALL_VERIFIED, kind=SetKind.SAFETY)
    assert heartbeat.after_complete_set(cfg, safety).outcome == "not_complete"  # says nothing of the schedule
    assert len(monitor.paths) == 1

    second = add_set(cfg, now, ALL_VERIFIED)
    assert heartbeat.after_newest_set(cfg).outcome == "pinged"
    assert heartbeat.after_newest_set(cfg).outcome == "already_pinged"
    # A re-run on an older set (e.g. its off-site copy) is not news.
    assert heartbeat.after_complete_set(cfg, first).outcome == "already_pinged"
    assert len(monitor.paths) == 2 and second > first


def test_not_configured_sends_nothing(tmp_path: Path, monitor: Monitor) -> None:
    s = load_settings(_env_file=None, RPGER_BACKUP_DIR=str(tmp_path))
    set_id = add_set(s, datetime.now(UTC), ALL_VERIFIED)
    assert heartbeat.after_complete_set(s, set_id).outcome == "not_configured"
    assert monitor.paths == []


def test_monitor_down_or_refusing_is_reported_not_raised(cfg: Settings, monitor: Monitor, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    set_id = add_set(cfg, datetime.now(UTC), ALL_VERIFIED)
    monitor.status = 503
    result = heartbeat.after_complete_set(cfg, set_id, attempts=2)
    assert result.outcome == "failed" and result.detail == "HTTP 503" and not result.ok
    assert len(monitor.paths) == 2  # retried
    monitor.status = 200
    assert heartbeat.after_complete_set(cfg, set_id).outcome == "pinged"  # not marked as pinged before

    dead = load_settings(_env_file=None, RPGER_BACKUP_DIR=str(tmp_path / "other"),
                         RPGER_HEARTBEAT_URL="http://127.0.0.1:1/ping/SECRET-TOKEN-9")
    other = add_set(dead, datetime.now(UTC), ALL_VERIFIED)
    result = heartbeat.after_complete_set(dead, other, timeout_s=1, attempts=1)
    assert result.outcome == "failed" and result.detail == "ConnectError"
    assert "SECRET" not in caplog.text and "SECRET" not in repr(result)


def test_bad_url_is_a_config_error(tmp_path: Path) -> None:
    from rpger_ops.settings import ConfigError

    with pytest.raises(ConfigError) as err:
        load_settings(_env_file=None, RPGER_HEARTBEAT_URL="ftp://host/SECRET-PATH")
    assert "RPGER_HEARTBEAT_URL" in str(err.value) and "SECRET-PATH" not in str(err.value)


def test_sensor_pings_after_a_successful_run(cfg: Settings, monitor: Monitor, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RPGER_BACKUP_DIR", str(cfg.backup_dir))
    monkeypatch.setenv("RPGER_HEARTBEAT_URL_FILE", str(tmp_path / "heartbeat_url"))
    add_set(cfg, datetime.now(UTC), ALL_VERIFIED)

    @dg.op
    def noop() -> None:
        pass

    @dg.job
    def some_job() -> None:
        noop()

    instance = dg.DagsterInstance.ephemeral()
    ok = some_job.execute_in_process(instance=instance)
    for _ in range(2):
        ctx = dg.build_run_status_sensor_context(
            sensor_name="heartbeat_sensor", dagster_instance=instance, dagster_run=ok.dagster_run,
            dagster_event=ok.get_run_success_event(), resources={"stack": StackResource()},
        )
        heartbeat_sensor(ctx)
    assert monitor.paths == ["/ping/5bf6-SECRET-UUID"]
