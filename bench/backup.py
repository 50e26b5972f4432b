"""Backup benchmark (not a test): our pipeline against plain baselines, measured in
the same run on the same data.

    python bench/backup.py --scale 5000 [--redis-keys N] [--json out.json]

Starts its own servers (FerretDB, redis-server, Chroma) in a temporary folder,
loads RPGer-shaped data (rpger_ops.testdata, plus `--redis-keys` cache keys like
RPGer's, default 20 x scale) and prints one table:

- each database's whole step of a backup (dump, archive, checks: what
  `BackupPipeline.back_up_database` does) against a plain baseline: Mongo vs a
  raw pymongo full scan, Redis vs `redis-cli --rdb` (password through
  REDISCLI_AUTH, never argv), Chroma's export alone vs copying its persist
  directory (a copy of live files is not a valid backup; it is only the I/O floor);
- a whole set with the chains side by side (`take_set`) against the longest
  single chain, and `rpger-ops backup --no-offsite` in a child process for the
  ops process's own peak RSS;
- zstd archive (our level) size and time vs `tar | gzip -6`, per database;
- Dagster overhead: `backup_all` in process vs the plain pipeline.

`--json` writes the flat keys mongo_backup_ratio, redis_backup_ratio,
chroma_export_ratio, set_wall_s, longest_chain_s, peak_rss_mb (and the raw
seconds behind them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Stack, bulk_cache_keys, export_env, load_cache_keys, ratio, run_child, timed, write_json  # noqa: E402

from rpger_ops import testdata  # noqa: E402
from rpger_ops.archive import create_archive  # noqa: E402
from rpger_ops.connect import mongo_client  # noqa: E402
from rpger_ops.engines import build_engine  # noqa: E402
from rpger_ops.engines.base import ENGINE_NAMES  # noqa: E402
from rpger_ops.pipeline import BackupPipeline  # noqa: E402
from rpger_ops.sets import SetKind  # noqa: E402
from rpger_ops.settings import Settings  # noqa: E402

Row = tuple[str, str, str, str]


def mongo_scan(settings: Settings) -> int:
    from bson.raw_bson import RawBSONDocument

    client = mongo_client(settings, document_class=RawBSONDocument)
    try:
        db = client[settings.mongodb_database]
        return sum(1 for name in db.list_collection_names() for _ in db[name].find({}, batch_size=1000))
    finally:
        client.close()


def redis_cli_rdb(settings: Settings, stack: Stack, dest: Path) -> None:
    assert settings.redis_password is not None
    server = stack.servers["redis"]
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


def run(scale: int, redis_keys: int, root: Path) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    flat: dict[str, Any] = {"scale": scale, "redis_extra_keys": redis_keys}
    stack = Stack(root / "servers", root / "backups")
    try:
        settings = stack.settings
        print(f"loading RPGer-shaped data at scale {scale} + {redis_keys} cache keys ...", file=sys.stderr)
        load_s, report = timed(lambda: testdata.load_all(settings, scale=scale))
        load_cache_keys(settings, bulk_cache_keys(redis_keys))
        items = {"mongo": sum(report.mongo_counts.values()), "redis": report.redis_keys + redis_keys,
                 "chroma": sum(report.chroma_counts.values())}
        print(f"loaded in {load_s:.1f}s: {items}", file=sys.stderr)
        work = root / "work"
        work.mkdir()

        mongo_scan(settings)  # warm the server's caches, so no measurement below is the first read

        # Each database's whole step on its own (dump, archive, checks).
        pipeline = BackupPipeline(settings, offsite=None)
        set_id = pipeline.start_set(SetKind.MANUAL).set_id
        steps = {db: timed(lambda db=db: pipeline.back_up_database(set_id, db))[0] for db in ENGINE_NAMES}
        # The whole set, chains side by side (what `take_set` does for the CLI and the safety sets).
        set_wall_s, outcome = timed(lambda: BackupPipeline(settings, offsite=None).take_set(SetKind.MANUAL))
        if not outcome.complete:
            raise RuntimeError(f"the pipeline failed in the benchmark: {outcome.problems()}")
        # The same as `rpger-ops backup` in a child process, so its peak RSS is its own.
        cli_wall_s, peak_mb, _ = run_child(settings, "backup", "--no-offsite", cwd=work)
        flat.update(set_wall_s=round(set_wall_s, 2), cli_backup_wall_s=round(cli_wall_s, 2), peak_rss_mb=peak_mb)
        scan_s, scanned = timed(lambda: mongo_scan(settings))
        cli_s, _ = timed(lambda: redis_cli_rdb(settings, stack, work / "redis-cli.rdb"))
        chroma_dump = work / "chroma-dump"
        chroma_dump.mkdir()
        engine = build_engine("chroma", settings)
        export_s, _ = timed(lambda: engine.dump(chroma_dump))
        engine.close()
        copy_s, _ = timed(lambda: shutil.copytree(stack.servers["chroma"].data_dir, work / "chroma-copy"))
        flat.update(mongo_step_s=round(steps["mongo"], 2), mongo_scan_s=round(scan_s, 2),
                    mongo_backup_ratio=round(ratio(steps["mongo"], scan_s), 2),
                    redis_step_s=round(steps["redis"], 2), redis_cli_s=round(cli_s, 2),
                    redis_backup_ratio=round(ratio(steps["redis"], cli_s), 2),
                    chroma_step_s=round(steps["chroma"], 2), chroma_export_s=round(export_s, 2),
                    chroma_copy_s=round(copy_s, 3), chroma_export_ratio=round(ratio(export_s, copy_s), 1),
                    chroma_export_rows_per_s=round(items["chroma"] / export_s),
                    longest_chain_s=round(max(steps.values()), 2),
                    set_vs_longest_chain=round(ratio(set_wall_s, max(steps.values())), 2))
        rows += [
            (f"Mongo step ({items['mongo']} docs)", f"{steps['mongo']:.2f}s",
             f"pymongo full scan {scan_s:.2f}s ({scanned})", f"{flat['mongo_backup_ratio']}x"),
            (f"Redis step ({items['redis']} keys)", f"{steps['redis']:.2f}s", f"redis-cli --rdb {cli_s:.2f}s",
             f"{flat['redis_backup_ratio']}x"),
            (f"Chroma export ({items['chroma']} records, {flat['chroma_export_rows_per_s']}/s)", f"{export_s:.2f}s",
             f"copy persist dir {copy_s:.2f}s", f"{flat['chroma_export_ratio']}x"),
            ("Chroma step (export, archive, checks)", f"{steps['chroma']:.2f}s", "", ""),
            ("Whole set, chains side by side", f"{set_wall_s:.2f}s",
             f"longest chain {max(steps.values()):.2f}s", f"{flat['set_vs_longest_chain']}x"),
            (f"`rpger-ops backup` child process (peak RSS {peak_mb} MB)", f"{cli_wall_s:.2f}s",
             "incl. interpreter start-up", ""),
        ]

        # Compression per database: zstd (our level) vs tar | gzip -6.
        for db in ENGINE_NAMES:
            src = work / f"{db}-dump"
            if db == "chroma":
                src = chroma_dump
            else:
                src.mkdir()
                e = build_engine(db, settings)
                e.dump(src)
                e.close()
            zst, gz = work / f"{db}.tar.zst", work / f"{db}.tar.gz"
            z_s, info = timed(lambda src=src, zst=zst: create_archive(src, zst, level=settings.zstd_level))
            g_s, _ = timed(lambda src=src, gz=gz: tar_gzip(src, gz))
            raw = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
            # For the growth table (bench/README.md): items/s and MB/s of each step.
            flat.update({f"{db}_items": items[db], f"{db}_dump_mb": round(raw / 1e6, 2),
                         f"{db}_items_per_s": round(items[db] / steps[db]),
                         f"{db}_mb_per_s": round(raw / 1e6 / steps[db], 2)})
            g_bytes = gz.stat().st_size
            rows.append((f"{db} archive zstd-{settings.zstd_level} ({raw / 1e6:.1f} MB raw)",
                         f"{info.bytes / 1e6:.2f} MB {z_s:.2f}s", f"gzip -6 {g_bytes / 1e6:.2f} MB {g_s:.2f}s",
                         f"size {ratio(info.bytes, g_bytes):.2f}x time {ratio(z_s, g_s):.2f}x"))

        # Dagster overhead: the same work with and without Dagster.
        direct_s = set_wall_s
        export_env(settings)
        import dagster as dg

        from rpger_ops.definitions import defs

        job = defs.resolve_job_def("backup_all")
        dagster_s, result = timed(lambda: job.execute_in_process(instance=dg.DagsterInstance.ephemeral()))
        if not result.success:
            raise RuntimeError("backup_all failed in the benchmark")
        flat.update(dagster_backup_all_s=round(dagster_s, 2), plain_take_set_s=round(direct_s, 2))
        rows.append(("Whole set: Dagster backup_all (in process)", f"{dagster_s:.2f}s",
                     f"plain BackupPipeline.take_set {direct_s:.2f}s",
                     f"{ratio(dagster_s, direct_s):.2f}x (+{dagster_s - direct_s:.2f}s)"))
    finally:
        stack.stop()
    return rows, flat


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
    parser.add_argument("--redis-keys", type=int, default=None, help="extra cache keys (default 20 x scale)")
    parser.add_argument("--json", type=Path, help="write the flat results here")
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
        rows, flat = run(args.scale, 20 * args.scale if args.redis_keys is None else args.redis_keys, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nbackup benchmark, scale {args.scale}, zstd level from settings, one run each\n")
    print_table(rows)
    if args.json:
        write_json(args.json, flat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
