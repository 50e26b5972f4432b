"""Blobs and keys without servers: a dump folder packed into the local store and
unpacked again, plain and age-encrypted; keyed addresses; key files."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rpger_ops.blobs import BlobError, Codec, pack_dump, tree_hash, unpack_entry
from rpger_ops.crypto import (
    BlobKey,
    CryptoError,
    WrongIdentity,
    generate_identity,
    load_identities,
    load_recipients,
)
from rpger_ops.sets import DatabaseEntry, EntryStatus
from rpger_ops.store import LocalStore


def _dump(root: Path) -> Path:
    d = root / "dump"
    (d / "rpger").mkdir(parents=True)
    (d / "rpger" / "monsters.bson").write_bytes(b"goblin " * 5000)
    (d / "rpger" / "users.bson").write_bytes(b"player1@example.org " * 100)
    (d / "collections.json").write_text('{"format": 1}')
    return d


def _entry(packed: object) -> DatabaseEntry:
    return DatabaseEntry(status=EntryStatus.VERIFIED, layout="blobs", files=packed.files)  # type: ignore[attr-defined]


def test_pack_is_content_addressed_and_unpacks_exactly(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "backups")
    dump = _dump(tmp_path)
    first = pack_dump(dump, store, Codec(level=3), store.work_dir("t"))
    assert first.new_blobs == 3 and first.reused_blobs == 0
    ref = first.files["rpger/monsters.bson"]
    assert ref.id == hashlib.sha256((dump / "rpger" / "monsters.bson").read_bytes()).hexdigest()
    assert ref.stored_bytes < ref.bytes  # zstd
    again = pack_dump(dump, store, Codec(level=3), store.work_dir("t"))
    assert again.new_blobs == 0 and again.new_bytes == 0 and again.files == first.files
    assert tree_hash(again.files) == tree_hash(first.files)
    out = tmp_path / "out"
    unpack_entry(store, _entry(first), out, tmp_path / "w", None, "test")
    for rel in first.files:
        assert (out / rel).read_bytes() == (dump / rel).read_bytes()


def test_a_damaged_blob_is_not_reused_but_written_again(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "backups")
    dump = _dump(tmp_path)
    first = pack_dump(dump, store, Codec(), store.work_dir("t"))
    path = store.blob_file(first.files["rpger/users.bson"].id)
    path.write_bytes(b"rot" + path.read_bytes()[3:])
    again = pack_dump(dump, store, Codec(), store.work_dir("t"))
    assert again.new_blobs == 1 and again.rewritten and "users.bson" in again.rewritten[0]


def test_encrypted_blobs_use_keyed_addresses_and_need_the_identity(tmp_path: Path) -> None:
    identity, recipient = generate_identity()
    other, _ = generate_identity()
    (tmp_path / "r.txt").write_text(f"# comment\n{recipient}\n")
    (tmp_path / "i.txt").write_text(identity + "\n")
    (tmp_path / "o.txt").write_text(other + "\n")
    store = LocalStore(tmp_path / "backups")
    dump = _dump(tmp_path)
    key = BlobKey.load_or_create(tmp_path / "keys" / "blob.key")
    codec = Codec(recipients=load_recipients(tmp_path / "r.txt"), blob_key=key)
    packed = pack_dump(dump, store, codec, store.work_dir("t"))
    plain = hashlib.sha256((dump / "rpger" / "users.bson").read_bytes()).hexdigest()
    ref = packed.files["rpger/users.bson"]
    assert ref.id == key.blob_id(plain) != plain
    stored = store.blob_file(ref.id).read_bytes()
    assert stored.startswith(b"age-encryption.org/v1\n") and b"player1@example.org" not in stored
    assert pack_dump(dump, store, codec, store.work_dir("t")).new_blobs == 0  # dedup survives encryption
    entry = DatabaseEntry(status=EntryStatus.VERIFIED, layout="blobs", files=packed.files, encrypted=True)
    out = tmp_path / "out"
    unpack_entry(store, entry, out, tmp_path / "w", load_identities(tmp_path / "i.txt"), "test")
    assert (out / "rpger" / "users.bson").read_bytes() == (dump / "rpger" / "users.bson").read_bytes()
    with pytest.raises(WrongIdentity, match="cannot decrypt"):
        unpack_entry(store, entry, tmp_path / "out2", tmp_path / "w", load_identities(tmp_path / "o.txt"), "test")


def test_key_files(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "blob-id.key"
    key = BlobKey.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert BlobKey.load_or_create(path) == key and len(key.key_id) == 16 and key.key.hex() not in key.key_id
    path.write_text("short")
    with pytest.raises(CryptoError, match="hex key"):
        BlobKey.load_or_create(path)
    (tmp_path / "bad.txt").write_text("AGE-SECRET-KEY-1NOTAKEY\n")
    with pytest.raises(CryptoError) as bad:
        load_identities(tmp_path / "bad.txt")
    assert "NOTAKEY" not in str(bad.value)  # a key file's content is never quoted
    with pytest.raises(CryptoError, match="does not exist"):
        load_recipients(tmp_path / "missing.txt")
    (tmp_path / "r.txt").write_text("hello\n")
    with pytest.raises(CryptoError, match="line 1"):
        load_recipients(tmp_path / "r.txt")


def test_chains_of_one_process_make_the_key_at_once_and_agree(tmp_path: Path) -> None:
    """The three chains of a backup run in threads of one process and each loads the
    blob-id key; on a new backup dir they create it at the same moment (seen in CI:
    FileExistsError on a pid-only temp name)."""
    for attempt in range(20):
        path = tmp_path / f"try{attempt}" / "keys" / "blob-id.key"
        barrier = threading.Barrier(6)

        def load(path: Path = path, barrier: threading.Barrier = barrier) -> BlobKey:
            barrier.wait()
            return BlobKey.load_or_create(path)

        with ThreadPoolExecutor(max_workers=6) as pool:
            keys = list(pool.map(lambda _i: load(), range(6)))
        assert len({k.key for k in keys}) == 1
        assert [p.name for p in path.parent.iterdir()] == ["blob-id.key"]  # no temp file left


def test_manifest_paths_cannot_escape(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "backups")
    packed = pack_dump(_dump(tmp_path), store, Codec(), store.work_dir("t"))
    evil = DatabaseEntry(status=EntryStatus.VERIFIED, layout="blobs",
                         files={"../../escape": next(iter(packed.files.values()))})
    with pytest.raises(BlobError, match="unsafe path"):
        unpack_entry(store, evil, tmp_path / "out", tmp_path / "w", None, "test")
