"""Health job and sensor against the real servers."""

from __future__ import annotations

import dagster as dg
import pytest

from rpger_ops.defs import health
from rpger_ops.settings import Settings, settings_to_env


def test_health_job_records_versions_and_latency(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in settings_to_env(settings).items():
        monkeypatch.setenv(k, v)
    instance = dg.DagsterInstance.ephemeral()
    result = health.health_check.execute_in_process(instance=instance, resources={"stack": health.StackResource()})
    assert result.success
    assert result.output_for_node("ping_databases") == {"mongo": True, "redis": True, "chroma": True}
    obs = [e.asset_observation_data.asset_observation for e in result.all_events
           if e.event_type_value == "ASSET_OBSERVATION"]
    by_db = {o.asset_key.path[0]: o.metadata for o in obs}
    assert set(by_db) == {"mongo", "redis", "chroma"}
    assert by_db["redis"]["server_version"].value.startswith("7.")
    assert by_db["chroma"]["latency_ms"].value > 0


def test_health_sensor_observes_and_alerts_when_down(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    env = settings_to_env(settings)
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with dg.build_sensor_context(resources={"stack": health.StackResource()}) as ctx:
        result = health.health_sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    ups = {e.asset_key.path[0]: e.metadata["up"].value for e in result.asset_events}  # type: ignore[union-attr]
    assert ups == {"mongo": True, "redis": False, "chroma": True}
    from rpger_ops.alerts import Alerter

    assert list(Alerter(settings).open_incidents()) == ["down:redis"]


def test_health_job_fails_when_a_database_is_down(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    env = settings_to_env(settings)
    env["CHROMA_PORT"] = "1"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result = health.health_check.execute_in_process(resources={"stack": health.StackResource()}, raise_on_error=False)
    assert not result.success
