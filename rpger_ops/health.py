"""Health of the three databases: ping each, never raise."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from rpger_ops.engines import ENGINE_NAMES, build_engine
from rpger_ops.engines.base import EngineName
from rpger_ops.settings import Settings


@dataclass(frozen=True)
class DatabaseHealth:
    name: EngineName
    up: bool
    latency_ms: float | None
    server_version: str | None
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def check_database(name: EngineName, settings: Settings) -> DatabaseHealth:
    t0 = time.perf_counter()
    engine = None
    try:
        engine = build_engine(name, settings)
        ping = engine.ping()
        return DatabaseHealth(name, True, round(ping.latency_ms, 2), ping.server_version)
    except Exception as exc:  # health reports, it does not raise
        return DatabaseHealth(name, False, round((time.perf_counter() - t0) * 1000, 2), None,
                              f"{type(exc).__name__}: {exc}"[:300])
    finally:
        if engine is not None:
            engine.close()


def check_all(settings: Settings) -> dict[EngineName, DatabaseHealth]:
    return {name: check_database(name, settings) for name in ENGINE_NAMES}
