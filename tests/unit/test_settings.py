"""Settings: RPGer names, `_FILE` secrets, one clear line per bad variable, no secret leaks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rpger_ops.settings import ConfigError, Settings, load_settings

SECRET = "s3cr3t-V4lue-that-must-not-leak"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Start from an environment without any of our variables and no .env file."""
    import os

    for key in list(os.environ):
        if key.startswith(("MONGODB_", "REDIS_", "CHROMA_", "RPGER_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def error_of(**env: object) -> str:
    with pytest.raises(ConfigError) as exc:
        load_settings(**env)
    return str(exc.value)


def test_defaults_use_rpger_backend_names_and_values() -> None:
    s = load_settings()
    assert s.mongodb_uri.get_secret_value() == "mongodb://localhost:27017/rpger"
    assert s.mongodb_database == "rpger"
    assert s.redis_url.get_secret_value().startswith("redis://localhost:6379")
    assert (s.chroma_host, s.chroma_port) == ("localhost", 8000)
    assert s.mongodb_max_pool_size == 50 and s.mongodb_min_pool_size == 5
    assert not s.offsite_enabled


def test_reads_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CHROMA_PORT=8123\nMONGODB_DATABASE=campaigns\n")
    monkeypatch.setenv("CHROMA_HOST", "chroma")
    s = load_settings()
    assert (s.chroma_host, s.chroma_port, s.mongodb_database) == ("chroma", 8123, "campaigns")


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    [
        ({"MONGODB_URI": "http://db:27017"}, "MONGODB_URI", "mongodb://"),
        ({"REDIS_URL": "tcp://cache"}, "REDIS_URL", "redis://"),
        ({"CHROMA_PORT": "eighty"}, "CHROMA_PORT", "integer"),
        ({"CHROMA_PORT": "70000"}, "CHROMA_PORT", "65535"),
        ({"MONGODB_DATABASE": ""}, "MONGODB_DATABASE", "at least 1"),
        ({"RPGER_ZSTD_LEVEL": "99"}, "RPGER_ZSTD_LEVEL", "22"),
        ({"RPGER_BACKUP_CRON": "every day"}, "RPGER_BACKUP_CRON", "cron"),
        ({"RPGER_KEEP_DAILY": "-1"}, "RPGER_KEEP_DAILY", "greater than or equal"),
        ({"RPGER_S3_ENDPOINT": "https://s3.example.org/x", "RPGER_S3_ACCESS_KEY": "a",
          "RPGER_S3_SECRET_KEY": SECRET}, "RPGER_S3_ENDPOINT", "without scheme"),
        ({"RPGER_S3_BUCKET": "Bad_Bucket"}, "RPGER_S3_BUCKET", "pattern"),
        ({"RPGER_S3_ENDPOINT": "minio:9000"}, "RPGER_S3_ACCESS_KEY", "required"),
        ({"RPGER_SHRINK_ALERT_RATIO": "2"}, "RPGER_SHRINK_ALERT_RATIO", "less than"),
    ],
)
def test_each_bad_variable_gives_one_clear_line(env: dict[str, str], variable: str, fragment: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    message = error_of()
    lines = message.splitlines()
    assert lines[0] == "invalid configuration:"
    bad = [line for line in lines[1:] if line.strip().startswith(variable)]
    assert len(bad) == 1, message
    assert fragment in bad[0], message
    assert "Traceback" not in message and SECRET not in message


def test_several_errors_are_all_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHROMA_PORT", "x")
    monkeypatch.setenv("MONGODB_URI", "postgres://nope")
    message = error_of()
    assert "CHROMA_PORT:" in message and "MONGODB_URI:" in message


def test_secret_file_is_read_and_wins_over_plain_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "redis_password"
    secret_file.write_text(SECRET + "\n")
    monkeypatch.setenv("REDIS_PASSWORD", "plain-value-ignored")
    monkeypatch.setenv("REDIS_PASSWORD_FILE", str(secret_file))
    s = load_settings()
    assert s.redis_password is not None and s.redis_password.get_secret_value() == SECRET
    assert s.redis_client_kwargs()["password"] == SECRET


def test_every_secret_accepts_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    values = {
        "MONGODB_URI": "mongodb://u:p@h:27017/rpger",
        "MONGODB_PASSWORD": SECRET,
        "REDIS_URL": "redis://:pw@h:6379/0",
        "REDIS_PASSWORD": SECRET,
        "CHROMA_AUTH_TOKEN": SECRET,
        "RPGER_S3_ACCESS_KEY": "access-" + SECRET,
        "RPGER_S3_SECRET_KEY": "secret-" + SECRET,
        "RPGER_ALERT_WEBHOOK_URL": "http://hooks.local/x",
        "RPGER_HEARTBEAT_URL": "https://monitor.local/ping/x",
    }
    assert set(values) == set(Settings.SECRET_ALIASES)
    for name, value in values.items():
        f = tmp_path / name.lower()
        f.write_text(value)
        monkeypatch.setenv(name + "_FILE", str(f))
    monkeypatch.setenv("RPGER_S3_ENDPOINT", "minio:9000")
    s = load_settings()
    assert s.mongodb_uri.get_secret_value() == values["MONGODB_URI"]
    assert s.s3_secret_key is not None and s.s3_secret_key.get_secret_value() == values["RPGER_S3_SECRET_KEY"]
    assert s.alert_webhook_url is not None and s.alert_webhook_url.get_secret_value() == values["RPGER_ALERT_WEBHOOK_URL"]
    assert s.heartbeat_url is not None and s.heartbeat_url.get_secret_value() == values["RPGER_HEARTBEAT_URL"]


def test_missing_secret_file_is_named_without_value(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MONGODB_PASSWORD_FILE", str(tmp_path / "nope"))
    message = error_of()
    assert "MONGODB_PASSWORD_FILE" in message and "cannot read" in message


def test_placeholder_secret_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("changeme\n")
    monkeypatch.setenv("REDIS_PASSWORD_FILE", str(f))
    message = error_of()
    assert "REDIS_PASSWORD" in message and "placeholder" in message
    assert "changeme" not in message


def test_secrets_never_in_repr_logs_or_summary(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MONGODB_URI", f"mongodb://admin:{SECRET}@mongodb:27017/rpger?authSource=admin")
    monkeypatch.setenv("REDIS_URL", f"redis://:{SECRET}@redis:6379/0")
    monkeypatch.setenv("REDIS_PASSWORD", SECRET)
    s = load_settings()
    logging.getLogger("test").warning("settings: %s %r %s", s, s, s.safe_summary())
    assert SECRET not in caplog.text
    assert SECRET not in repr(s) and SECRET not in str(s.safe_summary())
    assert "mongodb:27017" in s.safe_summary()["mongodb"]


def test_malformed_uri_error_does_not_echo_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGODB_URI", f"mongo://admin:{SECRET}@db")
    message = error_of()
    assert "MONGODB_URI" in message and SECRET not in message


def test_username_and_password_are_injected_into_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGODB_URI", "mongodb://mongodb:27017/rpger?replicaSet=rs0")
    monkeypatch.setenv("MONGODB_USERNAME", "rpger_ops")
    monkeypatch.setenv("MONGODB_PASSWORD", "p@ss:word/1")
    uri = load_settings().mongo_client_uri()
    assert uri == "mongodb://rpger_ops:p%40ss%3Aword%2F1@mongodb:27017/rpger?replicaSet=rs0&authSource=admin"


def test_cli_prints_config_error_without_traceback(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from rpger_ops.cli import main

    monkeypatch.setenv("CHROMA_PORT", "nope")
    monkeypatch.setenv("REDIS_PASSWORD", SECRET)
    assert main(["health"]) == 2
    err = capsys.readouterr().err
    assert "CHROMA_PORT" in err and "Traceback" not in err and SECRET not in err


def test_empty_optional_url_files_mean_not_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """compose ships empty alert_webhook_url / heartbeat_url secrets; a process
    that reads them without the image entrypoint (a healthcheck) sees "off"."""
    for name in ("RPGER_ALERT_WEBHOOK_URL", "RPGER_HEARTBEAT_URL"):
        f = tmp_path / name.lower()
        f.write_text("\n")
        monkeypatch.setenv(name + "_FILE", str(f))
    s = load_settings(_env_file=None)
    assert s.alert_webhook_url is None and s.heartbeat_url is None
    monkeypatch.delenv("RPGER_ALERT_WEBHOOK_URL_FILE")
    with pytest.raises(ConfigError, match="RPGER_ALERT_WEBHOOK_URL: must be an http"):
        load_settings(_env_file=None, RPGER_ALERT_WEBHOOK_URL="hooks.local/x")


def test_storage_settings_defaults_and_refusals(tmp_path: Path) -> None:
    s = load_settings(_env_file=None, RPGER_BACKUP_DIR=str(tmp_path))
    assert s.set_format == 2 and not s.encryption_enabled and s.s3_object_lock_days == 0
    assert s.blob_key_path == tmp_path / "keys" / "blob-id.key"
    with pytest.raises(ConfigError, match="RPGER_SET_FORMAT=2"):
        load_settings(_env_file=None, RPGER_SET_FORMAT=1, RPGER_AGE_RECIPIENTS_FILE=str(tmp_path / "r.txt"))
    with pytest.raises(ConfigError, match="RPGER_S3_OBJECT_LOCK_MODE"):
        load_settings(_env_file=None, RPGER_S3_OBJECT_LOCK_MODE="forever")
