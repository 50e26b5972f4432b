"""Health job and sensor: ping the three databases, record version and latency."""


import dagster as dg

from rpger_ops.defs.resources import StackResource
from rpger_ops.health import check_all


@dg.op
def ping_databases(context: dg.OpExecutionContext, stack: StackResource) -> dict[str, bool]:
    results = check_all(stack.settings())
    for name, h in results.items():
        context.log.info(f"{name}: {'up' if h.up else 'DOWN'} {h.server_version or ''} "
                         f"{h.latency_ms} ms {h.error or ''}")
        context.add_output_metadata({
            f"{name}_up": h.up,
            f"{name}_latency_ms": h.latency_ms or 0.0,
            f"{name}_server_version": h.server_version or "",
        })
    down = [n for n, h in results.items() if not h.up]
    if down:
        raise dg.Failure(description=f"database(s) down: {', '.join(down)}",
                         metadata={n: results[n].error or "" for n in down})
    return {n: h.up for n, h in results.items()}


@dg.job(description="Ping MongoDB, Redis and Chroma; fails when any is down.")
def health_check() -> None:
    ping_databases()


@dg.sensor(minimum_interval_seconds=60, description="Pings all three databases every minute.",
           default_status=dg.DefaultSensorStatus.RUNNING)
def health_sensor(context: dg.SensorEvaluationContext, stack: StackResource) -> dg.SkipReason:
    results = check_all(stack.settings())
    summary = ", ".join(
        f"{n} {'up' if h.up else 'DOWN'} {h.server_version or ''} {h.latency_ms} ms" for n, h in results.items()
    )
    context.log.info(summary)
    return dg.SkipReason(summary)


def health_defs() -> dg.Definitions:
    return dg.Definitions(jobs=[health_check], sensors=[health_sensor])
