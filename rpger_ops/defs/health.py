"""Health job and sensor: ping the three databases, record version and latency.

Each database has an external asset `<db>/server`; the sensor records an
observation on it every minute (up, latency_ms, server_version) so the UI
charts latency and shows version changes, and opens one alert incident per
database that goes down (one recovery message when it is back).
"""

from typing import Any

import dagster as dg

from rpger_ops.alerts import Alerter
from rpger_ops.defs.resources import StackResource
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.health import DatabaseHealth, check_all

server_assets = [
    dg.AssetSpec(key=[db, "server"], group_name="monitoring",
                 description=f"The {db} server: health observations (up, latency, version).")
    for db in ENGINE_NAMES
]


def _metadata(h: DatabaseHealth) -> dict[str, Any]:
    return {
        "up": h.up,
        "latency_ms": dg.MetadataValue.float(float(h.latency_ms or 0.0)),
        "server_version": h.server_version or "",
        "error": h.error or "",
    }


@dg.op
def ping_databases(context, stack: StackResource) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    results = check_all(stack.settings())
    for name, h in results.items():
        context.log.info(f"{name}: {'up' if h.up else 'DOWN'} {h.server_version or ''} "
                         f"{h.latency_ms} ms {h.error or ''}")
        context.log_event(dg.AssetObservation(asset_key=[name, "server"], metadata=_metadata(h)))
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
def health_sensor(context: dg.SensorEvaluationContext, stack: StackResource) -> dg.SensorResult:
    settings = stack.settings()
    results = check_all(settings)
    alerter = Alerter(settings)
    for name, h in results.items():
        alerter.update(f"down:{name}", not h.up,
                       f"{name} is down: {h.error}" if not h.up else f"{name} is up again ({h.server_version})")
    summary = ", ".join(
        f"{n} {'up' if h.up else 'DOWN'} {h.server_version or ''} {h.latency_ms} ms" for n, h in results.items()
    )
    context.log.info(summary)
    return dg.SensorResult(
        asset_events=[dg.AssetObservation(asset_key=[n, "server"], metadata=_metadata(h)) for n, h in results.items()],
    )


def health_defs() -> dg.Definitions:
    return dg.Definitions(assets=server_assets, jobs=[health_check], sensors=[health_sensor])
