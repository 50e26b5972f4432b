"""health() and the /api/health helper, with the databases up and down."""

from __future__ import annotations

import socket
import time

from rpger_stack_client import ClientConfig, StackClients, api_health


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_health_all_up(clients: StackClients) -> None:
    h = clients.health()
    assert set(h) == {"mongo", "redis", "chroma"}
    for name, entry in h.items():
        assert entry["ok"] is True, (name, entry)
        assert entry["version"], name  # the app user may run INFO: Redis reports its version
        assert entry["latency_ms"] >= 0
    body, status = api_health(clients, extra={"version": "1.0.0"})
    assert status == 200 and body["status"] == "ok" and body["version"] == "1.0.0"
    assert set(body["services"]) == {"mongodb", "redis", "chroma"}
    assert all(s["status"] == "ok" for s in body["services"].values())


def test_health_down_is_quick_and_names_no_secret() -> None:
    port = _closed_port()
    down = StackClients(ClientConfig.from_env({
        "MONGODB_URI": f"mongodb://rpger_app:hunter2hunter2@127.0.0.1:{port}/rpger",
        "MONGODB_SERVER_SELECTION_TIMEOUT_MS": "500",
        "REDIS_URL": f"redis://rpger_app:hunter2hunter2@127.0.0.1:{port}/0",
        "CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": str(port),
    }))
    t0 = time.monotonic()
    h = down.health()
    elapsed = time.monotonic() - t0
    assert not any(e["ok"] for e in h.values()), h
    assert all(e["error"] for e in h.values())
    assert "hunter2hunter2" not in repr(h)
    assert elapsed < 4, f"health took {elapsed:.1f}s: the three checks must run at once, without retries"
    body, status = api_health(down)
    assert status == 503 and body["status"] == "degraded"
    assert {s["status"] for s in body["services"].values()} == {"error"}
    down.close()


def test_one_database_down_degrades(app_env: dict[str, str]) -> None:
    env = dict(app_env, CHROMA_PORT=str(_closed_port()))
    with StackClients.from_env(env) as c:
        body, status = api_health(c)
    assert status == 503 and body["status"] == "degraded"
    assert body["services"]["chroma"]["status"] == "error"
    assert body["services"]["mongodb"]["status"] == "ok" and body["services"]["redis"]["status"] == "ok"
