"""`rpger-ops verify`: re-check a local backup set's stored dumps (every blob's or
archive's sha256, decompress, parse, counts against the manifest; for an
encrypted set without RPGER_AGE_IDENTITY_FILE the ciphertext by hash, and the
parse and counts checked before encryption); --deep also restores each into a
scratch target and compares its digest with the backup's (encrypted: needs the
identity). Every result is written
back into the set: a failure marks the database "corrupt" (checks) or
"restore_failed" (--deep), and `sets` shows it.

`--set latest` is the newest complete scheduled or manual set (the one a
restore would use). Exit 0 when everything passed, 1 when something failed,
2 for bad input."""

from __future__ import annotations

import argparse

from rpger_ops.commands._output import add_db_option, fail, progress
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.sets import SetIdError, choose_latest, set_time
from rpger_ops.settings import load_settings
from rpger_ops.store import StoreError, read_sets

PROG = "rpger-ops verify"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="latest", dest="set_ref",
                        help="'latest' (newest complete set) or a set id like 20261128T030000Z")
    add_db_option(parser, "verify")
    parser.add_argument("--deep", action="store_true",
                        help="also restore into a scratch target and compare digests (slower)")
    args = parser.parse_args(argv)
    if args.set_ref != "latest":
        try:
            set_time(args.set_ref)
        except SetIdError as exc:
            parser.error(str(exc))
    from rpger_ops.pipeline import BackupPipeline

    pipeline = BackupPipeline(load_settings(), offsite=None)
    wanted = [n for n in ENGINE_NAMES if not args.dbs or n in args.dbs]
    set_id = args.set_ref
    if set_id == "latest":
        set_id = choose_latest(read_sets(pipeline.local), wanted).set_id
        if set_id is None:
            return fail(PROG, f"no complete local backup set for {', '.join(wanted)} in {pipeline.local.where()}")
    try:
        backup_set = pipeline.local.read(set_id)
    except StoreError as exc:
        return fail(PROG, str(exc), 2)
    dbs = [n for n in wanted if n in backup_set.databases]
    if not dbs:
        return fail(PROG, f"set {set_id} holds none of the requested databases", 2)
    all_passed = True
    for db in dbs:
        for outcome in pipeline.check(set_id, db):
            all_passed &= outcome.passed
            print(f"{set_id} {db:<7} {outcome.name:<12} {'ok' if outcome.passed else 'FAILED'}  {outcome.description}")
    if args.deep and all_passed:
        for name, check in pipeline.verify_deep(set_id, dbs, progress).items():
            all_passed &= check.ok
            print(f"{set_id} {name:<7} {'restore':<12} {'ok' if check.ok else 'FAILED'}  "
                  + ("scratch restore digest equals the backup's" if check.ok else str(check.error)))
    final = pipeline.local.read(set_id)
    print(f"set {set_id}: {'verified' if all_passed else 'FAILED'} ({final.summary()})")
    return 0 if all_passed else 1
