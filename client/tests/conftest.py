"""The client's tests run against real servers that someone else started.

tests/integration/test_stack_client.py (the repo's suite) starts FerretDB,
Chroma and a redis-server with the stack's ACL users, writes an env file in
the format of `rpger-ops dev`'s app.env (RPGer's variable names, credentials
inside the URLs) and runs this suite under Python 3.9 and the newest Python
with that file in RPGER_CLIENT_TEST_APP_ENV.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rpger_stack_client import StackClients


def read_env_file(path: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


@pytest.fixture(scope="session")
def app_env() -> dict[str, str]:
    path = os.environ.get("RPGER_CLIENT_TEST_APP_ENV")
    if not path:
        pytest.skip("RPGER_CLIENT_TEST_APP_ENV is not set (tests/integration/test_stack_client.py sets it)")
    return read_env_file(path)


@pytest.fixture
def clients(app_env: dict[str, str]) -> Iterator[StackClients]:
    c = StackClients.from_env(app_env)
    yield c
    c.close()


@pytest.fixture
def redis_clean(clients: StackClients) -> Iterator[None]:
    """The app user may not FLUSHDB: tests remove their own keys."""
    yield
    keys = clients.scan_keys("*")
    if keys:
        clients.redis.delete(*keys)
