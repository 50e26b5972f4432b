"""Backup chains as Dagster assets: one chain per database, one partition per set.

Thin wiring over `rpger_ops.pipeline.BackupPipeline` (the `pipeline`
resource). Assets write files in the backup directory and return metadata
only; no data passes through an IO manager.

Jobs:
- `backup_chains`: the asset job, partitioned by `backup_sets` (schedule,
  backfills, "materialize partition" in the UI; re-running checks or the
  off-site copy for an old set).
- `backup_checks`: re-run the integrity checks of one set (tag `dagster/partition`).
- `backup_all`: a NEW set from nothing (CI runs it from the command line).
  Its ops call the same pipeline methods as the assets and record the same
  materializations and check evaluations on the chain assets for the new
  set's partition, so the UI shows every chain of the set either way. One op
  per database; the multiprocess executor runs the three at once (a per-database
  concurrency key keeps two runs off one database). In Dagster 1.13
  `dagster job execute` has no `-w/--workspace` option, and an asset job
  cannot be started without a registered partition, hence an op job:

      DAGSTER_HOME=/path/to/home dagster job execute -m rpger_ops.definitions -a defs -j backup_all

- `verify_restore`: deep verification of one set (restore into scratch targets,
  compare digests; the result is written back into the set).
"""

import time
import warnings
from collections.abc import Iterator
from typing import Any

import dagster as dg

from rpger_ops.defs.partitions import BACKUP_SETS_PARTITION, backup_sets
from rpger_ops.defs.resources import PipelineResource
from rpger_ops.engines.base import ENGINE_NAMES, EngineName, Progress
from rpger_ops.monitoring import Finding
from rpger_ops.pipeline import CHECK_NAMES, BackupError, BackupPipeline
from rpger_ops.sets import CheckOutcome, DatabaseEntry, OffsiteCopy, SetKind, choose_latest, new_set_id
from rpger_ops.settings import ConfigError, Settings, load_settings
from rpger_ops.store import StoreError, read_sets

GROUP = "backups"
KIND_TAG = "rpger/backup_kind"


def _progress(context: Any, every_s: float = 2.0) -> Progress:
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


def _kind(context: Any) -> SetKind:
    tags = context.run.tags
    if tags.get(KIND_TAG) in tuple(SetKind):
        return SetKind(tags[KIND_TAG])
    return SetKind.SCHEDULED if "dagster/schedule_name" in tags else SetKind.MANUAL


def _fail(exc: Exception) -> dg.Failure:
    return dg.Failure(description=str(exc), metadata={"set_id": getattr(exc, "set_id", None) or ""})


# --- what the UI shows, shared by the assets and backup_all --------------------------------

def _values(entry: DatabaseEntry, keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        value = getattr(entry, key, None)
        if value is None or value == "" or value == {}:
            continue
        out[key] = dg.MetadataValue.json(value) if isinstance(value, dict | list) else value
    return out


def dump_metadata(set_id: str, entry: DatabaseEntry) -> dict[str, Any]:
    return {"set_id": set_id, "items": entry.items,
            **_values(entry, ("work_dir", "counts", "digest", "schema_version", "server_version", "server_kind",
                              "point_in_time", "dump_seconds", "dump_bytes", "notes"))}


def archive_metadata(pipeline: BackupPipeline, set_id: str, db: str, entry: DatabaseEntry) -> dict[str, Any]:
    if entry.layout == "blobs":
        # new: bytes this set added to the store; referenced: bytes it shares with earlier sets.
        new = int(entry.new_bytes or 0)
        return {"set_id": set_id, "layout": "blobs", "blobs": len(entry.files), "encrypted": entry.encrypted,
                "path": dg.MetadataValue.path(str(pipeline.local.root / "blobs")),
                "stored_bytes": entry.stored_bytes, "new_bytes": new, "referenced_bytes": entry.stored_bytes - new,
                **_values(entry, ("sha256", "archive_seconds", "zstd_level", "counts", "digest"))}
    return {"set_id": set_id, "path": dg.MetadataValue.path(str(pipeline.local.archive_path(set_id, db))),
            **_values(entry, ("archive_bytes", "sha256", "archive_seconds", "zstd_level", "counts", "digest"))}


def offsite_metadata(pipeline: BackupPipeline, copy: OffsiteCopy | None) -> dict[str, Any]:
    if copy is None:
        return {"status": "disabled", "uploaded": False}
    store = pipeline.offsite
    out = {"status": "uploaded", "key": copy.key, "sha256": copy.sha256, "bytes": copy.bytes,
           "where": store.where() if store is not None else ""}
    if copy.new_bytes is not None:
        out.update(new_bytes=copy.new_bytes, referenced_bytes=copy.bytes - copy.new_bytes)
    return out


def _check_events(outcomes: list[CheckOutcome], shrink: Finding) -> Iterator[tuple[str, bool, str, dg.AssetCheckSeverity]]:
    for outcome in outcomes:
        yield outcome.name, outcome.passed, outcome.description, dg.AssetCheckSeverity.ERROR
    yield "not_shrunk", shrink.ok, shrink.summary, dg.AssetCheckSeverity.WARN


def _offsite_check(copy: OffsiteCopy | None, entry: DatabaseEntry) -> tuple[bool, str, dg.AssetCheckSeverity]:
    if copy is None:
        return False, "off-site store not configured: this set exists only locally", dg.AssetCheckSeverity.WARN
    return (copy.sha256 == entry.sha256, f"remote object {copy.key} read back with the archive's sha256",
            dg.AssetCheckSeverity.ERROR)


def _partitioned_check_spec(name: str, asset: dg.AssetKey, description: str,
                            blocking: bool = False) -> dg.AssetCheckSpec:
    # Partitioned checks (preview in 1.13) let a person re-run the checks of one
    # past set on their own, without re-running its archive step.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, blocking=blocking, partitions_def=backup_sets,
                                 description=description)


