"""Content-addressed dumps: every file of a dump is a blob shared by every set
that holds the same bytes.

A Mongo collection is its `<name>.bson` and `<name>.metadata.json`, a Chroma
collection its `collections/<name>.parquet` (plus the database's small
`collections.json`), Redis its RDB and sidecar. A namespace that did not change
between two sets dumps to the same bytes (the engines write deterministically),
so its blob has the same address and costs nothing new, locally or off-site.

Unchanged files are found by hashing the dump's own files on local disk (the
live database is read once, by the dump); only new blobs are compressed (zstd,
frame checksums) and, with encryption, age-encrypted. Each new blob is
decompressed again and its plaintext hash compared before it is encrypted or
stored: the plaintext check. An existing blob is reused only after its stored
bytes hashed to what was recorded when it was written; a damaged one is
written again from the new dump.

Addresses: sha256 of the plaintext; with encryption the keyed hash of
`crypto.BlobKey`, so the store never sees a plaintext hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import zstandard

from rpger_ops.archive import CHUNK, sha256_file
from rpger_ops.crypto import (
    BlobKey,
    CryptoError,
    IdentityMissing,
    decrypt_file,
    encrypt_file,
    is_age,
    load_identities,
    load_recipients,
    seal,
    unseal,
)
from rpger_ops.sets import BlobRef, DatabaseEntry

if TYPE_CHECKING:
    from rpger_ops.settings import Settings
    from rpger_ops.store.base import SetStore
    from rpger_ops.store.local import LocalStore

SEALED_DIGEST = "digest"
SEALED_PLAIN = "plain_sha256"  # path -> plaintext sha256 (encrypted entries: the addresses are keyed)


class BlobError(Exception):
    """A blob could not be written or read back as its plaintext; the message is safe to show."""


@dataclass(frozen=True)
class Codec:
    """How new blobs are written: zstd level and threads; age recipients and the address key."""

    level: int = 6
    threads: int = 0
    recipients: list[Any] | None = None
    blob_key: BlobKey | None = None

    @property
    def encrypted(self) -> bool:
        return self.recipients is not None

    def blob_id(self, plain_sha256: str) -> str:
        return self.blob_key.blob_id(plain_sha256) if self.blob_key is not None else plain_sha256

    @classmethod
    def from_settings(cls, settings: Settings) -> Codec:
        if settings.age_recipients_file is None:
            return cls(settings.zstd_level, settings.zstd_threads)
        return cls(settings.zstd_level, settings.zstd_threads, load_recipients(settings.age_recipients_file),
                   BlobKey.load_or_create(settings.blob_key_path))


@dataclass
class Packed:
    files: dict[str, BlobRef]
    plain: dict[str, str]  # path -> plaintext sha256
    new_bytes: int = 0
    new_blobs: int = 0
    reused_blobs: int = 0
    rewritten: list[str] = field(default_factory=list)  # damaged blobs written again
    seconds: float = 0.0

    @property
    def stored_bytes(self) -> int:
        return sum(ref.stored_bytes for ref in self.files.values())


def tree_hash(files: dict[str, BlobRef]) -> str:
    """One hash naming exactly which stored blobs make up an entry (its `sha256`)."""
    h = hashlib.sha256(b"rpger-tree-v1\n")
    for path in sorted(files):
        ref = files[path]
        h.update(f"{path}\0{ref.id}\0{ref.stored_sha256}\0{ref.stored_bytes}\n".encode())
    return h.hexdigest()


def dump_files(dump_dir: Path) -> list[str]:
    """Every regular file of a dump, as sorted POSIX paths relative to it."""
    out = []
    for path in dump_dir.rglob("*"):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise BlobError(f"dump holds something that is not a file or folder: {path.relative_to(dump_dir)}")
        if path.is_file():
            out.append(path.relative_to(dump_dir).as_posix())
    return sorted(out)


def _compress(src: Path, dest: Path, codec: Codec) -> None:
    compressor = zstandard.ZstdCompressor(level=codec.level, threads=codec.threads, write_checksum=True)
    with open(src, "rb") as fin, open(dest, "xb") as fout:
        compressor.copy_stream(fin, fout, read_size=CHUNK, write_size=CHUNK)
        fout.flush()
        os.fsync(fout.fileno())


def _plain_sha256_of_zstd(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as reader:
        while chunk := reader.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def pack_dump(dump_dir: Path, store: LocalStore, codec: Codec, work: Path,
              progress: Callable[[str], None] = lambda _m: None) -> Packed:
    """Store every file of `dump_dir` as a blob of the local store (new ones only)."""
    started = time.monotonic()
    packed = Packed({}, {})
    for rel in dump_files(dump_dir):
        src = dump_dir / rel
        plain_sha, size = sha256_file(src), src.stat().st_size
        blob_id = codec.blob_id(plain_sha)
        packed.plain[rel] = plain_sha
        info = store.blob_info(blob_id)
        if info is not None and info.stored_sha256 and store.blob_sha256(blob_id) == info.stored_sha256:
            store.keep_blob(blob_id)
            packed.files[rel] = BlobRef(id=blob_id, bytes=size, stored_bytes=info.stored_bytes,
                                        stored_sha256=info.stored_sha256)
            packed.reused_blobs += 1
            continue
        if info is not None:
            packed.rewritten.append(f"{rel}: stored blob {blob_id[:12]}… was damaged; written again")
        progress(f"compressing {rel} ({size} bytes)")
        zst = work / f"{blob_id}.zst"
        try:
            _compress(src, zst, codec)
            # The plaintext check: the compressed bytes give back exactly the dumped file.
            back_sha, back_size = _plain_sha256_of_zstd(zst)
            if (back_sha, back_size) != (plain_sha, size):
                raise BlobError(f"{rel}: compressed blob does not decompress to the dumped file")
            stored = zst
            if codec.encrypted:
                stored = work / f"{blob_id}.age"
                assert codec.recipients is not None
                encrypt_file(zst, stored, codec.recipients)
                zst.unlink()
            stored_sha, stored_bytes = sha256_file(stored), stored.stat().st_size
            store.install_blob(stored, blob_id, stored_sha)
        finally:
            for leftover in (zst, work / f"{blob_id}.age"):
                leftover.unlink(missing_ok=True)
        packed.files[rel] = BlobRef(id=blob_id, bytes=size, stored_bytes=stored_bytes, stored_sha256=stored_sha)
        packed.new_bytes += stored_bytes
        packed.new_blobs += 1
    packed.seconds = time.monotonic() - started
    return packed


# --- reading back -------------------------------------------------------------------------

def identities_for(entry: DatabaseEntry, settings: Settings, what: str) -> list[Any] | None:
    """The identities an entry needs (None for a plaintext one); a clear error when there are none."""
    if not entry.encrypted:
        return None
    if settings.age_identity_file is None:
        raise IdentityMissing(f"{what} is encrypted: set RPGER_AGE_IDENTITY_FILE to the age identity "
                              "(private key) of one of its recipients to read it")
    return load_identities(settings.age_identity_file)


def sealed_facts(entry: DatabaseEntry, identities: list[Any] | None, what: str) -> dict[str, Any]:
    """The plaintext facts of an encrypted entry (digest, plaintext hashes); {} for a plaintext one."""
    if not entry.encrypted:
        return {}
    assert identities is not None
    out: dict[str, Any] = {}
    for name, sealed in entry.sealed.items():
        try:
            out[name] = json.loads(unseal(sealed, identities, what))
        except json.JSONDecodeError:
            raise CryptoError(f"{what}: sealed {name} is not JSON") from None
    return out


def readable_entry(entry: DatabaseEntry, identities: list[Any] | None, what: str) -> DatabaseEntry:
    """The entry with its sealed digest opened (what restore and deep verify compare with)."""
    facts = sealed_facts(entry, identities, what)
    if SEALED_DIGEST in facts:
        return entry.model_copy(update={"digest": facts[SEALED_DIGEST]})
    return entry


def seal_facts(facts: dict[str, Any], recipients: list[Any]) -> dict[str, str]:
    return {name: seal(json.dumps(value, sort_keys=True), recipients) for name, value in facts.items()}


def _safe_target(dest: Path, rel: str) -> Path:
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise BlobError(f"unsafe path in manifest: {rel!r}")
    return dest.joinpath(*pure.parts)


def unpack_entry(store: SetStore, entry: DatabaseEntry, dest: Path, work: Path, identities: list[Any] | None,
                 what: str) -> None:
    """Write an entry's dump into `dest` from its blobs: each stored blob hash-checked,
    decrypted when encrypted, decompressed and its plaintext hash compared. Raises
    CorruptArchive/ArchiveMissing (the store's), BlobError or CryptoError; the caller
    removes `dest` then."""
    from rpger_ops.store.base import CorruptArchive

    facts = sealed_facts(entry, identities, what)  # a wrong identity fails here, before any download
    plain = facts.get(SEALED_PLAIN, {}) if entry.encrypted else {rel: ref.id for rel, ref in entry.files.items()}
    dest.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    for rel in sorted(entry.files):
        ref = entry.files[rel]
        target = _safe_target(dest, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        fetched = store.fetch_blob(ref.id, ref.stored_sha256, work)
        zst = fetched
        clear: Path | None = None
        try:
            with open(fetched, "rb") as fh:
                head = fh.read(len(b"age-encryption.org/v1\n"))
            if is_age(head) != entry.encrypted:
                raise CorruptArchive(f"{what}: blob {ref.id[:12]}… is {'not ' if entry.encrypted else ''}"
                                     "age-encrypted, unlike its manifest says")
            if entry.encrypted:
                assert identities is not None
                clear = work / f".{ref.id}.zst"
                decrypt_file(fetched, clear, identities, what)
                zst = clear
            h, n = hashlib.sha256(), 0
            try:
                with open(zst, "rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as reader, \
                        open(target, "wb") as out:
                    while chunk := reader.read(CHUNK):
                        h.update(chunk)
                        n += len(chunk)
                        out.write(chunk)
            except zstandard.ZstdError as exc:
                raise CorruptArchive(f"{what}: blob {ref.id[:12]}… does not decompress ({exc})") from None
            expected = plain.get(rel)
            if n != ref.bytes or (expected is not None and h.hexdigest() != expected):
                raise CorruptArchive(f"{what}: blob {ref.id[:12]}… decompresses to other bytes than "
                                     f"{rel} held when it was dumped")
        finally:
            if clear is not None:
                clear.unlink(missing_ok=True)
            if fetched.parent == work:  # a download, not a local blob in place
                fetched.unlink(missing_ok=True)


def stored_problem(store: SetStore, entry: DatabaseEntry) -> str | None:
    """Hash every stored blob of an entry (or its archive) as it is now; None when all match."""
    bad = []
    for rel, ref in sorted(entry.files.items()):
        actual = store.blob_sha256(ref.id)
        if actual is None:
            bad.append(f"{rel}: blob {ref.id[:12]}… missing")
        elif actual != ref.stored_sha256:
            bad.append(f"{rel}: blob {ref.id[:12]}… sha256 {actual[:12]}… != manifest {ref.stored_sha256[:12]}…")
    if bad:
        return f"{len(bad)} of {len(entry.files)} blob(s) damaged: " + "; ".join(bad[:3])
    return None


def copy_blob(src: LocalStore, dest: SetStore, ref: BlobRef, work: Path) -> bool:
    """Upload one local blob unless `dest` holds it already (same stored hash and size).
    True when bytes were written."""
    info = dest.blob_info(ref.id)
    if info is not None and info.stored_sha256 == ref.stored_sha256 and info.stored_bytes == ref.stored_bytes:
        dest.keep_blob(ref.id)
        return False
    path = src.fetch_blob(ref.id, ref.stored_sha256, work)
    dest.put_blob(ref.id, path, ref.stored_sha256)
    return True


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
