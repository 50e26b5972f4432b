"""Restore and preseed jobs, and the sensor that preseeds new empty volumes.

Thin wiring over `rpger_ops.restore` and `rpger_ops.preseed`.
"""

import json
from typing import Any

import dagster as dg

from rpger_ops.defs.resources import StackResource
from rpger_ops.engines import ENGINE_NAMES, build_engine
from rpger_ops.preseed import preseed, sensor_step
from rpger_ops.restore import RestoreError, State, probe, restore_set


class RestoreConfig(dg.Config):  # type: ignore[misc]
    set: str = "latest"  # "latest" (newest verified) or a set id like 20261128T030000Z
    databases: list[str] = list(ENGINE_NAMES)
    force: bool = False  # replace a non-empty database (after a safety backup set)
    source: str = "auto"  # auto | local | offsite


class PreseedConfig(dg.Config):  # type: ignore[misc]
    databases: list[str] = list(ENGINE_NAMES)


def _logger(context: dg.OpExecutionContext) -> Any:
    def progress(message: str, done: int, total: int | None) -> None:
        context.log.info(message if total is None else f"{message} [{done}/{total}]")

    return progress


@dg.op(description="Restore a backup set into the chosen databases; refuses a non-empty "
                   "target unless force (then a safety backup set is taken first).")
def restore_databases(context: dg.OpExecutionContext, config: RestoreConfig, stack: StackResource) -> str:
    try:
        report = restore_set(stack.settings(), config.set, config.databases, config.force,
                             config.source, _logger(context))  # type: ignore[arg-type]
    except RestoreError as exc:
        raise dg.Failure(description=str(exc)) from None
    metadata: dict[str, Any] = {"set_id": report.set_id or "", "safety_set_id": report.safety_set_id or ""}
    for name, d in report.databases.items():
        metadata[f"{name}_status"] = d.status if d.ok else "failed"
        metadata[f"{name}_items"] = sum(d.counts.values())
        metadata[f"{name}_seconds"] = round(d.seconds, 3)
        metadata[f"{name}_origin"] = d.origin or ""
    context.add_output_metadata(metadata)
    for line in report.lines():
        context.log.info(line)
    if not report.ok:
        raise dg.Failure(description="; ".join(d.summary() for d in report.databases.values() if not d.ok),
                         metadata=metadata)
    return report.set_id or ""


@dg.op(description="Seed new empty databases from the newest verified backup set; never touches data.")
def preseed_databases(context: dg.OpExecutionContext, config: PreseedConfig, stack: StackResource) -> str:
    try:
        report = preseed(stack.settings(), config.databases, _logger(context))
    except RestoreError as exc:
        raise dg.Failure(description=str(exc)) from None
    context.add_output_metadata({
        "report": dg.MetadataValue.json({n: d.as_dict() for n, d in report.databases.items()}),
        **{f"{n}_action": d.action for n, d in report.databases.items()},
    })
    for line in report.lines():
        (context.log.info if "WARNING" not in line else context.log.warning)(line)
    if not report.ok:
        problems = [f"{n}: {d.message}" for n, d in report.databases.items() if not d.ok]
        if report.migrations.error:
            problems.append(report.migrations.error)
        raise dg.Failure(description="; ".join(problems))
    return json.dumps({n: d.action for n, d in report.databases.items()})


@dg.job(description="Restore a backup set (run config: set, databases, force, source).",
        tags={"dagster/max_retries": 0})
def restore() -> None:
    restore_databases()


@dg.job(name="preseed", description="Restore new empty databases from the newest verified backup set.")
def preseed_job() -> None:
    preseed_databases()


@dg.sensor(job=preseed_job, minimum_interval_seconds=30,
           description="Requests one preseed run per database found on a new, empty volume.",
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
    runs = [dg.RunRequest(run_key=key, run_config={"ops": {"preseed_databases": {"config": {"databases": [db]}}}},
                          tags={"rpger/database": db})
            for db, key in requests]
    summary = ", ".join(f"{n} {s}" for n, s in states.items())
    return dg.SensorResult(run_requests=runs, cursor=json.dumps(cursor, sort_keys=True),
                           skip_reason=None if runs else summary)


def restore_defs() -> dg.Definitions:
    return dg.Definitions(jobs=[restore, preseed_job], sensors=[preseed_sensor])
