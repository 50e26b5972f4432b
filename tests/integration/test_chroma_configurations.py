"""Chroma restore reproduces each collection exactly, as clients make them (issue 11, item 1).

Every way a client sets a collection up — the stock client's default embedding function,
a custom registered one, a pre-1.0 ("legacy") one, none at all, 0.4-style `hnsw:*`
metadata, a 1.x `configuration=`, a SPANN request, a schema — is dumped, restored into a
scratch database and read back through the plain chromadb client: configuration
(embedding function included), metadata, schema and records must be identical, and the
digest must agree at backup, on the dump and after the restore.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import chromadb.utils.embedding_functions as ef_registry
import pytest
from chroma_shapes import AcmeEmbedder, OldStyleEmbedder, differences, read_database
from chromadb.api.types import FtsIndexConfig, IntInvertedIndexConfig, Schema, StringInvertedIndexConfig
from conftest import Endpoint, make_settings

from rpger_ops.connect import chroma_client
from rpger_ops.engines.chroma import ChromaEngine

_UNUSED_MONGO = Endpoint("", 0, None, {}, uri="mongodb://127.0.0.1:9/")
_UNUSED_REDIS = Endpoint("", 0, None, {}, uri="redis://127.0.0.1:9/0")

# Float32 edge values, kept below what a cosine collection can square without overflowing.
VEC = [[0.5, -1.0, 2.0, 0.25], [1e-45, -0.0, 1.5e18, 0.1], [1.0, 2.0, 3.0, 4.0]]
# Every record metadata value type Chroma 1.5 takes (a local server refuses sparse vectors: 501).
EVERY_VALUE_TYPE: dict[str, Any] = {
    "s": "ünïcødé \x00 😀", "empty": "", "i": -(2**63), "big": 2**63 - 1, "f": 0.1, "whole": 1.0,
    "tiny": 5e-324, "huge": 1.7976931348623157e308, "t": True, "n": 0, "zero": 0.0,
    "ls": ["a", ""], "li": [1, -2], "lf": [1.0, 2.5], "lb": [True, False],
    # Floats Chroma's JSON parser moves by an ulp when they are sent back as read (chroma_floats).
    "ulp": 3.532741625542322e-13, "ulp74": 6.592148136198244e+74, "lulp": [3.532741625542322e-13, 1e-300],
}
# Collection metadata takes scalars only (a list or a sparse vector crashes a 1.5.9 server's request).
COLLECTION_METADATA: dict[str, Any] = {"description": "Spell descriptions and attributes", "i": 3,
                                       "f": -0.0, "g": 1.5, "b": False, "ulp": 3.532741625542322e-13}


def add_records(coll: Any) -> None:
    """None documents, URIs, records without metadata, and every metadata value type."""
    coll.add(ids=["a", "b", "c"], embeddings=VEC, documents=[None, "", "text"],
             metadatas=[EVERY_VALUE_TYPE, None, {"content_type": "description", "content_index": 0}],
             uris=["s3://bucket/a", None, "file:///c"])


Make = Callable[[Any], Any]
SHAPES: dict[str, Make] = {
    # What RPGer's backend does: the stock client's defaults (embedding function "default", l2).
    "default": lambda c: c.create_collection("spells"),
    "default-with-metadata": lambda c: c.create_collection("monsters", metadata=COLLECTION_METADATA),
    # The 0.4 client's way of setting the distance, and every other 0.4 index key.
    "hnsw-space-metadata": lambda c: c.create_collection("legacy", metadata={"hnsw:space": "cosine",
                                                                            "description": "x"}),
    "all-hnsw-metadata": lambda c: c.create_collection("legacy-all", metadata={
        "hnsw:space": "ip", "hnsw:construction_ef": 120, "hnsw:search_ef": 30, "hnsw:M": 8,
        "hnsw:num_threads": 1, "hnsw:batch_size": 20, "hnsw:sync_threshold": 200, "hnsw:resize_factor": 1.3}),
    # 1.x configuration, every HNSW parameter; no embedding function ("legacy" in the configuration).
    "configuration": lambda c: c.create_collection("configured", embedding_function=None, configuration={
        "hnsw": {"space": "ip", "ef_construction": 150, "ef_search": 50, "max_neighbors": 12, "num_threads": 1,
                 "batch_size": 50, "sync_threshold": 500, "resize_factor": 1.5}}),
    "configuration-default-ef": lambda c: c.create_collection(
        "configured-default-ef", configuration={"hnsw": {"space": "cosine", "num_threads": 1}}),
    "custom-ef": lambda c: c.create_collection("custom-ef", embedding_function=AcmeEmbedder("acme-large", 4)),
    "old-style-ef": lambda c: c.create_collection("old-style-ef", embedding_function=OldStyleEmbedder()),
    "absent-ef": lambda c: c.create_collection("absent-ef", embedding_function=None),
    # A single server turns SPANN into HNSW; what it made must come back as made.
    "spann": lambda c: c.create_collection("spann", configuration={"spann": {"space": "ip", "search_nprobe": 32}}),
    "schema": lambda c: c.create_collection("schema", schema=Schema()
                                            .delete_index(config=StringInvertedIndexConfig(), key="secret")
                                            .delete_index(config=FtsIndexConfig(), key="#document")),
    "schema-types": lambda c: c.create_collection("schema-types", schema=Schema().delete_index(
        config=IntInvertedIndexConfig())),
}


def after_creation(name: str, coll: Any) -> None:
    """Changes clients make later. On 1.5.9 modify(configuration=...) of a collection with a
    "legacy" embedding function leaves none at all in its configuration (an "absent" one)."""
    if name in ("default-with-metadata", "absent-ef"):
        coll.modify(configuration={"hnsw": {"ef_search": 77}})
    if name == "all-hnsw-metadata":
        coll.modify(configuration={"hnsw": {"ef_search": 64}})


@pytest.fixture
def engine(tmp_path: Path, chroma_endpoint: Endpoint) -> Iterator[ChromaEngine]:
    e = ChromaEngine(make_settings(tmp_path, _UNUSED_MONGO, _UNUSED_REDIS, chroma_endpoint))
    yield e
    e.close()


def round_trip(engine: ChromaEngine, dump_dir: Path, before_restore: Callable[[], None] = lambda: None
               ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Dump, restore into scratch; (source read-back, restored read-back, restore notes).
    The digest must agree at backup, on the dump without a server, and after the restore."""
    source = read_database(chroma_client(engine.settings))
    source_digest = engine.digest()
    dump_dir.mkdir()
    engine.dump(dump_dir)
    assert ChromaEngine.digest_dump(dump_dir) == source_digest
    before_restore()
    with engine.scratch() as scratch:
        result = scratch.restore(dump_dir)
        restored = read_database(chroma_client(scratch.settings))
        assert scratch.digest() == source_digest, differences(source, restored)
    return source, restored, result.notes


