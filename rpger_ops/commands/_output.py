"""Shared by the operator commands: progress lines on stderr, database options."""

from __future__ import annotations

import argparse
import sys
import time

from rpger_ops.engines.base import ENGINE_NAMES


def progress(message: str, done: int, total: int | None) -> None:
    """Progress goes to stderr so stdout stays the command's result."""
    suffix = f" [{done}/{total}]" if total else ""
    print(f"{time.strftime('%H:%M:%S')} {message}{suffix}", file=sys.stderr, flush=True)


def add_db_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--db", action="append", choices=ENGINE_NAMES, dest="dbs", metavar="DB",
                        help=f"database to {what} ({', '.join(ENGINE_NAMES)}); repeat for several; default all")


def fail(prog: str, message: str, code: int = 1) -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return code
