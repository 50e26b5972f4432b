"""from_env: RPGer's variable names, *_FILE secrets, clear errors without values."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rpger_stack_client import ClientConfig, ConfigError, StackClients


def test_defaults_follow_rpger() -> None:
    c = ClientConfig.from_env({})
    assert c.mongodb_uri == "mongodb://localhost:27017/rpger" and c.database_name == "rpger"
    assert c.redis_url == "redis://localhost:6379/0"
    assert (c.chroma_host, c.chroma_port, c.chroma_ssl) == ("localhost", 8000, False)
    assert (c.mongodb_max_pool_size, c.mongodb_min_pool_size) == (50, 5)
    assert c.redis_decode_responses is True and c.mongodb_tz_aware is False
    assert c.retry_budget_s == 2.0


def test_rpger_variables_are_read() -> None:
    c = ClientConfig.from_env({
        "MONGODB_URI": "mongodb://u:p@db:27017/campaigns?authSource=admin",
        "MONGODB_MAX_POOL_SIZE": "20", "MONGODB_MIN_POOL_SIZE": "2",
        "MONGODB_SERVER_SELECTION_TIMEOUT_MS": "10000", "MONGODB_CONNECT_TIMEOUT_MS": "10000",
        "MONGODB_SOCKET_TIMEOUT_MS": "10000", "MONGODB_MAX_IDLE_TIME_MS": "60000",
        "REDIS_URL": "redis://:pw@cache:6379", "REDIS_SOCKET_TIMEOUT": "2", "REDIS_SOCKET_CONNECT_TIMEOUT": "2",
        "REDIS_RETRY_ON_TIMEOUT": "true",
        "CHROMA_HOST": "chroma", "CHROMA_PORT": "8001", "CHROMA_SSL": "true",
        "RPGER_CLIENT_RETRY_BUDGET_S": "0.5", "MONGODB_TZ_AWARE": "yes",
    })
    assert c.database_name == "campaigns"  # the URI's database when MONGODB_DATABASE is unset
    assert (c.mongodb_max_pool_size, c.mongodb_min_pool_size, c.mongodb_server_selection_timeout_ms) == (20, 2, 10000)
    assert c.redis_url == "redis://:pw@cache:6379" and c.redis_retry_on_timeout is True
    assert (c.chroma_host, c.chroma_port, c.chroma_ssl) == ("chroma", 8001, True)
    assert c.retry_budget_s == 0.5 and c.mongodb_tz_aware is True
    assert ClientConfig.from_env({"MONGODB_URI": "mongodb://db/x", "MONGODB_DATABASE": "rpger"}).database_name == "rpger"


def test_file_variants_win(tmp_path: Path) -> None:
    uri, url = tmp_path / "mongodb_app_uri", tmp_path / "redis_app_url"
    uri.write_text("mongodb://rpger_app:s3cret@mongodb:27017/rpger?authSource=rpger&replicaSet=rs0\n")
    url.write_text("redis://rpger_app:s3cret@redis:6379/0")
    c = ClientConfig.from_env({"MONGODB_URI": "mongodb://ignored/", "MONGODB_URI_FILE": str(uri),
                               "REDIS_URL_FILE": str(url)})
    assert c.mongodb_uri == "mongodb://rpger_app:s3cret@mongodb:27017/rpger?authSource=rpger&replicaSet=rs0"
    assert c.redis_url == "redis://rpger_app:s3cret@redis:6379/0"
    assert "s3cret" not in repr(c) and "s3cret" not in repr(StackClients(c))


def test_errors_name_the_variable_never_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        ClientConfig.from_env({"MONGODB_MAX_POOL_SIZE": "fifty", "CHROMA_PORT": "70000", "CHROMA_SSL": "maybe",
                               "REDIS_URL_FILE": str(tmp_path / "missing")})
    text = str(err.value)
    for name in ("MONGODB_MAX_POOL_SIZE", "CHROMA_PORT", "CHROMA_SSL", "REDIS_URL_FILE"):
        assert name in text
    assert "fifty" not in text and "maybe" not in text
    with pytest.raises(ConfigError) as err:
        ClientConfig.from_env({"REDIS_URL": "http://user:topsecret@cache", "MONGODB_URI": "postgres://x:topsecret@y"})
    assert "REDIS_URL" in str(err.value) and "MONGODB_URI" in str(err.value)
    assert "topsecret" not in str(err.value)


def test_from_env_needs_no_dagster_nor_a_database_library_import() -> None:
    before = set(sys.modules)
    StackClients.from_env({"REDIS_URL": "redis://localhost:6379/0"})
    imported = set(sys.modules) - before
    assert not any(m.split(".")[0] in ("dagster", "pydantic_settings", "chromadb") for m in imported), imported
    assert "dagster" not in sys.modules
