"""Helpers for the restore/preseed/runbook tests: backup sets, environment, digests."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from rpger_ops.engines import build_engine
from rpger_ops.engines.base import ENGINE_NAMES, EngineName
from rpger_ops.sets import SetKind, new_set_id
from rpger_ops.settings import Settings, settings_to_env
from rpger_ops.store import LocalStore


def take_set(settings: Settings, dbs: Iterable[EngineName] = ENGINE_NAMES, offsite: bool = False,
             age_minutes: int = 0) -> str:
    """A verified backup set of migrated data through the real pipeline. `age_minutes` back-dates
    the set id so one test can hold several sets (ids have one-second resolution)."""
    from rpger_ops import migrate
    from rpger_ops.pipeline import BackupPipeline

    migrate.apply_pending(settings)  # a live stack is migrated: nothing is pending after a restore
    outcome = BackupPipeline(settings).take_set(SetKind.MANUAL, dbs, offsite=offsite)
    assert outcome.ok, outcome.problems()
    set_id = outcome.set_id
    if age_minutes:
        set_id = _backdate(settings, set_id, age_minutes, offsite)
    return set_id


def _backdate(settings: Settings, set_id: str, minutes: int, offsite: bool) -> str:
    """Rename a fresh local set to an older id (local only: off-site keys name the id)."""
    assert not offsite, "back-dated sets are local only"
    store = LocalStore(settings.backup_dir)
    old = new_set_id(datetime.now(UTC) - timedelta(minutes=minutes))
    store.set_dir(set_id).rename(store.set_dir(old))
    manifest = store.manifest_path(old)
    manifest.write_text(manifest.read_text().replace(set_id, old))
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
    backup_set = LocalStore(settings.backup_dir).read(set_id)
    return {db: str(e.digest) for db, e in backup_set.databases.items()}


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


def forget_marker(settings: Settings, name: EngineName) -> None:
    """Remove a database's stack marker, wherever it is (its own place, or 0.1's)."""
    from rpger_ops.connect import chroma_admin, chroma_client, mongo_client, redis_client
    from rpger_ops.engines import chroma, mongo

    if name == "mongo":
        client = mongo_client(settings)
        client.drop_database(mongo.stack_database_name(settings.mongodb_database))
        client[settings.mongodb_database].drop_collection("_rpger_stack")
        client.close()
    elif name == "redis":
        for db in {0, settings.redis_stack_db}:
            r = redis_client(settings, db=db)
            r.delete("_rpger:stack")
            r.close()
    else:
        admin = chroma_admin(settings)
        stack_db = chroma.stack_database_name(settings.chroma_database)
        if stack_db in {d["name"] for d in admin.list_databases(tenant=settings.chroma_tenant)}:
            admin.delete_database(stack_db, tenant=settings.chroma_tenant)
        client = chroma_client(settings)
        if "rpger__stack" in {c.name for c in client.list_collections()}:
            client.delete_collection("rpger__stack")


def new_volume(settings: Settings, dbs: Iterable[EngineName] = ENGINE_NAMES) -> None:
    """Make the databases look like new, empty volumes: no data and no stack marker."""
    from rpger_ops.dbstate import probe

    wipe(settings, dbs)
    for name in dbs:
        forget_marker(settings, name)
        engine = build_engine(name, settings)
        try:
            assert probe(engine)[0] == "new"
        finally:
            engine.close()
