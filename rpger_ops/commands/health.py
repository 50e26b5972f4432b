"""`rpger-ops health`: ping the three databases; exit 1 when any is down."""

from __future__ import annotations

import argparse
import json

from rpger_ops.health import check_all
from rpger_ops.settings import load_settings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rpger-ops health", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    results = check_all(load_settings())
    if args.json:
        print(json.dumps({n: h.as_dict() for n, h in results.items()}, indent=2))
    else:
        for n, h in results.items():
            state = "up" if h.up else "DOWN"
            print(f"{n:<7} {state:<5} {h.server_version or '-':<10} {h.latency_ms} ms  {h.error or ''}")
    return 0 if all(h.up for h in results.values()) else 1
