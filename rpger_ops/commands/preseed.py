"""`rpger-ops preseed`: the startup gate the compose stack runs before the app.

Waits up to --timeout for the databases, then restores every database found on
a new, empty volume from the newest verified backup set (local, else
off-site). Never touches a database that holds data. Exit 0 when each
database is seeded, already holds data, was initialised empty (no backup
anywhere) or was emptied on purpose (a warning); exit 1 otherwise.
"""

from __future__ import annotations

import argparse
import json

from rpger_ops.commands._output import add_db_option, fail, progress
from rpger_ops.preseed import preseed_gate
from rpger_ops.restore import RestoreError
from rpger_ops.settings import load_settings

PROG = "rpger-ops preseed"


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
        print(json.dumps({"ok": report.ok, "databases": {n: d.as_dict() for n, d in report.databases.items()},
                          "migrations": vars(report.migrations), "notes": report.notes}, indent=2))
    else:
        for line in report.lines():
            print(line)
    if report.not_ready:
        return fail(PROG, f"not ready after {args.timeout:.0f}s: {', '.join(report.not_ready)}; nothing was changed there")
    if not report.ok:
        problems = [f"{n}: {d.message}" for n, d in report.databases.items() if not d.ok]
        if report.migrations.error:
            problems.append(report.migrations.error)
        return fail(PROG, "preseed FAILED: " + "; ".join(problems))
    return 0
