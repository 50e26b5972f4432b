"""Start the real database servers locally, without Docker.

Used by the test harness (temporary directories, free ports) and by the `dev`
command (persistent data under `.dev/`). The servers are the real ones:
redis-server (Debian), Chroma (`chroma run` from the chromadb package),
FerretDB v1 embedded in our own Go program (MongoDB wire protocol; SQLite
backend), MinIO built from its Go module (S3).

Secrets never go on a command line: Redis reads its password from a config
file we write with mode 0600; MinIO reads its credentials from the
environment of its own process.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CACHE_DIR = Path(os.environ.get("RPGER_CACHE_DIR", Path.home() / ".cache" / "rpger-dbstack"))
BIN_DIR = CACHE_DIR / "bin"


class ServerStartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def find_binary(name: str) -> str:
    """Our Go builds live in the cache; Debian's and the venv's on PATH."""
    cached = BIN_DIR / name
    if cached.exists():
        return str(cached)
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.exists():
        return str(venv_bin)
    found = shutil.which(name)
    if not found:
        hint = "run tools/build.sh" if name in ("rpger-ferretdb", "minio") else "install it"
        raise ServerStartError(f"{name} not found ({hint})")
    return found


@dataclass
class Server:
    name: str
    host: str
    port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    secrets: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None
    start_timeout: float = 60.0

    def log_tail(self, n: int = 30) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        """Graceful stop, optional downtime, start again on the same port and data."""
        self.stop()
        if down_s:
            time.sleep(down_s)
        _spawn(self, self.argv, self.env, self.ready, self.start_timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, for fault tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


def _spawn(server: Server, argv: list[str], env: dict[str, str] | None = None,
           ready: Callable[[], bool] | None = None, timeout: float = 60.0) -> Server:
    server.argv, server.env, server.ready, server.start_timeout = argv, dict(env or {}), ready, timeout
    server.data_dir.mkdir(parents=True, exist_ok=True)
    server.log_path = server.data_dir.parent / f"{server.data_dir.name}.{server.name}.log"
    log = open(server.log_path, "ab")  # noqa: SIM115 - owned by the child process
    full_env = {**os.environ, **(env or {})}
    server.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    check = ready or (lambda: port_open(server.host, server.port))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise ServerStartError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        if check():
            return server
        time.sleep(0.1)
    server.stop()
    raise ServerStartError(f"{server.name} not ready after {timeout:.0f}s:\n{server.log_tail()}")


def start_ferretdb(data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> Server:
    port = port or free_port()
    server = Server("ferretdb", host, port, data_dir)
    return _spawn(server, [find_binary("rpger-ferretdb"), "-listen-addr", f"{host}:{port}",
                           "-data-dir", str(data_dir), "-log-level", "warn"])


def start_redis(data_dir: Path, password: str, port: int | None = None, host: str = "127.0.0.1") -> Server:
    """redis-server with AOF on and a password, as in production."""
    port = port or free_port()
    server = Server("redis", host, port, data_dir, secrets={"password": password})
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "redis.conf"
    conf.write_text(
        f"bind {host}\nport {port}\ndir {data_dir}\nappendonly yes\nappendfsync everysec\n"
        f"save \"\"\nrequirepass {password}\ndaemonize no\nprotected-mode yes\nlogfile \"\"\n"
        # Snapshots over replication (the backup) start at once, not after 5 s.
        "repl-diskless-sync-delay 0\n"
    )
    conf.chmod(0o600)
    return _spawn(server, [find_binary("redis-server"), str(conf)])


def start_chroma(data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> Server:
    port = port or free_port()
    server = Server("chroma", host, port, data_dir)

    def ready() -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{host}:{port}/api/v2/heartbeat", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    return _spawn(server, [find_binary("chroma"), "run", "--path", str(data_dir), "--host", host,
                           "--port", str(port)], env={"ANONYMIZED_TELEMETRY": "False"},
                  ready=ready, timeout=90)


def start_minio(data_dir: Path, access_key: str, secret_key: str, port: int | None = None,
                host: str = "127.0.0.1") -> Server:
    port = port or free_port()
    console = free_port()
    server = Server("minio", host, port, data_dir, secrets={"access_key": access_key, "secret_key": secret_key})

    def ready() -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{host}:{port}/minio/health/ready", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    env = {"MINIO_ROOT_USER": access_key, "MINIO_ROOT_PASSWORD": secret_key,
           "MINIO_BROWSER": "off", "MINIO_UPDATE": "off", "CI": "true"}
    return _spawn(server, [find_binary("minio"), "server", "--quiet", "--address", f"{host}:{port}",
                           "--console-address", f"{host}:{console}", str(data_dir)],
                  env=env, ready=ready, timeout=60)
