"""`rpger-ops backup`: take a backup set now (dump, archive, verify, off-site copy).

Prints the new set id on stdout; progress goes to stderr."""

from __future__ import annotations

import argparse

from rpger_ops.commands._output import add_db_option, fail, progress
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.settings import load_settings

PROG = "rpger-ops backup"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    add_db_option(parser, "back up")
    parser.add_argument("--no-offsite", action="store_true", help="skip the off-site copy")
    args = parser.parse_args(argv)
    from rpger_ops.backup import BackupError, take_backup_set

    settings = load_settings()
    dbs = tuple(n for n in ENGINE_NAMES if not args.dbs or n in args.dbs)
    offsite = settings.offsite_enabled and not args.no_offsite
    try:
        set_id = take_backup_set(settings, dbs=dbs, kind="manual", offsite=offsite, progress=progress)
    except BackupError as exc:
        return fail(PROG, f"backup FAILED: {exc}")
    where = "local and off-site" if offsite else "local only"
    progress(f"backup set {set_id} taken and verified ({', '.join(dbs)}; {where})", 1, 1)
    print(set_id)  # stdout holds only the id, for scripts
    return 0
