"""Set formats benchmark (not a test): backup and restore times of v1 (one tar.zst
per database) against v2 (content-addressed blobs), plain and age-encrypted,
on the same data in the same run.

    python bench/formats.py --scale 5000 [--rounds 2] [--json out.json]

Starts its own servers (FerretDB, redis-server, Chroma) in a temporary folder
and loads RPGer-shaped data (`rpger_ops.testdata.load_all`). Each round takes
one set in each format (`BackupPipeline.take_set`, no off-site copy: that is
the network's time) and restores all three databases from it into wiped
servers (`restore_set`: fetch, load, digest check), formats interleaved so the
machine's drift hits them alike. The fastest round of each counts. The first
v2 set of a run writes every blob; later v2 sets of the same data reuse them,
so v2's backup is measured on the round's first v2 set into a fresh store.
Prints seconds and the ratio to v1; `--json` writes v2_backup_ratio,
v2_restore_ratio, v2_encrypted_backup_ratio, v2_encrypted_restore_ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Stack, ratio, write_json  # noqa: E402

from rpger_ops import testdata  # noqa: E402
from rpger_ops.crypto import generate_identity  # noqa: E402
from rpger_ops.engines import build_engine  # noqa: E402
from rpger_ops.engines.base import ENGINE_NAMES  # noqa: E402
from rpger_ops.pipeline import BackupPipeline  # noqa: E402
from rpger_ops.restore import restore_set  # noqa: E402
from rpger_ops.sets import SetKind  # noqa: E402
from rpger_ops.settings import Settings  # noqa: E402

FORMATS = ("v1", "v2", "v2 encrypted")


def format_settings(base: Settings, fmt: str, root: Path, round_no: int) -> Settings:
    """Each format and round backs up into a store of its own (no blob reuse across them)."""
    update: dict[str, Any] = {"set_format": 1 if fmt == "v1" else 2,
                              "backup_dir": root / f"backups-{fmt.replace(' ', '-')}-{round_no}"}
    if fmt == "v2 encrypted":
        identity, recipient = generate_identity()
        (root / "recipients.txt").write_text(recipient + "\n")
        (root / "identity.txt").write_text(identity + "\n")
        (root / "identity.txt").chmod(0o600)
        update.update(age_recipients_file=root / "recipients.txt", age_identity_file=root / "identity.txt")
    return base.model_copy(update=update)


def wipe_all(settings: Settings) -> None:
    for name in ENGINE_NAMES:
        engine = build_engine(name, settings)
        try:
            engine.wipe()
        finally:
            engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1000, help="documents per reference collection (default 1000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; the fastest of each format counts")
    parser.add_argument("--json", type=Path, help="also write the flat results here")
    args = parser.parse_args(argv)
    best: dict[str, dict[str, float]] = {f: {"backup_s": float("inf"), "restore_s": float("inf")} for f in FORMATS}
    with tempfile.TemporaryDirectory(prefix="rpger-bench-formats-") as tmp:
        root = Path(tmp)
        stack = Stack(root / "servers", root / "unused")
        try:
            base = stack.settings
            print(f"loading RPGer-shaped data at scale {args.scale} ...", file=sys.stderr)
            testdata.load_all(base, scale=args.scale)
            for round_no in range(args.rounds):
                for fmt in FORMATS if round_no % 2 == 0 else tuple(reversed(FORMATS)):
                    s = format_settings(base, fmt, root, round_no)
                    # The backup host holds only the recipients (as deployed); the identity is
                    # for the restore. With it, the archive checks would decrypt and parse again.
                    backup_settings = s.model_copy(update={"age_identity_file": None})
                    started = time.perf_counter()
                    outcome = BackupPipeline(backup_settings).take_set(SetKind.MANUAL, offsite=False)
                    backup_s = time.perf_counter() - started
                    if not outcome.complete:
                        raise RuntimeError(f"{fmt}: {outcome.problems()}")
                    wipe_all(s)
                    started = time.perf_counter()
                    report = restore_set(s, outcome.set_id, list(ENGINE_NAMES), source="local")
                    restore_s = time.perf_counter() - started
                    if not report.ok:
                        raise RuntimeError(f"{fmt}: restore failed: {[d.summary() for d in report.databases.values()]}")
                    print(f"round {round_no + 1} {fmt}: backup {backup_s:.2f}s, restore {restore_s:.2f}s",
                          file=sys.stderr)
                    best[fmt]["backup_s"] = min(best[fmt]["backup_s"], backup_s)
                    best[fmt]["restore_s"] = min(best[fmt]["restore_s"], restore_s)
        finally:
            stack.stop()
    v1 = best["v1"]
    print(f"\nset formats: scale {args.scale}, fastest of {args.rounds} rounds\n")
    print(f"| {'format':<12} | {'backup s':>8} | {'vs v1':>5} | {'restore s':>9} | {'vs v1':>5} |")
    print(f"|{'-' * 14}|{'-' * 10}|{'-' * 7}|{'-' * 11}|{'-' * 7}|")
    flat: dict[str, Any] = {"scale": args.scale, "rounds": args.rounds}
    for fmt in FORMATS:
        b, r = best[fmt]["backup_s"], best[fmt]["restore_s"]
        print(f"| {fmt:<12} | {b:>8.2f} | {ratio(b, v1['backup_s']):>5.2f} | {r:>9.2f} | "
              f"{ratio(r, v1['restore_s']):>5.2f} |")
        key = fmt.replace(" ", "_")
        flat.update({f"{key}_backup_s": round(b, 2), f"{key}_restore_s": round(r, 2)})
        if fmt != "v1":
            flat[f"{key}_backup_ratio"] = round(ratio(b, v1["backup_s"]), 3)
            flat[f"{key}_restore_ratio"] = round(ratio(r, v1["restore_s"]), 3)
    if args.json:
        write_json(args.json, flat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
