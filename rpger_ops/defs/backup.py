"""Backup chains as Dagster assets: one chain per database, one partition per set.

Thin wiring over `rpger_ops.backup`. Assets write files under the backup
directory and return metadata only; no data passes through an IO manager.

Jobs:
- `backup_chains`: the asset job, partitioned by `backup_sets` (schedule,
  backfills, "materialize partition" in the UI; re-running checks or the
  off-site copy for an old set).
- `backup_checks`: re-run the integrity checks of one set (tag `dagster/partition`).
- `backup_all`: a NEW set from nothing: creates the set id, registers the
  partition, then materialises every chain for it. It needs no partition, so
  CI can run it from the command line. In Dagster 1.13.27 `dagster job execute`
  has no `-w/--workspace` option (only `job launch` does, and that needs a
  running code server), and an asset job run without `dagster/partition` fails
  inside the step ("Cannot access partition_key for a non-partitioned run"),
  while an unregistered key fails when the output is stored. Verified command:

      DAGSTER_HOME=/path/to/home dagster job execute -m rpger_ops.definitions -a defs -j backup_all

- `verify_restore`: deep verification of one set (restore into scratch targets,
  compare digests).
"""

import time
import warnings
from typing import Any

import dagster as dg

from rpger_ops import backup
from rpger_ops.alerts import Alerter
from rpger_ops.catalog import VERIFIED, Catalog, CatalogError
from rpger_ops.defs.partitions import BACKUP_SETS_PARTITION, backup_sets
from rpger_ops.defs.resources import StackResource
from rpger_ops.engines.base import ENGINE_NAMES, EngineName
from rpger_ops.monitoring import Finding, shrink_finding
from rpger_ops.settings import ConfigError, Settings, load_settings

GROUP = "backups"
KIND_TAG = "rpger/backup_kind"


