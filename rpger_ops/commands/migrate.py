"""`rpger-ops migrate`: schema migrations across MongoDB, Redis and Chroma.

  status            applied and pending migrations, drift, data newer than code
  plan [--to N]     what up (or down, when N is below the current version) would run
  up [--to N]       apply pending migrations up to N (default: latest)
  down --to N       revert applied migrations above N

Each database keeps its own ledger: `--db` (repeatable) limits any action
to some databases (default all three).

Exit codes: 0 done, 1 failed, 2 bad input, 3 refused (drift, data newer than
code, another migrator running, a migration without down).
"""

from __future__ import annotations

import argparse
import json

from rpger_ops import migrate
from rpger_ops.commands._output import add_db_option, fail, progress
from rpger_ops.engines.base import EngineError
from rpger_ops.settings import load_settings

PROG = "rpger-ops migrate"
REFUSED = (migrate.DriftError, migrate.UnknownVersionError, migrate.OrderError, migrate.LockHeldError,
           migrate.IrreversibleError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True, metavar="{status,plan,up,down}")
    st = sub.add_parser("status", help="applied and pending migrations")
    st.add_argument("--json", action="store_true", help="print JSON")
    pl = sub.add_parser("plan", help="what up/down would run")
    pl.add_argument("--to", type=int, dest="target", metavar="N")
    up = sub.add_parser("up", help="apply pending migrations")
    up.add_argument("--to", type=int, dest="target", metavar="N")
    down = sub.add_parser("down", help="revert migrations above N")
    down.add_argument("--to", type=int, dest="target", metavar="N", required=True)
    for p in (st, pl, up, down):
        add_db_option(p, "migrate")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    settings = load_settings()
    try:
        if args.action == "status":
            st = migrate.status(settings, dbs=args.dbs)
            print(json.dumps(st.as_dict(), indent=2) if args.json else "\n".join(st.lines()))
            return 0 if st.ok else 3
        if args.action == "plan":
            steps = migrate.plan(settings, args.target, dbs=args.dbs)
            for step in steps:
                print(f"{step.direction:<4} {step.version:04d} {step.name:<32} {step.db}")
            print(f"{len(steps)} migration(s) to run" if steps else "nothing to do")
            return 0
        report = migrate.migrate(settings, args.action, args.target, progress=progress, dbs=args.dbs)
    except migrate.TargetError as exc:
        return fail(PROG, str(exc), 2)
    except REFUSED as exc:
        return fail(PROG, f"refused: {exc}", 3)
    except (migrate.MigrateError, EngineError) as exc:
        return fail(PROG, str(exc))
    for line in report.lines():
        print(line)
    return 0
