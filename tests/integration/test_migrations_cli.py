"""`rpger-ops migrate ...` and the Dagster `migrate` job on real servers."""

from __future__ import annotations

import pytest
from migrations_support import add_ledger_entry, settings_env

from rpger_ops import cli, migrate
from rpger_ops.defs.migrate import migrate_job
from rpger_ops.defs.resources import StackResource
from rpger_ops.migrations import m0001_rpger_schema, registry


@pytest.fixture
def env(settings, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    # The commands' output is what is tested here: code that ships 0001 alone keeps it stable
    # as migrations are added (the shipped ones have their own tests).
    monkeypatch.setattr(registry, "MIGRATIONS", [m0001_rpger_schema])
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    return settings


def add_unknown_ledger_version(settings) -> None:
    migrate.apply_pending(settings)
    add_ledger_entry(settings, "mongo", 42, "future")


def test_cli_status_plan_up_down(env, capsys):
    assert cli.main(["migrate", "status"]) == 0
    out = capsys.readouterr().out
    assert "schema version 0 (code ships 1)" in out and "  0001 rpger_schema" in out

    assert cli.main(["migrate", "plan"]) == 0
    assert "up   0001 rpger_schema" in capsys.readouterr().out

    assert cli.main(["migrate", "up"]) == 0
    assert "migrate up: 0001; schema version 0 -> 1" in capsys.readouterr().out
    assert cli.main(["migrate", "up"]) == 0
    assert "migrate up: nothing to do; schema version 1 -> 1" in capsys.readouterr().out

    assert cli.main(["migrate", "status"]) == 0
    out = capsys.readouterr().out
    assert "pending: none" in out and "mongo 1, redis 1, chroma 1" in out

    assert cli.main(["migrate", "plan", "--to", "0"]) == 0
    assert "down 0001 rpger_schema" in capsys.readouterr().out
    assert cli.main(["migrate", "down", "--to", "0"]) == 0
    assert "migrate down: 0001; schema version 1 -> 0" in capsys.readouterr().out
    assert migrate.current_version(env) == 0


def test_cli_bad_input_and_refusals(env, capsys):
    assert cli.main(["migrate", "up", "--to", "9"]) == 2
    assert "target 9 is outside 0..1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["migrate", "down"])  # --to is required
    assert exc.value.code == 2
    capsys.readouterr()

    add_unknown_ledger_version(env)
    assert cli.main(["migrate", "status"]) == 3
    assert "PROBLEM: data newer than code" in capsys.readouterr().out
    assert cli.main(["migrate", "up"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("rpger-ops migrate: refused: refusing to migrate: data newer than code")
    assert env.redis_password.get_secret_value() not in err


def test_dagster_migrate_job_up_and_status(env):
    run = lambda config: migrate_job.execute_in_process(  # noqa: E731
        run_config={"ops": {"run_migrations": {"config": config}}},
        resources={"stack": StackResource()}, raise_on_error=False)

    result = run({"action": "up"})
    assert result.success
    assert result.output_for_node("run_migrations")["applied"] == [1]
    result = run({"action": "status"})
    assert result.success and result.output_for_node("run_migrations")["pending"] == []

    add_unknown_ledger_version(env)
    result = run({"action": "up"})
    assert not result.success
    failure = result.failure_data_for_node("run_migrations")
    assert failure is not None and "data newer than code" in str(failure.error.message if failure.error else "")
