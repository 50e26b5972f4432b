"""Monitoring wiring: freshness and shrink checks, run-failure alerts.

The checks live on an external asset `backups/catalog` (the catalogue of
backup sets). They can be run by hand from the UI; `monitoring_sensor`
evaluates the same functions every few minutes and reports the results as
check evaluations, so the UI shows them without a run per tick. Every
failing finding opens one incident (one alert); passing again resolves it
(one recovery message).
"""

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from rpger_ops.alerts import Alerter
from rpger_ops.defs.resources import StackResource
from rpger_ops.monitoring import (
    OFFSITE_NOT_CONFIGURED,
    Finding,
    local_freshness,
    newest_set_shrink,
    offsite_configured,
    offsite_freshness,
    storage_report,
)
from rpger_ops.settings import Settings

CATALOG_KEY = dg.AssetKey(["backups", "catalog"])

backup_catalog = dg.AssetSpec(
    key=CATALOG_KEY,
    description="Backup sets on local disk (RPGER_BACKUP_DIR) and in the off-site store. Observed by "
                "monitoring_sensor: per store the sets, logical bytes (full copies), stored bytes and dedup ratio.",
    group_name="monitoring",
)


def catalog_observation(settings: Settings) -> dg.AssetObservation:
    """The catalogue's size per store: total stored, what full copies would weigh, the dedup ratio."""
    from rpger_ops.store import StoreError, local_store, offsite_store

    metadata: dict[str, Any] = {}
    try:
        metadata.update(storage_report(local_store(settings)).metadata("local"))
    except StoreError as exc:
        metadata["local_error"] = str(exc)
    if settings.offsite_enabled:
        try:
            store = offsite_store(settings)
            assert store is not None
            metadata.update(storage_report(store).metadata("offsite"))
        except StoreError as exc:
            metadata["offsite_error"] = str(exc)
    return dg.AssetObservation(asset_key=CATALOG_KEY, metadata=metadata)


def _combine_shrink(settings: Settings) -> Finding:
    findings = newest_set_shrink(settings)
    bad = [f for f in findings if not f.ok]
    if bad:
        return Finding(False, "; ".join(f.summary for f in bad), {"findings": [f.details for f in bad]})
    return Finding(True, "newest set in line with the previous one" if findings else "no sets yet")


CHECKS = {
    "local_backup_fresh": ("stale:local", local_freshness),
    "offsite_backup_fresh": ("stale:offsite", offsite_freshness),
    "newest_set_not_shrunk": ("shrunk:newest", _combine_shrink),
}


def evaluate(settings: Settings, check_name: str, alerter: Alerter | None = None) -> Finding:
    incident, fn = CHECKS[check_name]
    finding: Finding = fn(settings)
    (alerter or Alerter(settings)).update(incident, not finding.ok, finding.summary, finding.details)
    return finding


def remind_offsite(settings: Settings, alerter: Alerter | None = None) -> Finding:
    """WARN once a day while no off-site store is configured; one recovery message
    when it is."""
    finding = offsite_configured(settings)
    alerter = alerter or Alerter(settings)
    if finding.ok:
        alerter.resolve(OFFSITE_NOT_CONFIGURED, finding.summary, finding.details)
    else:
        alerter.remind(OFFSITE_NOT_CONFIGURED, finding.summary, finding.details, severity="warning",
                       every_hours=settings.offsite_reminder_hours)
    return finding


def _result(finding: Finding) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=finding.ok, description=finding.summary,
                               metadata={k: v for k, v in finding.details.items() if isinstance(v, (int, float, str))})


@dg.asset_check(asset=CATALOG_KEY, name="local_backup_fresh",
                description="Newest verified local set younger than RPGER_BACKUP_MAX_AGE_HOURS (26 h).")
def local_backup_fresh(stack: StackResource) -> dg.AssetCheckResult:
    return _result(evaluate(stack.settings(), "local_backup_fresh"))


@dg.asset_check(asset=CATALOG_KEY, name="offsite_backup_fresh",
                description="Newest off-site set younger than RPGER_OFFSITE_MAX_AGE_HOURS (26 h).")
def offsite_backup_fresh(stack: StackResource) -> dg.AssetCheckResult:
    return _result(evaluate(stack.settings(), "offsite_backup_fresh"))


@dg.asset_check(asset=CATALOG_KEY, name="newest_set_not_shrunk",
                description="Counts and archive size of the newest set vs the previous verified set.")
def newest_set_not_shrunk(stack: StackResource) -> dg.AssetCheckResult:
    return _result(evaluate(stack.settings(), "newest_set_not_shrunk"))


@dg.asset_check(asset=CATALOG_KEY, name="offsite_configured",
                description="An off-site (S3) store is configured (WARN, repeated daily while it is not).")
def offsite_configured_check(stack: StackResource) -> dg.AssetCheckResult:
    finding = remind_offsite(stack.settings())
    return dg.AssetCheckResult(passed=finding.ok, description=finding.summary, severity=dg.AssetCheckSeverity.WARN)


@dg.sensor(minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Backup freshness (local, off-site) and shrink checks; alerts once per incident.")
def monitoring_sensor(context: dg.SensorEvaluationContext, stack: StackResource) -> dg.SensorResult:
    settings = stack.settings()
    alerter = Alerter(settings)
    events = []
    for name in CHECKS:
        finding = evaluate(settings, name, alerter)
        context.log.info(f"{name}: {'ok' if finding.ok else 'FAILED'} - {finding.summary}")
        events.append(dg.AssetCheckEvaluation(
            asset_key=CATALOG_KEY, check_name=name, passed=finding.ok,
            metadata={"summary": finding.summary, "evaluated_at": datetime.now(UTC).isoformat()},
        ))
    offsite = remind_offsite(settings, alerter)
    events.append(dg.AssetCheckEvaluation(
        asset_key=CATALOG_KEY, check_name="offsite_configured", passed=offsite.ok,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"summary": offsite.summary, "evaluated_at": datetime.now(UTC).isoformat()},
    ))
    return dg.SensorResult(asset_events=[*events, catalog_observation(settings)])


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Alerts once when a job fails; see run_recovery_sensor.")
def run_failure_alert(context: dg.RunFailureSensorContext, stack: StackResource) -> None:
    run = context.dagster_run
    message = context.failure_event.message or "run failed"
    # The step errors say what went wrong; the run event only that steps failed.
    for step_event in context.get_step_failure_events():
        data = step_event.step_failure_data
        if data and data.error:
            message = f"{step_event.step_key}: {data.error.message.strip()}"
            break
    Alerter(stack.settings()).raise_incident(
        f"run_failed:{run.job_name}", f"job {run.job_name} failed (run {run.run_id[:8]}): {message[:300]}",
        {"run_id": run.run_id, "job": run.job_name},
    )


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, default_status=dg.DefaultSensorStatus.RUNNING,
                      description="Sends the recovery message when a job that failed succeeds again.")
def run_recovery_alert(context: dg.RunStatusSensorContext, stack: StackResource) -> None:
    run = context.dagster_run
    Alerter(stack.settings()).resolve(f"run_failed:{run.job_name}",
                                      f"job {run.job_name} succeeded again (run {run.run_id[:8]})",
                                      {"run_id": run.run_id, "job": run.job_name})


def monitoring_defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[backup_catalog],
        asset_checks=[local_backup_fresh, offsite_backup_fresh, newest_set_not_shrunk, offsite_configured_check],
        sensors=[monitoring_sensor, run_failure_alert, run_recovery_alert],
    )
