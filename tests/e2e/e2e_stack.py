"""Driving the compose stack under podman for the e2e suite.

Everything runs the shipped `compose/compose.yaml` plus `tests/e2e/compose.e2e.yaml`
(stand-in images, MinIO as the off-site S3 endpoint) and, where a phase says so,
the shipped `compose/compose.ports.yaml`.

podman 4.3 (Debian 12) has no systemd here, so podman never runs healthchecks on
its own, and podman-compose ignores `service_healthy` conditions on podman < 4.6
and maps `service_completed_successfully` to "stopped" (exit code unchecked).
The harness therefore brings the stack up in the order the `depends_on`
conditions describe, running each healthcheck itself (`podman healthcheck run`)
and checking the preseed exit code: exactly what Docker Compose does from the
same file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
PORTS_FILE = COMPOSE_DIR / "compose.ports.yaml"
LAUNCHER_FILE = COMPOSE_DIR / "compose.docker-launcher.yaml"
E2E_FILE = Path(__file__).resolve().with_name("compose.e2e.yaml")
SETUP_VOLUMES = COMPOSE_DIR / "setup-volumes.sh"

# Stand-ins built by tools/podman/build-images.sh; each can be overridden.
IMAGES = {
    name: os.environ.get(name, default)
    for name, default in {
        "RPGER_MONGO_IMAGE": "localhost/rpger-ferretdb-standin:1",
        # The stack's derived images (compose/images/*) built on the stand-ins.
        "RPGER_REDIS_IMAGE": "localhost/rpger-valkey:e2e",
        "RPGER_CHROMA_IMAGE": "localhost/rpger-chroma:e2e",
        "RPGER_ADMIN_PROXY_IMAGE": "localhost/rpger-admin-proxy:e2e",
        "RPGER_SOCKET_PROXY_IMAGE": "localhost/rpger-socket-proxy-standin:1.13.1",
        "RPGER_MINIO_IMAGE": "localhost/rpger-minio-standin:1",
        "RPGER_OPS_IMAGE": "localhost/rpger-ops:e2e",
    }.items()
}

DB_SERVICES = ("mongodb", "redis", "chroma")
CONTAINERS = {
    "mongodb": "rpger-mongodb",
    "redis": "rpger-redis",
    "chroma": "rpger-chroma",
    "chroma-init": "rpger-chroma-init",
    "minio": "rpger-e2e-minio",
    "sink": "rpger-e2e-sink",
    "preseed": "rpger-preseed",
    "dagster-code": "rpger-dagster-code",
    "dagster-webserver": "rpger-dagster-webserver",
    "dagster-daemon": "rpger-dagster-daemon",
    "dagster-admin": "rpger-dagster-admin",
    "admin-proxy": "rpger-admin-proxy",
    "docker-socket-proxy": "rpger-docker-socket-proxy",
}
DB_VOLUMES = ("rpger-mongodb-data", "rpger-redis-data", "rpger-chroma-data")
# Every volume of the shipped stack is external (created by setup-volumes.sh).
STACK_VOLUMES = (*DB_VOLUMES, "rpger-backups", "rpger-dagster-home")
MINIO_VOLUME = "rpger-e2e-minio-data"
ALL_VOLUMES = (*STACK_VOLUMES, MINIO_VOLUME)
DB_PORTS = {"mongodb": 27017, "redis": 6379, "chroma": 8000}
DAGSTER_PORT = int(os.environ.get("RPGER_DAGSTER_PORT", "3000"))
ADMIN_PORT = int(os.environ.get("RPGER_DAGSTER_ADMIN_PORT", "3001"))


def log(msg: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Timings:
    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        log(f"-> {name}")
        try:
            yield
        finally:
            dt = time.monotonic() - t0
            self.steps.append((name, dt))
            log(f"<- {name}: {dt:.1f}s")

    def report(self) -> str:
        width = max((len(n) for n, _ in self.steps), default=10)
        lines = [f"  {n:<{width}}  {dt:7.1f}s" for n, dt in self.steps]
        lines.append(f"  {'total':<{width}}  {sum(dt for _, dt in self.steps):7.1f}s")
        return "\n".join(lines)


def run(cmd: Sequence[str], *, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 600, cwd: Path | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), env=env, cwd=cwd, text=True, capture_output=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run(["podman", *args], check=check, timeout=timeout)


class Stack:
    """One compose project: the shipped files plus the e2e overlay."""

    def __init__(self, secrets_dir: Path, env_file: Path) -> None:
        self.secrets_dir = secrets_dir
        self.env_file = env_file
        self.env = dict(os.environ)
        self.env.update(IMAGES)
        self.env["RPGER_SECRETS_DIR"] = str(secrets_dir)

    def files(self, ports: bool, launcher: bool = False) -> list[str]:
        files = ["-f", str(COMPOSE_FILE)]
        if ports:
            files += ["-f", str(PORTS_FILE)]
        if launcher:
            files += ["-f", str(LAUNCHER_FILE)]
        return [*files, "-f", str(E2E_FILE)]

    def compose(self, *args: str, ports: bool = False, launcher: bool = False, check: bool = True,
                timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        cmd = ["podman-compose", "--env-file", str(self.env_file), "--profile", "admin",
               *self.files(ports, launcher), *args]
        return run(cmd, env={**self.env, **(env or {})}, check=check, timeout=timeout, cwd=COMPOSE_DIR)

    def up(self, *services: str, ports: bool = False, launcher: bool = False,
           env: dict[str, str] | None = None) -> None:
        self.compose("up", "-d", "--no-build", "--no-deps", *services, ports=ports, launcher=launcher, env=env)

    def down(self, volumes: bool = False) -> None:
        args = ["down", "-t", "20"]
        if volumes:
            args.append("-v")
        self.compose(*args, ports=True, launcher=True, check=False)
        # Whatever podman-compose left behind (e.g. a one-shot that exited).
        for name in CONTAINERS.values():
            podman("rm", "-f", "-t", "5", name, check=False)

    def container_ids(self) -> dict[str, str]:
        ids = {}
        for svc, name in CONTAINERS.items():
            p = podman("inspect", "--format", "{{.Id}}", name, check=False)
            if p.returncode == 0:
                ids[svc] = p.stdout.strip()
        return ids

    def wait_healthy(self, services: Sequence[str], timeout: float = 300) -> dict[str, float]:
        """Run each service's own healthcheck until it passes; fail on timeout or exit."""
        t0 = time.monotonic()
        pending = {s: CONTAINERS[s] for s in services}
        took: dict[str, float] = {}
        last: dict[str, str] = {}
        while pending:
            for svc, name in list(pending.items()):
                state = podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
                if state in ("exited", "stopped", "dead"):
                    logs = podman("logs", "--tail", "40", name, check=False)
                    raise AssertionError(f"{name} {state} before healthy:\n{logs.stdout}{logs.stderr}")
                p = podman("healthcheck", "run", name, check=False, timeout=60)
                if p.returncode == 0:
                    took[svc] = time.monotonic() - t0
                    log(f"{name} healthy after {took[svc]:.1f}s")
                    del pending[svc]
                else:
                    last[svc] = (p.stdout + p.stderr).strip()[-300:]
            if pending and time.monotonic() - t0 > timeout:
                detail = "\n".join(
                    f"{CONTAINERS[s]}: {last.get(s, '')}\n"
                    + podman("logs", "--tail", "30", CONTAINERS[s], check=False).stderr[-2000:]
                    for s in pending
                )
                raise AssertionError(f"not healthy after {timeout}s: {sorted(pending)}\n{detail}")
            if pending:
                time.sleep(2)
        return took

    def health(self, service: str) -> str:
        """Run the service's healthcheck once; "healthy" or "unhealthy" (podman's words)."""
        p = podman("healthcheck", "run", CONTAINERS[service], check=False, timeout=120)
        return "healthy" if p.returncode == 0 else "unhealthy"

    def wait_exit(self, service: str, timeout: float = 600) -> int:
        name = CONTAINERS[service]
        p = podman("wait", name, timeout=timeout)
        return int(p.stdout.strip().splitlines()[-1])

    def logs(self, service: str, tail: int = 60) -> str:
        p = podman("logs", "--tail", str(tail), CONTAINERS[service], check=False)
        return p.stdout + p.stderr

    def exec(self, service: str, *cmd: str, check: bool = True, timeout: float = 900,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        args = ["podman", "exec"]
        if input is not None:
            args.append("-i")
        return run([*args, CONTAINERS[service], *cmd], check=check, timeout=timeout, input=input)

    def python(self, service: str, code: str, timeout: float = 900) -> str:
        """Run Python (from stdin, never argv-visible secrets) in an ops container."""
        return self.exec(service, "python3", "-", input=code, timeout=timeout).stdout


def create_volumes(env: dict[str, str] | None = None) -> str:
    """What an operator does once: compose/setup-volumes.sh (called by
    setup-secrets.sh), plus the e2e's own external MinIO volume."""
    out = run(["bash", str(SETUP_VOLUMES)], env={**os.environ, **(env or {})}).stdout
    if podman("volume", "inspect", MINIO_VOLUME, check=False).returncode != 0:
        podman("volume", "create", MINIO_VOLUME)
    return out


def remove_volumes(names: Sequence[str]) -> None:
    for v in names:
        podman("volume", "rm", "-f", v, check=False)


def volume_names() -> set[str]:
    return set(podman("volume", "ls", "--format", "{{.Name}}").stdout.split())


def graphql(port: int, query: str, variables: dict | None = None, auth: tuple[str, str] | None = None,
            timeout: float = 30) -> tuple[int, dict]:
    """POST a GraphQL request to a webserver on 127.0.0.1; (HTTP status, JSON or {})."""
    import base64
    import urllib.error
    import urllib.request

    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"{}")
        except ValueError:
            return exc.code, {}


