"""Does a restored database hold what the backup held?

The manifest's `source_digest` was taken at backup time. For most content
that is the answer. Keys with a TTL are the exception: a Redis key that
expired between the backup and the restore is legitimately gone, and the
restored digest then differs. When the engine can say what a restore of the
dump gives *now* (`digest_dump`, Redis) and the restore reported expired keys,
the restored digest is compared with that instead — and the note says so.
"""

from __future__ import annotations

from pathlib import Path

from rpger_ops.engines.base import Engine, RestoreResult


def matches_backup(engine: Engine, dump_dir: Path, restored: RestoreResult, restored_digest: str,
                   expected: str | None) -> tuple[bool, list[str]]:
    """(digest ok, notes). `dump_dir` must still exist."""
    if expected and restored_digest == expected:
        return True, []
    digest_dump = getattr(engine, "digest_dump", None)
    expired = [n for n in restored.notes if "expired" in n]
    if expected and digest_dump is not None and expired:
        now = digest_dump(dump_dir)
        if restored_digest == now:
            return True, [*expired, "digest compared with the dump's content as of now "
                                    "(keys with a TTL expired since the backup)"]
    return False, []
