"""Keys whose TTL ran out between backup and restore are gone for good, not lost.

The manifest's digest still counts them; the restore must not fail on that,
and it must still fail when data really is missing."""

from __future__ import annotations

import time

from rpger_ops import testdata
from rpger_ops.connect import redis_client
from rpger_ops.pipeline import BackupPipeline
from rpger_ops.restore import restore_set
from rpger_ops.sets import SetKind
from rpger_ops.settings import Settings
from tests.integration.restore_support import wipe


def test_restore_after_ttl_expiry_is_verified_against_the_dump(settings: Settings) -> None:
    testdata.load_redis(settings, scale=20)
    r = redis_client(settings)
    r.set("flash:short-lived", "x", px=1500)
    set_id = BackupPipeline(settings).take_set(SetKind.MANUAL, ["redis"], offsite=False).set_id
    time.sleep(2.0)  # the key has expired since the backup
    wipe(settings, ("redis",))
    report = restore_set(settings, set_id, dbs=["redis"])
    entry = report.databases["redis"]
    assert report.ok and entry.digest_ok, report.lines()
    assert any("expired since the backup" in n for n in entry.notes), entry.notes
    assert r.exists("flash:short-lived") == 0
    assert 0 < r.ttl("dashboard:default:user0") <= 3600
