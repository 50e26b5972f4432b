"""RPGer's MongoDB patterns: its document shapes, its status-route calls, datetimes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pymongo
import pytest

from rpger_stack_client import StackClients


@pytest.fixture
def db(clients: StackClients) -> Iterator[pymongo.database.Database]:
    yield clients.mongo_db
    clients.mongo.drop_database(clients.mongo_db.name)


MONSTER = {
    "name": "Owlbear", "category": "monster",
    "stats": {"frequency": "Rare", "no_appearing": "1-2", "armor_class": 5, "move": "12\"",
              "hit_dice": "5+2", "treasure_type": "C"},
    "description": "A fearsome hybrid of owl and bear.",
    "metadata": {"type": "monster", "alignment": "Neutral", "challenge_rating": 3, "size": "L",
                 "languages": [], "senses": ["darkvision"]},
    "habitat": {"terrain": "forest"}, "ecology": {"diet": "carnivore"},
    "embedding_references": [{"chroma_collection": "monsters", "embedding_id": "owlbear-0",
                              "content_type": "description", "content_index": 0}],
    "created_at": "2024-05-01T12:00:00", "updated_at": "2024-05-01T12:00:00",
}


def test_monsters_and_status_route_calls(clients: StackClients, db: pymongo.database.Database) -> None:
    db.monsters.create_index("name", unique=True)
    db.characters.create_index([("name", pymongo.ASCENDING), ("userId", pymongo.ASCENDING)], unique=True)
    db.monsters.insert_one(dict(MONSTER))
    with pytest.raises(pymongo.errors.DuplicateKeyError):
        db.monsters.insert_one(dict(MONSTER))
    found = clients.read(lambda: db.monsters.find_one({"name": "Owlbear"}, {"_id": 0}))
    assert found == MONSTER
    # /api/status and /api/health: server_info, ping, collections, dbStats, counts.
    assert clients.mongo.server_info()["version"]
    assert clients.mongo.admin.command("ping")["ok"] == 1
    assert {"monsters", "characters"} <= set(db.list_collection_names())
    assert "storageSize" in db.command("dbStats")
    assert db.monsters.count_documents({}) == 1


def test_datetimes_are_naive_utc_by_default(app_env: dict[str, str], db: pymongo.database.Database) -> None:
    when = dt.datetime(2024, 5, 1, 12, 30, 15, 123000)
    db.notes.insert_one({"_id": "n1", "userId": "u1", "at": when})
    assert db.notes.find_one({"_id": "n1"})["at"] == when  # naive, as RPGer stores and compares them
    with StackClients.from_env(app_env, tz_aware=True) as aware:
        got = aware.mongo_db.notes.find_one({"_id": "n1"})["at"]
        assert got == when.replace(tzinfo=dt.timezone.utc) and got.tzinfo is not None
