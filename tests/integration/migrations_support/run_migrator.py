"""Child process for the kill-midway test: `python run_migrator.py <lock_ttl_s> <module>...`.

Settings come from the environment (secrets never on the command line).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migrations_support import registry  # noqa: E402
from rpger_ops import migrate  # noqa: E402
from rpger_ops.settings import load_settings  # noqa: E402


def main(argv: list[str]) -> int:
    ttl, modules = float(argv[0]), argv[1:]
    applied = migrate.apply_pending(load_settings(_env_file=None), registry=registry(*modules), lock_ttl_s=ttl)
    print(f"applied {applied}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
