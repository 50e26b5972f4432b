"""The Dagster wiring of restore/preseed on real servers: the `<db>/live` assets,
their jobs, and the preseed sensor that requests their materialization."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from restore_support import digests, manifest_digests, new_volume, settings_env, take_set, wipe

from rpger_ops import testdata
from rpger_ops.definitions import defs
from rpger_ops.defs.live import LIVE_KEYS, preseed_sensor
from rpger_ops.defs.resources import StackResource
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


def live_config(**config: object) -> dict[str, object]:
    return {"ops": {"live_databases": {"config": config}}}


def _job(name: str) -> dg.JobDefinition:
    return defs.resolve_job_def(name)


def _materialization(instance: dg.DagsterInstance, db: str) -> dict[str, object]:
    event = instance.get_latest_materialization_event(LIVE_KEYS[db])
    assert event is not None and event.asset_materialization is not None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_the_live_assets_sit_downstream_of_their_archives() -> None:
    graph = defs.resolve_asset_graph()
    for db, key in LIVE_KEYS.items():
        assert graph.get(key).parent_keys == {dg.AssetKey([db, "archive"])}
    assert defs.resolve_sensor_def("preseed_sensor").job_name == "preseed"


def test_restore_job_refuses_then_forces_and_materializes_live(env: Settings) -> None:
    testdata.load_all(env, scale=20)
    set_id = take_set(env)
    with dg.instance_for_test() as instance:
        refused = _job("restore").execute_in_process(run_config=live_config(mode="restore", set="latest"),
                                                     instance=instance, raise_on_error=False)
        assert not refused.success
        failure = [e for e in refused.all_events if e.is_step_failure][0]
        assert "refusing to restore over existing data" in str(failure.step_failure_data.error)
        assert instance.get_latest_materialization_event(LIVE_KEYS["redis"]) is None

        forced = _job("restore").execute_in_process(
            run_config=live_config(mode="restore", set=set_id, force=True), instance=instance,
            asset_selection=[LIVE_KEYS["redis"]])
        assert forced.success
        meta = _materialization(instance, "redis")
        assert (meta["action"], meta["set_id"], meta["source"]) == ("restore", set_id, "local")
        assert meta["safety_set_id"] and meta["safety_set_id"] != set_id
        assert instance.get_latest_materialization_event(LIVE_KEYS["mongo"]) is None  # not selected
    assert digests(env, ["redis"])["redis"] == manifest_digests(env, set_id)["redis"]


def test_preseed_sensor_requests_the_live_materialization(env: Settings) -> None:
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
        assert [r.asset_selection for r in result.run_requests] == [[LIVE_KEYS["mongo"]]]
        request = result.run_requests[0]
        # The next tick of the same event asks for the same run key.
        again = preseed_sensor(dg.build_sensor_context(instance=instance, resources=RESOURCES,
                                                       cursor=result.cursor))
        assert [r.run_key for r in again.run_requests] == [request.run_key]

        run = _job("preseed").execute_in_process(instance=instance, asset_selection=request.asset_selection)
        assert run.success
        meta = _materialization(instance, "mongo")
        assert (meta["action"], meta["set_id"], meta["source"]) == ("preseed", set_id, "local")
        assert int(str(meta["items"])) > 0
        assert digests(env, ["mongo"])["mongo"] == manifest_digests(env, set_id)["mongo"]

        seeded = preseed_sensor(dg.build_sensor_context(instance=instance, resources=RESOURCES,
                                                        cursor=again.cursor))
        assert seeded.run_requests == [] and json.loads(seeded.cursor or "{}") == {}


def test_a_preseed_that_changes_nothing_materializes_nothing(env: Settings) -> None:
    testdata.load_all(env, scale=20)
    take_set(env)
    with dg.instance_for_test() as instance:
        run = _job("preseed").execute_in_process(instance=instance)
        assert run.success
        assert all(instance.get_latest_materialization_event(k) is None for k in LIVE_KEYS.values())


def test_preseed_job_fails_loudly_when_a_database_is_not_ready(env: Settings,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from rpger_ops import devservers

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{devservers.free_port()}/0")
    run = _job("preseed").execute_in_process(asset_selection=[LIVE_KEYS["redis"]], raise_on_error=False)
    assert not run.success
    failure = [e for e in run.all_events if e.is_step_failure][0]
    assert "redis: " in str(failure.step_failure_data.error) and "mongo" not in str(failure.step_failure_data.error)
