"""Helpers for the backup tests: Settings -> environment, Dagster events, S3 reads."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from rpger_ops.settings import Settings, _alias_of, settings_to_env


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that load `settings` again (CLI, subprocesses, resources)."""
    return settings_to_env(settings)


def export_settings(monkeypatch: pytest.MonkeyPatch, settings: Settings, cwd: Path) -> None:
    """Make Dagster resources (which read the environment) see exactly `settings`.
    Runs from `cwd` so no developer `.env` leaks in."""
    for name in Settings.model_fields:
        monkeypatch.delenv(_alias_of(name), raising=False)
        monkeypatch.delenv(_alias_of(name) + "_FILE", raising=False)
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(cwd)


def check_evaluations(instance: Any, run_id: str) -> dict[tuple[str, str], bool]:
    """(asset key path, check name) -> passed, for every check evaluated in a run."""
    from dagster import DagsterEventType

    out: dict[tuple[str, str], bool] = {}
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        data = record.dagster_event.event_specific_data
        out[("/".join(data.asset_key.path), data.check_name)] = data.passed
    return out


def s3_object_sha256(settings: Settings, key: str) -> str:
    from minio import Minio

    assert settings.s3_access_key is not None and settings.s3_secret_key is not None
    client = Minio(str(settings.s3_endpoint), access_key=settings.s3_access_key.get_secret_value(),
                   secret_key=settings.s3_secret_key.get_secret_value(), secure=settings.s3_secure)
    response = client.get_object(settings.s3_bucket, key)
    try:
        return hashlib.sha256(response.read()).hexdigest()
    finally:
        response.close()
        response.release_conn()
