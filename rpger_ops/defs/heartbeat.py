"""Heartbeat wiring: after a successful run, ping the dead man's switch for the
newest complete verified set (rpger_ops.heartbeat; at most once per set)."""

import dagster as dg

from rpger_ops import heartbeat
from rpger_ops.defs.resources import StackResource


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, default_status=dg.DefaultSensorStatus.RUNNING,
                      minimum_interval_seconds=30, name="heartbeat_sensor",
                      description="After a successful run, GET RPGER_HEARTBEAT_URL once for each new complete, "
                                  "verified backup set (dead man's switch).")
def heartbeat_sensor(context: dg.RunStatusSensorContext, stack: StackResource) -> dg.SkipReason | None:
    settings = stack.settings()
    if settings.heartbeat_url is None:
        return dg.SkipReason("RPGER_HEARTBEAT_URL not configured")
    result = heartbeat.after_newest_set(settings)
    context.log.info(f"heartbeat after run {context.dagster_run.run_id[:8]} ({context.dagster_run.job_name}): "
                     f"{result.outcome} {result.set_id or ''} {result.detail}")
    return None


def heartbeat_defs() -> dg.Definitions:
    return dg.Definitions(sensors=[heartbeat_sensor])
