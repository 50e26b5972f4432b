"""Bounded retries for idempotent calls (tenacity: exponential backoff, full jitter).

Only transient errors are retried — connection refused/reset, timeouts, a
primary stepping down, a server still loading, a 502/503/504 from Chroma — and
only a retry that can START within the budget is made: with the default 2 s
budget a request handler waits at most about 2 s plus one attempt's own
timeout before it sees the error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import tenacity


def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors after which the same idempotent call may succeed."""
    import pymongo.errors
    import redis.exceptions

    errors: tuple[type[BaseException], ...] = (
        pymongo.errors.AutoReconnect,  # NotPrimaryError, NetworkTimeout, ServerSelectionTimeoutError
        pymongo.errors.ConnectionFailure,
        redis.exceptions.ConnectionError,  # BusyLoadingError too
        redis.exceptions.TimeoutError,
        ConnectionError,
        TimeoutError,
    )
    try:
        import httpx  # the Chroma client's transport
    except ImportError:  # pragma: no cover - chromadb-client always brings it
        return errors
    return errors + (httpx.TransportError,)


def is_transient(exc: BaseException) -> bool:
    import redis.exceptions

    if isinstance(exc, (redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError)):
        return False  # wrong credentials do not get better by trying again
    if isinstance(exc, transient_errors()):
        return True
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int) and status in (502, 503, 504):
        return True
    has_label = getattr(exc, "has_error_label", None)
    return bool(has_label and has_label("RetryableWriteError"))


@dataclass
class RetryPolicy:
    """`budget_s`: no retry starts later than this after the first attempt."""

    budget_s: float = 2.0
    attempts: int = 20
    initial_s: float = 0.05
    max_backoff_s: float = 0.5

    def retrying(self, on_retry: Callable[[tenacity.RetryCallState], None] | None = None) -> tenacity.Retrying:
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            wait=tenacity.wait_random_exponential(multiplier=self.initial_s, max=self.max_backoff_s),
            stop=tenacity.stop_after_attempt(self.attempts) | tenacity.stop_before_delay(self.budget_s),
            reraise=True,
            before_sleep=on_retry,
        )


@dataclass
class RetryStats:
    retries: int = 0
    last_error: str = ""
