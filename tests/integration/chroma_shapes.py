"""Chroma collections in the shapes clients make, and a read-back through the plain client.

Shared by the configuration tests, the property tests and the acceptance tests. The
read-back uses only chromadb's client and `json`, never rpger_ops code, so a round trip
proven with it does not rest on our digest.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function

# Collections that are stack state (marker, locks): never user data, never dumped.
STACK_STATE_PREFIXES = ("rpger__stack", "rpger__lock_")


ACME_NAME = "rpger-test-acme"


@register_embedding_function
class AcmeEmbedder(EmbeddingFunction[Documents]):
    """A custom embedding function as a user registers one (never called: embeddings are
    always given). Its config lands in the collection's configuration as a "known" one."""

    NAME = ACME_NAME

    def __init__(self, model: str = "acme-small", dimensions: int = 4) -> None:
        self.model, self.dimensions = model, dimensions

    def __call__(self, input: Documents) -> Embeddings:
        raise AssertionError("tests never embed")

    @staticmethod
    def name() -> str:
        return ACME_NAME

    def get_config(self) -> dict[str, Any]:
        return {"model": self.model, "dimensions": self.dimensions}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> AcmeEmbedder:
        return AcmeEmbedder(**config)


class OldStyleEmbedder(EmbeddingFunction[Documents]):
    """A pre-1.0 custom embedding function (no name/config): Chroma records it as "legacy"."""

    def __init__(self) -> None:
        pass

    def __call__(self, input: Documents) -> Embeddings:
        raise AssertionError("tests never embed")


def typed(value: Any) -> str:
    """A value as text that keeps what `==` would blur: 1, 1.0 and True differ, and so do 0.0 and -0.0."""
    return json.dumps(value, sort_keys=True, allow_nan=False)


def read_collection(client: Any, name: str) -> dict[str, Any]:
    """Everything about one collection, as the stock client returns it."""
    coll = client.get_collection(name, embedding_function=None)
    model = coll.get_model()
    got = coll.get(include=["embeddings", "documents", "metadatas", "uris"])
    order = sorted(range(len(got["ids"])), key=lambda i: got["ids"][i])
    embeddings = got["embeddings"]
    records = {got["ids"][i]: {
        "embedding": np.asarray(embeddings[i], dtype=np.float32).tobytes().hex() if embeddings is not None else None,
        "document": typed(got["documents"][i] if got["documents"] is not None else None),
        "metadata": typed(got["metadatas"][i] if got["metadatas"] is not None else None),
        "uri": typed(got["uris"][i] if got["uris"] is not None else None),
    } for i in order}
    return {"configuration": typed(model.configuration_json), "metadata": typed(model.metadata),
            "schema": typed(custom_schema(model.serialized_schema)), "dimension": model.dimension,
            "count": coll.count(), "records": records}


def custom_schema(schema: Any) -> Any:
    """The schema without the per-key entries Chroma adds by itself: each metadata key ever
    written gets a copy of its type's default index settings, kept after the record is gone
    (a restore of the live records can't know those). Entries that differ from the defaults,
    and the `#document`/`#embedding` ones, stay."""
    if not isinstance(schema, dict) or not isinstance(schema.get("keys"), dict):
        return schema
    defaults = schema.get("defaults") or {}
    keys = {}
    for key, by_type in schema["keys"].items():
        kept = {t: v for t, v in by_type.items() if key.startswith("#") or defaults.get(t) != v}
        if kept:
            keys[key] = kept
    return {**schema, "keys": keys}


def read_database(client: Any) -> dict[str, dict[str, Any]]:
    """Every user collection of a Chroma database (stack state left out)."""
    names = sorted(c.name for c in client.list_collections() if not c.name.startswith(STACK_STATE_PREFIXES))
    return {name: read_collection(client, name) for name in names}


def differences(want: dict[str, dict[str, Any]], got: dict[str, dict[str, Any]]) -> list[str]:
    """Human-readable differences between two `read_database` results (empty when identical)."""
    out = []
    for name in sorted(set(want) | set(got)):
        if name not in got or name not in want:
            out.append(f"{name}: only in {'source' if name in want else 'restored'}")
            continue
        for part in ("configuration", "metadata", "schema", "dimension", "count"):
            if want[name][part] != got[name][part]:
                out.append(f"{name}.{part}: {want[name][part]} != {got[name][part]}")
        w, g = want[name]["records"], got[name]["records"]
        for rid in sorted(set(w) | set(g)):
            if w.get(rid) != g.get(rid):
                out.append(f"{name}[{rid!r}]: {w.get(rid)} != {g.get(rid)}")
    return out
