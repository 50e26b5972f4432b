"""`rpger-ops restore`: restore a backup set into the databases.

Refuses a database that holds data unless --force; with --force the current
contents are first saved as a safety backup set, then replaced.
"""

from __future__ import annotations

import argparse

from rpger_ops.catalog import CatalogError, set_time
from rpger_ops.commands._output import add_db_option, fail, progress
from rpger_ops.restore import SOURCES, RefusedError, RestoreError, restore_set
from rpger_ops.settings import load_settings

PROG = "rpger-ops restore"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="latest", dest="set_ref",
                        help="'latest' (newest verified set) or a set id like 20261128T030000Z")
    add_db_option(parser, "restore")
    parser.add_argument("--force", action="store_true",
                        help="replace databases that hold data (a safety backup set is taken first)")
    parser.add_argument("--source", choices=SOURCES, default="auto",
                        help="where the set comes from (auto: local copy first, then off-site)")
    args = parser.parse_args(argv)
    if args.set_ref != "latest":
        try:
            set_time(args.set_ref)
        except CatalogError as exc:
            parser.error(str(exc))  # exit 2
    try:
        report = restore_set(load_settings(), args.set_ref, args.dbs, args.force, args.source, progress)
    except RefusedError as exc:
        return fail(PROG, f"refused: {exc}", 3)
    except RestoreError as exc:
        return fail(PROG, str(exc))
    for line in report.lines():
        print(line)
    if not report.ok:
        return fail(PROG, f"restore of set {report.set_id} FAILED (see above)")
    print(f"restore of set {report.set_id} complete")
    return 0
