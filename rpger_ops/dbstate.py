"""What a database holds, as far as preseeding and restoring need to know.

Per database, from what the server shows (we cannot see its volume):

    no user data, no stack marker  -> "new"        a new volume: preseed restores it
    stack marker but no user data  -> "emptied"    someone emptied it on purpose: warn only
    user data                      -> "has_data"   never touched without --force
    unreachable / auth refused     -> "not_ready"  neither empty nor full: do nothing

A data directory that is not mounted looks exactly like a new volume, which is
why the compose volumes are named and mandatory (docs/runbook.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from rpger_ops.engines.base import Engine, EngineError, LedgerEntry, NotReadyError, StackMarker

if TYPE_CHECKING:
    from rpger_ops.settings import Settings

State = Literal["new", "emptied", "has_data", "not_ready"]


def probe(engine: Engine) -> tuple[State, str]:
    """The database's state and a one-line reason."""
    try:
        empty = engine.is_empty()
        marker = engine.read_marker()
    except NotReadyError as exc:
        return "not_ready", str(exc)
    if not empty:
        return "has_data", "holds data"
    if marker is None:
        return "new", "no data and no stack marker: a new volume"
    return "emptied", (f"no data but a stack marker from {marker.initialized_at or 'an earlier start'} "
                       f"(stack {marker.stack_id}): emptied on purpose, not restoring")


def describe_contents(engine: Engine) -> str:
    """'3 namespaces (a, b, c), 1,204 items': what a refused target holds."""
    try:
        stats = engine.stats()
    except EngineError as exc:
        return f"data ({exc})"
    total = sum(s.count for s in stats.values())
    names = ", ".join(sorted(stats)[:5]) + (", …" if len(stats) > 5 else "")
    return f"{len(stats)} namespaces ({names}), {total:,} items"


def write_marker(engine: Engine, settings: Settings, schema_version: int,
                 ledger: list[dict[str, Any]] | None) -> None:
    """The marker of a seeded database: the schema version and migrations ledger its
    data came with (a set taken before ledgers moved into markers gives None: the
    runner then derives the ledger from the version)."""
    entries = None if ledger is None else tuple(LedgerEntry.from_dict(e) for e in ledger)
    engine.write_marker(StackMarker(stack_id=settings.stack_id, schema_version=schema_version, migrations=entries))
