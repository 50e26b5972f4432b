"""One lock holder for every lock the stack takes in its databases.

Restore, preseed and migrate each take a named lock inside the database(s)
they change (`Engine.acquire_lock`): a lock lives where the data lives, so
two hosts (or two containers) pointing at one database exclude each other.
Every lock has a TTL so that a killed holder frees it by itself; `LockHolder`
keeps a held lock alive with a heartbeat thread (renewing every ttl/3), so a
long load, digest or index build can never outlive it. If a renewal finds the
lock taken over, `lost` is set and `check()` raises: the holder stops before
its next step instead of working on without the lock.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from types import TracebackType

from rpger_ops.engines.base import Engine, EngineError, EngineName, Progress, no_progress

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 60.0
DEFAULT_WAIT_S = 10 * 60.0


class LockBusy(Exception):
    """Another live holder has the lock and did not release it in time."""


class LockLost(Exception):
    """A renewal found the lock held by someone else (it had expired: the
    heartbeat could not reach the database for a whole TTL)."""


def lock_owner(purpose: str) -> str:
    return f"{purpose}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LockHolder:
    """Hold lock `name` in every engine of `engines` (taken in name order, so two
    holders never deadlock), waiting up to `wait_s` for each."""

    def __init__(self, engines: Mapping[EngineName, Engine], name: str, purpose: str, *,
                 ttl_s: float = DEFAULT_TTL_S, wait_s: float = DEFAULT_WAIT_S,
                 on_wait: Progress = no_progress, busy_message: str = "") -> None:
        self.engines = dict(sorted(engines.items()))
        self.name = name
        self.owner = lock_owner(purpose)
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.on_wait = on_wait
        self.busy_message = busy_message
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._held: list[EngineName] = []
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LockHolder:
        try:
            for db, engine in self.engines.items():
                self._acquire(db, engine)
                self._held.append(db)
        except BaseException:
            self._release()
            raise
        self._thread = threading.Thread(target=self._heartbeat, name=f"lock-{self.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._release()

    def check(self) -> None:
        """Raise LockLost when a renewal failed; call between steps."""
        if self.lost.is_set():
            raise LockLost(f"lost the {self.name} lock (taken over after it expired); stopped")

    def _acquire(self, db: str, engine: Engine) -> None:
        deadline = time.monotonic() + self.wait_s
        while not engine.acquire_lock(self.name, self.owner, self.ttl_s):
            if time.monotonic() >= deadline:
                raise LockBusy(self.busy_message or
                               f"{db}: another holder has the {self.name} lock; gave up after {self.wait_s:.0f}s "
                               f"(a holder that died frees it within {self.ttl_s:.0f}s)")
            self.on_wait(f"{db}: waiting for the {self.name} lock (another run holds it)", 0, None)
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            for db in self._held:
                try:
                    if not self.engines[db].acquire_lock(self.name, self.owner, self.ttl_s):
                        log.error("%s: the %s lock was taken over by another owner", db, self.name)
                        self.lost.set()
                except Exception as exc:  # a blip: keep trying until the lock really expires
                    log.warning("%s: renewing the %s lock failed (%s); retrying", db, self.name,
                                type(exc).__name__)

    def _release(self) -> None:
        for db in reversed(self._held):
            try:
                self.engines[db].release_lock(self.name, self.owner)
            except EngineError as exc:
                log.warning("%s: could not release the %s lock (it expires by itself): %s", db, self.name, exc)
        self._held.clear()
