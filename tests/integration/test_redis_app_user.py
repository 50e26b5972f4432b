"""The stack's Redis users (compose/scripts/redis-acl.sh) on the real Debian
redis-server: the file loads, the app user `rpger_app` may run what RPGer
calls and nothing of the never-list, and the ops user keeps everything.

ACL DRYRUN (as the ops user) asks the server itself whether `rpger_app` may
run a command, so even SHUTDOWN is checked without being run. RPGer's actual
call patterns as the app user run in the client suite
(client/tests/test_redis_rpger.py via tests/integration/test_stack_client.py);
the same script runs on Valkey 8.1 in the compose e2e (tests/e2e).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rpger_ops import devservers
from tests.conftest import Endpoint, app_redis_url

# What RPGer's backend and Node server send (RedisInterface, /api/health,
# /api/status, DashboardService, VectorService), plus connection set-up.
RPGER_CALLS = [
    ("PING",), ("INFO",), ("INFO", "server"), ("DBSIZE",), ("KEYS", "game:state:characters:*"),
    ("SCAN", "0", "MATCH", "*", "COUNT", "100"), ("TYPE", "k"), ("TIME",), ("GET", "k"), ("SET", "k", "v"),
    ("SET", "dashboard:default:u1", "{}", "EX", "3600"), ("TTL", "k"), ("DEL", "k"),
    ("LPUSH", "memory:conversation", "{}"), ("LTRIM", "memory:conversation", "0", "99"),
    ("LRANGE", "memory:conversation", "0", "9"), ("LLEN", "memory:conversation"),
    ("SELECT", "0"), ("HELLO", "3"), ("CLIENT", "SETNAME", "rpger"), ("ACL", "WHOAMI"),
    ("SUBSCRIBE", "events"), ("PUBLISH", "events", "x"), ("EVAL", "return 1", "0"),
]
NEVER = [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "appendonly"), ("CONFIG", "SET", "appendonly", "no"),
    ("ACL", "SETUSER", "rpger_app", "+@all"), ("ACL", "LIST"), ("ACL", "DELUSER", "default"), ("ACL", "LOAD"),
    ("SHUTDOWN",), ("PSYNC", "?", "-1"), ("SYNC",), ("REPLCONF", "listening-port", "6380"),
    ("DEBUG", "SLEEP", "0"), ("MODULE", "LIST"), ("MONITOR",), ("REPLICAOF", "NO", "ONE"),
    ("SLAVEOF", "NO", "ONE"), ("FAILOVER",), ("SAVE",), ("BGSAVE",), ("BGREWRITEAOF",),
    ("CLIENT", "KILL", "ID", "1"), ("CLIENT", "LIST"), ("SWAPDB", "0", "1"), ("RESTORE", "k", "0", "x"),
]


@pytest.fixture(scope="module")
def acl_server(servers_root: Path) -> Iterator[Endpoint]:
    """One server for the read-only DRYRUN checks (they change nothing)."""
    password, app_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    server = devservers.start_redis(servers_root / "redis-acl-dryrun", password, app_password=app_password)
    yield Endpoint(server.host, server.port, server, dict(server.secrets))
    server.stop()


def _ops(endpoint: Endpoint) -> redis.Redis:
    return redis.Redis(host=endpoint.host, port=endpoint.port, password=endpoint.secrets["password"],
                       decode_responses=True)


def _dryrun(ops: redis.Redis, user: str, command: tuple[str, ...]) -> str:
    return str(ops.execute_command("ACL", "DRYRUN", user, *command))


@pytest.mark.parametrize("command", RPGER_CALLS, ids=" ".join)
def test_app_user_may_run_what_rpger_calls(acl_server: Endpoint, command: tuple[str, ...]) -> None:
    ops = _ops(acl_server)
    assert _dryrun(ops, "rpger_app", command) == "OK"
    ops.close()


@pytest.mark.parametrize("command", NEVER, ids=" ".join)
def test_app_user_may_never_run(acl_server: Endpoint, command: tuple[str, ...]) -> None:
    ops = _ops(acl_server)
    answer = _dryrun(ops, "rpger_app", command)
    assert "no permissions" in answer, f"rpger_app may run {' '.join(command)}: {answer}"
    assert _dryrun(ops, "default", command) == "OK", "the ops user must keep every command"
    ops.close()


def test_app_url_logs_in_as_the_app(redis_app_endpoint: Endpoint) -> None:
    app = redis.Redis.from_url(app_redis_url(redis_app_endpoint), decode_responses=True)
    assert app.acl_whoami() == "rpger_app"
    assert app.info("server")["redis_version"]
    assert app.set("game:state:environment", "{}") is True and app.keys("game:*") == ["game:state:environment"]
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.flushall()
    app.close()
    # The ops layer's settings (default user, password) still work as before.
    ops = _ops(redis_app_endpoint)
    assert ops.acl_whoami() == "default" and ops.dbsize() == 1
    ops.close()


def test_acl_file_holds_hashes_only_and_compose_uses_the_same_script(redis_app_endpoint: Endpoint) -> None:
    assert redis_app_endpoint.server is not None
    acl = (redis_app_endpoint.server.data_dir / "users.acl").read_text()
    assert [line.split()[1] for line in acl.splitlines()] == ["default", "rpger_app"]
    for secret in redis_app_endpoint.secrets.values():
        assert secret not in acl
    assert oct((redis_app_endpoint.server.data_dir / "users.acl").stat().st_mode & 0o777) == "0o600"
    entrypoint = (Path(devservers.REDIS_ACL_SCRIPT).parent / "redis-entrypoint.sh").read_text()
    # The built Valkey image carries this very script where the entrypoint runs it.
    assert "sh /usr/local/lib/rpger/redis-acl.sh /run/secrets/redis_password /run/secrets/redis_app_password" \
        in entrypoint
    dockerfile = (Path(devservers.REDIS_ACL_SCRIPT).parent.parent / "images" / "valkey" / "Dockerfile").read_text()
    copies = [line.split() for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert any("scripts/redis-acl.sh" in c and c[-1] == "/usr/local/lib/rpger/" for c in copies), copies
