"""Failover: a read/write loop runs while each real server is restarted.

Idempotent reads never surface an error to the caller, latency during
recovery is bounded (and printed), and no acknowledged write is lost.
Each test starts its own server so restarting it disturbs nobody else.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rpger_ops import devservers
from rpger_ops.clients import StackClients, stack_clients
from rpger_ops.settings import load_settings

DOWNTIME_S = 1.0
MAX_CALL_LATENCY_S = 20.0


@dataclass
class LoopResult:
    acked: list[int] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)  # perf_counter of each ack
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    reads: int = 0


def run_loop(write: Callable[[int], Any], read: Callable[[int], Any], clients: StackClients,
             stop: threading.Event, result: LoopResult) -> None:
    i = 0
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            clients.write_idempotent(lambda i=i: write(i))  # type: ignore[misc]
            result.acked.append(i)
            result.acked_at.append(time.perf_counter())
            if result.acked:
                probe = result.acked[len(result.acked) // 2]
                assert clients.read(lambda p=probe: read(p)) is not None, f"acked write {probe} not readable"
                result.reads += 1
        except Exception as exc:  # any error reaching the caller fails the test
            result.errors.append(f"{type(exc).__name__}: {exc}")
        result.latencies.append(time.perf_counter() - t0)
        i += 1
        time.sleep(0.01)


def exercise(server: devservers.Server, clients: StackClients, write: Callable[[int], Any],
             read: Callable[[int], Any], verify: Callable[[list[int]], int],
             driver_absorbs: bool = False) -> LoopResult:
    """`driver_absorbs`: the driver itself may ride out a short outage (pymongo waits in
    server selection and retries once), so our retry counter may stay at zero."""
    result = LoopResult()
    old_pid = server.proc.pid if server.proc else None
    stop = threading.Event()
    t = threading.Thread(target=run_loop, args=(write, read, clients, stop, result), daemon=True)
    t.start()
    time.sleep(1.0)
    t_restart = time.perf_counter()
    server.restart(down_s=DOWNTIME_S)
    t_back = time.perf_counter()
    restart_s = t_back - t_restart
    # Run on until writes are acked after the restart (a loaded machine may need a few
    # seconds for the first call to get through), bounded so a dead loop still fails.
    deadline = time.perf_counter() + MAX_CALL_LATENCY_S
    while time.perf_counter() < deadline and sum(1 for a in list(result.acked_at) if a > t_back) < 3:
        time.sleep(0.2)
    stop.set()
    t.join(timeout=MAX_CALL_LATENCY_S + 10)
    assert not t.is_alive()
    worst = max(result.latencies)
    print(f"\n{server.name}: {len(result.acked)} acked writes, {result.reads} reads, "
          f"{clients.stats.retries} retries, restart took {restart_s:.2f}s, worst call {worst:.2f}s")
    assert result.errors == [], result.errors[:3]
    # The loop really ran across a real restart: a new process, writes acked before and after.
    assert server.proc is not None and server.proc.pid != old_pid
    assert any(t < t_restart for t in result.acked_at) and any(t > t_back for t in result.acked_at)
    if not driver_absorbs:
        assert clients.stats.retries > 0, "the restart was not noticed: the test did not exercise failover"
    assert worst < MAX_CALL_LATENCY_S
    assert verify(result.acked) == len(result.acked), "acknowledged writes were lost"
    return result


def test_mongo_restart(tmp_path: Path) -> None:
    server = devservers.start_ferretdb(tmp_path / "ferretdb")
    clients = stack_clients(load_settings(_env_file=None, MONGODB_URI=f"mongodb://127.0.0.1:{server.port}/",
                                         MONGODB_SERVER_SELECTION_TIMEOUT_MS=2000))
    coll = clients.mongo_db["campaigns"]
    try:
        exercise(
            server, clients,
            write=lambda i: coll.replace_one({"_id": i}, {"_id": i, "name": f"c{i}"}, upsert=True),
            read=lambda i: coll.find_one({"_id": i}),
            verify=lambda acked: coll.count_documents({"_id": {"$in": acked}}),
            driver_absorbs=True,
        )
    finally:
        clients.close()
        server.stop()


def test_redis_restart(tmp_path: Path) -> None:
    password = secrets.token_urlsafe(12)
    server = devservers.start_redis(tmp_path / "redis", password)
    clients = stack_clients(load_settings(_env_file=None, REDIS_URL=f"redis://127.0.0.1:{server.port}/0",
                                         REDIS_PASSWORD=password, REDIS_SOCKET_TIMEOUT="2"))
    r = clients.redis
    try:
        exercise(
            server, clients,
            write=lambda i: r.set(f"game:state:characters:{i}", i),
            read=lambda i: r.get(f"game:state:characters:{i}"),
            verify=lambda acked: sum(r.exists(f"game:state:characters:{i}") for i in acked),
        )
    finally:
        clients.close()
        server.stop()


def test_chroma_restart(tmp_path: Path) -> None:
    server = devservers.start_chroma(tmp_path / "chroma")
    clients = stack_clients(load_settings(_env_file=None, CHROMA_HOST="127.0.0.1", CHROMA_PORT=server.port))
    coll = clients.chroma.get_or_create_collection("campaign_notes", embedding_function=None)
    try:
        exercise(
            server, clients,
            write=lambda i: coll.upsert(ids=[str(i)], embeddings=[[float(i), 1.0]], documents=[f"note {i}"]),
            read=lambda i: coll.get(ids=[str(i)])["ids"] or None,
            verify=lambda acked: len(coll.get(ids=[str(i) for i in acked])["ids"]),
        )
    finally:
        clients.close()
        server.stop()


def test_non_idempotent_writes_are_not_retried(tmp_path: Path) -> None:
    password = secrets.token_urlsafe(12)
    server = devservers.start_redis(tmp_path / "redis", password)
    clients = stack_clients(load_settings(_env_file=None, REDIS_URL=f"redis://127.0.0.1:{server.port}/0",
                                         REDIS_PASSWORD=password))
    try:
        clients.redis.incr("counter")
        server.stop()
        import redis

        with pytest.raises(redis.exceptions.ConnectionError):
            clients.redis.incr("counter")  # a plain call surfaces the error: no blind replay
        assert clients.stats.retries == 0
    finally:
        clients.close()
        server.stop()


def test_health_summary(settings: Any) -> None:
    clients = stack_clients(settings)
    try:
        h = clients.health()
        assert set(h) == {"mongo", "redis", "chroma"}
        assert all(v["ok"] for v in h.values()), h
    finally:
        clients.close()
    down = stack_clients(load_settings(_env_file=None, MONGODB_URI="mongodb://127.0.0.1:1/",
                                      MONGODB_SERVER_SELECTION_TIMEOUT_MS=300,
                                      REDIS_URL="redis://127.0.0.1:1/0", CHROMA_HOST="127.0.0.1", CHROMA_PORT=1))
    down.policy.budget_s = 1
    h = down.health()
    assert not any(v["ok"] for v in h.values())
