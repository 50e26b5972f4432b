"""Alerts to a webhook, once per incident, with a recovery message.

An *incident* has a key (e.g. `run_failed:backup_all`, `stale:local`,
`down:redis`). `raise_incident` posts only when the key is not already open;
`resolve` posts a recovery only when it was open. Open incidents live in a
small JSON file (under the backup directory by default) shared by every
sensor and check, updated under a file lock, so a failure that persists for
hours gives one message, not one per tick.

The body is generic JSON that Slack-compatible receivers also accept
(`text` carries the human message). The webhook URL is a secret
(`RPGER_ALERT_WEBHOOK_URL[_FILE]`) and is never logged.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rpger_ops.settings import Settings

log = logging.getLogger(__name__)

STATE_FILE = ".alerts-state.json"


class Alerter:
    def __init__(self, settings: Settings, state_path: Path | None = None, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.state_path = state_path or Path(settings.backup_dir) / STATE_FILE
        self.timeout_s = timeout_s

    # --- state -----------------------------------------------------------------
    @contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state: dict[str, Any] = (json.loads(self.state_path.read_text())
                                         if self.state_path.exists() else {"open": {}})
                yield state
                tmp = self.state_path.with_name(self.state_path.name + ".tmp")
                tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
                os.replace(tmp, self.state_path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def open_incidents(self) -> dict[str, Any]:
        with self._state() as state:
            return dict(state["open"])

    # --- incidents -------------------------------------------------------------
    def raise_incident(self, key: str, summary: str, details: dict[str, Any] | None = None,
                       severity: str = "error") -> bool:
        """Open an incident and alert; False (and no message) if already open."""
        with self._state() as state:
            if key in state["open"]:
                return False
            now = datetime.now(UTC).isoformat()
            delivered = self._post("alert", key, summary, details or {}, severity)
            # Even an undelivered alert opens the incident: the receiver being
            # down must not turn into a flood when it comes back.
            state["open"][key] = {"since": now, "summary": summary, "delivered": delivered}
            return True

    def remind(self, key: str, summary: str, details: dict[str, Any] | None = None,
               severity: str = "warning", every_hours: float = 24.0, now: datetime | None = None) -> bool:
        """Open `key` like raise_incident, and repeat the message every `every_hours`
        while it stays open (a standing condition someone must act on, e.g. no
        off-site copy). True when a message was sent now."""
        now = now or datetime.now(UTC)
        with self._state() as state:
            entry = state["open"].get(key)
            if entry is not None:
                last = datetime.fromisoformat(entry.get("last_sent") or entry["since"])
                if (now - last).total_seconds() < every_hours * 3600:
                    return False
            delivered = self._post("alert", key, summary, details or {}, severity)
            since = entry["since"] if entry else now.isoformat()
            state["open"][key] = {"since": since, "summary": summary, "delivered": delivered,
                                  "last_sent": now.isoformat()}
            return True

    def resolve(self, key: str, summary: str, details: dict[str, Any] | None = None) -> bool:
        """Close an open incident with a recovery message; False if none was open."""
        with self._state() as state:
            if key not in state["open"]:
                return False
            opened = state["open"].pop(key)
            self._post("recovery", key, summary, {**(details or {}), "open_since": opened.get("since")}, "info")
            return True

    def update(self, key: str, failing: bool, summary: str, details: dict[str, Any] | None = None,
               severity: str = "error") -> bool:
        """Raise or resolve according to `failing`; True when a message was sent."""
        if failing:
            return self.raise_incident(key, summary, details, severity)
        return self.resolve(key, summary, details)

    # --- delivery --------------------------------------------------------------
    def _post(self, event: str, key: str, summary: str, details: dict[str, Any], severity: str) -> bool:
        prefix = "RECOVERED" if event == "recovery" else severity.upper()
        body = {
            "text": f"[rpger-dbstack {self.settings.stack_id}] {prefix}: {summary}",
            "event": event,
            "incident": key,
            "severity": severity,
            "summary": summary,
            "details": details,
            "stack_id": self.settings.stack_id,
            "at": datetime.now(UTC).isoformat(),
        }
        if self.settings.alert_webhook_url is None:
            log.warning("alert (no webhook configured): %s", body["text"])
            return False
        import httpx

        try:
            resp = httpx.post(self.settings.alert_webhook_url.get_secret_value(), json=body, timeout=self.timeout_s)
            resp.raise_for_status()
            return True
        except httpx.HTTPError as exc:
            # Never include the URL (a secret) in the log line.
            log.error("alert webhook delivery failed (%s) for: %s", type(exc).__name__, body["text"])
            return False
