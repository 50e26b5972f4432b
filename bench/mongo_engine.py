"""MongoEngine dump/restore against a raw pymongo baseline on the same server.

    python bench/mongo_engine.py --scale 2000            # a private FerretDB, removed afterwards
    python bench/mongo_engine.py --uri mongodb://...     # an existing server (uses a throwaway database)

Baselines are the least a dump/restore can do: read every collection with
find_raw_batches into one file; insert the raw documents single-threaded and
build the same indexes. Prints one JSON object. The machine's load shows up
directly in the numbers: compare runs taken back to back.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from rpger_ops import devservers, testdata
from rpger_ops.engines import _bson_dump as layout
from rpger_ops.engines.mongo import MongoEngine
from rpger_ops.settings import load_settings


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return round(time.perf_counter() - start, 3), out


def baseline_read(engine: MongoEngine, dest: Path) -> int:
    written = 0
    with (dest / "baseline.bson").open("wb") as fh:
        for name in engine.db.list_collection_names():
            for batch in engine.db[name].find_raw_batches({}, batch_size=engine.dump_batch_size):
                written += fh.write(batch)  # type: ignore[arg-type]
    return written


def baseline_load(engine: MongoEngine, dump_dir: Path, database: str) -> None:
    db = engine.client[database]
    raw: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)
    metas = layout.read_layout(dump_dir)
    for meta in metas:
        if meta.data_file is None:
            continue
        coll = db.get_collection(meta.name, codec_options=raw)
        for batch in layout.iter_batches(meta.data_file, engine.restore_batch_docs, engine.restore_batch_bytes):
            coll.insert_many([RawBSONDocument(d) for d in batch], ordered=False)  # type: ignore[misc]
    for meta in metas:
        specs = [{k: v for k, v in ix.items() if k != "v"} for ix in meta.indexes if ix["name"] != "_id_"]
        if specs:
            db.command("createIndexes", meta.name, indexes=specs)


def run(uri: str, scale: int, work: Path) -> dict[str, Any]:
    settings = load_settings(_env_file=None, MONGODB_URI=uri, MONGODB_DATABASE=f"bench_{uuid.uuid4().hex[:8]}")
    engine = MongoEngine(settings)
    baseline_db = settings.mongodb_database + "_baseline"
    try:
        load_s, report = timed(lambda: testdata.load_mongo(settings, scale=scale))
        out: dict[str, Any] = {"server": engine.ping().server_kind, "scale": scale,
                               "documents": sum(report.mongo_counts.values()), "load_s": load_s}
        out["baseline_read_s"], _ = timed(lambda: baseline_read(engine, work))
        dump_dir = work / "dump"
        out["dump_s"], result = timed(lambda: engine.dump(dump_dir))
        out["dump_bytes"] = result.bytes_written
        out["count_dump_s"], _ = timed(lambda: MongoEngine.count_dump(dump_dir))
        out["digest_s"], source_digest = timed(engine.digest)
        db_dir = dump_dir / settings.mongodb_database
        out["baseline_load_s"], _ = timed(lambda: baseline_load(engine, db_dir, baseline_db))
        with engine.scratch() as scratch:
            out["restore_s"], _ = timed(lambda: scratch.restore(dump_dir))
            out["restored_digest_equal"] = scratch.digest() == source_digest
        return out
    finally:
        engine.client.drop_database(baseline_db)
        engine.client.drop_database(settings.mongodb_database)
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=2000, help="testdata scale (2000 is about 12k documents)")
    parser.add_argument("--uri", help="an existing server instead of a private FerretDB")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mongo-bench-"))
    server = None
    try:
        uri = args.uri
        if not uri:
            server = devservers.start_ferretdb(work / "ferretdb")
            uri = f"mongodb://{server.host}:{server.port}/"
        print(json.dumps(run(uri, args.scale, work), indent=2))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
