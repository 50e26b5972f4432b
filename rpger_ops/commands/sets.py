"""`rpger-ops sets`: list backup sets, local and off-site, each copy with its own status.

One line per copy: the local copy and the off-site copy of a set are checked
separately and can differ (an archive found corrupt in one store, an upload
that failed). KIND `safety*` marks safety sets, which are never chosen
automatically. SCHEMA is each database's schema version as recorded in its
data when the set was taken (mongo/redis/chroma). The footer names `latest`:
the set a restore of the whole stack would use."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rpger_ops.commands._output import fail
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.sets import BackupSet, SetKind, choose_latest
from rpger_ops.settings import Settings, load_settings
from rpger_ops.store import SetStore, StoreError, local_store, offsite_store, read_sets

PROG = "rpger-ops sets"


def collect(settings: Settings, offsite: bool = True) -> tuple[dict[str, dict[str, BackupSet | None]], list[str]]:
    """set id -> {"local": set|None, "offsite": set|None}, newest first; plus errors (store down,
    unreadable manifests)."""
    rows: dict[str, dict[str, BackupSet | None]] = {}
    errors: list[str] = []
    stores: list[SetStore] = [local_store(settings)]
    if offsite and settings.offsite_enabled:
        store = offsite_store(settings)
        assert store is not None
        stores.append(store)
    for store in stores:
        def unreadable(set_id: str, exc: StoreError, label: str = store.label) -> None:
            errors.append(f"{label} set {set_id}: {exc}")

        try:
            found = read_sets(store, unreadable)
        except StoreError as exc:  # still list the other store
            errors.append(f"{store.label} store unavailable: {exc}")
            continue
        for s in found:
            rows.setdefault(s.set_id, {"local": None, "offsite": None})[store.label] = s
    return dict(sorted(rows.items(), reverse=True)), errors


def _schema(s: BackupSet) -> str:
    return "/".join(str(s.schema_version_of(db)) if s.entry(db) else "-" for db in ENGINE_NAMES)


def _copy_json(s: BackupSet | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"complete": s.complete, "usable_for": s.verified_databases,
            "schema_versions": {db: s.schema_version_of(db) for db in s.databases},
            "manifest": s.model_dump(mode="json", exclude_none=True)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local", action="store_true", help="local sets only (don't ask the off-site store)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    rows, errors = collect(load_settings(), offsite=not args.local)
    latest = {where: choose_latest([s for r in rows.values() if (s := r[where]) is not None], ENGINE_NAMES).set_id
              for where in ("local", "offsite")}
    if args.json:
        print(json.dumps({
            "sets": [{"set_id": sid, "kind": (row["local"] or row["offsite"]).kind,  # type: ignore[union-attr]
                      "local": _copy_json(row["local"]), "offsite": _copy_json(row["offsite"])}
                     for sid, row in rows.items()],
            "latest": latest, "errors": errors}, indent=2))
        return 0 if not errors else 1
    print(f"{'SET':<18} {'KIND':<10} {'WHERE':<8} " + " ".join(f"{db:<14}" for db in ENGINE_NAMES)
          + f"{'COMPLETE':<9} SCHEMA")
    for set_id, row in rows.items():
        first = True
        for where in ("local", "offsite"):
            s = row[where]
            if s is None:
                continue
            kind = f"{s.kind}*" if s.kind == SetKind.SAFETY else str(s.kind)
            statuses = " ".join(f"{str(e.status) if (e := s.entry(db)) else '-':<14}" for db in ENGINE_NAMES)
            print(f"{set_id if first else '':<18} {kind if first else '':<10} {where:<8} {statuses}"
                  f"{'yes' if s.complete else 'no':<9} {_schema(s)}")
            first = False
    if not rows:
        print("no backup sets")
    else:
        print("* safety set: the contents a forced restore replaced; restored only by explicit id")
        for where, newest in latest.items():
            if where == "local" or newest:
                print(f"latest {where} (whole stack): {newest or 'none'}")
    for error in errors:
        print(f"error: {error}")
    if errors:
        return fail(PROG, f"{len(errors)} problem(s) listing sets (see above)")
    return 0