def sink_records() -> list[dict]:
    """Requests the e2e sink received (alert webhook POSTs, heartbeat GETs): its whole log."""
    p = podman("logs", CONTAINERS["sink"], check=False)
    out = []
    for line in (p.stdout + p.stderr).splitlines():
        line = line.strip()
        if line.startswith("{") and '"sink"' in line:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("body", "").startswith("{"):
                rec["json"] = json.loads(rec["body"])
            out.append(rec)
    return out


def listening_tcp_ports(container: str) -> list[int]:
    """Ports with a TCP socket in LISTEN state inside a container (/proc/net/tcp{,6})."""
    p = podman("exec", container, "cat", "/proc/net/tcp", "/proc/net/tcp6", check=False)
    ports = set()
    for line in p.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) > 3 and parts[3] == "0A":  # TCP_LISTEN
            ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


def port_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def host_addresses() -> list[str]:
    """The host's non-loopback IPv4 addresses right now (where a 0.0.0.0 binding
    would answer). Call it just before probing: a connect() to an address that
    is no longer local leaves the host, and this machine's egress proxy accepts
    any TCP connection, which would look like an open port."""
    p = run(["hostname", "-I"], check=False)
    return sorted(a for a in p.stdout.split() if ":" not in a and not a.startswith("127."))


def listeners(port: int) -> list[str]:
    """Local addresses with a TCP socket listening on `port` (from `ss`)."""
    p = run(["ss", "-Hltn", f"sport = :{port}"], check=False)
    return [line.split()[3].rsplit(":", 1)[0] for line in p.stdout.splitlines() if line.strip()]


def published_ports(container: str) -> list[str]:
    p = podman("port", container, check=False)
    return [line.strip() for line in p.stdout.splitlines() if line.strip()]


def require_tools() -> list[str]:
    missing = [t for t in ("podman", "podman-compose") if shutil.which(t) is None]
    images = [img for img in IMAGES.values() if podman("image", "exists", img, check=False).returncode != 0] \
        if not missing else []
    return missing + images


def json_line(out: str) -> dict:
    """Last line of a container script's stdout that parses as a JSON object."""
    for line in reversed(out.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON in output:\n{out[-3000:]}")
