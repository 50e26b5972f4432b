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
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Stack, bulk_cache_keys, load_cache_keys, ratio, run_child, timed, write_json  # noqa: E402

from rpger_ops import migrate, testdata  # noqa: E402
from rpger_ops.connect import chroma_client, mongo_client  # noqa: E402
from rpger_ops.engines import build_engine  # noqa: E402
from rpger_ops.engines.base import ENGINE_NAMES, EngineName  # noqa: E402
from rpger_ops.health import check_all  # noqa: E402
from rpger_ops.restore import restore_set  # noqa: E402
from rpger_ops.settings import Settings  # noqa: E402

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


def raw_load_redis(settings: Settings, scale: int, cache: list[tuple[str, str, int | None]]) -> int:
    report = testdata.load_redis(settings, scale=scale)
    load_cache_keys(settings, cache)
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
    # The server's request-size limit (413 at ~5.4k rows of 1536-d) is below its max batch size.
    batch = min(client.get_max_batch_size(), 1000)
    n = 0
    for name, (ids, vecs, docs, metas) in records.items():
        coll = client.create_collection(name, metadata={"rpger_entity": name},
                                        configuration={"hnsw": {"space": "cosine"}}, embedding_function=None)
        for s in range(0, len(ids), batch):
            coll.add(ids=ids[s:s + batch], embeddings=vecs[s:s + batch], documents=docs[s:s + batch],
                     metadatas=metas[s:s + batch])
        n += len(ids)
    return n


def wipe(settings: Settings, name: EngineName) -> None:
    engine = build_engine(name, settings)
    engine.wipe()
    engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1000, help="documents per reference collection (default 1000)")
    parser.add_argument("--redis-keys", type=int, default=None, help="extra cache keys (default 20 x scale)")
    parser.add_argument("--json", type=Path, help="also write the flat results here")
    args = parser.parse_args(argv)
    redis_keys = args.redis_keys if args.redis_keys is not None else 20 * args.scale

    from rpger_ops.pipeline import BackupPipeline
    from rpger_ops.sets import SetKind

    with tempfile.TemporaryDirectory(prefix="rpger-bench-restore-") as tmp:
        root = Path(tmp)
        source = Stack(root / "source", root / "backups")
        results: dict[str, Any] = {"scale": args.scale, "redis_extra_keys": redis_keys, "databases": {}}
        try:
            s = source.settings
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
            backup_s, outcome = timed(lambda: BackupPipeline(s).take_set(SetKind.MANUAL, offsite=False))
            assert outcome.complete, outcome.problems()
            set_id = outcome.set_id
            results["backup_seconds"] = backup_s
            for name in ENGINE_NAMES:
                wipe(s, name)
                total_s, report = timed(lambda n=name: restore_set(s, set_id, [n]))
                d = report.databases[name]
                assert d.ok, d.summary()
                raw_s, items = baselines[name]
                dump_mb = (outcome.backup_set.databases[name].dump_bytes or 0) / 1e6
                results["databases"][name] = {"items": items, "raw_load_s": raw_s, "load_s": d.seconds,
                                              "digest_s": d.digest_seconds, "restore_s": total_s,
                                              "dump_mb": round(dump_mb, 2),
                                              "items_per_s": round(items / total_s), "mb_per_s": round(dump_mb / total_s, 2)}
        finally:
            source.stop()

        fresh = Stack(root / "fresh", root / "backups")
        try:
            # The startup gate in a child process: its wall time and its own peak RSS.
            work = root / "work"
            work.mkdir()
            preseed_s, peak_mb, out = run_child(fresh.settings, "preseed", "--json", "--timeout", "60", cwd=work)
            report = json.loads(out)
            health_s, health = timed(lambda: check_all(fresh.settings))
            assert report["ok"] and all(d["action"] == "restored" for d in report["databases"].values()), report
            assert all(h.up for h in health.values())
            results["fresh_start_s"] = fresh.start_seconds
            results["preseed_s"] = preseed_s
            results["health_s"] = health_s
            results["restore_peak_rss_mb"] = peak_mb
        finally:
            fresh.stop()

    print_table(results)
    if args.json:
        write_json(args.json, flat_results(results))
    return 0


def flat_results(r: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {k: v for k, v in r.items() if not isinstance(v, dict)}
    for name, d in r["databases"].items():
        flat.update({f"{name}_{k}": round(v, 3) if isinstance(v, float) else v for k, v in d.items()})
        flat[f"{name}_restore_ratio"] = round(ratio(d["restore_s"], d["raw_load_s"]), 2)
        flat[f"{name}_load_ratio"] = round(ratio(d["load_s"], d["raw_load_s"]), 2)
    raw_sum = sum(d["raw_load_s"] for d in r["databases"].values())
    flat["rto_s"] = round(r["preseed_s"] + r["health_s"], 2)
    flat["raw_loads_sum_s"] = round(raw_sum, 2)
    flat["rto_vs_raw_sum"] = round(ratio(flat["rto_s"], raw_sum), 2)
    return flat


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
    raw_sum = sum(d["raw_load_s"] for d in r["databases"].values())
    print(f"\nthree empty databases -> preseeded and healthy (RTO): {total:.2f}s = {ratio(total, raw_sum):.2f}x the "
          f"sum of the raw loads ({raw_sum:.2f}s); preseed {r['preseed_s']:.2f}s incl. digest checks "
          f"(peak RSS {r['restore_peak_rss_mb']} MB), health {r['health_s']:.2f}s; starting the three fresh "
          f"servers took {r['fresh_start_s']:.2f}s before that")


if __name__ == "__main__":
    sys.exit(main())
