"""Benchmark: restore vs a raw bulk load of the same data, and empty -> preseeded.

    python bench/restore.py --scale 2000

Starts its own servers (rpger_ops.devservers: FerretDB, redis-server with AOF,
Chroma) in a temporary directory, so the numbers of one run share one machine
state. Per database:

  raw load     the generator's data written with the plain client, bulk:
               insert_many (1000/batch) + indexes / pipelined SET+PEXPIRE and
               the other native commands / collection.add in max-size batches
  load         Engine.restore of the backup set's dump (what a restore does)
  restore      restore_set end to end: sha256 + extract + load + digest check + marker
               + the pending-migrations check (nothing pending: the source is migrated)

Then three fresh servers (new data directories) and the time from "three empty
databases" to "preseeded and healthy" (preseed + health check).
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rpger_ops import devservers, migrate, testdata
from rpger_ops.connect import chroma_admin, chroma_client, mongo_client, redis_client
from rpger_ops.engines import build_engine
from rpger_ops.engines.base import ENGINE_NAMES, EngineName
from rpger_ops.health import check_all
from rpger_ops.preseed import preseed
from rpger_ops.restore import restore_set
from rpger_ops.settings import Settings, load_settings


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


class Stack:
    """Three servers on fresh data directories under `root`."""

    def __init__(self, root: Path, backup_dir: Path) -> None:
        self.servers: list[devservers.Server] = []
        password = secrets.token_urlsafe(18)
        started = time.perf_counter()
        ferret = self._keep(devservers.start_ferretdb(root / "ferretdb"))
        redis = self._keep(devservers.start_redis(root / "redis", password))
        chroma = self._keep(devservers.start_chroma(root / "chroma"))
        self.start_seconds = time.perf_counter() - started
        self.settings: Settings = load_settings(
            _env_file=None, MONGODB_URI=f"mongodb://{ferret.host}:{ferret.port}/", MONGODB_DATABASE="rpger",
            REDIS_URL=f"redis://{redis.host}:{redis.port}/0", REDIS_PASSWORD=password,
            CHROMA_HOST=chroma.host, CHROMA_PORT=chroma.port, RPGER_BACKUP_DIR=str(backup_dir),
            RPGER_STACK_ID="bench")

    def _keep(self, server: devservers.Server) -> devservers.Server:
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


# --- raw bulk loads (the baselines) ----------------------------------------------------

def raw_load_mongo(settings: Settings, docs: dict[str, list[dict[str, Any]]]) -> int:
    client = mongo_client(settings)
    db = client[settings.mongodb_database]
    n = 0
    for name, documents in docs.items():
        for keys, unique in testdata.MONGO_INDEXES.get(name, []):
            db[name].create_index(keys, unique=unique)
        for start in range(0, len(documents), 1000):
            db[name].insert_many(documents[start:start + 1000], ordered=False)
        n += len(documents)
    client.close()
    return n


def bulk_cache_keys(count: int, seed: int = 11) -> list[tuple[str, str, int | None]]:
    """Extra string keys (JSON values, most with a TTL), like RPGer's caches at scale."""
    rnd = random.Random(seed)
    return [(f"cache:entity:{i}", json.dumps({"id": i, "payload": "x" * rnd.randrange(50, 400)}),
             rnd.choice([None, 3_600_000, 86_400_000])) for i in range(count)]


def raw_load_redis(settings: Settings, scale: int, cache: list[tuple[str, str, int | None]]) -> int:
    report = testdata.load_redis(settings, scale=scale)
    r = redis_client(settings)
    pipe = r.pipeline(transaction=False)
    for i, (key, value, ttl_ms) in enumerate(cache, 1):
        pipe.set(key, value)
        if ttl_ms:
            pipe.pexpire(key, ttl_ms)
        if i % 1000 == 0:
            pipe.execute()
    pipe.execute()
    r.close()
    return report.redis_keys + len(cache)


