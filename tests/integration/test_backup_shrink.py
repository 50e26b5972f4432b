"""A set whose counts drop sharply is flagged in its checks (WARN) and alerted once."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from rpger_ops import testdata
from rpger_ops.alerts import Alerter
from rpger_ops.connect import chroma_client, mongo_client
from rpger_ops.definitions import defs
from rpger_ops.settings import Settings
from tests.integration.backup_support import check_evaluations, export_settings
from tests.integration.test_alerts import Receiver


def _run_backup(instance: dg.DagsterInstance) -> dict[tuple[str, str], bool]:
    result = defs.resolve_job_def("backup_all").execute_in_process(instance=instance)
    assert result.success
    return check_evaluations(instance, result.run_id)


def test_shrunken_set_is_flagged_and_alerted_once(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        settings = settings.model_copy(update={"alert_webhook_url": None})
        export_settings(monkeypatch, settings, tmp_path)
        monkeypatch.setenv("RPGER_ALERT_WEBHOOK_URL", receiver.url)
        testdata.load_all(settings, scale=40)
        instance = dg.DagsterInstance.ephemeral()
        first = _run_backup(instance)
        assert all(first[(f"{db}/archive", "not_shrunk")] for db in ("mongo", "redis", "chroma"))

        # Someone (or a bug in the app) deletes most monsters and a Chroma collection.
        db = mongo_client(settings)[settings.mongodb_database]
        db["monsters"].delete_many({})
        db["spells"].delete_many({})
        db["items"].delete_many({})
        db["npcs"].delete_many({})
        for name in ("monsters", "spells", "items", "npcs"):
            chroma_client(settings).delete_collection(name)

        second = _run_backup(instance)
        assert second[("mongo/archive", "not_shrunk")] is False
        assert second[("chroma/archive", "not_shrunk")] is False
        assert second[("redis/archive", "not_shrunk")] is True
        # Suspicious is not invalid: the integrity checks still pass.
        assert all(second[("mongo/archive", n)] for n in ("sha256", "readable", "counts"))
        alerts = [b for b in receiver.bodies if b["event"] == "alert"]
        assert sorted(b["incident"] for b in alerts) == ["shrunk:chroma", "shrunk:mongo"]
        assert all(b["severity"] == "warning" for b in alerts)
        assert sorted(Alerter(settings).open_incidents()) == ["shrunk:chroma", "shrunk:mongo"]

        # The next set is in line with the (smaller) previous one: one recovery each, no new alert.
        third = _run_backup(instance)
        assert third[("mongo/archive", "not_shrunk")] is True
        events = sorted((b["event"], b["incident"]) for b in receiver.bodies)
        assert events == [("alert", "shrunk:chroma"), ("alert", "shrunk:mongo"),
                          ("recovery", "shrunk:chroma"), ("recovery", "shrunk:mongo")]
    finally:
        receiver.server.shutdown()
