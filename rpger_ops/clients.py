"""The app-facing clients, from the separate distribution `rpger-stack-client`
(client/ in this repository, `import rpger_stack_client`): re-exported here,
plus a constructor from the ops layer's Settings.

    from rpger_ops.clients import StackClients, stack_clients
    clients = StackClients.from_env()          # RPGer's variables (+ *_FILE); imports no Dagster
    clients = stack_clients(load_settings())   # the ops Settings; the ops layer's 30 s retry budget

One implementation for the app and the ops layer: retries for idempotent
calls only (`read`, `write_idempotent`), never a blind replay of a plain call.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

try:
    from rpger_stack_client import (
        ClientConfig,
        ConfigError,
        RetryPolicy,
        RetryStats,
        StackClients,
        api_health,
        check_all,
        is_transient,
        transient_errors,
    )
except ModuleNotFoundError as exc:  # pragma: no cover - an install without ./client
    if exc.name != "rpger_stack_client":
        raise
    raise ModuleNotFoundError(
        "rpger_ops.clients needs the client package of this repository: pip install --no-deps ./client "
        "(scripts/bootstrap and the Dockerfile do; see pyproject.toml)", name=exc.name) from None

from rpger_ops.settings import Settings

__all__ = [
    "OPS_RETRY_BUDGET_S",
    "ClientConfig",
    "ConfigError",
    "RetryPolicy",
    "RetryStats",
    "StackClients",
    "api_health",
    "check_all",
    "client_config",
    "is_transient",
    "stack_clients",
    "transient_errors",
]

# Background work (sensors, jobs) may wait out a database restart; a request
# handler may not (the client's own default is 2 s).
OPS_RETRY_BUDGET_S = 30.0


def _redis_url_with_credentials(settings: Settings) -> str:
    """REDIS_URL with REDIS_USERNAME/REDIS_PASSWORD put inside it (the client
    takes credentials in the URL only); credentials already in the URL win,
    as they do for redis-py."""
    url = settings.redis_url.get_secret_value()
    parts = urlsplit(url)
    if settings.redis_password is None or "@" in parts.netloc or parts.scheme == "unix":
        return url
    user = quote(settings.redis_username or "", safe="")
    password = quote(settings.redis_password.get_secret_value(), safe="")
    return urlunsplit((parts.scheme, f"{user}:{password}@{parts.netloc}", parts.path, parts.query, parts.fragment))


def client_config(settings: Settings) -> ClientConfig:
    return ClientConfig(
        mongodb_uri=settings.mongo_client_uri(),
        mongodb_database=settings.mongodb_database,
        mongodb_max_pool_size=settings.mongodb_max_pool_size,
        mongodb_min_pool_size=min(settings.mongodb_min_pool_size, settings.mongodb_max_pool_size),
        mongodb_max_idle_time_ms=settings.mongodb_max_idle_time_ms,
        mongodb_connect_timeout_ms=settings.mongodb_connect_timeout_ms,
        mongodb_socket_timeout_ms=settings.mongodb_socket_timeout_ms,
        mongodb_server_selection_timeout_ms=settings.mongodb_server_selection_timeout_ms,
        mongodb_tz_aware=True,  # the ops layer's convention (connect.mongo_client)
        redis_url=_redis_url_with_credentials(settings),
        redis_socket_timeout=settings.redis_socket_timeout,
        redis_socket_connect_timeout=settings.redis_socket_connect_timeout,
        redis_retry_on_timeout=False,  # only `read`/`write_idempotent` retry
        redis_max_connections=settings.redis_max_connections,
        chroma_host=settings.chroma_host,
        chroma_port=settings.chroma_port,
        chroma_ssl=settings.chroma_ssl,
        chroma_tenant=settings.chroma_tenant,
        chroma_database=settings.chroma_database,
        chroma_auth_token=settings.chroma_auth_token.get_secret_value() if settings.chroma_auth_token else None,
        retry_budget_s=OPS_RETRY_BUDGET_S,
    )


def stack_clients(settings: Settings, **options: Any) -> StackClients:
    """StackClients from the ops Settings, with the ops retry policy (up to
    40 attempts within 30 s, backoff up to 2 s); `options` as for StackClients."""
    options.setdefault("policy", RetryPolicy(budget_s=OPS_RETRY_BUDGET_S, attempts=40, max_backoff_s=2.0))
    return StackClients(client_config(settings), appname="rpger-ops", **options)
