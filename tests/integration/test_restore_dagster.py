"""The Dagster wiring of restore/preseed on real servers: jobs and the preseed sensor."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from restore_support import digests, manifest_digests, new_volume, settings_env, take_set, wipe

from rpger_ops import testdata
from rpger_ops.defs.resources import StackResource
from rpger_ops.defs.restore import preseed_job, preseed_sensor, restore
from rpger_ops.engines import build_engine
from rpger_ops.engines.base import StackMarker
from rpger_ops.settings import Settings

RESOURCES = {"stack": StackResource()}


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(settings.backup_dir.parent)
    return settings


def restore_config(**config: object) -> dict[str, object]:
    return {"ops": {"restore_databases": {"config": config}}}


def test_restore_job_refuses_then_forces(env: Settings) -> None:
    testdata.load_all(env, scale=20)
    set_id = take_set(env)
    refused = restore.execute_in_process(run_config=restore_config(set="latest"), resources=RESOURCES,
                                         raise_on_error=False)
    assert not refused.success
    failure = [e for e in refused.all_events if e.is_step_failure][0]
    assert "refusing to restore over existing data" in str(failure.step_failure_data.error)

    forced = restore.execute_in_process(
        run_config=restore_config(set=set_id, databases=["redis"], force=True), resources=RESOURCES)
    assert forced.success
    metadata = forced.output_for_node("restore_databases")
    assert metadata == set_id
    assert digests(env, ["redis"])["redis"] == manifest_digests(env, set_id)["redis"]


def test_preseed_job_and_sensor(env: Settings) -> None:
    testdata.load_all(env, scale=20)
    set_id = take_set(env)
    new_volume(env, ["mongo"])
    engine = build_engine("chroma", env)
    engine.write_marker(StackMarker("test-stack", 0))
    engine.close()
    wipe(env, ["chroma"])  # emptied on purpose: no event

    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=RESOURCES)
        result = preseed_sensor(context)
        assert [r.tags["rpger/database"] for r in result.run_requests] == ["mongo"]
        request = result.run_requests[0]
        # The next tick of the same event asks for the same run key.
        again = preseed_sensor(dg.build_sensor_context(instance=instance, resources=RESOURCES,
                                                       cursor=result.cursor))
        assert [r.run_key for r in again.run_requests] == [request.run_key]

        run = preseed_job.execute_in_process(run_config=request.run_config, resources=RESOURCES,
                                             instance=instance)
        assert run.success
        assert json.loads(run.output_for_node("preseed_databases")) == {"mongo": "restored"}
        assert digests(env, ["mongo"])["mongo"] == manifest_digests(env, set_id)["mongo"]

        seeded = preseed_sensor(dg.build_sensor_context(instance=instance, resources=RESOURCES,
                                                        cursor=again.cursor))
        assert seeded.run_requests == [] and json.loads(seeded.cursor or "{}") == {}


def test_preseed_job_fails_loudly_when_a_database_is_not_ready(env: Settings,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from rpger_ops import devservers

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{devservers.free_port()}/0")
    run = preseed_job.execute_in_process(run_config={"ops": {"preseed_databases": {"config": {
        "databases": ["redis"]}}}}, resources=RESOURCES, raise_on_error=False)
    assert not run.success
    failure = [e for e in run.all_events if e.is_step_failure][0]
    assert "redis: " in str(failure.step_failure_data.error) and "mongo" not in str(failure.step_failure_data.error)