def test_every_client_shape_restores_exactly(engine: ChromaEngine, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    client = chroma_client(engine.settings)
    for name, make in SHAPES.items():
        coll = make(client)
        after_creation(name, coll)
        add_records(coll)
    empty = client.create_collection("empty-default")  # no records, no dimension
    assert empty.count() == 0
    emptied = client.create_collection("emptied", configuration={"hnsw": {"space": "cosine"}})
    emptied.add(ids=["gone"], embeddings=[[1.0, 2.0, 3.0]])  # leaves its dimension behind
    emptied.delete(ids=["gone"])

    source = read_database(client)
    ef = {name: source[name]["configuration"] for name in ("spells", "custom-ef", "configured", "absent-ef")}
    assert '"name": "default"' in ef["spells"] and '"type": "known"' in ef["spells"]
    assert '"name": "rpger-test-acme"' in ef["custom-ef"] and '"acme-large"' in ef["custom-ef"]
    assert '"embedding_function": {"type": "legacy"}' in ef["configured"]
    assert '"embedding_function": null' in ef["absent-ef"]
    assert '"hnsw:space": "cosine"' in source["legacy"]["metadata"]

    # The restoring process need not know the custom function: it is never instantiated.
    def forget_custom_ef() -> None:
        monkeypatch.delitem(ef_registry.known_embedding_functions, AcmeEmbedder.NAME)

    source, restored, notes = round_trip(engine, tmp_path / "dump", forget_custom_ef)
    assert differences(source, restored) == []
    assert notes == []
    assert len(restored) == len(SHAPES) + 2


def test_default_collections_come_back_with_their_embedding_function(engine: ChromaEngine, tmp_path: Path) -> None:
    """The issue's case: `create_collection("spells")` came back with its embedding function
    dropped (configuration differs, digest check fails, preseed exits 1) whenever the
    collection's schema was still the default one: no records, or records without metadata."""
    client = chroma_client(engine.settings)
    client.create_collection("spells", metadata={"description": "Spell descriptions and attributes"})
    client.create_collection("items").add(ids=["i1"], embeddings=[[0.1, 0.2]], documents=["sword"])
    source, restored, notes = round_trip(engine, tmp_path / "dump")
    assert differences(source, restored) == [] and notes == []
    for name in ("spells", "items"):
        assert '"embedding_function": {"config": {}, "name": "default", "type": "known"}' in \
            restored[name]["configuration"]


def test_settings_a_server_does_not_keep_are_named_in_a_note(engine: ChromaEngine, tmp_path: Path) -> None:
    """A dump from a server with SPANN (Chroma Cloud) restored on a single server, which
    makes every collection HNSW: the records are restored, the note names what differs,
    and the digest differs too, so a verification fails loudly rather than silently."""
    import json

    chroma_client(engine.settings).create_collection("cloud", embedding_function=None).add(
        ids=["x"], embeddings=[[1.0, 2.0]])
    dump = tmp_path / "dump"
    dump.mkdir()
    engine.dump(dump)
    manifest = json.loads((dump / "collections.json").read_text())
    entry = manifest["collections"][0]
    entry["configuration"] = {"hnsw": None, "embedding_function": {"type": "legacy"},
                              "spann": {"space": "ip", "search_nprobe": 64, "write_nprobe": 32}}
    entry["schema"] = None
    (dump / "collections.json").write_text(json.dumps(manifest))
    with engine.scratch() as scratch:
        result = scratch.restore(dump)
        assert result.counts == {"cloud": 1}
        assert any(n.startswith("cloud: this server does not store the collection's configuration")
                   for n in result.notes), result.notes
        assert scratch.digest() != ChromaEngine.digest_dump(dump)


def test_scratch_restores_leave_no_array_metadata_on_later_records(tmp_path: Path) -> None:
    """Chroma 1.5.9 keeps a deleted collection's array metadata and attaches it to records
    added later anywhere on the server. `verify --deep` restores into a scratch database and
    deletes it: that must not plant metadata on live records. (A fresh server: leftovers
    from other tests would blur what this one proves.)"""
    from rpger_ops import devservers

    server = devservers.start_chroma(tmp_path / "chroma")
    try:
        engine = ChromaEngine(make_settings(tmp_path, _UNUSED_MONGO, _UNUSED_REDIS,
                                            Endpoint(server.host, server.port, server, {})))
        client = chroma_client(engine.settings)
        client.create_collection("tagged", embedding_function=None).add(
            ids=["a", "b"], embeddings=[[1.0], [2.0]], metadatas=[{"tags": ["x", "y"]}, {"scores": [1, 2]}])
        dump = tmp_path / "dump"
        dump.mkdir()
        engine.dump(dump)
        with engine.scratch() as scratch:
            scratch.restore(dump)
        engine.wipe()  # what `restore --force` does before restoring
        live = client.create_collection("live", embedding_function=None)
        live.add(ids=[f"n{i}" for i in range(6)], embeddings=[[float(i)] for i in range(6)],
                 metadatas=[{"k": i} for i in range(6)])
        assert live.get(include=["metadatas"])["metadatas"] == [{"k": i} for i in range(6)]
        engine.close()
    finally:
        server.stop()
