"""The Redis engine's dump (snapshot, counts, digest) against `redis-cli --rdb` on one server.

    python bench/redis_digest.py --keys 100000 --rounds 3

Loads `--keys` cache strings with a one-hour TTL plus 5.5k hashes into a private redis-server,
then per round times: `RedisEngine.dump`, the archive check's `count_dump` (redis-check-rdb),
the RDB parse and digest alone, and `redis-cli --rdb` (the baseline: bytes copied, nothing
checked). Then the same with one stream added, which the parser leaves to a temporary server.
Prints one JSON object per round.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from rpger_ops.devservers import start_redis
from rpger_ops.engines._redis_rdb_digest import parse_rdb
from rpger_ops.engines.redis import RedisEngine, is_stack_state
from rpger_ops.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rpger-bench-redis-"))
    password = secrets.token_urlsafe(12)
    server = start_redis(root / "redis", password)
    try:
        client = redis.Redis(host=server.host, port=server.port, password=password)
        client.config_set("repl-diskless-sync-delay", 0)
        pipe = client.pipeline(transaction=False)
        for i in range(args.keys):
            pipe.set(f"cache:llm:{i:08x}", "x" * 40 + str(i), ex=3600)
        for i in range(5500):
            pipe.hset(f"session:{i}", mapping={"user": f"u{i}", "state": "active", "turn": i})
        pipe.execute()
        settings = load_settings(_env_file=None, REDIS_URL=f"redis://{server.host}:{server.port}/0",
                                 REDIS_PASSWORD=password, RPGER_BACKUP_DIR=str(root / "backups"))
        engine = RedisEngine(settings)
        cli_env = {**os.environ, "REDISCLI_AUTH": password}
        for label in ("no stream", "one stream"):
            if label == "one stream":
                client.xadd("events:dice", {"roll": "1d20"})
            for n in range(args.rounds):
                dest = root / f"dump-{label[0]}-{n}"
                dest.mkdir()
                t0 = time.perf_counter()
                engine.dump(dest)
                t1 = time.perf_counter()
                RedisEngine.count_dump(dest)
                t2 = time.perf_counter()
                parse_rdb(dest / "dump.rdb", engine.stack_dbs, is_stack_state)
                t3 = time.perf_counter()
                subprocess.run(["redis-cli", "-h", server.host, "-p", str(server.port), "--rdb",
                                str(dest / "cli.rdb")], env=cli_env, check=True, capture_output=True)
                t4 = time.perf_counter()
                print(json.dumps({"data": label, "keys": client.dbsize(), "dump_s": round(t1 - t0, 3),
                                  "check_rdb_s": round(t2 - t1, 3), "parse_digest_s": round(t3 - t2, 3),
                                  "redis_cli_rdb_s": round(t4 - t3, 3),
                                  "dump_vs_redis_cli": round((t1 - t0) / (t4 - t3), 2)}))
        engine.close()
        client.close()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
