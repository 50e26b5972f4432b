"""Pure parts of restore/preseed: source fallback order, the sensor's run keys,
schema and database-name checks. No servers needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rpger_ops.preseed import sensor_step
from rpger_ops.restore import RefusedError, RestoreError, check_schema, order_candidates, parse_databases
from rpger_ops.schema import code_schema_version

A, B, C = "20261126T030000Z", "20261127T030000Z", "20261128T030000Z"


def test_local_newest_first_then_offsite_newest_then_older_sets():
    assert order_candidates([B, A], [B, A]) == [(B, "local"), (B, "offsite"), (A, "local"), (A, "offsite")]


def test_missing_local_directory_means_offsite_only():
    assert order_candidates([], [C, B]) == [(C, "offsite"), (B, "offsite")]


def test_local_is_preferred_even_when_offsite_has_a_newer_set():
    # Spec order: newest verified local set first; the off-site newest is the first fallback.
    assert order_candidates([A], [C, A]) == [(A, "local"), (C, "offsite"), (A, "offsite")]


def test_older_local_set_comes_before_its_offsite_copy():
    assert order_candidates([C, B], [C]) == [(C, "local"), (C, "offsite"), (B, "local")]


def test_nothing_anywhere():
    assert order_candidates([], []) == []


def test_sensor_one_run_key_per_new_volume_event():
    t0 = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    states = {"mongo": "new", "redis": "has_data", "chroma": "has_data"}
    reqs, cursor = sensor_step(states, {}, now=t0)
    assert [db for db, _ in reqs] == ["mongo"]
    key = reqs[0][1]
    # Next tick, same episode: the same run key (Dagster runs it once).
    reqs2, cursor2 = sensor_step(states, cursor, now=t0 + timedelta(seconds=30))
    assert reqs2 == [("mongo", key)]
    # Not ready in between does not end the episode.
    reqs3, cursor3 = sensor_step({**states, "mongo": "not_ready"}, cursor2, now=t0 + timedelta(minutes=1))
    assert reqs3 == [] and cursor3 == cursor2
    # Seeded: episode over. A later new volume is a new event with a new key.
    _, cursor4 = sensor_step({**states, "mongo": "has_data"}, cursor3, now=t0 + timedelta(minutes=2))
    assert cursor4 == {}
    reqs5, _ = sensor_step(states, cursor4, now=t0 + timedelta(days=3))
    assert reqs5[0][0] == "mongo" and reqs5[0][1] != key


def test_sensor_emptied_volume_is_no_event():
    reqs, cursor = sensor_step({"mongo": "emptied", "redis": "has_data", "chroma": "not_ready"}, {})
    assert reqs == [] and cursor == {}


def test_sensor_one_request_per_database():
    reqs, _ = sensor_step({"mongo": "new", "redis": "new", "chroma": "new"}, {})
    assert sorted(db for db, _ in reqs) == ["chroma", "mongo", "redis"]
    assert len({k for _, k in reqs}) == 3


def test_parse_databases_defaults_to_all_in_stack_order():
    assert parse_databases(None) == ["mongo", "redis", "chroma"]
    assert parse_databases(["chroma", "mongo", "chroma"]) == ["mongo", "chroma"]
    with pytest.raises(RestoreError, match="unknown database"):
        parse_databases(["postgres"])


def test_set_newer_than_code_is_refused():
    code = code_schema_version()
    assert check_schema({"set_id": C, "schema_version": code}) == code
    with pytest.raises(RefusedError, match=f"schema version {code + 1}, newer than this code's {code}"):
        check_schema({"set_id": C, "schema_version": code + 1})
