"""Decoded strings, the per-call retry budget, and no hidden replays."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from rpger_stack_client import StackClients


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _down(budget: float | None = None) -> StackClients:
    env = {"REDIS_URL": f"redis://127.0.0.1:{_closed_port()}/0", "REDIS_SOCKET_CONNECT_TIMEOUT": "0.5"}
    return StackClients.from_env(env) if budget is None else StackClients.from_env(env, retry_budget_s=budget)


@pytest.mark.usefixtures("redis_clean")
def test_strings_by_default_bytes_on_request(app_env: dict[str, str], clients: StackClients) -> None:
    clients.redis.set("game:state:environment", '{"weather": "rain"}')
    assert clients.redis.get("game:state:environment") == '{"weather": "rain"}'
    with StackClients.from_env(app_env, decode_responses=False) as raw:
        assert raw.redis.get("game:state:environment") == b'{"weather": "rain"}'


@pytest.mark.parametrize("budget", [None, 0.3])
def test_idempotent_calls_give_up_within_the_budget(budget: float | None) -> None:
    c = _down(budget)
    limit = 2.0 if budget is None else budget
    t0 = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):
        c.read(lambda: c.redis.get("game:state:environment"))
    elapsed = time.monotonic() - t0
    assert c.stats.retries > 0, "transient errors are retried"
    assert elapsed < limit + 1.0, f"{elapsed:.2f}s for a budget of {limit}s"
    c.close()


class DroppingProxy:
    """A TCP proxy in front of the real Redis that forwards every byte but
    drops the client's connection right after forwarding an LPUSH: the push
    is applied, the client never hears so (the ambiguous case)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.lpushes = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            cut = threading.Event()
            threading.Thread(target=self._pipe, args=(server, client, cut, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(client, server, cut, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, cut: threading.Event, upstream: bool) -> None:
        try:
            while not cut.is_set():
                data = src.recv(65536)
                if not data or cut.is_set():
                    break
                if upstream and b"LPUSH" in data.upper():
                    cut.set()  # no reply goes back ...
                    self.lpushes += 1
                    dst.sendall(data)
                    time.sleep(0.2)  # ... while the server applies it
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.mark.usefixtures("redis_clean")
def test_plain_calls_are_never_replayed(app_env: dict[str, str], clients: StackClients) -> None:
    """A non-idempotent command that loses its connection is not sent again,
    neither by us nor by redis-py (whose `Redis(host=...)` default in >= 6
    resends it up to 10 times)."""
    u = urlsplit(app_env["REDIS_URL"])
    assert u.hostname and u.port
    proxy = DroppingProxy(u.hostname, u.port)
    via = urlunsplit((u.scheme, f"{u.username}:{u.password}@127.0.0.1:{proxy.port}", u.path, "", ""))
    with StackClients.from_env(dict(app_env, REDIS_URL=via)) as c:
        with pytest.raises(redis.exceptions.ConnectionError):
            c.redis.lpush("memory:conversation", '{"content": "once"}')
        assert c.stats.retries == 0
    assert proxy.lpushes == 1
    assert clients.redis.llen("memory:conversation") == 1
    proxy.sock.close()
    # Closed port: fails at once (no backoff hidden in the client).
    down = _down()
    t0 = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):
        down.redis.lpush("memory:conversation", "{}")
    assert time.monotonic() - t0 < 0.8
    down.close()


def test_wrong_credentials_are_not_retried(app_env: dict[str, str]) -> None:
    u = urlsplit(app_env["REDIS_URL"])
    wrong = urlunsplit((u.scheme, f"{u.username}:not-the-password@{u.hostname}:{u.port}", u.path, "", ""))
    with StackClients.from_env(dict(app_env, REDIS_URL=wrong)) as c:
        with pytest.raises(redis.exceptions.AuthenticationError):
            c.read(lambda: c.redis.get("x"))
        assert c.stats.retries == 0