def _progress(context: Any, every_s: float = 2.0) -> backup.Progress:
    """Progress into the run log: every step start/end, otherwise at most one line
    per `every_s` (engines report per batch)."""
    last = [0.0]

    def progress(message: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        boundary = total is None or done == 0 or done >= total
        if boundary or now - last[0] >= every_s:
            last[0] = now
            context.log.info(message if total is None else f"{message} [{done}/{total}]")

    return progress


def _kind(context: Any) -> backup.BackupKind:
    tags = context.run.tags
    if tags.get(KIND_TAG) in ("scheduled", "safety", "manual"):
        return tags[KIND_TAG]  # type: ignore[no-any-return]
    return "scheduled" if "dagster/schedule_name" in tags else "manual"


def _fail(exc: Exception) -> dg.Failure:
    return dg.Failure(description=str(exc), metadata={"set_id": getattr(exc, "set_id", None) or ""})


def _entry_metadata(entry: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        value = entry.get(key)
        if value is None:
            continue
        out[key] = dg.MetadataValue.json(value) if isinstance(value, dict | list) else value
    return out


def _partitioned_check_spec(name: str, asset: dg.AssetKey, description: str,
                            blocking: bool = False) -> dg.AssetCheckSpec:
    # Partitioned checks (preview in 1.13) let a person re-run the checks of one
    # past set on their own, without re-running its archive step.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, blocking=blocking, partitions_def=backup_sets,
                                 description=description)


def backup_chain(db: EngineName) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """[db, "dump"] -> [db, "archive"] (+ blocking integrity checks) -> [db, "offsite"]."""
    dump_key = dg.AssetKey([db, "dump"])
    archive_key = dg.AssetKey([db, "archive"])
    offsite_key = dg.AssetKey([db, "offsite"])
    # One dump/archive of a database at a time, whichever run asks.
    tags = {"dagster/concurrency_key": db}

    @dg.asset(key=dump_key, partitions_def=backup_sets, group_name=GROUP, op_tags=tags, kinds={db},
              description=f"Online dump of {db} into the set's work folder (source digest, counts, version).")
    def dump(context: dg.AssetExecutionContext, stack: StackResource) -> dg.MaterializeResult:
        settings = stack.settings()
        set_id = backup.start_set(settings, _kind(context), set_id=context.partition_key)
        try:
            entry = backup.dump_database(settings, set_id, db, _progress(context))
        except backup.BackupError as exc:
            raise _fail(exc) from None
        return dg.MaterializeResult(metadata={
            "set_id": set_id, "items": sum(entry["counts"].values()),
            **_entry_metadata(entry, ("dump_dir", "counts", "source_digest", "server_version", "server_kind",
                                      "point_in_time", "dump_seconds", "dump_bytes", "notes")),
        })

    @dg.asset(key=archive_key, deps=[dump_key], partitions_def=backup_sets, group_name=GROUP, op_tags=tags,
              kinds={db}, description=f"tar+zstd archive of the {db} dump in sets/<set_id>/, with sha256.")
    def archive(context: dg.AssetExecutionContext, stack: StackResource) -> dg.MaterializeResult:
        settings = stack.settings()
        try:
            entry = backup.archive_database(settings, context.partition_key, db, _progress(context))
        except backup.BackupError as exc:
            raise _fail(exc) from None
        path = Catalog(settings.backup_dir).archive_path(context.partition_key, db)
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(path)),
            **_entry_metadata(entry, ("archive_bytes", "sha256", "archive_seconds", "zstd_level", "counts",
                                      "source_digest", "server_version")),
        })

    specs = [_partitioned_check_spec(name, archive_key, text, blocking=True)
             for name, text in (("sha256", "The archive's sha256 equals the manifest's."),
                                ("readable", "The archive decompresses and the engine parses the dump."),
                                ("counts", "Items per namespace in the archive equal those dumped."))]
    specs.append(_partitioned_check_spec(
        "not_shrunk", archive_key, "Items and archive size not below RPGER_SHRINK_ALERT_RATIO x the previous "
        "verified set (WARN; alerts once)."))

    @dg.multi_asset_check(specs=specs, name=f"{db}_archive_checks", op_tags=tags,
                          description=f"Integrity of the {db} archive; a failure marks the entry failed "
                                      "and blocks the off-site copy.")
    def archive_checks(context: dg.AssetCheckExecutionContext, stack: StackResource) -> Any:
        set_id = context.op_execution_context.partition_key
        try:
            outcomes = backup.check_archive(stack.settings(), set_id, db)
        except (backup.BackupError, CatalogError) as exc:  # e.g. a set taken without this database
            outcomes = [backup.CheckOutcome(name, False, str(exc)) for name in backup.CHECK_NAMES]
        for outcome in outcomes:
            yield dg.AssetCheckResult(asset_key=archive_key, check_name=outcome.name, passed=outcome.passed,
                                      description=outcome.description, metadata={"set_id": set_id})
        # A sharp drop is suspicious, not invalid: flag it (WARN) and alert, don't block.
        settings = stack.settings()
        try:
            shrink = shrink_finding(settings, set_id, db)
        except CatalogError as exc:
            shrink = Finding(True, f"not compared: {exc}")
        Alerter(settings).update(f"shrunk:{db}", not shrink.ok, shrink.summary, shrink.details, severity="warning")
        yield dg.AssetCheckResult(asset_key=archive_key, check_name="not_shrunk", passed=shrink.ok,
                                  severity=dg.AssetCheckSeverity.WARN, description=shrink.summary,
                                  metadata={"set_id": set_id})

    offsite_spec = _partitioned_check_spec("offsite_copy", offsite_key,
                                           "An off-site copy with the archive's sha256 exists.")

    @dg.asset(key=offsite_key, deps=[archive_key], partitions_def=backup_sets, group_name=GROUP, kinds={"s3"},
              check_specs=[offsite_spec],
              description=f"Off-site (S3) copy of the verified {db} archive, read back and hash-checked; "
                          "then the set's manifest.")
    def offsite(context: dg.AssetExecutionContext, stack: StackResource) -> dg.MaterializeResult:
        settings = stack.settings()
        set_id = context.partition_key
        if not settings.offsite_enabled:
            context.log.warning("off-site store not configured (RPGER_S3_ENDPOINT unset): no off-site copy")
            return dg.MaterializeResult(
                metadata={"status": "disabled", "uploaded": False},
                check_results=[dg.AssetCheckResult(
                    check_name="offsite_copy", passed=False, severity=dg.AssetCheckSeverity.WARN,
                    description="off-site store not configured: this set exists only locally")],
            )
        try:
            result = backup.upload_offsite(settings, set_id, db, _progress(context)) or {}
        except backup.BackupError as exc:
            raise _fail(exc) from None
        local_sha = Catalog(settings.backup_dir).read(set_id)["databases"][db].get("sha256")
        return dg.MaterializeResult(
            metadata={"status": "uploaded", "uploaded": bool(result.get("uploaded", True)),
                      "key": str(result.get("key")), "sha256": str(result.get("sha256")),
                      "bytes": int(result.get("bytes") or 0), "where": settings.safe_summary()["offsite"]},
            check_results=[dg.AssetCheckResult(
                check_name="offsite_copy", passed=result.get("sha256") == local_sha,
                description=f"remote object {result.get('key')} read back with the archive's sha256")],
        )

    return [dump, archive, offsite], [archive_checks]


