"""Test harness: real servers, started once per session on free loopback ports.

Each server can instead be an external one (e.g. a real MongoDB on your
machine) through environment variables:

  RPGER_TEST_MONGODB_URI   mongodb://user:pass@host:27017/?authSource=admin
  RPGER_TEST_REDIS_URL     redis://:password@host:6379/0   (the server is FLUSHed by tests!)
  RPGER_TEST_CHROMA        host:port
  RPGER_TEST_S3            host:port,access_key,secret_key

Isolation: every test gets its own Mongo database name, its own Chroma
database, its own S3 bucket and its own freshly started redis-server (Redis
keyspaces are server-wide, and a redis-server starts in milliseconds).
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rpger_ops import devservers
from rpger_ops.settings import Settings, load_settings


@dataclass
class Endpoint:
    host: str
    port: int
    server: devservers.Server | None  # None when external
    secrets: dict[str, str]
    uri: str = ""


@pytest.fixture(scope="session")
def servers_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def mongo_endpoint(servers_root: Path) -> Iterator[Endpoint]:
    external = os.environ.get("RPGER_TEST_MONGODB_URI")
    if external:
        yield Endpoint("", 0, None, {}, uri=external)
        return
    server = devservers.start_ferretdb(servers_root / "ferretdb")
    yield Endpoint(server.host, server.port, server, {}, uri=f"mongodb://{server.host}:{server.port}/")
    server.stop()


@pytest.fixture(scope="session")
def chroma_endpoint(servers_root: Path) -> Iterator[Endpoint]:
    external = os.environ.get("RPGER_TEST_CHROMA")
    if external:
        host, port = external.rsplit(":", 1)
        yield Endpoint(host, int(port), None, {})
        return
    server = devservers.start_chroma(servers_root / "chroma")
    yield Endpoint(server.host, server.port, server, {})
    server.stop()


@pytest.fixture(scope="session")
def s3_endpoint(servers_root: Path) -> Iterator[Endpoint]:
    external = os.environ.get("RPGER_TEST_S3")
    if external:
        hostport, access, secret = external.split(",", 2)
        host, port = hostport.rsplit(":", 1)
        yield Endpoint(host, int(port), None, {"access_key": access, "secret_key": secret})
        return
    access, secret = "rpger-test-" + secrets.token_hex(4), secrets.token_urlsafe(24)
    server = devservers.start_minio(servers_root / "minio", access, secret)
    yield Endpoint(server.host, server.port, server, server.secrets)
    server.stop()


def _start_redis(root: Path) -> Endpoint:
    password = secrets.token_urlsafe(18)
    server = devservers.start_redis(root / f"redis-{uuid.uuid4().hex[:8]}", password)
    return Endpoint(server.host, server.port, server, {"password": password})


@pytest.fixture
def redis_endpoint(servers_root: Path) -> Iterator[Endpoint]:
    """A fresh redis-server (password, AOF on) for this test."""
    external = os.environ.get("RPGER_TEST_REDIS_URL")
    if external:
        import redis

        client = redis.Redis.from_url(external)
        client.flushall()
        client.close()
        yield Endpoint("", 0, None, {}, uri=external)
        return
    endpoint = _start_redis(servers_root)
    yield endpoint
    assert endpoint.server is not None
    endpoint.server.stop()


@pytest.fixture
def redis_app_endpoint(servers_root: Path) -> Iterator[Endpoint]:
    """A fresh redis-server with the compose stack's users (ACL file from
    compose/scripts/redis-acl.sh): `default` (ops) and the app's `rpger_app`.
    `app_redis_url(endpoint)` is the app's URL, credentials inside."""
    password, app_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    server = devservers.start_redis(servers_root / f"redis-app-{uuid.uuid4().hex[:8]}", password,
                                    app_password=app_password)
    yield Endpoint(server.host, server.port, server, dict(server.secrets))
    server.stop()


def app_redis_url(endpoint: Endpoint, db: int = 0) -> str:
    from urllib.parse import quote

    return (f"redis://{devservers.REDIS_APP_USER}:{quote(endpoint.secrets['app_password'], safe='')}"
            f"@{endpoint.host}:{endpoint.port}/{db}")


@pytest.fixture
def redis_factory(servers_root: Path) -> Iterator[Any]:
    """Start extra redis-servers (e.g. a second instance for digest comparisons)."""
    started: list[Endpoint] = []

    def make() -> Endpoint:
        endpoint = _start_redis(servers_root)
        started.append(endpoint)
        return endpoint

    yield make
    for e in started:
        if e.server:
            e.server.stop()


