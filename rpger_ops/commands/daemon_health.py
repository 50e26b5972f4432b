"""`rpger-ops daemon-health`: the Dagster daemon's healthcheck (exit 1 when not
live) that also alerts once when it stays unhealthy (rpger_ops.daemonhealth)."""

from __future__ import annotations

import argparse
import json

from rpger_ops.daemonhealth import check_and_alert
from rpger_ops.settings import load_settings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rpger-ops daemon-health", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    settings = load_settings()
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        result = check_and_alert(settings, instance)
    if args.json:
        print(json.dumps({"live": result.live, "summary": result.summary, "stale": result.stale}))
    else:
        print(result.summary)
    return 0 if result.live else 1
