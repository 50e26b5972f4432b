"""`rpger-ops backup`: take a backup set now (dump, archive, verify, off-site copy).

Prints the new set's id on stdout, also when it failed (so a script can look
at it); progress goes to stderr. Exit 0 when the set is complete and every
off-site copy made, 1 otherwise."""

from __future__ import annotations

import argparse
import json

from rpger_ops.commands._output import add_db_option, fail, progress
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.settings import load_settings

PROG = "rpger-ops backup"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    add_db_option(parser, "back up")
    parser.add_argument("--no-offsite", action="store_true", help="skip the off-site copy")
    parser.add_argument("--json", action="store_true", help="print the set as JSON instead of its id")
    args = parser.parse_args(argv)
    from rpger_ops.pipeline import BackupPipeline
    from rpger_ops.sets import SetKind

    settings = load_settings()
    dbs = tuple(n for n in ENGINE_NAMES if not args.dbs or n in args.dbs)
    offsite = settings.offsite_enabled and not args.no_offsite
    outcome = BackupPipeline(settings).take_set(SetKind.MANUAL, dbs, offsite=offsite, progress=progress)
    if args.json:
        print(json.dumps({"set_id": outcome.set_id, "complete": outcome.complete, "ok": outcome.ok,
                          "failures": outcome.failures, "offsite_failures": outcome.offsite_failures,
                          "set": outcome.backup_set.model_dump(mode="json", exclude_none=True)}, indent=2))
    else:
        print(outcome.set_id)  # stdout holds only the id, for scripts
    if not outcome.complete:
        return fail(PROG, f"backup set {outcome.set_id} FAILED (not usable for "
                          f"{', '.join(outcome.failures)}): " + " | ".join(outcome.failures.values()))
    if outcome.offsite_failures:
        return fail(PROG, f"backup set {outcome.set_id} is complete locally, but its off-site copy failed: "
                          + " | ".join(outcome.offsite_failures.values())
                          + f"; retry with: rpger-ops offsite --set {outcome.set_id}")
    where = "local and off-site" if offsite else "local only"
    progress(f"backup set {outcome.set_id} taken and verified ({', '.join(dbs)}; {where})", 1, 1)
    return 0
