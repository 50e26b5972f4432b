"""`rpger-ops preseed`: the startup gate the compose stack runs before the app.

Waits up to --timeout for the databases, then restores every database found on
a new, empty volume from the newest usable backup set (local, else
off-site); all databases seeded together come from one set. Never touches a
database that holds data. Exit 0 when each
database is seeded, already holds data, was initialised empty (no backup
anywhere) or was emptied on purpose (a warning), and every pending migration
step of those databases applied; exit 1 when a database could not be seeded;
exit 4 when the data is in place but a schema migration failed (the app must
not start on it; the next preseed tries again).
"""

from __future__ import annotations

import argparse
import json

from rpger_ops.commands._output import add_db_option, fail, progress
from rpger_ops.preseed import preseed_gate
from rpger_ops.settings import load_settings
from rpger_ops.sources import RestoreError

PROG = "rpger-ops preseed"
MIGRATION_FAILED = 4


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_db_option(parser, "preseed")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the databases to answer (default 300)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.timeout < 0:
        parser.error("--timeout must be >= 0")
    try:
        report = preseed_gate(load_settings(), args.dbs, args.timeout, progress)
    except RestoreError as exc:
        return fail(PROG, str(exc))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for line in report.lines():
            print(line)
    if report.not_ready:
        return fail(PROG, f"not ready after {args.timeout:.0f}s: {', '.join(report.not_ready)}; nothing was changed there")
    if not report.seeded_ok:
        problems = [f"{n}: {d.message}" for n, d in report.databases.items() if not d.ok]
        return fail(PROG, "preseed FAILED: " + "; ".join(problems))
    if report.migrations.error:
        return fail(PROG, f"data in place; {report.migrations.error}", MIGRATION_FAILED)
    return 0