def chroma_records(scale: int, seed: int = 7) -> dict[str, tuple[list[str], list[list[float]], list[str], list[Any]]]:
    out = {}
    for ci, name in enumerate(testdata.CHROMA_COLLECTIONS):
        n = scale if name in testdata.REFERENCE_COLLECTIONS else max(2, scale // 5)
        entity = name[:-1] if name.endswith("s") else name
        out[name] = ([f"{entity}_{i}_0" for i in range(n)], testdata.embeddings(n, seed * 100 + ci),
                     [f"{name} document {i}" for i in range(n)],
                     [{f"{entity}_id": f"{entity}-{i}", "content_index": 0, "name": f"{entity} {i}"}
                      for i in range(n)])
    return out


def raw_load_chroma(settings: Settings, records: dict[str, Any]) -> int:
    client = chroma_client(settings)
    batch = client.get_max_batch_size()
    n = 0
    for name, (ids, vecs, docs, metas) in records.items():
        coll = client.create_collection(name, metadata={"rpger_entity": name},
                                        configuration={"hnsw": {"space": "cosine"}}, embedding_function=None)
        for s in range(0, len(ids), batch):
            coll.add(ids=ids[s:s + batch], embeddings=vecs[s:s + batch], documents=docs[s:s + batch],
                     metadatas=metas[s:s + batch])
        n += len(ids)
    return n


def ensure_chroma_database(settings: Settings) -> None:
    admin = chroma_admin(settings)
    try:
        admin.get_database(settings.chroma_database, tenant=settings.chroma_tenant)
    except Exception:
        admin.create_database(settings.chroma_database, tenant=settings.chroma_tenant)


def wipe(settings: Settings, name: EngineName) -> None:
    engine = build_engine(name, settings)
    engine.wipe()
    engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1000, help="documents per reference collection (default 1000)")
    parser.add_argument("--redis-keys", type=int, default=None, help="extra cache keys (default 20 x scale)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    redis_keys = args.redis_keys if args.redis_keys is not None else 20 * args.scale

    from rpger_ops.backup import take_backup_set

    with tempfile.TemporaryDirectory(prefix="rpger-bench-restore-") as tmp:
        root = Path(tmp)
        source = Stack(root / "source", root / "backups")
        results: dict[str, Any] = {"scale": args.scale, "redis_extra_keys": redis_keys, "databases": {}}
        try:
            s = source.settings
            ensure_chroma_database(s)
            docs = testdata.mongo_documents(args.scale)
            cache = bulk_cache_keys(redis_keys)
            records = chroma_records(args.scale)
            baselines = {
                "mongo": timed(lambda: raw_load_mongo(s, docs)),
                "redis": timed(lambda: raw_load_redis(s, args.scale, cache)),
                "chroma": timed(lambda: raw_load_chroma(s, records)),
            }
            # A live stack is migrated: the restores below then have nothing pending.
            migrate.apply_pending(s)
            backup_s, set_id = timed(lambda: take_backup_set(s, kind="manual", offsite=False))
            results["backup_seconds"] = backup_s
            for name in ENGINE_NAMES:
                wipe(s, name)
                total_s, report = timed(lambda n=name: restore_set(s, set_id, [n]))
                d = report.databases[name]
                assert d.ok, d.summary()
                raw_s, items = baselines[name]
                results["databases"][name] = {"items": items, "raw_load_s": raw_s, "load_s": d.seconds,
                                              "digest_s": d.digest_seconds, "restore_s": total_s}
        finally:
            source.stop()

        fresh = Stack(root / "fresh", root / "backups")
        try:
            ensure_chroma_database(fresh.settings)
            preseed_s, report = timed(lambda: preseed(fresh.settings))
            health_s, health = timed(lambda: check_all(fresh.settings))
            assert report.ok and all(d.action == "restored" for d in report.databases.values()), report.lines()
            assert all(h.up for h in health.values())
            results["fresh_start_s"] = fresh.start_seconds
            results["preseed_s"] = preseed_s
            results["health_s"] = health_s
        finally:
            fresh.stop()

    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def print_table(r: dict[str, Any]) -> None:
    print(f"\nrestore benchmark: scale {r['scale']} (+{r['redis_extra_keys']} redis cache keys); "
          f"backup of all three took {r['backup_seconds']:.2f}s\n")
    print(f"| {'database':<8} | {'items':>7} | {'raw load s':>10} | {'load s':>7} | {'digest s':>8} | "
          f"{'restore s':>9} | {'load/raw':>8} | {'restore/raw':>11} |")
    print(f"|{'-' * 10}|{'-' * 9}|{'-' * 12}|{'-' * 9}|{'-' * 10}|{'-' * 11}|{'-' * 10}|{'-' * 13}|")
    for name, d in r["databases"].items():
        print(f"| {name:<8} | {d['items']:>7} | {d['raw_load_s']:>10.2f} | {d['load_s']:>7.2f} | "
              f"{d['digest_s']:>8.2f} | {d['restore_s']:>9.2f} | {d['load_s'] / d['raw_load_s']:>8.2f} | "
              f"{d['restore_s'] / d['raw_load_s']:>11.2f} |")
    total = r["preseed_s"] + r["health_s"]
    print(f"\nthree empty databases -> preseeded and healthy: {total:.2f}s "
          f"(preseed {r['preseed_s']:.2f}s incl. digest checks, health {r['health_s']:.2f}s; "
          f"starting the three fresh servers took {r['fresh_start_s']:.2f}s before that)")


if __name__ == "__main__":
    sys.exit(main())
