"""The client package (client/, `rpger-stack-client`) on Python 3.9 with RPGer's
pins and on the newest Python of the machine, against the harness's real
servers with the stack's app users.

Its own suite (client/tests) runs in those interpreters; this module starts
the servers, writes an app.env for them (RPGer's variable names, credentials
inside the URLs: the format of `rpger-ops dev`'s app.env) and checks what
the suite reports. The venvs are cached (tests/client_venvs.py).
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.client_venvs import (
    CLIENT,
    ClientVenv,
    PythonNotFound,
    build_client,
    client_venv,
    find_python,
    pythons,
    venv_env,
)
from tests.conftest import Endpoint, app_redis_url, make_settings

# client/tests holds at least this many tests; fewer means some were lost.
MIN_CLIENT_TESTS = 30


@pytest.fixture(scope="session", params=list(pythons()))
def client_python(request: pytest.FixtureRequest) -> ClientVenv:
    minor, constraints, label = pythons()[request.param]
    try:
        python = find_python(minor)
    except PythonNotFound as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}: CI must test the client on it")
        pytest.skip(str(exc))
    return client_venv(python, constraints, label)


def write_app_env(path: Path, env: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    path.chmod(0o600)
    return path


def test_a_fresh_install_brings_no_dagster(client_python: ClientVenv) -> None:
    """`pip install ./client` in a fresh venv (pip's own install report)."""
    installed = client_python.installed()
    assert {"rpger-stack-client", "pymongo", "redis", "chromadb-client", "tenacity"} <= set(installed)
    unwanted = {n for n in installed if n.startswith("dagster") or n in ("chromadb", "onnxruntime", "pyarrow", "minio")}
    assert not unwanted, f"the client pulls in {unwanted}"
    if client_python.name.startswith("py39-rpger-pins"):
        assert client_python.version == (3, 9)
        assert (installed["pymongo"], installed["redis"], installed["chromadb-client"]) == ("4.6.1", "5.0.0", "1.5.9")
    print(f"\n{client_python.name}: {len(installed)} distributions: {', '.join(sorted(installed))}")


def test_client_suite(client_python: ClientVenv, tmp_path: Path, mongo_endpoint: Endpoint,
                      chroma_endpoint: Endpoint, redis_app_endpoint: Endpoint) -> None:
    s = make_settings(tmp_path, mongo_endpoint, redis_app_endpoint, chroma_endpoint)
    app_env = write_app_env(tmp_path / "app.env", {
        "MONGODB_URI": s.mongodb_uri.get_secret_value(),
        "MONGODB_DATABASE": s.mongodb_database,
        "REDIS_URL": app_redis_url(redis_app_endpoint),
        "CHROMA_HOST": s.chroma_host,
        "CHROMA_PORT": str(s.chroma_port),
        "CHROMA_DATABASE": s.chroma_database,
    })
    site = build_client(client_python, tmp_path / "site")
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [str(client_python.python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", f"--junitxml={junit}",
         "tests"],
        cwd=CLIENT, env=venv_env(site, RPGER_CLIENT_TEST_APP_ENV=str(app_env)),
        capture_output=True, text=True, timeout=300,
    )
    print(proc.stdout[-3000:], proc.stderr[-2000:])
    assert proc.returncode == 0, f"client tests failed on {client_python.name}:\n{proc.stdout[-6000:]}"
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")  # type: ignore[assignment]
    assert suite is not None
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    assert counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts
    assert counts["tests"] >= MIN_CLIENT_TESTS, counts
    # It ran the built client, not some other copy.
    assert str(site) in subprocess.run(
        [str(client_python.python), "-c", "import rpger_stack_client as m; print(m.__file__)"],
        env=venv_env(site), capture_output=True, text=True, check=True).stdout
