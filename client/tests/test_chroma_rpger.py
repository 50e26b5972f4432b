"""RPGer's Chroma usage with chromadb-client 1.5.x against the stack's Chroma 1.x server,
and the REST paths its status route calls."""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from rpger_stack_client import StackClients


@pytest.fixture
def chroma(clients: StackClients) -> Iterator[object]:
    c = clients.chroma
    yield c
    for col in c.list_collections():
        c.delete_collection(col.name)


def _get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_rpger_collections_with_explicit_embeddings(clients: StackClients, chroma: object) -> None:
    c = clients.chroma
    assert c.heartbeat() > 0
    assert c.get_version().startswith("1.")
    # init_chroma_collections: metadata only, no embedding function given.
    for name in ("monsters", "spells"):
        c.create_collection(name=name, metadata={"description": f"RPGer {name}"})
    assert sorted(col.name for col in c.list_collections()) == ["monsters", "spells"]
    monsters = c.get_collection("monsters")
    rnd = random.Random(7)
    vectors = [[rnd.uniform(-1, 1) for _ in range(1536)] for _ in range(3)]
    monsters.add(
        ids=["owlbear-0", "owlbear-1", "gnoll-0"],
        embeddings=vectors,
        metadatas=[{"monster_id": "owlbear", "content_type": "description", "content_index": 0, "name": "Owlbear"},
                   {"monster_id": "owlbear", "content_type": "ecology", "content_index": 1, "name": "Owlbear"},
                   {"monster_id": "gnoll", "content_type": "description", "content_index": 0, "name": "Gnoll"}],
        documents=["A fearsome hybrid.", "Lairs in forests.", "Hyena-headed humanoid."],
    )
    assert monsters.count() == 3
    hit = monsters.query(query_embeddings=[vectors[2]], n_results=1, where={"content_type": "description"})
    assert hit["ids"] == [["gnoll-0"]] and hit["metadatas"][0][0]["name"] == "Gnoll"


def test_rest_paths_of_the_status_route(app_env: dict[str, str], clients: StackClients, chroma: object) -> None:
    """RPGer's /api/status asks /api/v2/collections, which Chroma 1.x does not
    serve (404): its collection and embedding counts stay 0. The 1.x paths
    carry the tenant and database."""
    clients.chroma.create_collection(name="npcs", metadata={"description": "RPGer npcs"})
    clients.chroma.get_collection("npcs").add(ids=["a"], embeddings=[[0.0, 1.0]])
    base = f"http://{app_env['CHROMA_HOST']}:{app_env['CHROMA_PORT']}/api/v2"
    assert _get(f"{base}/heartbeat")[0] == 200
    assert _get(f"{base}/collections")[0] == 404
    tenant, database = app_env.get("CHROMA_TENANT", "default_tenant"), app_env.get("CHROMA_DATABASE", "default_database")
    status, cols = _get(f"{base}/tenants/{tenant}/databases/{database}/collections")
    assert status == 200 and isinstance(cols, list) and [c["name"] for c in cols] == ["npcs"]
    status, count = _get(f"{base}/tenants/{tenant}/databases/{database}/collections/{cols[0]['id']}/count")
    assert (status, count) == (200, 1)
