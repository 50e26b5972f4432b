"""The shipped compose files, read as data: pins agree with the client
libraries, every service is hardened, volumes are external, no Docker socket
and no TCP gRPC by default, the two Dagster instance files differ only in the
run launcher. (The e2e suite checks the same points on the running stack.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose"


class _Loader(yaml.SafeLoader):
    pass


# Compose's merge tags (`!override`, `!reset`) as plain values.
_Loader.add_constructor("!override", lambda loader, node: loader.construct_sequence(node)
                        if isinstance(node, yaml.SequenceNode) else loader.construct_mapping(node))
_Loader.add_constructor("!reset", lambda loader, node: None)


def load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - SafeLoader subclass


@pytest.fixture(scope="module")
def base() -> dict:
    return load(COMPOSE / "compose.yaml")


def _dockerfile_arg(path: Path, name: str) -> str:
    m = re.search(rf"^ARG {name}=(\S+)$", path.read_text(), re.M)
    assert m, f"{path}: no ARG {name}"
    return m.group(1)


def test_pins_agree_with_the_client_libraries_and_each_other(base: dict) -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(d.split("==", 1) for d in deps if "==" in d)
    svc = base["services"]
    chroma_image = svc["chroma"]["build"]["args"]["CHROMA_IMAGE"]
    # The Chroma server and the Python client must be the same release.
    assert chroma_image == f"chromadb/chroma:{pins['chromadb']}"
    assert svc["chroma"]["image"].endswith(":" + pins["chromadb"] + "}")
    # The ops image's throwaway valkey-server must be the stack's own version.
    valkey_image = svc["redis"]["build"]["args"]["VALKEY_IMAGE"]
    assert _dockerfile_arg(REPO / "Dockerfile", "VALKEY_IMAGE") == valkey_image
    assert _dockerfile_arg(COMPOSE / "images/valkey/Dockerfile", "VALKEY_IMAGE") == valkey_image
    mongo_image = svc["mongodb"]["build"]["args"]["MONGO_IMAGE"]
    assert _dockerfile_arg(COMPOSE / "images/mongodb/Dockerfile", "MONGO_IMAGE") == mongo_image
    assert _dockerfile_arg(COMPOSE / "images/chroma/Dockerfile", "CHROMA_IMAGE") == chroma_image
    nginx = svc["admin-proxy"]["build"]["args"]["NGINX_IMAGE"]
    assert _dockerfile_arg(COMPOSE / "images/admin-proxy/Dockerfile", "NGINX_IMAGE") == nginx
    # Each derived image is tagged with the version of what it is built on.
    for name, image in (("mongodb", mongo_image), ("redis", valkey_image), ("chroma", chroma_image),
                        ("chroma-init", chroma_image), ("admin-proxy", nginx)):
        version = image.split(":", 1)[1].split("-", 1)[0]
        assert svc[name]["image"].endswith(f":{version}}}"), (name, svc[name]["image"], version)
    # Patch-level pins everywhere, never a moving tag.
    for image in (mongo_image, valkey_image, chroma_image, nginx):
        assert re.fullmatch(r"[a-z/.-]+:\d+\.\d+\.\d+(-[a-z0-9.]+)?", image), image
    # Dagster: one release family (dagster 1.13.N <-> libraries 0.29.N).
    assert pins["dagster"] == pins["dagster-webserver"] == pins["dagster-graphql"]
    assert pins["dagster-docker"] == "0.29." + pins["dagster"].split(".", 2)[2]


SERVICE_CAPS = {
    # The official images' entrypoints start as root, chown the data folder and
    # step down to their user; nothing else gets a capability.
    "mongodb": {"CHOWN", "SETUID", "SETGID", "DAC_READ_SEARCH"},
    "redis": {"CHOWN", "SETUID", "SETGID", "DAC_READ_SEARCH"},
    # One-shot, no network: hands the Chroma volume to the chroma user.
    "chroma-init": {"CHOWN", "DAC_READ_SEARCH"},
}


def _all_services() -> list[tuple[str, str, dict]]:
    out = []
    for f in ("compose.yaml", "compose.docker-launcher.yaml"):
        for name, svc in load(COMPOSE / f)["services"].items():
            if "image" in svc or "build" in svc:  # a full service, not an overlay patch
                out.append((f, name, svc))
    return out


@pytest.mark.parametrize(("file", "name", "svc"), _all_services(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_service_is_hardened(file: str, name: str, svc: dict) -> None:
    assert svc["cap_drop"] == ["ALL"]
    assert set(svc.get("cap_add", [])) == SERVICE_CAPS.get(name, set())
    assert "no-new-privileges:true" in svc["security_opt"]
    assert svc["read_only"] is True
    assert svc["logging"]["driver"] == "json-file"
    assert svc["logging"]["options"] == {"max-size": "10m", "max-file": "5"}
    if name != "chroma-init":  # the only one-shot allowed to start as root, without network
        assert svc.get("user", "") != "0:0", name
    else:
        assert svc["network_mode"] == "none" and svc["restart"] == "no"
    limits = svc["deploy"]["resources"]["limits"]
    assert limits["memory"] and limits["cpus"]
    assert svc.get("restart") in ("unless-stopped", "no")
    # Scripts are built into the images: nothing from the checkout is mounted.
    for volume in svc.get("volumes", []):
        source = volume["source"] if isinstance(volume, dict) else str(volume).split(":", 1)[0]
        assert not source.startswith((".", "/")) or source.startswith("${RPGER_DOCKER_SOCKET"), (name, volume)


def test_volumes_are_external_and_named(base: dict) -> None:
    for key, vol in base["volumes"].items():
        assert vol["external"] is True and vol["name"].startswith("rpger-"), key
    script = (COMPOSE / "setup-volumes.sh").read_text()
    for vol in base["volumes"].values():
        assert vol["name"] in script, f"setup-volumes.sh does not create {vol['name']}"


def test_no_docker_socket_and_no_tcp_grpc_by_default(base: dict) -> None:
    text = (COMPOSE / "compose.yaml").read_text()
    assert "docker.sock" not in text and "DOCKER_HOST" not in text
    svc = base["services"]
    assert "ports" not in svc["dagster-code"] and "--socket" in svc["dagster-code"]["command"]
    assert "-p" not in svc["dagster-code"]["command"]
    workspace = load(COMPOSE / "dagster" / "workspace.yaml")
    server = workspace["load_from"][0]["grpc_server"]
    assert "socket" in server and "port" not in server and "host" not in server
    # The app joins rpger-db-network: no webserver there, the UI is read-only.
    for ui in ("dagster-webserver", "dagster-admin", "admin-proxy"):
        assert "rpger-db-network" not in svc[ui]["networks"], ui
    assert "--read-only" in svc["dagster-webserver"]["command"]
    assert "--read-only" not in svc["dagster-admin"]["command"]
    assert svc["dagster-admin"]["profiles"] == ["admin"] and svc["admin-proxy"]["profiles"] == ["admin"]
    assert "ports" not in svc["dagster-admin"]
    assert all(p.startswith("127.0.0.1:") for p in svc["admin-proxy"]["ports"] + svc["dagster-webserver"]["ports"])
    assert base["networks"]["rpger-admin-network"]["internal"] is True
    # Only the socket proxy of the opt-in overlay mounts the engine socket.
    launcher = load(COMPOSE / "compose.docker-launcher.yaml")["services"]
    mounts = {n: [v for v in s.get("volumes", []) if "docker.sock" in str(v)] for n, s in launcher.items()}
    assert {n for n, m in mounts.items() if m} == {"docker-socket-proxy"}
    (sock,) = mounts["docker-socket-proxy"]
    assert sock["read_only"] is True and sock["bind"]["create_host_path"] is False


def test_valkey_has_fork_headroom(base: dict) -> None:
    svc = base["services"]["redis"]
    maxmemory = svc["environment"]["RPGER_REDIS_MAXMEMORY"]
    limit = svc["deploy"]["resources"]["limits"]["memory"]

    def mib(v: str) -> float:
        m = re.fullmatch(r"(\d+)\s*([kmg])b?", v.strip().lower())
        assert m, v
        return int(m.group(1)) * {"k": 1 / 1024, "m": 1, "g": 1024}[m.group(2)]

    assert mib(maxmemory) * 2 <= mib(limit), (maxmemory, limit)


def test_dagster_instance_files_differ_only_in_the_run_launcher() -> None:
    default = yaml.safe_load((REPO / "dagster.yaml").read_text())
    docker = yaml.safe_load((REPO / "dagster.docker-launcher.yaml").read_text())
    assert "run_launcher" not in default  # Dagster's default: runs as child processes of the code server
    launcher = docker.pop("run_launcher")
    assert default == docker
    assert launcher["class"] == "DockerRunLauncher" and launcher["module"] == "dagster_docker"
    kwargs = launcher["config"]["container_kwargs"]
    assert kwargs["auto_remove"] is True and kwargs["mem_limit"] and kwargs["cap_drop"] == ["ALL"]
    assert kwargs["read_only"] is True and "no-new-privileges:true" in kwargs["security_opt"]
    ops_env = set(load(COMPOSE / "compose.yaml")["x-ops-env"])
    passed = set(launcher["config"]["env_vars"])
    assert passed <= ops_env, passed - ops_env
    assert {"RPGER_HEARTBEAT_URL_FILE", "RPGER_ALERT_WEBHOOK_URL_FILE", "TMPDIR"} <= passed


def test_build_contexts_exclude_secrets() -> None:
    for ignore in (REPO / ".dockerignore", COMPOSE / ".dockerignore"):
        lines = ignore.read_text().splitlines()
        assert "*" in lines, f"{ignore} must exclude everything by default"
        assert not any(ln.startswith("!") and "secrets" in ln for ln in lines)
