"""Storage benchmark (not a test): what thirty daily sets cost, locally and off-site.

    python bench/storage.py --scale 1000 [--days 30] [--encrypt] [--json out.json]

Starts its own servers (FerretDB, redis-server, Chroma, MinIO) in a temporary
folder and loads RPGer-shaped data (`rpger_ops.testdata.load_all`: reference
collections and their embeddings, user collections, cache keys). Then, day by
day: 1% of the user documents and cache keys change (`testdata.change_a_day`:
the reference collections do not), and a set is taken and copied off-site.
Prints one row per day: sets, logical bytes (what the sets would weigh as full
copies, i.e. as v1 stored them), stored bytes locally and off-site, and the
ratio of stored bytes to one full set. Then retention deletes sets 2..N-1 and
sweeps their blobs, and the last row shows what is left.

`--encrypt` sets age recipients (a key pair made for the run) first.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Stack, write_json  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from rpger_ops import devservers, testdata  # noqa: E402
from rpger_ops.crypto import generate_identity  # noqa: E402
from rpger_ops.monitoring import StorageReport, storage_report  # noqa: E402
from rpger_ops.pipeline import BackupPipeline  # noqa: E402
from rpger_ops.retention import Policy, prune  # noqa: E402
from rpger_ops.sets import SetKind, new_set_id  # noqa: E402
from rpger_ops.store import LocalStore  # noqa: E402
from rpger_ops.store.s3 import S3Store  # noqa: E402

Row = tuple[str, ...]


def mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def row(label: str, local: StorageReport, remote: StorageReport, full: int, seconds: float | None) -> Row:
    return (label, str(local.sets), mb(local.logical_bytes), mb(local.stored_bytes), mb(remote.stored_bytes),
            f"{local.stored_bytes / full:.2f}x", f"{local.dedup_ratio:.1f}x", "" if seconds is None else f"{seconds:.1f}s")


def run(scale: int, days: int, encrypt: bool, root: Path) -> tuple[list[Row], dict[str, Any]]:
    stack = Stack(root / "servers", root / "backups")
    access, secret = "bench-" + secrets.token_hex(4), secrets.token_urlsafe(18)
    minio = devservers.start_minio(root / "minio", access, secret)
    rows: list[Row] = []
    flat: dict[str, Any] = {"scale": scale, "days": days, "encrypted": encrypt}
    try:
        update: dict[str, Any] = {"s3_endpoint": f"{minio.host}:{minio.port}", "s3_secure": False,
                                  "s3_access_key": SecretStr(access), "s3_secret_key": SecretStr(secret)}
        if encrypt:
            _identity, recipient = generate_identity()  # the identity is not needed: nothing is restored
            (root / "recipients.txt").write_text(recipient + "\n")
            update["age_recipients_file"] = root / "recipients.txt"
        settings = stack.settings.model_copy(update=update)
        print(f"loading RPGer-shaped data at scale {scale} ...", file=sys.stderr)
        testdata.load_all(settings, scale=scale)
        local = LocalStore(settings.backup_dir)
        remote = S3Store.from_settings(settings)
        pipeline = BackupPipeline(settings, offsite=remote)
        first = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days + 1)
        ids, full, times = [], 0, []
        for day in range(days):
            if day:
                testdata.change_a_day(settings, day)
            started = time.perf_counter()
            outcome = pipeline.take_set(SetKind.SCHEDULED, set_id=new_set_id(first + timedelta(days=day)))
            seconds = time.perf_counter() - started
            if not outcome.ok:
                raise RuntimeError(f"day {day + 1}: {outcome.problems()}")
            ids.append(outcome.set_id)
            times.append(seconds)
            lr, rr = storage_report(local), storage_report(remote)
            full = full or lr.stored_bytes
            rows.append(row(f"day {day + 1}", lr, rr, full, seconds))
            print("  ".join(rows[-1]), file=sys.stderr)
        lr, rr = storage_report(local), storage_report(remote)
        flat.update(full_set_bytes=full, logical_bytes=lr.logical_bytes, stored_bytes=lr.stored_bytes,
                    offsite_stored_bytes=rr.stored_bytes, stored_vs_one_set=round(lr.stored_bytes / full, 3),
                    dedup_ratio=lr.dedup_ratio, first_set_s=round(times[0], 2),
                    later_set_s=round(sum(times[1:]) / max(1, len(times) - 1), 2))
        # Retention: keep the first and the last set, sweep what only the others held.
        keep = {ids[0], ids[-1]}
        for store, lock in ((local, lambda: local.blob_lock(exclusive=True)),
                            (remote, lambda: local.blob_lock(exclusive=True))):
            for set_id in ids:
                if set_id not in keep:
                    store.delete(set_id)
            prune(store, lambda kind: Policy(keep_last=2), "bench", recheck=False, blob_lock=lock,
                  blob_grace=timedelta(0))
        lr, rr = storage_report(local), storage_report(remote)
        rows.append(row(f"after retention (sets 1 and {days})", lr, rr, full, None))
        flat.update(after_retention_stored_bytes=lr.stored_bytes)
    finally:
        minio.stop()
        stack.stop()
    return rows, flat


def print_table(rows: list[Row]) -> None:
    header: Row = ("", "sets", "logical", "stored local", "stored off-site", "stored/one set", "dedup", "set took")
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1000, help="documents per reference collection (default 1000)")
    parser.add_argument("--days", type=int, default=30, help="daily sets (default 30)")
    parser.add_argument("--encrypt", action="store_true", help="age-encrypt the sets (a key pair made for the run)")
    parser.add_argument("--json", type=Path, help="also write the flat results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rpger-bench-storage-") as tmp:
        rows, flat = run(args.scale, args.days, args.encrypt, Path(tmp))
    print_table(rows)
    if args.json:
        write_json(args.json, flat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
