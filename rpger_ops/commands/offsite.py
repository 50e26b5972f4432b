"""`rpger-ops offsite --set ID`: copy a set's verified databases off-site again.

For a set whose off-site copy failed (store down or hung during the backup)
or was lost. Each blob (or archive) is uploaded unless the same bytes are
already there, read back and hash-checked; then the set's off-site manifest.
Exit 0 when every verified archive of the set is off-site, 1 otherwise,
2 for bad input."""

from __future__ import annotations

import argparse

from rpger_ops.commands._output import add_db_option, fail, progress
from rpger_ops.sets import SetIdError, set_time
from rpger_ops.settings import load_settings

PROG = "rpger-ops offsite"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", required=True, dest="set_id", help="set id like 20261128T030000Z")
    add_db_option(parser, "copy")
    args = parser.parse_args(argv)
    try:
        set_time(args.set_id)
    except SetIdError as exc:
        parser.error(str(exc))  # exit 2
    from rpger_ops.pipeline import BackupError, BackupPipeline

    settings = load_settings()
    if not settings.offsite_enabled:
        return fail(PROG, "off-site store not configured (set RPGER_S3_ENDPOINT)", 2)
    pipeline = BackupPipeline(settings)
    try:
        backup_set = pipeline.read(args.set_id)
    except BackupError as exc:
        return fail(PROG, str(exc), 2)
    dbs = [db for db in backup_set.verified_databases if not args.dbs or db in args.dbs]
    if not dbs:
        return fail(PROG, f"set {args.set_id} has no verified archive to copy ({backup_set.summary()})")
    failed = []
    for db in dbs:
        try:
            copy = pipeline.upload(args.set_id, db, progress)
            print(f"{args.set_id} {db:<7} off-site ok  {copy.key if copy else ''}")
        except BackupError as exc:
            failed.append(str(exc))
            print(f"{args.set_id} {db:<7} off-site FAILED  {exc}")
    if failed:
        return fail(PROG, f"{len(failed)} of {len(dbs)} archive(s) not copied off-site")
    return 0
