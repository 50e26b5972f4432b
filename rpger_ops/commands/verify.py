"""`rpger-ops verify`: check a backup set's archives (sha256, decompress, parse,
counts against the manifest); --deep also restores each into a scratch target
and compares its digest with the manifest."""

from __future__ import annotations

import argparse

from rpger_ops.catalog import Catalog, CatalogError
from rpger_ops.commands._output import add_db_option, fail
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.settings import load_settings

PROG = "rpger-ops verify"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("--set", default="latest", dest="set_ref",
                        help="'latest' (newest local set) or a set id like 20261128T030000Z")
    add_db_option(parser, "verify")
    parser.add_argument("--deep", action="store_true",
                        help="also restore into a scratch target and compare digests (slower)")
    args = parser.parse_args(argv)
    from rpger_ops.backup import check_archive, verify_restore

    settings = load_settings()
    catalog = Catalog(settings.backup_dir)
    set_id = args.set_ref
    if set_id == "latest":
        ids = catalog.set_ids()
        if not ids:
            return fail(PROG, f"no local backup sets in {catalog.sets_dir}")
        set_id = ids[0]
    try:
        manifest = catalog.read(set_id)
    except CatalogError as exc:
        return fail(PROG, str(exc), 2)
    present = manifest.get("databases", {})
    dbs = [n for n in ENGINE_NAMES if (not args.dbs or n in args.dbs) and n in present]
    if not dbs:
        return fail(PROG, f"set {set_id} holds none of the requested databases", 2)
    all_passed = True
    for db in dbs:
        for outcome in check_archive(settings, set_id, db):
            all_passed &= outcome.passed
            print(f"{set_id} {db:<7} {outcome.name:<12} {'ok' if outcome.passed else 'FAILED'}  {outcome.description}")
    if args.deep and all_passed:
        for name, ok in verify_restore(settings, set_id, dbs).items():
            all_passed &= ok
            print(f"{set_id} {name:<7} {'restore':<12} {'ok' if ok else 'FAILED'}  scratch restore digest "
                  f"{'equals' if ok else 'differs from'} the manifest")
    print(f"set {set_id}: {'verified' if all_passed else 'FAILED'}")
    return 0 if all_passed else 1
