"""Plain client constructors from Settings, shared by engines, test data and tools.

The app-facing pooled, retrying clients build on these (see `clients.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import chromadb.api
    import pymongo
    import redis

    from rpger_ops.settings import Settings


def mongo_client(settings: Settings, **overrides: Any) -> pymongo.MongoClient[dict[str, Any]]:
    import pymongo
    from bson.codec_options import DatetimeConversion

    kw: dict[str, Any] = {
        "maxPoolSize": settings.mongodb_max_pool_size,
        "minPoolSize": min(settings.mongodb_min_pool_size, settings.mongodb_max_pool_size),
        "maxIdleTimeMS": settings.mongodb_max_idle_time_ms,
        "connectTimeoutMS": settings.mongodb_connect_timeout_ms,
        "socketTimeoutMS": settings.mongodb_socket_timeout_ms,
        "serverSelectionTimeoutMS": settings.mongodb_server_selection_timeout_ms,
        "tz_aware": True,
        # Dates outside Python's datetime range must survive a dump/restore.
        "datetime_conversion": DatetimeConversion.DATETIME_AUTO,
        "appname": "rpger-ops",
    }
    kw.update(overrides)
    return pymongo.MongoClient(settings.mongo_client_uri(), **kw)


def redis_client(settings: Settings, db: int | None = None, **overrides: Any) -> redis.Redis:
    import redis

    kw = settings.redis_client_kwargs()
    kw.update(overrides)
    client = redis.Redis.from_url(settings.redis_url.get_secret_value(), **kw)
    if db is not None:
        # from_url lets the URL's "/<db>" win over db=; an explicit db must win.
        client.connection_pool.connection_kwargs["db"] = db
    return client


def chroma_client(settings: Settings, database: str | None = None, tenant: str | None = None) -> chromadb.api.ClientAPI:
    import chromadb

    headers = None
    if settings.chroma_auth_token is not None:
        headers = {"Authorization": f"Bearer {settings.chroma_auth_token.get_secret_value()}"}
    return chromadb.HttpClient(
        host=settings.chroma_host,
        port=settings.chroma_port,
        ssl=settings.chroma_ssl,
        headers=headers,
        tenant=tenant or settings.chroma_tenant,
        database=database or settings.chroma_database,
        settings=chromadb.Settings(anonymized_telemetry=False),
    )


def chroma_admin(settings: Settings) -> chromadb.api.AdminAPI:
    import chromadb

    headers = None
    if settings.chroma_auth_token is not None:
        headers = {"Authorization": f"Bearer {settings.chroma_auth_token.get_secret_value()}"}
    return chromadb.AdminClient(chromadb.Settings(
        chroma_api_impl="chromadb.api.fastapi.FastAPI",
        chroma_server_host=settings.chroma_host,
        chroma_server_http_port=settings.chroma_port,
        chroma_server_ssl_enabled=settings.chroma_ssl,
        chroma_server_headers=headers,
        anonymized_telemetry=False,
    ))