# --- one chain per database -----------------------------------------------------------------

def backup_chain(db: EngineName) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """[db, "dump"] -> [db, "archive"] (+ blocking integrity checks) -> [db, "offsite"]."""
    dump_key = dg.AssetKey([db, "dump"])
    archive_key = dg.AssetKey([db, "archive"])
    offsite_key = dg.AssetKey([db, "offsite"])
    # One dump/archive of a database at a time, whichever run asks.
    tags = {"dagster/concurrency_key": db}

    @dg.asset(key=dump_key, partitions_def=backup_sets, group_name=GROUP, op_tags=tags, kinds={db},
              description=f"Online dump of {db} into the set's work folder (digest of the dump, counts, "
                          "schema version of the data).")
    def dump(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        p = pipeline.pipeline()
        set_id = p.start_set(_kind(context), ENGINE_NAMES, set_id=context.partition_key).set_id
        try:
            entry = p.dump(set_id, db, _progress(context))
        except BackupError as exc:
            raise _fail(exc) from None
        return dg.MaterializeResult(metadata=dump_metadata(set_id, entry))

    @dg.asset(key=archive_key, deps=[dump_key], partitions_def=backup_sets, group_name=GROUP, op_tags=tags,
              kinds={db}, description=f"The {db} dump stored: content-addressed zstd blobs shared with earlier "
                                         "sets (new vs referenced bytes), or a tar+zstd archive (format 1).")
    def archive(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        p = pipeline.pipeline()
        try:
            entry = p.archive(context.partition_key, db, _progress(context))
        except BackupError as exc:
            raise _fail(exc) from None
        return dg.MaterializeResult(metadata=archive_metadata(p, context.partition_key, db, entry))

    specs = [_partitioned_check_spec(name, archive_key, text, blocking=True)
             for name, text in (("sha256", "Every stored blob (or the archive) hashes to the manifest."),
                                ("readable", "The blobs decompress and the engine parses the dump."),
                                ("counts", "Items per namespace in the archive equal those dumped."))]
    specs.append(_partitioned_check_spec(
        "not_shrunk", archive_key, "Items and archive size not below RPGER_SHRINK_ALERT_RATIO x the previous "
        "verified set (WARN; alerts once)."))

    @dg.multi_asset_check(specs=specs, name=f"{db}_archive_checks", op_tags=tags,
                          description=f"Integrity of the {db} archive; a failure marks the entry failed "
                                      "(or corrupt, when it was verified before) and blocks the off-site copy.")
    def archive_checks(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource) -> Any:
        p = pipeline.pipeline()
        set_id = context.op_execution_context.partition_key
        try:
            outcomes = p.check(set_id, db)
        except BackupError as exc:  # e.g. a set taken without this database
            outcomes = [CheckOutcome(name=name, passed=False, description=str(exc)) for name in CHECK_NAMES]
        for name, passed, description, severity in _check_events(outcomes, p.shrink(set_id, db)):
            yield dg.AssetCheckResult(asset_key=archive_key, check_name=name, passed=passed, severity=severity,
                                      description=description, metadata={"set_id": set_id})

    offsite_spec = _partitioned_check_spec("offsite_copy", offsite_key,
                                           "An off-site copy with the archive's sha256 exists.")

    @dg.asset(key=offsite_key, deps=[archive_key], partitions_def=backup_sets, group_name=GROUP, kinds={"s3"},
              check_specs=[offsite_spec],
              description=f"Off-site (S3) copy of the verified {db} archive, read back and hash-checked; "
                          "then the set's off-site manifest.")
    def offsite(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        p = pipeline.pipeline()
        set_id = context.partition_key
        if p.offsite is None:
            context.log.warning("off-site store not configured (RPGER_S3_ENDPOINT unset): no off-site copy")
        try:
            copy = p.upload(set_id, db, _progress(context))
        except BackupError as exc:
            raise _fail(exc) from None
        passed, description, severity = _offsite_check(copy, p.read(set_id).databases[db])
        return dg.MaterializeResult(
            metadata=offsite_metadata(p, copy),
            check_results=[dg.AssetCheckResult(check_name="offsite_copy", passed=passed, severity=severity,
                                               description=description)])

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

def _concurrency() -> int:
    try:
        return load_settings().backup_concurrency
    except ConfigError:
        return int(Settings.model_fields["backup_concurrency"].default)


# The three chains side by side, unless RPGER_BACKUP_CONCURRENCY says fewer (small hosts).
CHAIN_EXECUTOR = dg.multiprocess_executor.configured({"max_concurrent": _concurrency()}, name="backup_executor")


backup_chains = dg.define_asset_job(
    "backup_chains", selection=dg.AssetSelection.assets(*CHAIN_ASSETS), partitions_def=backup_sets,
    executor_def=CHAIN_EXECUTOR,
    description="Dump, archive, check and copy off-site all three databases for one backup set (partition).",
)

backup_checks = dg.define_asset_job(
    "backup_checks", selection=dg.AssetSelection.checks(*CHAIN_CHECKS), partitions_def=backup_sets,
    # A checks-only job loses its partitions in 1.13 (no partition picker, and
    # `partition_key=` is rejected): launch it with the run tag
    # `dagster/partition=<set id>`; the checks read the set id from it.
    description="Re-run the archive integrity checks of one set: launch with tag dagster/partition=<set id>.",
)


# --- backup_all: a new set without a partition -----------------------------------------------

@dg.op(description="Create a new backup set (its id and its partition).")
def open_set(context: dg.OpExecutionContext, pipeline: PipelineResource) -> str:
    kind = _kind(context)
    set_id = pipeline.pipeline().start_set(kind, ENGINE_NAMES).set_id
    context.instance.add_dynamic_partitions(BACKUP_SETS_PARTITION, [set_id])
    context.log.info(f"backup set {set_id} ({kind}) registered")
    return set_id


def _back_up_op(db: EngineName) -> dg.OpDefinition:
    dump_key, archive_key, offsite_key = (dg.AssetKey([db, step]) for step in ("dump", "archive", "offsite"))

    @dg.op(name=f"back_up_{db}", tags={"dagster/concurrency_key": db},
           description=f"The {db} chain of the new set: dump, archive, checks, off-site copy "
                       f"(recorded on the {db}/* assets).")
    def back_up(context: dg.OpExecutionContext, pipeline: PipelineResource, set_id: str) -> str:
        p = pipeline.pipeline()
        progress = _progress(context)
        try:
            entry = p.dump(set_id, db, progress)
            context.log_event(dg.AssetMaterialization(dump_key, partition=set_id,
                                                      metadata=dump_metadata(set_id, entry)))
            entry = p.archive(set_id, db, progress)
            context.log_event(dg.AssetMaterialization(archive_key, partition=set_id,
                                                      metadata=archive_metadata(p, set_id, db, entry)))
            outcomes = p.check(set_id, db)
            for name, passed, description, severity in _check_events(outcomes, p.shrink(set_id, db)):
                context.log_event(dg.AssetCheckEvaluation(  # type: ignore[arg-type]  # logged like a materialization
                    archive_key, name, passed, {"set_id": set_id}, severity=severity, description=description,
                    partition=set_id))
            failed = [f"{o.name}: {o.description}" for o in outcomes if not o.passed]
            if failed:
                raise BackupError(f"backup set {set_id}: {db} checks failed: {'; '.join(failed)}", set_id)
            copy = p.upload(set_id, db, progress)
        except BackupError as exc:
            raise _fail(exc) from None
        context.log_event(dg.AssetMaterialization(offsite_key, partition=set_id, metadata=offsite_metadata(p, copy)))
        passed, description, severity = _offsite_check(copy, p.read(set_id).databases[db])
        context.log_event(dg.AssetCheckEvaluation(  # type: ignore[arg-type]  # logged like a materialization
            offsite_key, "offsite_copy", passed, {"set_id": set_id}, severity=severity, description=description,
            partition=set_id))
        return set_id

    return back_up


BACK_UP_OPS = {db: _back_up_op(db) for db in ENGINE_NAMES}


@dg.op(description="The new set is complete: every database verified (and copied off-site when configured).")
def close_set(context: dg.OpExecutionContext, pipeline: PipelineResource, set_ids: list[str]) -> str:
    set_id = set_ids[0]
    backup_set = pipeline.pipeline().read(set_id)
    context.add_output_metadata({"set_id": set_id, "summary": backup_set.summary(),
                                 "complete": backup_set.complete})
    if not backup_set.complete:
        raise dg.Failure(description=f"backup set {set_id} is not complete: {backup_set.summary()}",
                         metadata={"set_id": set_id})
    return set_id


@dg.job(description="Take a NEW backup set of all three databases, the chains side by side "
                    "(no partition needed; CI runs this).", tags={"dagster/max_retries": 0},
        executor_def=CHAIN_EXECUTOR)
def backup_all() -> None:
    set_id = open_set()
    close_set([BACK_UP_OPS[db](set_id) for db in ENGINE_NAMES])


# --- verify_restore -----------------------------------------------------------------------

class VerifyRestoreConfig(dg.Config):  # type: ignore[misc]
    set: str = "latest"  # "latest" (newest complete scheduled/manual set) or a set id
    databases: list[str] = list(ENGINE_NAMES)


@dg.op(description="Restore a set into scratch targets and compare digests with the backup's (written back).")
def restore_into_scratch(context: dg.OpExecutionContext, config: VerifyRestoreConfig,
                         pipeline: PipelineResource) -> dict[str, bool]:
    p = pipeline.pipeline()
    unknown = sorted(set(config.databases) - set(ENGINE_NAMES))
    if unknown:
        raise dg.Failure(description=f"unknown database(s) {unknown}; expected {list(ENGINE_NAMES)}")
    dbs: list[EngineName] = [db for db in ENGINE_NAMES if db in config.databases]
    # A run launched for a partition (UI) verifies that set.
    ref = context.run.tags.get("dagster/partition") or config.set
    if ref == "latest":
        found = choose_latest(read_sets(p.local), dbs).set_id
        if found is None:
            raise dg.Failure(description=f"no complete local backup set with {', '.join(dbs)}")
        ref = found
    try:
        backup_set = p.local.read(ref)
    except StoreError as exc:
        raise dg.Failure(description=str(exc)) from None
    not_verified = [d for d in dbs if not backup_set.verified_for([d])]
    results = p.verify_deep(ref, [d for d in dbs if d not in not_verified], _progress(context))
    context.add_output_metadata({
        "set_id": ref, **{f"{d}_restores": r.ok for d, r in results.items()},
        "details": dg.MetadataValue.json({d: r.model_dump(mode="json") for d, r in results.items()}),
    })
    failed = [d for d, r in results.items() if not r.ok]
    if failed or not_verified:
        raise dg.Failure(description=f"set {ref}: scratch restore digest differs or failed for {failed}"
                                     + (f"; not verified: {not_verified}" if not_verified else ""))
    return {d: r.ok for d, r in results.items()}


@dg.job(description="Deep verification: restore a set into scratch databases and compare digests.",
        tags={"dagster/max_retries": 0})
def verify_restore() -> None:
    restore_into_scratch()


# --- schedule ---------------------------------------------------------------------------------

def _schedule_settings() -> tuple[str, str]:
    # The cron must be known when definitions load; a broken configuration still
    # fails each run with a readable message (PipelineResource).
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
        # Schedules cannot return partition requests: register the set first.
        when = context.scheduled_execution_time
        set_id = new_set_id(when) if when else new_set_id()
        context.instance.add_dynamic_partitions(BACKUP_SETS_PARTITION, [set_id])
        return dg.RunRequest(run_key=set_id, partition_key=set_id, tags={KIND_TAG: SetKind.SCHEDULED.value})

    return backup_schedule


def backup_defs() -> dg.Definitions:
    return dg.Definitions(
        assets=CHAIN_ASSETS, asset_checks=CHAIN_CHECKS,
        jobs=[backup_chains, backup_checks, backup_all, verify_restore], schedules=[_backup_schedule()],
    )
