"""Helpers for the backup tests: Settings -> environment, Dagster events, S3 reads."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from rpger_ops.settings import Settings, _alias_of, settings_to_env


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that load `settings` again (CLI, subprocesses, resources)."""
    return settings_to_env(settings)


def export_settings(monkeypatch: pytest.MonkeyPatch, settings: Settings, cwd: Path) -> None:
    """Make Dagster resources (which read the environment) see exactly `settings`.
    Runs from `cwd` so no developer `.env` leaks in."""
    for name in Settings.model_fields:
        monkeypatch.delenv(_alias_of(name), raising=False)
        monkeypatch.delenv(_alias_of(name) + "_FILE", raising=False)
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(cwd)


def check_evaluations(instance: Any, run_id: str) -> dict[tuple[str, str], bool]:
    """(asset key path, check name) -> passed, for every check evaluated in a run."""
    from dagster import DagsterEventType

    out: dict[tuple[str, str], bool] = {}
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        data = record.dagster_event.event_specific_data
        out[("/".join(data.asset_key.path), data.check_name)] = data.passed
    return out


def s3_object_sha256(settings: Settings, key: str) -> str:
    from minio import Minio

    assert settings.s3_access_key is not None and settings.s3_secret_key is not None
    client = Minio(str(settings.s3_endpoint), access_key=settings.s3_access_key.get_secret_value(),
                   secret_key=settings.s3_secret_key.get_secret_value(), secure=settings.s3_secure)
    response = client.get_object(settings.s3_bucket, key)
    try:
        return hashlib.sha256(response.read()).hexdigest()
    finally:
        response.close()
        response.release_conn()


# --- stored dumps of either layout (tar.zst archive, or content-addressed blobs) ---------------

def stored_dump_exists(store: Any, set_id: str, db: str) -> bool:
    """The set's stored bytes for `db` are there (its archive, or every blob it references)."""
    entry = store.read(set_id).entry(db)
    if entry is not None and entry.layout == "blobs":
        return bool(entry.files) and all(store.blob_file(r.id).exists() for r in entry.files.values())
    return bool(store.archive_path(set_id, db).exists())


def own_blob_id(store: Any, set_id: str, db: str) -> str:
    """The largest blob of `db` in `set_id` that no other set references (damaging it
    damages this set only: a shared blob would damage every set holding it)."""
    others: set[str] = set()
    for other in store.set_ids():
        if other != set_id:
            others |= store.read(other).blob_ids
    entry = store.read(set_id).databases[db]
    own = [r for r in entry.files.values() if r.id not in others]
    assert own, f"every blob of {db} in {set_id} is shared with another set"
    return str(max(own, key=lambda r: r.stored_bytes).id)


def stored_dump_path(store: Any, set_id: str, db: str) -> Any:
    """The local file whose damage makes `db` of `set_id` unusable."""
    entry = store.read(set_id).entry(db)
    if entry is not None and entry.layout == "blobs":
        return store.blob_file(own_blob_id(store, set_id, db))
    return store.archive_path(set_id, db)


def damage_stored_dump(store: Any, set_id: str, db: str, flip: int = 0xFF) -> None:
    path = stored_dump_path(store, set_id, db)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= flip
    path.write_bytes(bytes(data))


def offsite_matches(settings: Settings, entry: Any) -> bool:
    """Every object of the entry's off-site copy holds exactly the local bytes."""
    from rpger_ops.store.s3 import S3Store

    if entry.layout != "blobs":
        return bool(s3_object_sha256(settings, entry.offsite.key) == entry.sha256)
    store = S3Store.from_settings(settings)
    return all(s3_object_sha256(settings, store.blob_key(r.id)) == r.stored_sha256 for r in entry.files.values())
