"""Connection settings from RPGer's own environment variables.

The names are the RPGer backend's (`MONGODB_URI`, `MONGODB_DATABASE`,
`MONGODB_*_TIMEOUT_MS`, `REDIS_URL`, `REDIS_SOCKET_TIMEOUT`, `CHROMA_HOST`,
`CHROMA_PORT`, `CHROMA_SSL`, ...). A secret may instead come from a file:
`MONGODB_URI_FILE`, `REDIS_URL_FILE`, `CHROMA_AUTH_TOKEN_FILE` (Docker
secrets: the stack's ready-made `mongodb_app_uri` / `redis_app_url` files are
exactly such files). The file wins over the plain variable.

Bad values raise `ConfigError`, whose message names each variable and what is
wrong with it and never contains a value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")


class ConfigError(ValueError):
    """Configuration is missing or malformed. `str()` is safe to print."""


def redact_url(url: str) -> str:
    """The URL without its credentials (for logs and error messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    return urlunsplit((parts.scheme, "***@" + parts.netloc.rsplit("@", 1)[1], parts.path, parts.query, ""))


@dataclass
class ClientConfig:
    """Everything the three clients need. Defaults suit a request handler:
    short connect/selection timeouts, so a database that is down costs a
    request about two seconds, not ten or thirty."""

    mongodb_uri: str = field(default="mongodb://localhost:27017/rpger", repr=False)
    mongodb_database: str | None = None  # None: the URI's database, else "rpger"
    mongodb_max_pool_size: int = 50
    mongodb_min_pool_size: int = 5
    mongodb_max_idle_time_ms: int = 60_000
    mongodb_connect_timeout_ms: int = 2_000
    mongodb_socket_timeout_ms: int = 10_000
    mongodb_server_selection_timeout_ms: int = 2_000
    mongodb_tz_aware: bool = False  # pymongo's default: naive UTC datetimes, as RPGer expects

    redis_url: str = field(default="redis://localhost:6379/0", repr=False)
    redis_socket_timeout: float = 2.0
    redis_socket_connect_timeout: float = 2.0
    # redis-py resends ANY command once after a socket timeout when this is
    # true (RPGer's .env.example sets it): off by default here.
    redis_retry_on_timeout: bool = False
    redis_max_connections: int = 50
    redis_decode_responses: bool = True  # str, as RPGer's RedisInterface expects

    chroma_host: str = "localhost"
    chroma_port: int = 8000
    chroma_ssl: bool = False
    chroma_tenant: str = "default_tenant"
    chroma_database: str = "default_database"
    chroma_auth_token: str | None = field(default=None, repr=False)

    retry_budget_s: float = 2.0  # per call of StackClients.read / write_idempotent

    def __repr__(self) -> str:  # secrets never in a repr
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return (f"ClientConfig(mongodb={redact_url(self.mongodb_uri)!r}, redis={redact_url(self.redis_url)!r}, "
                f"{shown})")

    @property
    def database_name(self) -> str:
        if self.mongodb_database:
            return self.mongodb_database
        path = urlsplit(self.mongodb_uri).path.lstrip("/")
        return path or "rpger"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ClientConfig:
        """Read the RPGer variables from `environ` (default: os.environ);
        keyword overrides win over the environment."""
        env = _Env(os.environ if environ is None else environ)
        d = cls()
        values: dict[str, Any] = {
            "mongodb_uri": env.secret("MONGODB_URI", d.mongodb_uri),
            "mongodb_database": env.get("MONGODB_DATABASE", d.mongodb_database) or None,
            "mongodb_max_pool_size": env.number("MONGODB_MAX_POOL_SIZE", int, d.mongodb_max_pool_size, 1),
            "mongodb_min_pool_size": env.number("MONGODB_MIN_POOL_SIZE", int, d.mongodb_min_pool_size, 0),
            "mongodb_max_idle_time_ms": env.number("MONGODB_MAX_IDLE_TIME_MS", int, d.mongodb_max_idle_time_ms, 0),
            "mongodb_connect_timeout_ms": env.number("MONGODB_CONNECT_TIMEOUT_MS", int,
                                                     d.mongodb_connect_timeout_ms, 1),
            "mongodb_socket_timeout_ms": env.number("MONGODB_SOCKET_TIMEOUT_MS", int, d.mongodb_socket_timeout_ms, 1),
            "mongodb_server_selection_timeout_ms": env.number("MONGODB_SERVER_SELECTION_TIMEOUT_MS", int,
                                                              d.mongodb_server_selection_timeout_ms, 1),
            "mongodb_tz_aware": env.boolean("MONGODB_TZ_AWARE", d.mongodb_tz_aware),
            "redis_url": env.secret("REDIS_URL", d.redis_url),
            "redis_socket_timeout": env.number("REDIS_SOCKET_TIMEOUT", float, d.redis_socket_timeout, 0.001),
            "redis_socket_connect_timeout": env.number("REDIS_SOCKET_CONNECT_TIMEOUT", float,
                                                       d.redis_socket_connect_timeout, 0.001),
            "redis_retry_on_timeout": env.boolean("REDIS_RETRY_ON_TIMEOUT", d.redis_retry_on_timeout),
            "redis_max_connections": env.number("REDIS_MAX_CONNECTIONS", int, d.redis_max_connections, 1),
            "chroma_host": env.get("CHROMA_HOST", d.chroma_host),
            "chroma_port": env.number("CHROMA_PORT", int, d.chroma_port, 1, 65535),
            "chroma_ssl": env.boolean("CHROMA_SSL", d.chroma_ssl),
            "chroma_tenant": env.get("CHROMA_TENANT", d.chroma_tenant),
            "chroma_database": env.get("CHROMA_DATABASE", d.chroma_database),
            "chroma_auth_token": env.secret("CHROMA_AUTH_TOKEN", None),
            "retry_budget_s": env.number("RPGER_CLIENT_RETRY_BUDGET_S", float, d.retry_budget_s, 0.0),
        }
        env.raise_errors()
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown ClientConfig fields: {', '.join(sorted(unknown))}")
        values.update(overrides)
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        errors = []
        scheme = self.mongodb_uri.split("://", 1)[0] if "://" in self.mongodb_uri else ""
        if scheme not in ("mongodb", "mongodb+srv"):
            errors.append("MONGODB_URI: must start with mongodb:// or mongodb+srv://")
        if urlsplit(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            errors.append("REDIS_URL: must start with redis://, rediss:// or unix://")
        if not self.chroma_host:
            errors.append("CHROMA_HOST: must not be empty")
        if self.mongodb_min_pool_size > self.mongodb_max_pool_size:
            errors.append("MONGODB_MIN_POOL_SIZE: must not exceed MONGODB_MAX_POOL_SIZE")
        if errors:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))


class _Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.errors: list[str] = []

    def get(self, name: str, default: T) -> Any:
        value = self.environ.get(name)
        return default if value is None or value.strip() == "" else value.strip()

    def secret(self, name: str, default: str | None) -> str | None:
        path = self.environ.get(name + "_FILE")
        if path:
            try:
                with open(path, encoding="utf-8") as fh:
                    return fh.read().rstrip("\r\n")
            except OSError as exc:
                self.errors.append(f"{name}_FILE: cannot read {path}: {exc.strerror}")
                return default
        value = self.environ.get(name)
        return default if value is None or value == "" else value

    def number(self, name: str, kind: Callable[[str], T], default: T, minimum: float,
               maximum: float | None = None) -> T:
        raw = self.environ.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = kind(raw.strip())
        except ValueError:
            self.errors.append(f"{name}: must be {'an integer' if kind is int else 'a number'}")
            return default
        if value < minimum or (maximum is not None and value > maximum):  # type: ignore[operator]
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            self.errors.append(f"{name}: must be {bound}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.environ.get(name)
        if raw is None or raw.strip() == "":
            return default
        value = raw.strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        self.errors.append(f"{name}: must be true or false")
        return default

    def raise_errors(self) -> None:
        if self.errors:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(self.errors))
