"""Backup benchmark (not a test): our pipeline against plain baselines, measured in
the same run on the same data.

    /tmp/setup/venv/bin/python bench/backup.py --scale 2000

Starts its own servers (FerretDB, redis-server, Chroma) in a temporary folder,
loads RPGer-shaped data (rpger_ops.testdata) and prints one table:

- Mongo dump (engine) vs a raw pymongo full scan of the same collections;
- Redis backup (engine, replication-protocol RDB) vs `redis-cli --rdb`
  (password through REDISCLI_AUTH, never argv);
- Chroma export (engine, Parquet) vs copying its persist directory (a copy of
  live files is not a valid backup; it is only the I/O floor);
- zstd archive (our level) size and time vs `tar | gzip -6`, per database;
- Dagster overhead: `backup_all` in process vs the same plain functions.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from rpger_ops import devservers, testdata
from rpger_ops.archive import create_archive
from rpger_ops.backup import take_backup_set
from rpger_ops.connect import mongo_client
from rpger_ops.engines import build_engine
from rpger_ops.engines.base import EngineName
from rpger_ops.settings import Settings, _alias_of, load_settings

Row = tuple[str, str, str, str]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def ratio(ours: float, baseline: float) -> str:
    return f"{ours / baseline:.2f}x" if baseline > 0 else "n/a"


@contextmanager
def servers(root: Path) -> Iterator[tuple[Settings, dict[str, devservers.Server]]]:
    password = secrets.token_urlsafe(18)
    started: dict[str, devservers.Server] = {}
    try:
        started["mongo"] = devservers.start_ferretdb(root / "ferretdb")
        started["redis"] = devservers.start_redis(root / "redis", password)
        started["chroma"] = devservers.start_chroma(root / "chroma")
        m, r, c = started["mongo"], started["redis"], started["chroma"]
        settings = load_settings(
            _env_file=None, MONGODB_URI=f"mongodb://{m.host}:{m.port}/", MONGODB_DATABASE="rpger",
            REDIS_URL=f"redis://{r.host}:{r.port}/0", REDIS_PASSWORD=password,
            CHROMA_HOST=c.host, CHROMA_PORT=c.port, RPGER_BACKUP_DIR=str(root / "backups"),
            RPGER_STACK_ID="bench",
        )
        yield settings, started
    finally:
        for server in started.values():
            server.stop()


def export_env(settings: Settings) -> None:
    """Dagster resources read the environment: make it say exactly `settings`."""
    for name in Settings.model_fields:
        value = getattr(settings, name)
        alias = _alias_of(name)
        os.environ.pop(alias + "_FILE", None)
        if value is None:
            os.environ.pop(alias, None)
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        os.environ[alias] = ("true" if value else "false") if isinstance(value, bool) else str(value)


def dump_with_engine(settings: Settings, db: EngineName, dest: Path) -> tuple[float, int]:
    dest.mkdir(parents=True)
    engine = build_engine(db, settings)
    try:
        seconds, result = timed(lambda: engine.dump(dest))
    finally:
        engine.close()
    return seconds, sum(result.counts.values())


def mongo_scan(settings: Settings) -> int:
    from bson.raw_bson import RawBSONDocument

    client = mongo_client(settings, document_class=RawBSONDocument)
    try:
        db = client[settings.mongodb_database]
        return sum(1 for name in db.list_collection_names() for _ in db[name].find({}, batch_size=1000))
    finally:
        client.close()


def redis_cli_rdb(settings: Settings, server: devservers.Server, dest: Path) -> None:
    assert settings.redis_password is not None
    env = {**os.environ, "REDISCLI_AUTH": settings.redis_password.get_secret_value()}
    subprocess.run(["redis-cli", "-h", server.host, "-p", str(server.port), "--rdb", str(dest)],
                   env=env, check=True, capture_output=True)


def tar_gzip(src: Path, dest: Path) -> None:
    with open(dest, "wb") as out:
        tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(src), "."], stdout=subprocess.PIPE)
        subprocess.run(["gzip", "-6"], stdin=tar.stdout, stdout=out, check=True)
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0:
            raise RuntimeError("tar failed")


def run(scale: int, root: Path) -> list[Row]:
    rows: list[Row] = []
    with servers(root) as (settings, started):
        print(f"loading RPGer-shaped data at scale {scale} ...", file=sys.stderr)
        load_s, report = timed(lambda: testdata.load_all(settings, scale=scale))
        total_chroma = sum(report.chroma_counts.values())
        print(f"loaded in {load_s:.1f}s: mongo {sum(report.mongo_counts.values())} docs, "
              f"redis {report.redis_keys} keys, chroma {total_chroma} records", file=sys.stderr)
        work = root / "work"

        # Dumps vs native baselines.
        dumps: dict[str, Path] = {}
        for db in ("mongo", "redis", "chroma"):
            dumps[db] = work / f"{db}-dump"
        ours, items = dump_with_engine(settings, "mongo", dumps["mongo"])
        base, scanned = timed(lambda: mongo_scan(settings))
        rows.append((f"Mongo dump ({items} docs)", f"{ours:.2f}s", f"pymongo full scan {base:.2f}s ({scanned})",
                     ratio(ours, base)))
        ours, items = dump_with_engine(settings, "redis", dumps["redis"])
        base, _ = timed(lambda: redis_cli_rdb(settings, started["redis"], work / "redis-cli.rdb"))
        rows.append((f"Redis backup ({items} keys)", f"{ours:.2f}s", f"redis-cli --rdb {base:.2f}s", ratio(ours, base)))
        ours, items = dump_with_engine(settings, "chroma", dumps["chroma"])
        base, _ = timed(lambda: shutil.copytree(started["chroma"].data_dir, work / "chroma-copy"))
        rows.append((f"Chroma export ({items} records)", f"{ours:.2f}s", f"copy persist dir {base:.2f}s",
                     ratio(ours, base)))

        # Compression per database: zstd (our level) vs tar | gzip -6.
        for db, src in dumps.items():
            zst, gz = work / f"{db}.tar.zst", work / f"{db}.tar.gz"
            z_s, info = timed(lambda src=src, zst=zst: create_archive(src, zst, level=settings.zstd_level))
            g_s, _ = timed(lambda src=src, gz=gz: tar_gzip(src, gz))
            raw = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
            g_bytes = gz.stat().st_size
            rows.append((f"{db} archive zstd-{settings.zstd_level} ({raw / 1e6:.1f} MB raw)",
                         f"{info.bytes / 1e6:.2f} MB {z_s:.2f}s", f"gzip -6 {g_bytes / 1e6:.2f} MB {g_s:.2f}s",
                         f"size {ratio(info.bytes, g_bytes)} time {ratio(z_s, g_s)}"))

        # Dagster overhead: the same work with and without Dagster.
        direct_s, _ = timed(lambda: take_backup_set(settings, kind="manual", offsite=False))
        export_env(settings)
        import dagster as dg

        from rpger_ops.definitions import defs

        job = defs.resolve_job_def("backup_all")
        dagster_s, result = timed(lambda: job.execute_in_process(instance=dg.DagsterInstance.ephemeral()))
        if not result.success:
            raise RuntimeError("backup_all failed in the benchmark")
        rows.append(("Whole set: Dagster backup_all", f"{dagster_s:.2f}s", f"plain take_backup_set {direct_s:.2f}s",
                     f"{ratio(dagster_s, direct_s)} (+{dagster_s - direct_s:.2f}s)"))
    return rows


def print_table(rows: list[Row]) -> None:
    header: Row = ("measure", "ours", "baseline (same run)", "ours/baseline")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = " | ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*header))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(line.format(*r))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=2000,
                        help="testdata scale (default 2000: tens of seconds; tests use 20-200)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (dumps, archives)")
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error("--scale must be positive")
    for tool in ("redis-cli", "tar", "gzip"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} not found on PATH", file=sys.stderr)
            return 2
    root = Path(tempfile.mkdtemp(prefix="rpger-bench-"))
    try:
        rows = run(args.scale, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nbackup benchmark, scale {args.scale}, zstd level from settings, one run each\n")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
