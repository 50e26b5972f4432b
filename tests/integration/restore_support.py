"""Helpers for the restore/preseed/runbook tests: backup sets, environment, digests."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from rpger_ops.catalog import Catalog, new_set_id
from rpger_ops.engines import build_engine
from rpger_ops.engines.base import ENGINE_NAMES, EngineName
from rpger_ops.settings import Settings, settings_to_env


def take_set(settings: Settings, dbs: Iterable[EngineName] = ENGINE_NAMES, offsite: bool = False,
             age_minutes: int = 0) -> str:
    """A verified backup set of migrated data through the real pipeline. `age_minutes` back-dates
    the set id so one test can hold several sets (ids have one-second resolution)."""
    from rpger_ops import backup, migrate

    migrate.apply_pending(settings)  # a live stack is migrated: nothing is pending after a restore
    set_id = backup.take_backup_set(settings, dbs=tuple(dbs), kind="manual", offsite=offsite)
    if age_minutes:
        set_id = _backdate(settings, set_id, age_minutes, offsite)
    return set_id


def _backdate(settings: Settings, set_id: str, minutes: int, offsite: bool) -> str:
    """Rename a fresh local set to an older id (local only: off-site keys name the id)."""
    assert not offsite, "back-dated sets are local only"
    catalog = Catalog(settings.backup_dir)
    old = new_set_id(datetime.now(UTC) - timedelta(minutes=minutes))
    catalog.set_dir(set_id).rename(catalog.set_dir(old))
    catalog.update(old, lambda m: m.update(set_id=old))
    return old


def digests(settings: Settings, dbs: Iterable[EngineName] = ENGINE_NAMES) -> dict[str, str]:
    out = {}
    for name in dbs:
        engine = build_engine(name, settings)
        try:
            out[name] = engine.digest()
        finally:
            engine.close()
    return out


def manifest_digests(settings: Settings, set_id: str) -> dict[str, str]:
    manifest = Catalog(settings.backup_dir).read(set_id)
    return {db: e["source_digest"] for db, e in manifest["databases"].items()}


def wipe(settings: Settings, dbs: Iterable[EngineName] = ENGINE_NAMES) -> None:
    for name in dbs:
        engine = build_engine(name, settings)
        try:
            engine.wipe()
            assert engine.is_empty()
        finally:
            engine.close()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that load `settings` again (CLI, subprocesses, resources)."""
    return settings_to_env(settings)


def new_volume(settings: Settings, dbs: Iterable[EngineName] = ENGINE_NAMES) -> None:
    """Make the databases look like new, empty volumes: no data and no stack marker."""
    from rpger_ops.connect import chroma_client, mongo_client, redis_client
    from rpger_ops.preseed import probe

    wipe(settings, dbs)
    for name in dbs:
        if name == "mongo":
            client = mongo_client(settings)
            client[settings.mongodb_database].drop_collection("_rpger_stack")
            client.close()
        elif name == "redis":
            r = redis_client(settings)
            r.delete("_rpger:stack")
            r.close()
        else:
            chroma = chroma_client(settings)
            if "rpger__stack" in {c.name for c in chroma.list_collections()}:
                chroma.delete_collection("rpger__stack")
        engine = build_engine(name, settings)
        try:
            assert probe(engine)[0] == "new"
        finally:
            engine.close()
