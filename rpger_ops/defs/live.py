"""The live databases as assets: where their data came from, and when.

Each database is an asset `<db>/live`, downstream of its `<db>/archive`: a
preseed or a restore *materializes* it, with the set id, the copy it came from
(local or off-site), the counts and the schema version in the metadata. So the
lineage reads archive -> live, and the asset's history answers "where did this
database's data come from, and when". (`<db>/server` stays the health
observations of the server itself.)

Jobs, both over the same assets (select which databases by selecting assets):
- `preseed`: seed the selected databases that are on new, empty volumes (the
  default; never touches data). `preseed_sensor` requests it.
- `restore`: restore a set into the selected databases (run config: set,
  force, source; `databases` narrows the selection).

Thin wiring over `rpger_ops.preseed` and `rpger_ops.restore`.
"""

import json
from collections.abc import Iterator
from typing import Any, Literal

import dagster as dg

from rpger_ops.dbstate import State, probe
from rpger_ops.defs.resources import StackResource
from rpger_ops.engines import ENGINE_NAMES, build_engine
from rpger_ops.preseed import PreseedReport, preseed, sensor_step
from rpger_ops.restore import DatabaseRestore, RestoreReport, restore_set
from rpger_ops.sources import RestoreError

GROUP = "databases"
LIVE_KEYS: dict[str, dg.AssetKey] = {db: dg.AssetKey([db, "live"]) for db in ENGINE_NAMES}


class LiveConfig(dg.Config):  # type: ignore[misc]
    mode: Literal["preseed", "restore"] = "preseed"
    set: str = "latest"  # restore: "latest" (newest usable set) or a set id like 20261128T030000Z
    databases: list[str] = list(ENGINE_NAMES)  # narrows the selected assets
    force: bool = False  # restore: replace a non-empty database (after a safety backup set)
    source: str = "auto"  # restore: auto | local | offsite


def _logger(context: Any) -> Any:
    def progress(message: str, done: int, total: int | None) -> None:
        context.log.info(message if total is None else f"{message} [{done}/{total}]")

    return progress


def _restored_metadata(d: DatabaseRestore, action: str) -> dict[str, Any]:
    return {"action": action, "set_id": d.set_id or "", "source": d.origin or "", "items": sum(d.counts.values()),
            "counts": dg.MetadataValue.json(d.counts), "seconds": round(d.seconds, 3),
            "schema_version": d.schema_version or 0, "notes": dg.MetadataValue.json(d.notes)}


def _preseed_results(report: PreseedReport) -> Iterator[dg.MaterializeResult]:
    for name, d in report.databases.items():
        if d.action == "restored" and d.restore is not None:
            yield dg.MaterializeResult(asset_key=LIVE_KEYS[name], metadata=_restored_metadata(d.restore, "preseed"))
        elif d.action == "initialized_empty":
            yield dg.MaterializeResult(asset_key=LIVE_KEYS[name],
                                       metadata={"action": "initialized_empty", "set_id": "", "items": 0,
                                                 "message": d.message})


def _problems(report: PreseedReport) -> list[str]:
    problems = [f"{n}: {d.message}" for n, d in report.databases.items() if not d.ok]
    if report.migrations.error:
        problems.append(report.migrations.error)
    return problems


@dg.multi_asset(
    specs=[dg.AssetSpec(key, deps=[dg.AssetKey([db, "archive"])], group_name=GROUP, kinds={db}, skippable=True,
                        description=f"The live {db} database: materialized by a preseed or restore, "
                                    "with the set and copy its data came from.")
           for db, key in LIVE_KEYS.items()],
    can_subset=True, name="live_databases", op_tags={"dagster/max_retries": 0},
)
def live_databases(context: dg.AssetExecutionContext, config: LiveConfig,
                   stack: StackResource) -> Iterator[dg.MaterializeResult]:
    selected = [db for db, key in LIVE_KEYS.items() if key in context.selected_asset_keys
                and db in config.databases]
    unknown = sorted(set(config.databases) - set(ENGINE_NAMES))
    if unknown or not selected:
        raise dg.Failure(description=f"nothing to do: selected {sorted(k.to_user_string() for k in context.selected_asset_keys)}"
                                     f", databases {config.databases} (known: {list(ENGINE_NAMES)})")
    settings = stack.settings()
    if config.mode == "preseed":
        yield from _run_preseed(context, settings, selected)
    else:
        yield from _run_restore(context, settings, selected, config)


