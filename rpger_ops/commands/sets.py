"""`rpger-ops sets`: list backup sets, local and off-site, with each database's status."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rpger_ops.catalog import Catalog
from rpger_ops.commands._output import fail
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.settings import Settings, load_settings

PROG = "rpger-ops sets"


def collect(settings: Settings, offsite: bool = True) -> tuple[dict[str, dict[str, Any]], str | None]:
    """set id -> {kind, local: manifest|None, offsite: manifest|None}; plus an off-site error."""
    rows: dict[str, dict[str, Any]] = {}
    for m in Catalog(settings.backup_dir).list_sets():
        rows.setdefault(m["set_id"], {"local": None, "offsite": None})["local"] = m
    error = None
    if offsite and settings.offsite_enabled:
        from rpger_ops.offsite import OffsiteStore

        try:
            store = OffsiteStore.from_settings(settings)
            for set_id in store.list_set_ids():
                rows.setdefault(set_id, {"local": None, "offsite": None})["offsite"] = store.read_manifest(set_id)
        except Exception as exc:  # still list the local sets
            error = f"off-site store unavailable: {type(exc).__name__}: {exc}"
    return dict(sorted(rows.items(), reverse=True)), error


def _status(manifest: dict[str, Any] | None, db: str) -> str:
    if manifest is None:
        return "-"
    return str(manifest.get("databases", {}).get(db, {}).get("status", "-"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("--local", action="store_true", help="local sets only (don't ask the off-site store)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    rows, error = collect(load_settings(), offsite=not args.local)
    if args.json:
        print(json.dumps({"sets": rows, "offsite_error": error}, indent=2, default=str))
        return 0 if error is None else 1
    print(f"{'SET':<18} {'KIND':<10} {'WHERE':<15} " + " ".join(f"{db:<9}" for db in ENGINE_NAMES) + "SCHEMA")
    for set_id, row in rows.items():
        m = row["local"] or row["offsite"]
        where = "+".join(w for w in ("local", "offsite") if row[w] is not None)
        print(f"{set_id:<18} {m.get('kind', '?'):<10} {where:<15} "
              + " ".join(f"{_status(m, db):<9}" for db in ENGINE_NAMES) + str(m.get("schema_version", "?")))
    if not rows:
        print("no backup sets")
    if error:
        return fail(PROG, error)
    return 0