def _all_chains() -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    assets: list[dg.AssetsDefinition] = []
    checks: list[dg.AssetChecksDefinition] = []
    for db in ENGINE_NAMES:
        a, c = backup_chain(db)
        assets += a
        checks += c
    return assets, checks


CHAIN_ASSETS, CHAIN_CHECKS = _all_chains()

backup_chains = dg.define_asset_job(
    "backup_chains", selection=dg.AssetSelection.assets(*CHAIN_ASSETS), partitions_def=backup_sets,
    description="Dump, archive, check and copy off-site all three databases for one backup set (partition).",
)

backup_checks = dg.define_asset_job(
    "backup_checks", selection=dg.AssetSelection.checks(*CHAIN_CHECKS), partitions_def=backup_sets,
    # A checks-only job loses its partitions in 1.13 (no partition picker, and
    # `partition_key=` is rejected): launch it with the run tag
    # `dagster/partition=<set id>`; the checks read the set id from it.
    description="Re-run the archive integrity checks of one set: launch with tag dagster/partition=<set id>.",
)


# --- backup_all: a new set without a partition -----------------------------------------

@dg.op(description="Create a new backup set (id + partition) and materialise every chain for it.")
def back_up_new_set(context: dg.OpExecutionContext, stack: StackResource) -> str:
    settings = stack.settings()
    kind = _kind(context)
    set_id = backup.start_set(settings, kind)
    context.instance.add_dynamic_partitions(BACKUP_SETS_PARTITION, [set_id])
    context.log.info(f"backup set {set_id} ({kind}) registered; materialising the chains")
    # Run the partitioned asset job itself (same process, same instance), so the UI
    # shows a `backup_chains` run for this set with every materialisation and check.
    from rpger_ops.definitions import defs

    result = defs.resolve_job_def(backup_chains.name).execute_in_process(
        instance=context.instance, partition_key=set_id, raise_on_error=False,
        tags={KIND_TAG: kind, "rpger/parent_run_id": context.run_id},
    )
    manifest = Catalog(settings.backup_dir).read(set_id)
    statuses = {db: e.get("status") for db, e in manifest.get("databases", {}).items()}
    metadata: dict[str, dg.RawMetadataValue] = {"set_id": set_id, "chains_run_id": result.run_id,
                                                "statuses": dg.MetadataValue.json(statuses)}
    context.add_output_metadata(metadata)
    if not result.success:
        errors = [e.get("error") or e.get("offsite_error") for e in manifest.get("databases", {}).values()]
        raise dg.Failure(description=f"backup set {set_id} failed: "
                                     + ("; ".join(x for x in errors if x) or f"see run {result.run_id}"),
                         metadata=metadata)
    return set_id


@dg.job(description="Take a NEW backup set of all three databases (no partition needed; CI runs this).",
        tags={"dagster/max_retries": 0})