def _run_preseed(context: Any, settings: Any, dbs: list[str]) -> Iterator[dg.MaterializeResult]:
    try:
        report = preseed(settings, dbs, _logger(context))
    except RestoreError as exc:
        raise dg.Failure(description=str(exc)) from None
    for line in report.lines():
        (context.log.warning if "WARNING" in line else context.log.info)(line)
    yield from _preseed_results(report)
    if not report.ok:
        raise dg.Failure(description="; ".join(_problems(report)),
                         metadata={"report": dg.MetadataValue.json(report.as_dict())})


def _run_restore(context: Any, settings: Any, dbs: list[str], config: LiveConfig) -> Iterator[dg.MaterializeResult]:
    try:
        report: RestoreReport = restore_set(settings, config.set, dbs, config.force,
                                            config.source, _logger(context))  # type: ignore[arg-type]
    except RestoreError as exc:
        raise dg.Failure(description=str(exc)) from None
    for line in report.lines():
        (context.log.warning if "WARNING" in line or "FAILED" in line else context.log.info)(line)
    for name, d in report.databases.items():
        if d.ok:
            metadata = _restored_metadata(d, "restore")
            metadata["safety_set_id"] = report.safety_set_id or ""
            yield dg.MaterializeResult(asset_key=LIVE_KEYS[name], metadata=metadata)
    if not report.ok:
        raise dg.Failure(description="; ".join(d.summary() for d in report.databases.values() if not d.ok)
                                     or str(report.migrations.error),
                         metadata={"report": dg.MetadataValue.json(report.as_dict())})


LIVE_SELECTION = dg.AssetSelection.assets(*LIVE_KEYS.values())

preseed_job = dg.define_asset_job(
    "preseed", selection=LIVE_SELECTION,
    description="Seed the selected databases that are on new, empty volumes from the newest usable set "
                "(one set for all); never touches data.")

restore_job = dg.define_asset_job(
    "restore", selection=LIVE_SELECTION, tags={"dagster/max_retries": 0},
    config={"ops": {"live_databases": {"config": {"mode": "restore", "set": "latest", "force": False,
                                                  "source": "auto", "databases": list(ENGINE_NAMES)}}}},
    description="Restore a backup set into the selected databases (run config: set, force, source).")


@dg.sensor(job=preseed_job, minimum_interval_seconds=30,
           description="Requests a preseed run for the databases found on new, empty volumes "
                       "(those found in the same tick are seeded together, from one set).",
           default_status=dg.DefaultSensorStatus.RUNNING)
def preseed_sensor(context: dg.SensorEvaluationContext, stack: StackResource) -> dg.SensorResult:
    settings = stack.settings()
    states: dict[str, State] = {}
    for name in ENGINE_NAMES:
        engine = build_engine(name, settings)
        try:
            states[name], _ = probe(engine)
        finally:
            engine.close()
    cursor = json.loads(context.cursor) if context.cursor else {}
    requests, cursor = sensor_step(states, cursor)
    runs = [dg.RunRequest(run_key=key, asset_selection=[LIVE_KEYS[db] for db in dbs],
                          tags={"rpger/databases": ",".join(dbs)})
            for dbs, key in requests]
    summary = ", ".join(f"{n} {s}" for n, s in states.items())
    return dg.SensorResult(run_requests=runs, cursor=json.dumps(cursor, sort_keys=True),
                           skip_reason=None if runs else summary)


def live_defs() -> dg.Definitions:
    return dg.Definitions(assets=[live_databases], jobs=[preseed_job, restore_job], sensors=[preseed_sensor])

