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
    "restore": "Restore a set (latest verified or an id) into the databases",
    "preseed": "Startup gate: restore new empty databases from the latest verified set",
    "migrate": "Schema migrations: status, plan, up, down",
    "retention": "Apply the retention policy (--dry-run shows what would go)",
    "health": "Ping the three databases",
}


def usage() -> str:
    lines = ["usage: rpger-ops <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
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
    try:
        module = importlib.import_module(f"rpger_ops.commands.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"rpger_ops.commands.{name}":
            print(f"rpger-ops: command {name!r} is not available in this build", file=sys.stderr)
            return 2
        raise
    from rpger_ops.settings import ConfigError

    try:
        return int(module.main(rest) or 0)
    except ConfigError as exc:
        print(f"rpger-ops: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
