"""ChromaEngine on a real Chroma 1.5 server (`chroma run`), one fresh database per test."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb.errors
import numpy as np
import pytest
from conftest import Endpoint, make_settings

from rpger_ops import testdata
from rpger_ops.connect import chroma_admin, chroma_client
from rpger_ops.engines import chroma as chroma_module
from rpger_ops.engines.base import EngineError, StackMarker
from rpger_ops.engines.chroma import LOCK_PREFIX, ChromaEngine, chroma_namespace
from rpger_ops.engines.chroma_cosine import cosine_preimage, cosine_round_trip
from rpger_ops.settings import Settings

# Chroma-only tests never touch Mongo or Redis: point those at a closed port.
_UNUSED_MONGO = Endpoint("", 0, None, {}, uri="mongodb://127.0.0.1:9/")
_UNUSED_REDIS = Endpoint("", 0, None, {}, uri="redis://127.0.0.1:9/0")
SMALL_DIM = 8


def chroma_settings(tmp_path: Path, chroma: Endpoint) -> Settings:
    return make_settings(tmp_path, _UNUSED_MONGO, _UNUSED_REDIS, chroma)


@pytest.fixture
def engine(tmp_path: Path, chroma_endpoint: Endpoint) -> Iterator[ChromaEngine]:
    e = ChromaEngine(chroma_settings(tmp_path, chroma_endpoint))
    yield e
    e.close()


@pytest.fixture
def other_engine(tmp_path: Path, chroma_endpoint: Endpoint) -> Iterator[ChromaEngine]:
    """A second, separate database on the same server."""
    e = ChromaEngine(chroma_settings(tmp_path, chroma_endpoint))
    yield e
    e.close()


def client(engine: ChromaEngine) -> Any:
    return chroma_client(engine.settings)


def add_odd_records(engine: ChromaEngine) -> None:
    """Values that a lossy export would get wrong: float32 edge cases, int vs float vs bool."""
    coll = client(engine).create_collection(
        "odd.values-1", metadata={"i": 1, "f": 1.0, "b": True, "s": "1"},
        configuration={"hnsw": {"space": "l2", "ef_construction": 123, "max_neighbors": 12}},
        embedding_function=None)
    tiny = float(np.float32(1e-45))  # smallest subnormal float32
    coll.add(ids=["a", "b", "c"],
             embeddings=[[tiny, -0.0, 3.4028234663852886e38, 0.1],  # type: ignore[list-item]
                         [1.0, 2.0, 3.0, 4.0], [0.3333333432674408, -1.5, 2.5, 1e-8]],
             documents=["", None, "ünïcødé"],  # type: ignore[list-item]
             metadatas=[{"n": 0, "x": 0.0, "t": False}, None, {"big": 2**53 + 1, "neg": -7.25}],  # type: ignore[list-item]
             uris=["s3://bucket/a", None, None])  # type: ignore[list-item]
    client(engine).create_collection("empty-collection", embedding_function=None)
    bare = client(engine).create_collection("bare-vectors", embedding_function=None,
                                            configuration={"hnsw": {"space": "ip"}})
    bare.add(ids=["v1", "v2"], embeddings=[[0.5, -0.25], [1e-3, 7.0]])  # no documents, metadata or uris
    emptied = client(engine).create_collection("emptied-collection", embedding_function=None)
    emptied.add(ids=["gone"], embeddings=[[1.0, 2.0]])  # sets the dimension, which outlives the record
    emptied.delete(ids=["gone"])


def test_stack_namespaces_are_valid_chroma_names(engine: ChromaEngine) -> None:
    assert chroma_namespace("_rpger_migrations") == "rpger__migrations"
    assert chroma_namespace("monsters") == "monsters"


def test_is_empty_ignores_marker_locks_and_stack_namespaces(engine: ChromaEngine) -> None:
    assert engine.is_empty()
    engine.write_marker(StackMarker("s1", 1))
    assert engine.acquire_lock("backup", "me", 30)
    client(engine).create_collection(chroma_namespace("_rpger_migrations"), embedding_function=None)
    assert engine.is_empty()
    client(engine).create_collection("monsters", embedding_function=None)
    assert not engine.is_empty()


def test_stats_count_records_per_collection(engine: ChromaEngine) -> None:
    report = testdata.load_chroma(engine.settings, scale=20, dim=SMALL_DIM)
    engine.write_marker(StackMarker("s", 1))
    stats = engine.stats()
    assert {name: s.count for name, s in stats.items()} == report.chroma_counts
    assert report.chroma_counts["monsters"] == 20


def test_digest_equal_for_equal_content_and_changed_by_each_single_change(
        engine: ChromaEngine, other_engine: ChromaEngine) -> None:
    testdata.load_chroma(engine.settings, scale=20, dim=SMALL_DIM)
    # The other database gets the same records in reverse order, in small batches.
    src, dst = client(engine), client(other_engine)
    for name in reversed(testdata.CHROMA_COLLECTIONS):
        s = src.get_collection(name)
        got = s.get(include=["embeddings", "documents", "metadatas"])
        d = dst.create_collection(name, metadata=s.metadata, configuration={"hnsw": {"space": "cosine"}},
                                  embedding_function=None)
        n = len(got["ids"])
        exact, unresolved = cosine_preimage(np.asarray(got["embeddings"], dtype=np.float32))
        assert unresolved == 0
        for i in reversed(range(0, n, 3)):
            d.add(ids=got["ids"][i:i + 3], embeddings=exact[i:i + 3],
                  documents=got["documents"][i:i + 3], metadatas=got["metadatas"][i:i + 3])
    base = engine.digest()
    assert other_engine.digest() == base
    assert engine.digest() == base  # stable
    with engine.scratch() as third:  # the same generator run again elsewhere
        testdata.load_chroma(third.settings, scale=20, dim=SMALL_DIM)
        assert third.digest() == base

    monsters = dst.get_collection("monsters", embedding_function=None)
    original = monsters.get(ids=["monster_3_0"], include=["embeddings", "documents", "metadatas"])
    vec = np.asarray(original["embeddings"][0], dtype=np.float32)
    meta = dict(original["metadatas"][0])

    def check(change: Any, revert: Any, what: str) -> None:
        change()
        assert other_engine.digest() != base, f"digest missed: {what}"
        revert()
        assert other_engine.digest() == base, f"digest not restored after reverting: {what}"

    # Cosine collections re-normalise what is added, so write the input that stores exactly
    # the nudged (and afterwards the original) value, and check the server stored it.
    nudged = vec.copy()
    nudged[5] = np.nextafter(nudged[5], np.float32(np.inf))  # one ulp of one float32

    def store_exactly(target: np.ndarray) -> None:
        x, unresolved = cosine_preimage(target[None, :])
        assert unresolved == 0
        monsters.update(ids=["monster_3_0"], embeddings=x)
        got = monsters.get(ids=["monster_3_0"], include=["embeddings"])["embeddings"][0]
        assert np.asarray(got, dtype=np.float32).tobytes() == target.tobytes()

    check(lambda: store_exactly(nudged), lambda: store_exactly(vec), "one embedding value")
    same_vec = cosine_preimage(vec[None, :])[0]  # without an embedding function, documents need one
    check(lambda: monsters.update(ids=["monster_3_0"], documents=["changed"], embeddings=same_vec),
          lambda: monsters.update(ids=["monster_3_0"], documents=[original["documents"][0]], embeddings=same_vec),
          "one document")
    check(lambda: monsters.update(ids=["monster_3_0"], metadatas=[{**meta, "content_index": 0.0}]),
          lambda: monsters.update(ids=["monster_3_0"], metadatas=[meta]), "metadata int -> float")
    check(lambda: monsters.update(ids=["monster_3_0"], metadatas=[{**meta, "name": "Other"}]),
          lambda: monsters.update(ids=["monster_3_0"], metadatas=[meta]), "one metadata value")
    coll_meta = dict(monsters.metadata)
    check(lambda: monsters.modify(metadata={**coll_meta, "schema": "rpger-2"}),
          lambda: monsters.modify(metadata=coll_meta), "one collection metadata value")

    def rebuild(name: str, configuration: dict[str, Any]) -> None:
        """Same records and metadata, another configuration (Chroma can't modify the space)."""
        old = dst.get_collection(name, embedding_function=None)
        got = old.get(include=["embeddings", "documents", "metadatas"])
        meta = old.metadata
        dst.delete_collection(name)
        new = dst.create_collection(name, metadata=meta, configuration=configuration,  # type: ignore[arg-type]
                                    embedding_function=None)
        vectors = np.asarray(got["embeddings"], dtype=np.float32)
        if configuration["hnsw"].get("space", "cosine") == "cosine":
            vectors = cosine_preimage(vectors)[0]
        new.add(ids=got["ids"], embeddings=vectors, documents=got["documents"], metadatas=got["metadatas"])

    check(lambda: rebuild("spells", {"hnsw": {"space": "l2"}}),
          lambda: rebuild("spells", {"hnsw": {"space": "cosine"}}), "a collection's distance")
    check(lambda: rebuild("items", {"hnsw": {"space": "cosine", "ef_construction": 200}}),
          lambda: rebuild("items", {"hnsw": {"space": "cosine"}}), "an HNSW parameter")

    # Deleting one record changes it too.
    assert engine.stats()["items"].count == 20
    src.get_collection("items").delete(ids=["item_0_0"])
    assert engine.digest() != base


def _dump(engine: ChromaEngine, dest: Path) -> tuple[Any, list[tuple[str, int, int | None]]]:
    calls: list[tuple[str, int, int | None]] = []
    dest.mkdir()
    result = engine.dump(dest, lambda msg, done, total: calls.append((msg, done, total)))
    return result, calls


def test_dump_count_restore_round_trip_into_scratch(engine: ChromaEngine, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chroma_module, "ADD_BATCH_ROWS", 7)  # several pipelined batches per collection
    report = testdata.load_chroma(engine.settings, scale=30)  # real shape: 1536-d cosine
    add_odd_records(engine)
    ledger = client(engine).create_collection(chroma_namespace("_rpger_migrations"),
                                              metadata={"applied": 2}, embedding_function=None)
    ledger.add(ids=["0001"], embeddings=[[0.0]], documents=["initial"])
    engine.write_marker(StackMarker("s", 1))
    assert engine.acquire_lock("backup", "me", 60)
    source_digest = engine.digest()
    # Chroma hands back cosine embeddings through its normalisation; our emulation must match it.
    stored = client(engine).get_collection("monsters").get(ids=[f"monster_{i}_0" for i in range(30)],
                                                           include=["embeddings"])["embeddings"]
    added = np.asarray(testdata.embeddings(30, 7 * 100 + 0), dtype=np.float32)
    assert np.asarray(stored, dtype=np.float32).tobytes() == cosine_round_trip(added).tobytes()

    result, calls = _dump(engine, tmp_path / "dump")
    expected = {**report.chroma_counts, "odd.values-1": 3, "empty-collection": 0, "emptied-collection": 0,
                "bare-vectors": 2, "rpger__migrations": 1}
    assert result.counts == expected
    assert result.point_in_time is False and result.notes
    assert result.server_version == engine.ping().server_version
    assert result.bytes_written == sum((tmp_path / "dump" / f).stat().st_size for f in result.files)
    assert calls[-1][1] == calls[-1][2] == sum(expected.values())
    assert ChromaEngine.count_dump(tmp_path / "dump") == expected
    manifest = json.loads((tmp_path / "dump" / "collections.json").read_text())
    monsters = next(c for c in manifest["collections"] if c["name"] == "monsters")
    assert monsters["dimension"] == testdata.EMBEDDING_DIM
    assert monsters["configuration"]["hnsw"]["space"] == "cosine"

    with engine.scratch() as scratch:
        scratch_db = scratch.settings.chroma_database
        assert scratch_db != engine.settings.chroma_database
        assert scratch.is_empty()
        progress: list[int] = []
        restored = scratch.restore(tmp_path / "dump", lambda msg, done, total: progress.append(done))
        assert restored.counts == expected
        assert progress and progress[-1] == sum(expected.values())
        assert scratch.digest() == source_digest
        assert scratch.read_marker() is None  # stack state is not part of a dump
        odd = client(scratch).get_collection("odd.values-1")
        assert odd._model.configuration_json["hnsw"]["space"] == "l2"
        assert odd._model.configuration_json["hnsw"]["ef_construction"] == 123
        got = odd.get(ids=["a", "c"], include=["embeddings", "metadatas", "documents", "uris"])
        a = dict(zip(got["ids"], range(2), strict=True))["a"]
        assert np.asarray(got["embeddings"][a], dtype=np.float32)[0] == np.float32(1e-45)
        assert got["metadatas"][a] == {"n": 0, "x": 0.0, "t": False}
        assert isinstance(got["metadatas"][a]["x"], float) and isinstance(got["metadatas"][a]["n"], int)
        assert got["documents"][a] == "" and got["uris"][a] == "s3://bucket/a"
        with pytest.raises(EngineError, match="already has"):
            scratch.restore(tmp_path / "dump")
    with pytest.raises(chromadb.errors.NotFoundError):
        chroma_admin(engine.settings).get_database(scratch_db, tenant=engine.settings.chroma_tenant)


def test_count_dump_rejects_truncated_corrupt_and_missing_files(engine: ChromaEngine, tmp_path: Path) -> None:
    testdata.load_chroma(engine.settings, scale=20, dim=64)
    _dump(engine, tmp_path / "good")
    good = ChromaEngine.count_dump(tmp_path / "good")

    def broken(label: str, damage: Any) -> Path:
        d = tmp_path / label
        shutil.copytree(tmp_path / "good", d)
        damage(d)
        return d

    def truncate(d: Path) -> None:
        f = d / "collections" / "monsters.parquet"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])

    def flip_a_data_byte(d: Path) -> None:
        f = d / "collections" / "monsters.parquet"
        data = bytearray(f.read_bytes())
        data[len(data) // 3] ^= 0xFF  # inside the embedding pages
        f.write_bytes(bytes(data))

    def drop_file(d: Path) -> None:
        (d / "collections" / "spells.parquet").unlink()

    def wrong_count(d: Path) -> None:
        m = json.loads((d / "collections.json").read_text())
        m["collections"][0]["count"] += 1
        (d / "collections.json").write_text(json.dumps(m))

    def garble_manifest(d: Path) -> None:
        (d / "collections.json").write_text('{"format": 1, "collections": [')

    for label, damage in [("truncated", truncate), ("flipped", flip_a_data_byte), ("missing", drop_file),
                          ("count", wrong_count), ("manifest", garble_manifest)]:
        with pytest.raises(EngineError):
            ChromaEngine.count_dump(broken(label, damage))
    assert ChromaEngine.count_dump(tmp_path / "good") == good


def test_dump_that_reads_nothing_from_a_non_empty_database_fails(engine: ChromaEngine, tmp_path: Path) -> None:
    testdata.load_chroma(engine.settings, scale=5, dim=SMALL_DIM)

    def delete_everything_once_counted(msg: str, done: int, total: int | None) -> None:
        if done == 0 and total:
            for coll in client(engine).list_collections():
                ids = coll.get(include=[])["ids"]
                if ids:
                    coll.delete(ids=ids)

    (tmp_path / "d").mkdir()
    with pytest.raises(EngineError, match="read 0"):
        engine.dump(tmp_path / "d", delete_everything_once_counted)


def test_missing_database_is_created_and_empty(tmp_path: Path, chroma_endpoint: Endpoint) -> None:
    settings = chroma_settings(tmp_path, chroma_endpoint)
    fresh = settings.model_copy(update={"chroma_database": settings.chroma_database + "-new"})
    admin = chroma_admin(settings)
    with pytest.raises(chromadb.errors.NotFoundError):
        admin.get_database(fresh.chroma_database, tenant=fresh.chroma_tenant)
    e = ChromaEngine(fresh)
    try:
        assert e.is_empty()
        assert admin.get_database(fresh.chroma_database, tenant=fresh.chroma_tenant)
    finally:
        admin.delete_database(fresh.chroma_database, tenant=fresh.chroma_tenant)


def test_a_lock_name_chroma_cannot_spell_is_refused(engine: ChromaEngine) -> None:
    with pytest.raises(EngineError):
        engine.acquire_lock("bad name!", "x", 1)
    assert all(not n.startswith(LOCK_PREFIX) for n in engine.stats())


def test_scratch_is_removed_when_its_user_fails(engine: ChromaEngine) -> None:
    with pytest.raises(RuntimeError), engine.scratch() as scratch:
        name = scratch.settings.chroma_database
        client(scratch).create_collection("left-behind", embedding_function=None)
        raise RuntimeError("verify failed")
    with pytest.raises(chromadb.errors.NotFoundError):
        chroma_admin(engine.settings).get_database(name, tenant=engine.settings.chroma_tenant)
