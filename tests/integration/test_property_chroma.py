"""Property-based Chroma round trips (issue 11, item 5): random collections made the ways
clients make them (the stock client's default embedding function, a custom registered
one, an old-style one, none; 0.4 `hnsw:*` metadata or a 1.x configuration with random
HNSW parameters; schemas; a later modify), random collection metadata, and random records
(every metadata value type a 1.5 server takes, None documents, URIs) -> backup -> restore
into a scratch database -> digests equal and everything read back identical through
chromadb (configuration with the embedding function, metadata, schema, records).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from chroma_shapes import AcmeEmbedder, OldStyleEmbedder, differences, read_database
from chromadb.api.types import (
    BoolInvertedIndexConfig,
    FloatInvertedIndexConfig,
    FtsIndexConfig,
    IntInvertedIndexConfig,
    Schema,
    StringInvertedIndexConfig,
)
from conftest import ensure_chroma_database
from hypothesis import given
from hypothesis import strategies as st
from property_support import ROUND_TRIP, backed_up

from rpger_ops.connect import chroma_admin, chroma_client
from rpger_ops.engines.chroma import ChromaEngine
from rpger_ops.settings import Settings

NAME = st.from_regex(r"[a-z0-9][a-z0-9_-]{1,10}[a-z0-9]", fullmatch=True).filter(lambda n: not n.startswith("rpger"))
META_KEY = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True).filter(lambda k: not k.startswith("hnsw"))
I64 = st.integers(-(2**63), 2**63 - 1)
F64 = st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=16)
# Collection metadata: scalars only on a 1.5.9 server (a list crashes the request).
COLLECTION_META = st.one_of(st.none(), st.dictionaries(META_KEY, st.one_of(TEXT, I64, F64, st.booleans()),
                                                        min_size=1, max_size=4))
# Record metadata: scalars and non-empty lists of one type (a local server refuses sparse vectors).
RECORD_VALUE = st.one_of(TEXT, I64, F64, st.booleans(), st.lists(TEXT, min_size=1, max_size=3),
                         st.lists(I64, min_size=1, max_size=3), st.lists(F64, min_size=1, max_size=3),
                         st.lists(st.booleans(), min_size=1, max_size=3))
RECORD_META = st.one_of(st.none(), st.dictionaries(META_KEY, RECORD_VALUE, min_size=1, max_size=4))
SPACE = st.sampled_from(["l2", "cosine", "ip"])
HNSW = st.fixed_dictionaries({}, optional={
    "space": SPACE, "ef_construction": st.integers(10, 300), "ef_search": st.integers(10, 300),
    "max_neighbors": st.integers(4, 64), "num_threads": st.integers(1, 4), "batch_size": st.integers(2, 500),
    "sync_threshold": st.integers(2, 5000), "resize_factor": st.floats(1.1, 3.0)})
LEGACY_HNSW = st.fixed_dictionaries({"hnsw:space": SPACE}, optional={
    "hnsw:construction_ef": st.integers(10, 300), "hnsw:search_ef": st.integers(10, 300), "hnsw:M": st.integers(4, 64),
    "hnsw:num_threads": st.integers(1, 4), "hnsw:batch_size": st.integers(2, 500),
    "hnsw:sync_threshold": st.integers(2, 5000), "hnsw:resize_factor": st.floats(1.1, 3.0)})
EMBEDDING_FUNCTION = st.one_of(
    st.just(("client default", None)),
    st.just(("none", None)),
    st.builds(lambda m, d: ("custom", AcmeEmbedder(m, d)), st.from_regex(r"[a-z-]{1,8}", fullmatch=True),
              st.integers(1, 4096)),
    st.just(("old style", OldStyleEmbedder())),
)
INDEX_CONFIGS = [StringInvertedIndexConfig, IntInvertedIndexConfig, FloatInvertedIndexConfig, BoolInvertedIndexConfig]


@st.composite
def schemas(draw: st.DrawFn) -> Schema:
    """A schema with some indexes switched off, globally or for one key."""
    schema = Schema()
    for _ in range(draw(st.integers(1, 2))):
        config = draw(st.sampled_from(INDEX_CONFIGS))()
        schema = schema.delete_index(config=config, key=draw(st.one_of(st.none(), META_KEY)))
    if draw(st.booleans()):
        schema = schema.delete_index(config=FtsIndexConfig(), key="#document")
    return schema


@st.composite
def collections(draw: st.DrawFn) -> dict[str, Any]:
    how = draw(st.sampled_from(["defaults", "configuration", "hnsw metadata", "schema"]))
    ef_kind, ef = draw(EMBEDDING_FUNCTION)
    metadata = draw(COLLECTION_META)
    recipe: dict[str, Any] = {"how": how, "ef_kind": ef_kind, "ef": ef, "metadata": metadata}
    if how == "configuration":
        recipe["configuration"] = {"hnsw": draw(HNSW)}
    elif how == "hnsw metadata":
        recipe["metadata"] = {**(metadata or {}), **draw(LEGACY_HNSW)}
    elif how == "schema":
        recipe["schema"] = draw(schemas())
    recipe["modify_ef_search"] = draw(st.one_of(st.none(), st.integers(10, 300)))
    recipe["modify_metadata"] = draw(st.one_of(st.none(), COLLECTION_META.filter(bool))) if how != "hnsw metadata" \
        else None
    space = (recipe.get("configuration", {}).get("hnsw", {}).get("space")
             or (recipe["metadata"] or {}).get("hnsw:space") or "l2")
    dim = draw(st.integers(1, 8))
    # Cosine collections store unit vectors: keep the norm well inside float32.
    component = st.floats(-1e6, 1e6, width=32) if space != "cosine" else st.floats(-1e3, 1e3, width=32)
    first = st.floats(0.5, 10, width=32) if space == "cosine" else component
    vector = st.tuples(first, st.lists(component, min_size=dim - 1, max_size=dim - 1)).map(lambda t: [t[0], *t[1]])
    ids = draw(st.lists(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=10),
                        max_size=6, unique=True))
    recipe["records"] = [{"id": i, "embedding": draw(vector), "document": draw(st.one_of(st.none(), TEXT)),
                          "metadata": draw(RECORD_META), "uri": draw(st.one_of(st.none(), TEXT))} for i in ids]
    return recipe


def create(client: Any, name: str, recipe: dict[str, Any]) -> None:
    kwargs: dict[str, Any] = {"metadata": recipe["metadata"]}
    if recipe["ef_kind"] != "client default":
        kwargs["embedding_function"] = recipe["ef"]
    if "configuration" in recipe:
        kwargs["configuration"] = recipe["configuration"]
    if "schema" in recipe:
        kwargs["schema"] = recipe["schema"]
        kwargs.pop("embedding_function", None)  # with a schema, the function goes in the schema
    coll = client.create_collection(name, **kwargs)
    if recipe["modify_ef_search"] is not None:
        coll.modify(configuration={"hnsw": {"ef_search": recipe["modify_ef_search"]}})
    if recipe["modify_metadata"] is not None:
        coll.modify(metadata=recipe["modify_metadata"])
    records = recipe["records"]
    if records:
        def column(field: str) -> list[Any] | None:
            values = [r[field] for r in records]
            return values if any(v is not None for v in values) else None
        coll.add(ids=[r["id"] for r in records], embeddings=[r["embedding"] for r in records],
                 documents=column("document"), metadatas=column("metadata"), uris=column("uri"))


class Databases:
    """A source and a target database, their engines and plain clients, made once per test:
    a chromadb client costs ~0.25 s to build (it loads the CA bundle twice), more than a
    whole example otherwise. Between examples both are emptied (records first, see
    ChromaEngine.delete_collection); the target is empty before each restore, which is
    all a scratch target is."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = [f"prop_src_{uuid.uuid4().hex[:10]}", f"prop_dst_{uuid.uuid4().hex[:10]}"]
        both = [settings.model_copy(update={"chroma_database": n}) for n in self.names]
        for s in both:
            ensure_chroma_database(s)
        self.source, self.target = (ChromaEngine(s) for s in both)
        self.source_client, self.target_client = (chroma_client(s) for s in both)

    def empty(self) -> None:
        for engine in (self.source, self.target):
            engine.wipe()

    def close(self) -> None:
        self.empty()
        for engine, name in zip((self.source, self.target), self.names, strict=True):
            engine.close()
            chroma_admin(self.settings).delete_database(name, tenant=self.settings.chroma_tenant)


@pytest.fixture
def databases(settings: Settings) -> Iterator[Databases]:
    """One pair for all of a test's examples (Hypothesis runs them under one fixture value)."""
    dbs = Databases(settings)
    yield dbs
    dbs.close()


@ROUND_TRIP
@given(content=st.dictionaries(NAME, collections(), min_size=1, max_size=3))
def test_random_collections_round_trip(databases: Databases, content: dict[str, dict[str, Any]]) -> None:
    databases.empty()
    for name, recipe in content.items():
        create(databases.source_client, name, recipe)
    source = read_database(databases.source_client)
    assert set(source) == set(content)
    source_digest = databases.source.digest()
    with backed_up(databases.source) as dump:
        assert ChromaEngine.digest_dump(dump) == source_digest
        result = databases.target.restore(dump)
    restored = read_database(databases.target_client)
    diff = differences(source, restored)
    assert not diff, "\n".join([*diff, *result.notes])
    assert databases.target.digest() == source_digest
    assert result.notes == []
