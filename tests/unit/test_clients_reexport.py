"""rpger_ops.clients is the client package, not a second copy."""

from __future__ import annotations

import subprocess
import sys

import rpger_stack_client

from rpger_ops import clients
from rpger_ops.settings import load_settings


def test_one_implementation() -> None:
    assert clients.StackClients is rpger_stack_client.StackClients
    assert clients.RetryPolicy is rpger_stack_client.RetryPolicy
    assert clients.api_health is rpger_stack_client.api_health


def test_from_env_imports_no_dagster() -> None:
    code = ("import sys; from rpger_ops.clients import StackClients; StackClients.from_env(); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'chromadb', 'pymongo')); "
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stdout + p.stderr


def test_ops_settings_become_client_config() -> None:
    s = load_settings(_env_file=None, MONGODB_URI="mongodb://db:27017/rpger", MONGODB_USERNAME="rpger_root",
                      MONGODB_PASSWORD="p@ss word", REDIS_URL="redis://cache:6379/2", REDIS_PASSWORD="r/pw",
                      CHROMA_HOST="chroma", CHROMA_PORT="8001", CHROMA_DATABASE="campaigns")
    c = clients.stack_clients(s)
    cfg = c.config
    assert cfg.mongodb_uri == "mongodb://rpger_root:p%40ss%20word@db:27017/rpger?authSource=admin"
    assert cfg.redis_url == "redis://:r%2Fpw@cache:6379/2"
    assert (cfg.chroma_host, cfg.chroma_port, cfg.chroma_database) == ("chroma", 8001, "campaigns")
    assert c.policy.budget_s == clients.OPS_RETRY_BUDGET_S and cfg.mongodb_tz_aware is True
    # Credentials already in the URL win (as in redis-py).
    s2 = load_settings(_env_file=None, REDIS_URL="redis://rpger_app:x@cache:6379/0", REDIS_PASSWORD="other")
    assert clients.client_config(s2).redis_url == "redis://rpger_app:x@cache:6379/0"


def test_the_ops_environment_satisfies_the_client_requirements() -> None:
    """The client is installed with --no-deps beside rpger-ops: every one of its
    requirements must hold here, chromadb-client's by the full chromadb."""
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    from packaging.requirements import Requirement

    client = Path(__file__).resolve().parents[2] / "client" / "pyproject.toml"
    reqs = [Requirement(r) for r in tomllib.loads(client.read_text())["project"]["dependencies"]]
    assert {r.name for r in reqs} >= {"pymongo", "redis", "chromadb-client", "tenacity"}
    for r in reqs:
        installed = version("chromadb" if r.name == "chromadb-client" else r.name)
        assert r.specifier.contains(installed, prereleases=True), f"{r} but {installed} installed"
