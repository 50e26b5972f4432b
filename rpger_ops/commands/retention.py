"""`rpger-ops retention`: apply the tiered retention policy to local and off-site sets.

Exit status: 0 done, 1 a store failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

from rpger_ops.retention import format_decision, prune_local, prune_offsite
from rpger_ops.settings import load_settings
from rpger_ops.store import StoreError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rpger-ops retention", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="report what would be removed; delete nothing")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="only the local backup directory")
    where.add_argument("--offsite", action="store_true", help="only the off-site bucket")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.offsite and not settings.offsite_enabled:
        print("rpger-ops retention: --offsite given but RPGER_S3_ENDPOINT is not set", file=sys.stderr)
        return 2
    targets = []
    if not args.offsite:
        targets.append(("local", prune_local))
    if not args.local and settings.offsite_enabled:
        targets.append(("offsite", prune_offsite))
    status, report = 0, []
    for name, prune in targets:
        try:
            decision = prune(settings, args.dry_run)
        except StoreError as exc:
            print(f"rpger-ops retention: {name}: {exc}", file=sys.stderr)
            status = 1
            continue
        report.append(decision.as_dict())
        if not args.json:
            print(format_decision(decision))
    if args.json:
        print(json.dumps(report, indent=2))
    return status