def backup_all() -> None:
    back_up_new_set()


# --- verify_restore -----------------------------------------------------------------------

class VerifyRestoreConfig(dg.Config):  # type: ignore[misc]
    set: str = "latest"  # "latest" (newest set with all databases verified) or a set id
    databases: list[str] = list(ENGINE_NAMES)


def _resolve_set(settings: Settings, ref: str, dbs: list[str]) -> str:
    if ref != "latest":
        return ref
    latest = Catalog(settings.backup_dir).latest_verified(dbs)
    if latest is None:
        raise dg.Failure(description=f"no local backup set with {', '.join(dbs)} verified")
    return str(latest["set_id"])


@dg.op(description="Restore a set into scratch targets and compare digests with the manifest.")
def restore_into_scratch(context: dg.OpExecutionContext, config: VerifyRestoreConfig,
                         stack: StackResource) -> dict[str, bool]:
    settings = stack.settings()
    unknown = sorted(set(config.databases) - set(ENGINE_NAMES))
    if unknown:
        raise dg.Failure(description=f"unknown database(s) {unknown}; expected {list(ENGINE_NAMES)}")
    # A run launched for a partition (UI) verifies that set.
    ref = context.run.tags.get("dagster/partition") or config.set
    set_id = _resolve_set(settings, ref, config.databases)
    try:
        manifest = Catalog(settings.backup_dir).read(set_id)
    except CatalogError as exc:
        raise dg.Failure(description=str(exc)) from None
    not_verified = [d for d in config.databases if manifest["databases"].get(d, {}).get("status") != VERIFIED]
    results = backup.verify_restore(settings, set_id, config.databases, _progress(context))  # type: ignore[arg-type]
    manifest = Catalog(settings.backup_dir).read(set_id)
    context.add_output_metadata({
        "set_id": set_id, **{f"{d}_restores": ok for d, ok in results.items()},
        "details": dg.MetadataValue.json({d: manifest["databases"][d].get("restore_check") for d in results}),
    })
    failed = [d for d, ok in results.items() if not ok]
    if failed or not_verified:
        raise dg.Failure(description=f"set {set_id}: scratch restore digest differs or failed for {failed}"
                                     + (f"; not verified: {not_verified}" if not_verified else ""))
    return results


@dg.job(description="Deep verification: restore a set into scratch databases and compare digests.",
        tags={"dagster/max_retries": 0})
def verify_restore() -> None:
    restore_into_scratch()


# --- schedule ---------------------------------------------------------------------------------

def _schedule_settings() -> tuple[str, str]:
    # The cron must be known when definitions load; a broken configuration still
    # fails each run with a readable message (StackResource).
    try:
        s = load_settings()
        return s.backup_cron, s.schedule_timezone
    except ConfigError:
        fields = Settings.model_fields
        return str(fields["backup_cron"].default), str(fields["schedule_timezone"].default)


def _backup_schedule() -> dg.ScheduleDefinition:
    cron, tz = _schedule_settings()

    # On by default: a backup schedule someone forgot to switch on is the classic way to have none.
    @dg.schedule(name="backup_schedule", job=backup_chains, cron_schedule=cron, execution_timezone=tz,
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Take a new backup set (RPGER_BACKUP_CRON, default daily 03:00).")
    def backup_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        from rpger_ops.catalog import new_set_id

        # Schedules cannot return partition requests: register the set first.
        when = context.scheduled_execution_time
        set_id = new_set_id(when) if when else new_set_id()
        context.instance.add_dynamic_partitions(BACKUP_SETS_PARTITION, [set_id])
        return dg.RunRequest(run_key=set_id, partition_key=set_id, tags={KIND_TAG: "scheduled"})

    return backup_schedule


def backup_defs() -> dg.Definitions:
    return dg.Definitions(
        assets=CHAIN_ASSETS, asset_checks=CHAIN_CHECKS,
        jobs=[backup_chains, backup_checks, backup_all, verify_restore], schedules=[_backup_schedule()],
    )
