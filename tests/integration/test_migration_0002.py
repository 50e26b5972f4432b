"""Migrations accept data as RPGer's client made it, and schema ownership (issue 11, items 2-3).

- Chroma collections that carry `hnsw:space` metadata (RPGer's 0.4 client) or were made
  with the stock client's defaults go through 0001 and 0002 unchanged in what Chroma fixes
  at creation; a distance that differs from 0001's is a note, never a failure.
- 0002: RPGer's full `$jsonSchema` validators (reported as not applied on FerretDB), and
  "keep what exists; create new Chroma collections as RPGer would".
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pymongo.errors import WriteError

from rpger_ops import migrate, testdata
from rpger_ops.connect import chroma_client, mongo_client
from rpger_ops.engines.chroma import ChromaEngine
from rpger_ops.migrations import m0001_rpger_schema as m0001
from rpger_ops.migrations import m0002_rpger_ownership as m0002
from rpger_ops.migrations.base import MigrationContext
from rpger_ops.migrations.helpers import merge_chroma_metadata
from rpger_ops.settings import Settings

DIM = 8


def chroma_state(settings: Settings) -> dict[str, dict[str, Any]]:
    client = chroma_client(settings)
    out = {}
    for c in client.list_collections():
        if c.name.startswith("rpger__"):
            continue
        model = client.get_collection(c.name, embedding_function=None).get_model()
        out[c.name] = {"configuration": model.configuration_json, "metadata": dict(model.metadata or {}),
                       "count": c.count()}
    return out


def is_ferretdb(settings: Settings) -> bool:
    client = mongo_client(settings)
    try:
        return "ferretdbVersion" in client.admin.command("buildInfo")
    finally:
        client.close()


@pytest.mark.parametrize("chroma_style", testdata.RPGER_CHROMA_STYLES)
def test_up_accepts_chroma_collections_as_rpger_made_them(settings: Settings, chroma_style: str) -> None:
    testdata.load_rpger_client_chroma(settings, scale=6, dim=DIM, chroma_style=chroma_style)
    before = chroma_state(settings)

    report = migrate.migrate(settings, "up")

    assert report.applied == [1, 2] and report.to_version == 2, report.notes
    after = chroma_state(settings)
    assert set(after) == set(before)
    for name, was in before.items():
        now = after[name]
        # What Chroma fixes at creation is untouched: distance, HNSW parameters, embedding function.
        assert now["configuration"] == was["configuration"], name
        assert now["count"] == was["count"], name
        for key, value in was["metadata"].items():  # 0001 only adds keys; hnsw:space keeps its value
            assert now["metadata"][key] == value, (name, key)
    for name in m0001.CHROMA_COLLECTIONS:
        assert after[name]["metadata"]["schema"] == "rpger-1"  # 0001's keys, added to RPGer's collections
        assert after[name]["configuration"]["embedding_function"] == {"type": "known", "name": "default",
                                                                     "config": {}}
    l2 = sorted(n for n in m0001.CHROMA_COLLECTIONS if before[n]["configuration"]["hnsw"]["space"] == "l2")
    assert l2, "RPGer's data has l2 collections"
    for name in l2:  # a distance other than 0001's cosine is a note, not a failure
        assert any(n.startswith(f"chroma {name}: existing collection uses l2 distance") for n in report.notes)
    assert any(n.startswith("chroma: kept existing collections as they are (monsters, spells") for n in report.notes)
    assert migrate.status(settings).ok


def test_fresh_stack_makes_chroma_collections_as_rpger_would(settings: Settings) -> None:
    report = migrate.migrate(settings, "up")
    assert report.applied == [1, 2]
    state = chroma_state(settings)
    assert set(state) == set(m0002.CHROMA_DESCRIPTIONS)

    # What RPGer's backend makes: the stock client's create_collection with its defaults.
    engine = ChromaEngine(settings)
    try:
        with engine.scratch() as scratch:
            rpger = chroma_client(scratch.settings)
            for name, description in m0002.CHROMA_DESCRIPTIONS.items():
                made = rpger.create_collection(name=name, metadata={"description": description}).get_model()
                assert state[name] == {"configuration": made.configuration_json,
                                       "metadata": {"description": description}, "count": 0}, name
    finally:
        engine.close()
    assert not any(n.startswith("chroma: kept") for n in report.notes)

    # RPGer's own init then finds its collections and fills them as usual.
    testdata.load_rpger_client_chroma(settings, scale=4, dim=DIM)
    assert chroma_state(settings)["monsters"]["count"] == 4


def test_0001_collections_with_records_are_kept(settings: Settings) -> None:
    testdata.load_chroma(settings, scale=5, dim=DIM)  # 0001's shape (cosine, no embedding function), in use
    before = chroma_state(settings)
    assert migrate.apply_pending(settings) == [1, 2]
    assert chroma_state(settings) == before


def test_merge_chroma_metadata_never_changes_index_settings(settings: Settings) -> None:
    client = chroma_client(settings)
    client.create_collection("legacy", metadata={"hnsw:space": "cosine", "hnsw:M": 32, "description": "d"})
    ctx = MigrationContext(settings=settings)
    try:
        meta = merge_chroma_metadata(ctx, "legacy", {"schema": "rpger-2", "hnsw:space": "l2"}, remove=("hnsw:M",))
        assert meta == {"hnsw:space": "cosine", "hnsw:M": 32, "description": "d", "schema": "rpger-2"}
        assert ctx.notes == [
            "chroma legacy: hnsw:M kept at 32 (wanted removed): a collection's distance and index settings "
            "can't change once it is created; re-create it to change them",
            "chroma legacy: hnsw:space kept at 'cosine' (wanted 'l2'): a collection's distance and index "
            "settings can't change once it is created; re-create it to change them"]
        # Unchanged metadata (the index keys stay as they were) is not written again.
        assert merge_chroma_metadata(ctx, "legacy", {"schema": "rpger-2"}) == meta
        assert merge_chroma_metadata(ctx, "legacy", {}, remove=("schema",)) == {
            "hnsw:space": "cosine", "hnsw:M": 32, "description": "d"}
    finally:
        ctx.close()
    coll = chroma_client(settings).get_collection("legacy", embedding_function=None)
    assert coll.metadata == {"hnsw:space": "cosine", "hnsw:M": 32, "description": "d"}
    assert coll.configuration_json["hnsw"]["space"] == "cosine"
    assert coll.configuration_json["hnsw"]["max_neighbors"] == 32


def test_rpger_validators_are_reported_not_applied_on_ferretdb(settings: Settings) -> None:
    if not is_ferretdb(settings):
        pytest.skip("the server validates documents; test_rpger_validators_apply_on_mongodb covers it")
    report = migrate.migrate(settings, "up")
    assert report.applied == [1, 2]
    assert ("mongo: RPGer's $jsonSchema validators were NOT applied to users, dashboards, widgets, campaigns, "
            "notes, monsters, spells, items, npcs, characters: the server (FerretDB) has no document validation, "
            "so it accepts documents of any shape") in report.notes


def test_rpger_validators_apply_on_mongodb(settings: Settings) -> None:
    if is_ferretdb(settings):
        pytest.skip("needs a real MongoDB (RPGER_TEST_MONGODB_URI): FerretDB has no $jsonSchema validators")
    # A collection RPGer made first, with its init script's minimal validator and a document
    # its backend's validator would refuse.
    client = mongo_client(settings)
    db = client[settings.mongodb_database]
    try:
        db.create_collection("characters", validator=testdata.INIT_SCRIPT_CHARACTERS_VALIDATOR)
        db.characters.insert_one({"userId": testdata.mongo_documents(2)["users"][0]["_id"], "name": "Old"})
        report = migrate.migrate(settings, "up")
        assert report.applied == [1, 2]
        options = {c["name"]: c.get("options", {}) for c in db.list_collections()}
        for name, rules in m0002.VALIDATORS.items():
            assert json.dumps(options[name]["validator"], sort_keys=True) == json.dumps(rules, sort_keys=True), name
            expected = "moderate" if name == "characters" else "strict"
            assert options[name].get("validationLevel", "strict") == expected, name
        assert any(n.startswith("mongo: documents that don't match RPGer's validator in characters (1)")
                   for n in report.notes), report.notes
        with pytest.raises(WriteError):
            db.monsters.insert_one({"name": "No category", "stats": {}, "description": "x"})
        # RPGer's own documents pass its validators.
        testdata.load_rpger_client_mongo(settings, scale=6)
    finally:
        client.close()
