"""Dead man's switch: tell an outside monitor that backups still happen.

After a backup set is complete (every database's archive verified), the stack
sends one HTTP GET to `RPGER_HEARTBEAT_URL` (a secret, also
`RPGER_HEARTBEAT_URL_FILE`), the "ping URL" of a service such as
healthchecks.io, Uptime Kuma (push monitor) or Better Stack heartbeats. That
service alerts when the pings STOP: a dead daemon, a host that is down, a
schedule that was switched off, a webhook that no longer delivers -- failures
that nothing inside the stack can report about itself.

One plain entry point for the pipeline and the CLI:

    heartbeat.after_complete_set(settings, set_id)

It pings at most once per set, never for a set that is not complete, never for
a set older than the newest one already pinged (a re-run of an old set's
off-site copy is not news), and never raises: a monitor that is down must not
fail a backup. The URL is never logged.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.sets import AUTOMATIC_KINDS, BackupSet, newest_complete
from rpger_ops.settings import Settings
from rpger_ops.store import LocalStore, StoreError, read_sets

log = logging.getLogger(__name__)

STATE_FILE = ".heartbeat-state.json"

Outcome = Literal["pinged", "not_configured", "not_complete", "already_pinged", "failed"]


@dataclass(frozen=True)
class HeartbeatResult:
    outcome: Outcome
    set_id: str | None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"


def set_is_complete(backup_set: BackupSet) -> bool:
    """A scheduled or manual set in which every database of the stack is verified
    (a safety set, taken before a forced restore, says nothing about the schedule)."""
    return backup_set.kind in AUTOMATIC_KINDS and backup_set.verified_for(ENGINE_NAMES)


def _state_path(settings: Settings) -> Path:
    return Path(settings.backup_dir) / STATE_FILE


def _send(url: str, timeout_s: float, attempts: int) -> str:
    """GET the URL; a 2xx answer is a delivered ping. Retries with backoff."""
    import httpx

    last = ""
    for attempt in range(attempts):
        try:
            resp = httpx.get(url, timeout=timeout_s, follow_redirects=True)
            if 200 <= resp.status_code < 300:
                return ""
            last = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__  # never the URL: it is a secret
        if attempt + 1 < attempts:
            time.sleep(min(2.0**attempt, 8.0))
    return last or "no answer"


def after_complete_set(settings: Settings, set_id: str, *, timeout_s: float = 10.0,
                       attempts: int = 3) -> HeartbeatResult:
    """Ping the heartbeat URL for `set_id` if it is complete and newer than the
    last set pinged. Never raises."""
    if settings.heartbeat_url is None:
        return HeartbeatResult("not_configured", set_id)
    try:
        backup_set = LocalStore(settings.backup_dir).read(set_id)
    except StoreError as exc:
        return HeartbeatResult("not_complete", set_id, str(exc))
    if not set_is_complete(backup_set):
        return HeartbeatResult("not_complete", set_id, backup_set.summary())

    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One ping per set even when a sensor and the CLI both report it.
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
            last = state.get("last_set_id")
            if last is not None and set_id <= last:
                return HeartbeatResult("already_pinged", set_id, f"last pinged set {last}")
            error = _send(settings.heartbeat_url.get_secret_value(), timeout_s, attempts)
            if error:
                log.error("heartbeat for set %s not delivered (%s)", set_id, error)
                return HeartbeatResult("failed", set_id, error)
            state.update({"last_set_id": set_id, "pinged_at": datetime.now(UTC).isoformat()})
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
            os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    log.info("heartbeat sent for complete set %s", set_id)
    return HeartbeatResult("pinged", set_id)


def after_newest_set(settings: Settings, **kw: Any) -> HeartbeatResult:
    """`after_complete_set` for the newest complete set, if any (for callers that
    only know that "a backup run succeeded")."""
    newest = newest_complete(read_sets(LocalStore(settings.backup_dir)), dbs=ENGINE_NAMES)
    if newest is None:
        return HeartbeatResult("not_complete", None, "no complete verified set")
    return after_complete_set(settings, newest.set_id, **kw)