@pytest.fixture
def fresh_servers(tmp_path: Path, redis_factory: Any) -> Iterator[tuple[Endpoint, Endpoint, Endpoint]]:
    """FerretDB, redis-server and Chroma on brand-new data directories: what a rebuilt
    host's new volumes give (preseed and round-trip tests)."""
    ferret = devservers.start_ferretdb(tmp_path / "fresh-ferretdb")
    chroma = devservers.start_chroma(tmp_path / "fresh-chroma")
    try:
        yield (Endpoint(ferret.host, ferret.port, ferret, {}, uri=f"mongodb://{ferret.host}:{ferret.port}/"),
               redis_factory(), Endpoint(chroma.host, chroma.port, chroma, {}))
    finally:
        ferret.stop()
        chroma.stop()


def redis_url(endpoint: Endpoint) -> str:
    return endpoint.uri or f"redis://{endpoint.host}:{endpoint.port}/0"


def make_settings(
    tmp_path: Path,
    mongo: Endpoint,
    redis_ep: Endpoint,
    chroma: Endpoint,
    s3: Endpoint | None = None,
    **overrides: Any,
) -> Settings:
    """Settings pointing at the harness servers, with a fresh Mongo database,
    Chroma database and S3 bucket."""
    suffix = uuid.uuid4().hex[:10]
    env: dict[str, Any] = {
        "MONGODB_URI": mongo.uri,
        "MONGODB_DATABASE": f"rpger_t{suffix}",
        "REDIS_URL": redis_url(redis_ep),
        "CHROMA_HOST": chroma.host,
        "CHROMA_PORT": chroma.port,
        "CHROMA_DATABASE": f"db_{suffix}",
        "RPGER_BACKUP_DIR": str(tmp_path / "backups"),
        "RPGER_STACK_ID": "test-stack",
    }
    if redis_ep.secrets.get("password"):
        env["REDIS_PASSWORD"] = redis_ep.secrets["password"]
    if s3 is not None:
        env.update({
            "RPGER_S3_ENDPOINT": f"{s3.host}:{s3.port}",
            "RPGER_S3_BUCKET": f"rpger-t{suffix}",
            "RPGER_S3_ACCESS_KEY": s3.secrets["access_key"],
            "RPGER_S3_SECRET_KEY": s3.secrets["secret_key"],
            "RPGER_S3_SECURE": False,
        })
    env.update(overrides)
    settings = load_settings(_env_file=None, **env)
    ensure_chroma_database(settings)
    return settings


def ensure_chroma_database(settings: Settings) -> None:
    import chromadb

    admin = chromadb.AdminClient(chromadb.Settings(
        chroma_api_impl="chromadb.api.fastapi.FastAPI",
        chroma_server_host=settings.chroma_host,
        chroma_server_http_port=settings.chroma_port,
        anonymized_telemetry=False,
    ))
    try:
        admin.get_database(settings.chroma_database, tenant=settings.chroma_tenant)
    except Exception:
        admin.create_database(settings.chroma_database, tenant=settings.chroma_tenant)


@pytest.fixture
def settings(tmp_path: Path, mongo_endpoint: Endpoint, redis_endpoint: Endpoint,
             chroma_endpoint: Endpoint) -> Settings:
    """Settings for all three databases (no off-site store)."""
    return make_settings(tmp_path, mongo_endpoint, redis_endpoint, chroma_endpoint)


@pytest.fixture
def settings_s3(tmp_path: Path, mongo_endpoint: Endpoint, redis_endpoint: Endpoint,
                chroma_endpoint: Endpoint, s3_endpoint: Endpoint) -> Settings:
    """Settings for all three databases and the off-site S3 store."""
    return make_settings(tmp_path, mongo_endpoint, redis_endpoint, chroma_endpoint, s3_endpoint)


# --- Hypothesis: one seed per session, printed, so any failure can be replayed ------------------

@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Without --hypothesis-seed, pick a seed here (instead of Hypothesis choosing one per
    test and printing it only in rare cases), so the report can always name it."""
    try:
        from hypothesis import core
    except ImportError:
        return
    if core.global_force_seed is None:
        core.global_force_seed = secrets.randbits(32)
    config.stash[_HYPOTHESIS_SEED] = int(core.global_force_seed)


_HYPOTHESIS_SEED = pytest.StashKey[int]()


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = config.stash.get(_HYPOTHESIS_SEED, None)
    return None if seed is None else f"hypothesis seed: {seed} (replay with --hypothesis-seed={seed})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    seed = item.config.stash.get(_HYPOTHESIS_SEED, None)
    if report.failed and seed is not None and getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
        report.sections.append(("hypothesis seed", f"replay: pytest '{item.nodeid}' --hypothesis-seed={seed}"))
