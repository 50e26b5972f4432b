"""The harness starts real servers and the data generator fills them."""

from __future__ import annotations

from rpger_ops import testdata
from rpger_ops.connect import chroma_client, mongo_client, redis_client


def test_generator_fills_real_servers(settings):
    report = testdata.load_all(settings, scale=20)
    client = mongo_client(settings)
    try:
        build = client.admin.command("buildInfo")
        db = client[settings.mongodb_database]
        assert db["monsters"].count_documents({}) == 20
        assert "ferretdb" in build or build.get("version")
        names = {ix["name"] for ix in db["users"].list_indexes()}
        assert {"username_1", "email_1"} <= names
    finally:
        client.close()
    r = redis_client(settings)
    assert 0 < r.ttl("dashboard:default:user0") <= 3600
    assert r.llen("memory:conversation") == 100
    assert redis_client(settings, db=1).exists("cache:stats") == 1
    coll = chroma_client(settings).get_collection("monsters")
    assert coll.count() == 20
    assert report.chroma_counts["campaign_notes"] == 4
    got = coll.get(ids=["monster_3_0"], include=["embeddings", "metadatas"])
    assert len(got["embeddings"][0]) == testdata.EMBEDDING_DIM
    assert got["metadatas"][0]["monster_id"] == "monster-3"


def test_the_four_servers_are_the_real_ones(settings, s3_endpoint, mongo_endpoint, chroma_endpoint):
    """No mongomock/fakeredis/moto: each fixture is a real server process speaking its protocol."""
    import os
    import urllib.request

    client = mongo_client(settings)
    try:
        build = client.admin.command("buildInfo")
    finally:
        client.close()
    if not os.environ.get("RPGER_TEST_MONGODB_URI"):
        assert "ferretdbVersion" in build  # FerretDB over the MongoDB wire protocol
        assert mongo_endpoint.server is not None and mongo_endpoint.server.running
    info = redis_client(settings).info("server")
    assert info["redis_version"] and info["process_id"] > 0
    import chromadb

    assert chroma_client(settings).heartbeat() > 0 and chroma_client(settings).get_version()
    assert chromadb.__version__ == "1.5.9"  # the package whose `chroma run` serves the tests
    with urllib.request.urlopen(f"http://{s3_endpoint.host}:{s3_endpoint.port}/minio/health/live") as resp:
        assert resp.status == 200 and "MinIO" in resp.headers.get("Server", "")
    for ep in (mongo_endpoint, chroma_endpoint, s3_endpoint):
        if ep.server is not None:
            assert ep.server.proc is not None and ep.server.proc.pid > 0


def test_generator_is_deterministic_across_databases(tmp_path, mongo_endpoint, redis_factory, chroma_endpoint):
    """Same seed, two separate targets -> identical content, so digests can be compared."""
    from conftest import make_settings

    from rpger_ops.engines import build_engine

    a = make_settings(tmp_path, mongo_endpoint, redis_factory(), chroma_endpoint)
    b = make_settings(tmp_path, mongo_endpoint, redis_factory(), chroma_endpoint)
    for s in (a, b):
        testdata.load_all(s, scale=15)
    for name in ("mongo", "redis", "chroma"):
        ea, eb = build_engine(name, a), build_engine(name, b)
        try:
            assert ea.digest() == eb.digest(), name
        finally:
            ea.close()
            eb.close()
