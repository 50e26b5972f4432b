"""Liveness of the Dagster daemon, and an alert when it stops beating.

The daemon runs the schedules, the sensors (health, freshness, preseed,
alerts) and the run queue. If it hangs or its threads die, backups and every
alert stop silently, so the daemon container's healthcheck is
`rpger-ops daemon-health`:

- the same test as `dagster-daemon liveness-check`: every daemon the instance
  requires has a heartbeat in Dagster's storage younger than
  RPGER_DAEMON_HEARTBEAT_TOLERANCE_S (default 150 s; the daemons beat every
  30 s; Dagster's own default tolerance is 30 minutes, far too long for a
  healthcheck);
- exit 1 when not live, so `docker ps` shows the container unhealthy;
- and, because nothing else is left to report it (the alert sensors run in
  the daemon), it raises the incident `daemon:unhealthy` on the alert webhook
  itself once the container is past RPGER_DAEMON_STARTUP_GRACE_S, and sends
  the recovery message when the heartbeats are back.

A daemon container that is gone altogether runs no healthcheck: its restart
policy restarts it, and the heartbeat URL (rpger_ops.heartbeat) stops being
pinged, which the outside monitor reports.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rpger_ops.alerts import Alerter
from rpger_ops.settings import Settings

INCIDENT = "daemon:unhealthy"


@dataclass(frozen=True)
class DaemonLiveness:
    live: bool
    summary: str
    stale: dict[str, float | None] = field(default_factory=dict)  # daemon type -> heartbeat age (s) or None


def liveness(instance: Any, tolerance_s: float, now: float | None = None) -> DaemonLiveness:
    """Dagster's own liveness test (`all_daemons_live`) with our tolerance, plus
    which daemons are stale and how old their last heartbeat is."""
    from dagster._daemon.controller import get_daemon_statuses

    now = time.time() if now is None else now
    required = list(instance.get_required_daemon_types())
    # Dagster adds one heartbeat interval to the tolerance; subtract it so the
    # limit is exactly RPGER_DAEMON_HEARTBEAT_TOLERANCE_S.
    statuses: Mapping[str, Any] = get_daemon_statuses(
        instance, daemon_types=required, curr_time_seconds=now, ignore_errors=True,
        heartbeat_interval_seconds=0, heartbeat_tolerance_seconds=tolerance_s,
    )
    stale: dict[str, float | None] = {}
    for daemon_type, status in statuses.items():
        if status.required and not status.healthy:
            beat = status.last_heartbeat
            stale[daemon_type] = round(now - beat.timestamp, 1) if beat is not None else None
    if not required:
        return DaemonLiveness(True, "no daemon required by this instance")
    if stale:
        parts = [f"{d} ({'never' if age is None else f'{age:.0f} s ago'})" for d, age in sorted(stale.items())]
        return DaemonLiveness(False, f"Dagster daemon not live: no heartbeat within {tolerance_s:g} s from "
                                     + ", ".join(parts), stale)
    return DaemonLiveness(True, f"Dagster daemon live ({len(required)} daemons beating)")


def container_uptime_s() -> float | None:
    """Seconds since PID 1 of this container started (None outside Linux)."""
    try:
        with open("/proc/1/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            boot_uptime = float(fh.read().split()[0])
        return boot_uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def check_and_alert(settings: Settings, instance: Any, uptime_s: float | None = None,
                    alerter: Alerter | None = None) -> DaemonLiveness:
    """Evaluate liveness; raise or resolve the `daemon:unhealthy` incident.

    While the container is younger than the startup grace a failure is only
    reported (the daemon has not beaten yet), not alerted."""
    result = liveness(instance, settings.daemon_heartbeat_tolerance_s)
    alerter = alerter or Alerter(settings)
    uptime = container_uptime_s() if uptime_s is None else uptime_s
    starting = uptime is not None and uptime < settings.daemon_startup_grace_s
    if result.live:
        alerter.resolve(INCIDENT, "Dagster daemon is beating again", {"summary": result.summary})
    elif not starting:
        alerter.raise_incident(INCIDENT, result.summary + ": schedules, sensors and alerts are stopped",
                               {"stale": {k: v for k, v in result.stale.items()}})
    return result
