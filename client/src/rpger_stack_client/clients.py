"""One pooled client per database, built lazily, for the RPGer backend.

    from rpger_stack_client import StackClients
    clients = StackClients.from_env()            # RPGer's variables (+ *_FILE)
    monster = clients.read(lambda: clients.mongo_db["monsters"].find_one({"name": "Owlbear"}))
    clients.redis.lpush("memory:conversation", entry)   # plain calls are never retried
    clients.write_idempotent(lambda: clients.redis.set("game:state:environment", state))

Create it once per process (e.g. at Flask start-up) and share it: the
clients are thread-safe and pool their connections.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import tenacity

from rpger_stack_client.config import ClientConfig
from rpger_stack_client.retry import RetryPolicy, RetryStats

if TYPE_CHECKING:
    import chromadb.api
    import pymongo
    import pymongo.database
    import redis

T = TypeVar("T")


class StackClients:
    """Lazily built pymongo, redis-py and Chroma HTTP clients.

    * Redis answers `str` (decode_responses) unless `decode_responses=False`.
    * Mongo datetimes are naive UTC (pymongo's default) unless `tz_aware=True`.
    * `read`/`write_idempotent` retry transient errors within `retry_budget_s`
      (default 2 s); anything else is called once: a non-idempotent write
      (LPUSH, INCR, insert without a fixed _id) is never replayed blindly.
    """

    def __init__(self, config: ClientConfig | None = None, *, decode_responses: bool | None = None,
                 tz_aware: bool | None = None, retry_budget_s: float | None = None,
                 policy: RetryPolicy | None = None, appname: str = "rpger") -> None:
        self.config = config or ClientConfig()
        if decode_responses is not None:
            self.config.redis_decode_responses = decode_responses
        if tz_aware is not None:
            self.config.mongodb_tz_aware = tz_aware
        self.policy = policy or RetryPolicy(
            budget_s=self.config.retry_budget_s if retry_budget_s is None else retry_budget_s)
        self.stats = RetryStats()
        self.appname = appname
        self._lock = threading.Lock()
        self._mongo: Any = None
        self._redis: Any = None
        self._chroma: Any = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> StackClients:
        """Settings from RPGer's environment variables; `options` are the
        constructor's keywords (decode_responses, tz_aware, retry_budget_s, ...)."""
        return cls(ClientConfig.from_env(environ), **options)

    def __enter__(self) -> StackClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StackClients({self.config!r})"

    # --- the clients -----------------------------------------------------------
    @property
    def mongo(self) -> pymongo.MongoClient[dict[str, Any]]:
        with self._lock:
            if self._mongo is None:
                import pymongo

                c = self.config
                # pymongo pools connections and retries one read/write itself
                # on a replica-set failover (retryReads/retryWrites).
                self._mongo = pymongo.MongoClient(
                    c.mongodb_uri,
                    tz_aware=c.mongodb_tz_aware,
                    maxPoolSize=c.mongodb_max_pool_size,
                    minPoolSize=c.mongodb_min_pool_size,
                    maxIdleTimeMS=c.mongodb_max_idle_time_ms,
                    connectTimeoutMS=c.mongodb_connect_timeout_ms,
                    socketTimeoutMS=c.mongodb_socket_timeout_ms,
                    serverSelectionTimeoutMS=c.mongodb_server_selection_timeout_ms,
                    retryReads=True,
                    retryWrites=True,
                    appname=self.appname,
                )
            return self._mongo  # type: ignore[no-any-return]

    @property
    def mongo_db(self) -> pymongo.database.Database[dict[str, Any]]:
        return self.mongo[self.config.database_name]

    @property
    def redis(self) -> redis.Redis:
        with self._lock:
            if self._redis is None:
                import redis as redis_lib
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                c = self.config
                # No hidden replays: redis-py >= 6 retries every command 3 times
                # by default; here only REDIS_RETRY_ON_TIMEOUT=true allows one
                # resend after a timeout (redis-py's own behaviour for it).
                retry = Retry(NoBackoff(), 1 if c.redis_retry_on_timeout else 0)
                pool = redis_lib.ConnectionPool.from_url(
                    c.redis_url,
                    max_connections=c.redis_max_connections,
                    socket_timeout=c.redis_socket_timeout,
                    socket_connect_timeout=c.redis_socket_connect_timeout,
                    retry_on_timeout=c.redis_retry_on_timeout,
                    retry=retry,
                    decode_responses=c.redis_decode_responses,
                    health_check_interval=30,
                )
                self._redis = redis_lib.Redis(connection_pool=pool)
            return self._redis  # type: ignore[no-any-return]

    @property
    def chroma(self) -> chromadb.api.ClientAPI:
        # The HTTP client talks to the server when it is built: under retry.
        return self._chroma_client(retry=True)

    def _chroma_client(self, retry: bool) -> chromadb.api.ClientAPI:
        if self._chroma is None:
            client = self._retry(self._new_chroma) if retry else self._new_chroma()
            with self._lock:
                if self._chroma is None:
                    self._chroma = client
        return self._chroma  # type: ignore[no-any-return]

    def _new_chroma(self) -> chromadb.api.ClientAPI:
        import chromadb

        c = self.config
        headers = {"Authorization": f"Bearer {c.chroma_auth_token}"} if c.chroma_auth_token else None
        return chromadb.HttpClient(
            host=c.chroma_host, port=c.chroma_port, ssl=c.chroma_ssl, headers=headers,
            tenant=c.chroma_tenant, database=c.chroma_database,
            settings=chromadb.Settings(anonymized_telemetry=False),
        )

    # --- retrying calls ---------------------------------------------------------
    def _on_retry(self, state: tenacity.RetryCallState) -> None:
        self.stats.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        self.stats.last_error = type(exc).__name__ if exc else ""

    def _retry(self, fn: Callable[[], T]) -> T:
        return self.policy.retrying(self._on_retry)(fn)

    def read(self, fn: Callable[[], T]) -> T:
        """Run a read, retrying transient errors within the retry budget."""
        return self._retry(fn)

    def write_idempotent(self, fn: Callable[[], T]) -> T:
        """Run a write that is safe to apply twice (SET, SET EX, upsert or
        replace by _id, Chroma upsert), retrying transient errors."""
        return self._retry(fn)

    # --- helpers ------------------------------------------------------------------
    def scan_keys(self, pattern: str = "*", count: int = 1000) -> list[Any]:
        """KEYS without blocking the server: SCAN in steps of `count`. Same keys
        as `redis.keys(pattern)` for a keyspace that does not change meanwhile."""
        return list(self.redis.scan_iter(match=pattern, count=count))

    def health(self) -> dict[str, dict[str, Any]]:
        """`{"mongo": {"ok": bool, ...}, "redis": {...}, "chroma": {...}}`; never raises."""
        from rpger_stack_client.health import check_all

        return check_all(self)

    def close(self) -> None:
        with self._lock:
            if self._mongo is not None:
                self._mongo.close()
            if self._redis is not None:
                self._redis.close()
                self._redis.connection_pool.disconnect()
            self._mongo = self._redis = self._chroma = None
