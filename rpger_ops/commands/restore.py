"""`rpger-ops restore`: restore a backup set into the databases, all from that one set.

`--set latest` is the newest scheduled or manual set in which every chosen
database is verified (newer sets passed over are named); a safety set is
only restored by its id. Refuses a database that holds data unless --force;
with --force the current contents are first saved as a safety backup set,
then replaced.

Exit codes: 0 restored, 1 failed, 2 bad input, 3 refused (data in the way,
newer schema, lock held), 4 data restored but a schema migration failed."""

from __future__ import annotations

import argparse
import json

from rpger_ops.commands._output import add_db_option, fail, progress
from rpger_ops.restore import RefusedError, RestoreError, restore_set
from rpger_ops.sets import SetIdError, set_time
from rpger_ops.settings import load_settings
from rpger_ops.sources import SOURCES

PROG = "rpger-ops restore"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="latest", dest="set_ref",
                        help="'latest' (newest usable set) or a set id like 20261128T030000Z")
    add_db_option(parser, "restore")
    parser.add_argument("--force", action="store_true",
                        help="replace databases that hold data (a safety backup set is taken first)")
    parser.add_argument("--source", choices=SOURCES, default="auto",
                        help="where the set comes from (auto: local copy first, then off-site)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.set_ref != "latest":
        try:
            set_time(args.set_ref)
        except SetIdError as exc:
            parser.error(str(exc))  # exit 2
    try:
        report = restore_set(load_settings(), args.set_ref, args.dbs, args.force, args.source, progress)
    except RefusedError as exc:
        return fail(PROG, f"refused: {exc}", 3)
    except RestoreError as exc:
        return fail(PROG, str(exc))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for line in report.lines():
            print(line)
    if not report.restored:
        return fail(PROG, f"restore of set {report.set_id} FAILED (see above)")
    if report.migrations.error:
        return fail(PROG, f"restore of set {report.set_id}: data restored; {report.migrations.error}", 4)
    if not args.json:
        print(f"restore of set {report.set_id} complete")
    return 0
