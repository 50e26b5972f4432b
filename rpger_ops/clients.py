"""Pooled, retrying clients for the RPGer backend (and the ops layer's own use).

    from rpger_ops.clients import StackClients
    clients = StackClients.from_env()           # same variables as the RPGer backend
    doc = clients.read(lambda: clients.mongo_db["campaigns"].find_one({"name": n}))
    clients.redis.set("k", "v")                 # plain calls are not retried
    clients.write_idempotent(lambda: clients.redis.set("game:state:environment", s))

Retries (tenacity: exponential backoff with jitter, bounded in attempts and
time) cover transient errors only — connection refused/reset, timeouts, a
primary stepping down, a server still loading — and only for operations the
caller declares idempotent (`read`, `write_idempotent`). A non-idempotent
write (INCR, LPUSH, insert without a fixed _id) is never retried blindly:
after a dropped connection nobody knows whether it was applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

from rpger_ops.connect import chroma_client, mongo_client
from rpger_ops.settings import Settings, load_settings

if TYPE_CHECKING:
    import chromadb.api
    import pymongo
    import pymongo.database
    import redis

T = TypeVar("T")


def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors after which the same idempotent call may succeed."""
    import httpx
    import pymongo.errors
    import redis.exceptions

    return (
        pymongo.errors.AutoReconnect,  # includes NotPrimaryError, NetworkTimeout, ServerSelectionTimeoutError
        pymongo.errors.ConnectionFailure,
        redis.exceptions.ConnectionError,  # includes BusyLoadingError
        redis.exceptions.TimeoutError,
        httpx.TransportError,  # ConnectError, ReadError, RemoteProtocolError, timeouts
        ConnectionError,
        TimeoutError,
    )


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, transient_errors()):
        return True
    # Chroma wraps some server-side failures; a 5xx while the server restarts is transient.
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int) and status in (502, 503, 504):
        return True
    has_label = getattr(exc, "has_error_label", None)
    return bool(has_label and has_label("RetryableWriteError"))


@dataclass
class RetryPolicy:
    attempts: int = 40
    initial_s: float = 0.05
    max_backoff_s: float = 2.0
    total_s: float = 30.0

    def retrying(self, on_retry: Callable[[tenacity.RetryCallState], None] | None = None) -> tenacity.Retrying:
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(_is_transient),
            wait=tenacity.wait_random_exponential(multiplier=self.initial_s, max=self.max_backoff_s),
            stop=tenacity.stop_after_attempt(self.attempts) | tenacity.stop_after_delay(self.total_s),
            reraise=True,
            before_sleep=on_retry,
        )


@dataclass
class RetryStats:
    retries: int = 0
    last_error: str = ""


@dataclass
class StackClients:
    """One pooled client per database, built lazily from Settings."""

    settings: Settings
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    stats: RetryStats = field(default_factory=RetryStats)
    _mongo: Any = None
    _redis: Any = None
    _chroma: Any = None

    @classmethod
    def from_env(cls, **overrides: Any) -> StackClients:
        return cls(load_settings(**overrides))

    # --- the clients -----------------------------------------------------------
    @property
    def mongo(self) -> pymongo.MongoClient[dict[str, Any]]:
        if self._mongo is None:
            # pymongo pools connections and already retries one read/write on
            # replica-set failover (retryReads/retryWrites); we add bounded
            # backoff on top for idempotent calls via `read`/`write_idempotent`.
            self._mongo = mongo_client(self.settings, retryReads=True, retryWrites=True)
        return self._mongo  # type: ignore[no-any-return]

    @property
    def mongo_db(self) -> pymongo.database.Database[dict[str, Any]]:
        return self.mongo[self.settings.mongodb_database]

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            import redis as redis_lib

            s = self.settings
            pool = redis_lib.ConnectionPool.from_url(
                s.redis_url.get_secret_value(), max_connections=s.redis_max_connections,
                health_check_interval=30, **s.redis_client_kwargs(),
            )
            # No built-in command retry: redis-py would replay any command,
            # including non-idempotent ones. Idempotent callers use `read`/
            # `write_idempotent`.
            self._redis = redis_lib.Redis(connection_pool=pool, retry_on_timeout=False)
        return self._redis  # type: ignore[no-any-return]

    @property
    def chroma(self) -> chromadb.api.ClientAPI:
        if self._chroma is None:
            # The HttpClient talks to the server when built; build it under retry.
            self._chroma = self._retry(lambda: chroma_client(self.settings))
        return self._chroma  # type: ignore[no-any-return]

    # --- retrying calls ---------------------------------------------------------
    def _on_retry(self, state: tenacity.RetryCallState) -> None:
        self.stats.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        self.stats.last_error = f"{type(exc).__name__}" if exc else ""

    def _retry(self, fn: Callable[[], T]) -> T:
        return self.policy.retrying(self._on_retry)(fn)

    def read(self, fn: Callable[[], T]) -> T:
        """Run a read, retrying transient errors with backoff and jitter."""
        return self._retry(fn)

    def write_idempotent(self, fn: Callable[[], T]) -> T:
        """Run a write that is safe to apply twice (SET, upsert by _id, replace,
        Chroma upsert), retrying transient errors."""
        return self._retry(fn)

    # --- health -----------------------------------------------------------------
    def health(self) -> dict[str, dict[str, Any]]:
        """Up/down, latency and version of each database; never raises."""
        out: dict[str, dict[str, Any]] = {}
        checks: dict[str, Callable[[], str]] = {
            "mongo": lambda: str(self.mongo.admin.command("buildInfo").get("version", "")),
            "redis": self._redis_version,
            "chroma": lambda: str(self.chroma.get_version()),
        }
        for name, check in checks.items():
            t0 = time.perf_counter()
            try:
                version = check()
                out[name] = {"up": True, "version": version, "latency_ms": round((time.perf_counter() - t0) * 1000, 2)}
            except Exception as exc:
                out[name] = {"up": False, "error": type(exc).__name__,
                             "latency_ms": round((time.perf_counter() - t0) * 1000, 2)}
        return out

    def _redis_version(self) -> str:
        import redis as redis_lib

        try:
            return str(self.redis.info("server").get("redis_version", ""))
        except redis_lib.exceptions.NoPermissionError:
            # The app's least-privilege user (rpger_app: no @dangerous) may not
            # run INFO: PING proves the server is up, the version stays unknown.
            self.redis.ping()
            return ""

    def close(self) -> None:
        if self._mongo is not None:
            self._mongo.close()
        if self._redis is not None:
            self._redis.close()
            self._redis.connection_pool.disconnect()
        self._mongo = self._redis = self._chroma = None
