"""`rpger-ops`: the operator's command line (thin dispatcher).

Each subcommand lives in `rpger_ops/commands/<name>.py` with
`main(argv: list[str]) -> int`; they are listed here explicitly.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, str] = {
    "dev": "Run the stack without Docker: real servers + `dagster dev`",
    "backup": "Take a backup set now (all databases, or --db ...)",
    "sets": "List backup sets (local and off-site) and their verification status",
    "verify": "Verify a backup set (checksums, counts; --deep restores into scratch)",
    "restore": "Restore a set (latest or an id) into the databases, all from that one set",
    "offsite": "Copy a set's verified archives to the off-site store again (after an outage)",
    "preseed": "Startup gate: restore new empty databases from the latest usable set",
    "migrate": "Schema migrations: status, plan, up, down",
    "retention": "Apply the retention policy (--dry-run shows what would go)",
    "health": "Ping the three databases",
    "daemon-health": "Healthcheck of the Dagster daemon (heartbeats); alerts when it stays down",
}


def usage() -> str:
    lines = ["usage: rpger-ops <command> [options]", "", "commands:"]
    lines += [f"  {name:<13} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"rpger-ops: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"rpger_ops.commands.{name.replace('-', '_')}")  # listed above: a missing one is a bug
    from rpger_ops.settings import ConfigError

    try:
        return int(module.main(rest) or 0)
    except ConfigError as exc:
        print(f"rpger-ops: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
