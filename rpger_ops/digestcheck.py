"""Does a restored database hold what the backup held?

The manifest's `digest` was computed from the dump itself, so it is the
content of that instant. For most content that is the answer. Keys with a
TTL are the exception: a Redis key that expired between the backup and the
restore is legitimately gone, and the restored digest then differs. When the
restore reported expired keys, the restored digest is compared with what a
restore of the dump gives *now* (`Engine.digest_dump`) instead — and the note
says so.

Reading everything back costs about as much as the load itself. Where the
server hashes its own data (MongoDB's dbHash), a deep verification records that
hash of its scratch restore, whose digest it has just proven equal to the
backup's; a later restore of the same set whose server hash equals it is proven
without the read-back. Any other outcome falls back to the full digest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rpger_ops.engines.base import Engine, RestoreResult
from rpger_ops.sets import DatabaseEntry


def matches_backup(engine: Engine, dump_dir: Path, restored: RestoreResult, restored_digest: str,
                   expected: str | None, expected_version: int = 1) -> tuple[bool, list[str]]:
    """(digest ok, notes). `dump_dir` must still exist. A digest recorded by another
    version of the engine's digest is not comparable: the archive (its sha256 checked)
    is digested again now, and that is the reference."""
    if expected_version != type(engine).digest_version:
        return restored_digest == engine.digest_dump(dump_dir), [
            f"digest of the archive recomputed: the set recorded digest version {expected_version}, "
            f"this code computes version {type(engine).digest_version}"]
    if expected and restored_digest == expected:
        return True, []
    expired = [n for n in restored.notes if "expired" in n]
    if expected and expired and restored_digest == engine.digest_dump(dump_dir):
        return True, [*expired, "digest compared with the dump's content as of now "
                                "(keys with a TTL expired since the backup)"]
    return False, []


@dataclass
class RestoredCheck:
    ok: bool
    digest: str | None  # the restored data's digest (None: proven by the server hash)
    server_hash: str | None  # the server's hash of it, when it has one
    notes: list[str] = field(default_factory=list)
    method: str = "digest"  # "digest" or "server hash"


def check_restored(engine: Engine, dump_dir: Path, restored: RestoreResult, entry: DatabaseEntry,
                   use_server_hash: bool = True) -> RestoredCheck:
    """Does `engine`, just loaded from `dump_dir`, hold what `entry` recorded? By the
    server's own hash when the set carries one proven by a digest, else by digest."""
    server_hash, missing = engine.server_hash()
    notes = [missing] if missing else []
    proven = entry.restore_check.server_hash if entry.restore_check and entry.restore_check.ok else None
    if use_server_hash and server_hash is not None and proven is not None:
        if server_hash == proven:
            return RestoredCheck(True, None, server_hash, [
                "checked by the server's own hash, equal to the one its deep verification recorded "
                "(that scratch restore was proven by digest)"], "server hash")
        notes.append("the server's hash differs from the one its deep verification recorded; checked by digest")
    digest = engine.digest()
    ok, digest_notes = matches_backup(engine, dump_dir, restored, digest, entry.digest, entry.digest_version)
    return RestoredCheck(ok, digest, server_hash if ok else None, notes + digest_notes)
