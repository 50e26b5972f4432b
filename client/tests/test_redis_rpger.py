"""RPGer's own Redis call patterns, as the stack's app user `rpger_app`.

The patterns are those of RPGer's backend (RedisInterface; the /api/health
and /api/status routes) and of its Node server (DashboardService,
VectorService), written here with redis-py as they call it.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
import redis

from rpger_stack_client import StackClients

pytestmark = pytest.mark.usefixtures("redis_clean")


def _parts(app_env: dict[str, str]) -> tuple[str, int, str, str]:
    u = urlsplit(app_env["REDIS_URL"])
    assert u.hostname and u.port and u.username and u.password
    return u.hostname, u.port, u.username, u.password


def test_redis_interface_without_a_password_falls_back_silently(app_env: dict[str, str]) -> None:
    """RedisInterface(host, port, db) has no password parameter: against the
    stack (auth everywhere) its ping fails with an AuthenticationError, which
    redis-py makes a ConnectionError — exactly what RedisInterface catches
    before switching to its in-memory store without a word."""
    host, port, _, _ = _parts(app_env)
    r = redis.Redis(host=host, port=port, db=0, decode_responses=True)
    with pytest.raises(redis.exceptions.ConnectionError) as err:
        r.ping()
    assert isinstance(err.value, redis.exceptions.AuthenticationError)
    r.close()


@pytest.mark.parametrize("how", ["redis_interface_with_credentials", "stack_clients"])
def test_game_state_and_conversation_memory(app_env: dict[str, str], clients: StackClients, how: str) -> None:
    host, port, user, password = _parts(app_env)
    r = (redis.Redis(host=host, port=port, db=0, username=user, password=password, decode_responses=True)
         if how == "redis_interface_with_credentials" else clients.redis)
    assert r.ping() is True
    characters = {"1": {"name": "Mira", "hp": {"current": 12, "maximum": 14}},
                  "2": {"name": "Thorn", "hp": {"current": 30, "maximum": 30}}}
    for cid, data in characters.items():
        r.set(f"game:state:characters:{cid}", json.dumps(data))
    r.set("game:state:environment", json.dumps({"location": "Tomb of Horrors", "creatures": []}))

    # get_game_state: KEYS on the character prefix, then GET each.
    keys = r.keys("game:state:characters:*")
    assert sorted(keys) == ["game:state:characters:1", "game:state:characters:2"]
    state = {k.split(":")[-1]: json.loads(r.get(k)) for k in keys}
    assert state == characters
    assert json.loads(r.get("game:state:environment"))["location"] == "Tomb of Horrors"
    assert sorted(clients.scan_keys("game:state:characters:*")) == sorted(keys)

    # update_character_hp: read-modify-write of the JSON document.
    mira = json.loads(r.get("game:state:characters:1"))
    mira["hp"]["current"] -= 5
    r.set("game:state:characters:1", json.dumps(mira))
    assert json.loads(r.get("game:state:characters:1"))["hp"]["current"] == 7

    # add_to_memory: TIME for the timestamp, LPUSH, LTRIM to the last 100.
    for i in range(130):
        ts = r.time()[0]
        r.lpush("memory:conversation", json.dumps({"timestamp": ts, "agent": "DMA", "content": f"turn {i}"}))
        r.ltrim("memory:conversation", 0, 99)
    assert r.llen("memory:conversation") == 100
    history = [json.loads(e) for e in r.lrange("memory:conversation", 0, 9)]
    assert [h["content"] for h in history[:2]] == ["turn 129", "turn 128"]
    assert isinstance(history[0]["timestamp"], int)


def test_status_and_health_routes(app_env: dict[str, str], clients: StackClients) -> None:
    """/api/status and /api/health: redis.from_url(REDIS_URL) (bytes), PING,
    INFO, DBSIZE, SCAN + TYPE."""
    clients.redis.set("game:state:environment", "{}")
    clients.redis.lpush("memory:conversation", "{}")
    clients.redis.set("dashboard:default:u1", "{}", ex=3600)
    r = redis.from_url(app_env["REDIS_URL"], socket_timeout=2, socket_connect_timeout=2, retry_on_timeout=True)
    assert r.ping() is True
    info = r.info()
    assert info["redis_version"] and "used_memory_human" in info and info["uptime_in_seconds"] >= 0
    assert r.dbsize() == 3
    key_types: dict[str, int] = {}
    for key in r.scan_iter("*"):
        t = r.type(key).decode("utf-8")
        key_types[t] = key_types.get(t, 0) + 1
    assert key_types == {"string": 2, "list": 1}
    r.close()


def test_node_server_caches(clients: StackClients) -> None:
    """DashboardService: JSON with EX 3600; VectorService: JSON arrays, KEYS."""
    r = clients.redis
    dashboard = {"_id": "d1", "userId": "u1", "isDefault": True, "widgets": []}
    assert r.set("dashboard:default:u1", json.dumps(dashboard), ex=3600) is True
    assert 3590 < r.ttl("dashboard:default:u1") <= 3600
    assert json.loads(r.get("dashboard:default:u1")) == dashboard
    items = [{"id": "owlbear", "vector": [0.1, 0.2, 0.3], "metadata": {"type": "monster"}}]
    r.set("vector:collection:monsters", json.dumps(items))
    r.set("vector:collection:spells", json.dumps([]))
    assert sorted(r.keys("vector:collection:*")) == ["vector:collection:monsters", "vector:collection:spells"]
    assert json.loads(r.get("vector:collection:monsters")) == items
    assert r.delete("dashboard:default:u1") == 1


@pytest.mark.parametrize("command", [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "appendonly"), ("CONFIG", "SET", "appendonly", "no"),
    ("ACL", "SETUSER", "rpger_app", "+@all"), ("ACL", "LIST"), ("MODULE", "LIST"), ("CLIENT", "KILL", "ID", "1"),
])
def test_the_app_user_cannot_administer(clients: StackClients, command: tuple[str, ...]) -> None:
    clients.redis.set("game:state:environment", "{}")
    with pytest.raises(redis.exceptions.NoPermissionError):
        clients.redis.execute_command(*command)
    assert clients.redis.get("game:state:environment") == "{}"
    assert clients.redis.acl_whoami() == "rpger_app"
