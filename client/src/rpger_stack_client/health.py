"""Health of the three databases, and the body of RPGer's `/api/health`.

`check_all` pings the three databases at once (one thread each, no retries:
a health check reports the state now) and never raises. Each entry:

    {"ok": True,  "latency_ms": 1.7, "version": "8.1.3"}
    {"ok": False, "latency_ms": 2003.1, "error": "ServerSelectionTimeoutError: ..."}

Error texts carry no credentials.

In a Flask app (RPGer's route keeps its own extra fields around it):

    @app.route("/api/health")
    def health_check():
        body, status = api_health(clients)
        return jsonify(body), status
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from rpger_stack_client.clients import StackClients

# RPGer's /api/health names the services "mongodb", "redis", "chroma".
RPGER_SERVICE_NAMES = {"mongo": "mongodb", "redis": "redis", "chroma": "chroma"}

_CREDENTIALS = re.compile(r"(\w+://)[^@/\s]+@")


def safe_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return _CREDENTIALS.sub(r"\1***@", text)[:300]


def _mongo(clients: StackClients) -> str:
    info = clients.mongo.admin.command("buildInfo")
    return str(info.get("version", ""))


def _redis(clients: StackClients) -> str:
    import redis

    r = clients.redis
    try:
        info = r.info("server")
    except redis.exceptions.NoPermissionError:
        # A user without INFO (e.g. a stricter ACL than the stack's rpger_app):
        # PING still proves the server answers.
        r.ping()
        return ""
    return str(info.get("valkey_version") or info.get("redis_version") or "")


def _chroma(clients: StackClients) -> str:
    client = clients._chroma_client(retry=False)  # a health check does not retry
    client.heartbeat()
    return str(client.get_version())


CHECKS: dict[str, Callable[[StackClients], str]] = {"mongo": _mongo, "redis": _redis, "chroma": _chroma}


def _timed(check: Callable[[StackClients], str], clients: StackClients) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        version = check(clients)
        return {"ok": True, "latency_ms": round((time.perf_counter() - t0) * 1000, 2), "version": version}
    except Exception as exc:  # a health check reports, it does not raise
        return {"ok": False, "latency_ms": round((time.perf_counter() - t0) * 1000, 2), "error": safe_error(exc)}


def check_all(clients: StackClients) -> dict[str, dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="rpger-health") as pool:
        futures = {name: pool.submit(_timed, check, clients) for name, check in CHECKS.items()}
        return {name: f.result() for name, f in futures.items()}


def api_health(clients: StackClients, extra: dict[str, Any] | None = None) -> tuple[dict[str, Any], int]:
    """(body, HTTP status) in the shape of RPGer's `/api/health`: `status` is
    "ok" (200) when all three answer, else "degraded" (503); `services` has
    one entry per database with `status` "ok" or "error"."""
    services: dict[str, Any] = {}
    for name, h in check_all(clients).items():
        entry: dict[str, Any] = {"status": "ok" if h["ok"] else "error", "latency_ms": h["latency_ms"]}
        if h["ok"]:
            entry["version"] = h["version"] or "unknown"
        else:
            entry["error"] = h["error"]
        services[RPGER_SERVICE_NAMES[name]] = entry
    ok = all(s["status"] == "ok" for s in services.values())
    body: dict[str, Any] = {"status": "ok" if ok else "degraded", "timestamp": time.time(), **(extra or {}),
                            "services": services}
    return body, 200 if ok else 503
