"""Retention job and schedule: prune local and off-site sets, then drop the
`backup_sets` partitions of sets gone from both places."""

import dagster as dg

from rpger_ops.defs.partitions import BACKUP_SETS_PARTITION
from rpger_ops.defs.resources import StackResource
from rpger_ops.retention import format_decision, partitions_to_drop, prune_local, prune_offsite
from rpger_ops.settings import ConfigError, Settings, load_settings
from rpger_ops.store import StoreError, local_store, offsite_store


class RetentionConfig(dg.Config):  # type: ignore[misc]
    dry_run: bool = False


@dg.op(description="Apply the local and off-site retention policies (dry_run reports only).")
def apply_retention(context: dg.OpExecutionContext, config: RetentionConfig, stack: StackResource) -> dict:
    settings = stack.settings()
    errors: list[str] = []
    metadata: dict[str, dg.RawMetadataValue] = {"dry_run": config.dry_run}
    deleted: list[str] = []
    for where, prune in (("local", prune_local), ("offsite", prune_offsite)):
        if where == "offsite" and not settings.offsite_enabled:
            continue
        try:
            decision = prune(settings, config.dry_run)
        except StoreError as exc:
            errors.append(f"{where}: {exc}")
            context.log.error(f"retention {where} failed: {exc}")
            continue
        context.log.info(format_decision(decision))
        deleted += decision.deleted
        metadata[f"{where}_keep"] = len(decision.keep)
        metadata[f"{where}_remove"] = dg.MetadataValue.json(decision.remove)
        metadata[f"{where}_note"] = decision.note
    dropped = [] if errors else _drop_partitions(context, settings, deleted)
    metadata["partitions_dropped"] = dg.MetadataValue.json(dropped)
    context.add_output_metadata(metadata)
    if errors:
        raise dg.Failure(description="retention failed: " + " | ".join(errors), metadata=metadata)
    return {"deleted": deleted, "partitions_dropped": dropped}


def _drop_partitions(context: dg.OpExecutionContext, settings: Settings, deleted: list[str]) -> list[str]:
    if not deleted:
        return []
    store = offsite_store(settings)
    remote = store.set_ids() if store is not None else []
    gone = partitions_to_drop(deleted, local_store(settings).set_ids(), remote)
    existing = set(context.instance.get_dynamic_partitions(BACKUP_SETS_PARTITION))
    dropped = [s for s in gone if s in existing]
    for set_id in dropped:
        context.instance.delete_dynamic_partition(BACKUP_SETS_PARTITION, set_id)
    return dropped


@dg.job(description="Prune backup sets by the tiered retention policy (local and off-site).")
def retention() -> None:
    apply_retention()


def _schedule_settings() -> tuple[str, str]:
    # The cron must be known when definitions load; a broken configuration
    # still fails each run with a readable message (StackResource).
    try:
        s = load_settings()
        return s.retention_cron, s.schedule_timezone
    except ConfigError:
        fields = Settings.model_fields
        return str(fields["retention_cron"].default), str(fields["schedule_timezone"].default)


def retention_defs() -> dg.Definitions:
    cron, tz = _schedule_settings()
    # On by default: retention that never runs is a classic failure, and the
    # policy is safe without new backups (it never removes the newest verified set).
    schedule = dg.ScheduleDefinition(name="retention_schedule", job=retention, cron_schedule=cron,
                                     execution_timezone=tz, default_status=dg.DefaultScheduleStatus.RUNNING,
                                     description="Retention (RPGER_RETENTION_CRON, default daily 04:30).")
    return dg.Definitions(jobs=[retention], schedules=[schedule])
