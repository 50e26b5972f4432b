"""Fast pipelining of many same-shaped commands over a redis-py connection.

redis-py packs every command in Python one argument at a time, which made
packing, not the network, the bottleneck of restoring (DUMP/RESTORE of
100k keys). Here a batch is packed with one bytes formatting per command and
sent in one write; redis-py still owns the connection (auth, TLS, db
selection) and parses the replies.
"""

from __future__ import annotations

from typing import Any

import redis


def pack(*args: bytes) -> bytes:
    """One command in RESP: `*<n>` then `$<len>` + bytes per argument."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def run_packed(client: redis.Redis, packed: bytes, replies: int) -> list[Any]:
    """Send pre-packed commands and read `replies` replies. An error reply
    raises (after dropping the connection, whose later replies are unread)."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([packed], check_health=False)
        return [conn.read_response() for _ in range(replies)]
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
