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

import contextlib
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
# The stack's Redis users, defined once for the compose stack and for us
# (a checkout file: the harness and `rpger-ops dev` run from a checkout).
REDIS_ACL_SCRIPT = Path(__file__).resolve().parent.parent / "compose" / "scripts" / "redis-acl.sh"
REDIS_APP_USER = "rpger_app"


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
    extra_ports: dict[str, int] = field(default_factory=dict)

    def log_tail(self, n: int = 30) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_reason(self) -> str:
        """How the process ended, e.g. "exited with code 1" or "killed by SIGKILL"."""
        return describe_exit(self.proc.returncode if self.proc else None)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the server's process group, then SIGKILL after `timeout`."""
        if self.proc is None:
            return
        stop_group(self.proc, timeout=timeout)
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


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # a zombie leader on some kernels; nothing left to stop
        return False


def _group_members(pgid: int) -> list[tuple[int, str]] | None:
    """(pid, state) of every process in group `pgid`, from /proc (None without /proc)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    members = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            members.append((int(stat.parent.name), fields[0]))
    return members


def group_alive(pgid: int, leader: int | None = None) -> bool:
    """Is anything in process group `pgid` still running? Zombies do not count;
    those that are our children (re-parented to a subreaper) are reaped on
    the way, except `leader`, whose exit status its Popen must read."""
    members = _group_members(pgid)
    if members is None:
        return _signal_group(pgid, 0)
    alive = False
    for pid, state in members:
        if state != "Z":
            alive = True
        elif pid != leader:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
    return alive


def stop_group(proc: subprocess.Popen[bytes], first: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Stop a child started with `start_new_session=True` and everything in its
    process group: `first` (SIGTERM by default), then SIGKILL after `timeout`;
    returns when the leader is reaped and the group is empty (or 5 s after SIGKILL)."""
    pgid = proc.pid  # session and group leader: pgid == pid
    if proc.poll() is None or group_alive(pgid, pgid):
        _signal_group(pgid, first)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (proc.poll() is None or group_alive(pgid, pgid)):
            time.sleep(0.05)
        if proc.poll() is None or group_alive(pgid, pgid):
            _signal_group(pgid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and group_alive(pgid, pgid):
                if proc.poll() is None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=0.1)
                else:
                    time.sleep(0.05)
    if proc.poll() is None:
        proc.wait(timeout=5)


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
    try:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise ServerStartError(f"{server.name} {server.exit_reason()} while starting:\n{server.log_tail()}")
            if check():
                return server
            time.sleep(0.1)
        raise ServerStartError(f"{server.name} not ready after {timeout:.0f}s:\n{server.log_tail()}")
    except BaseException:
        # Not ready, or interrupted (a signal) while waiting: never leave it behind.
        server.stop(timeout=5)
        raise


def start_ferretdb(data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> Server:
    port = port or free_port()
    server = Server("ferretdb", host, port, data_dir)
    return _spawn(server, [find_binary("rpger-ferretdb"), "-listen-addr", f"{host}:{port}",
                           "-data-dir", str(data_dir), "-log-level", "warn"])


def write_redis_acl(acl_path: Path, password: str, app_password: str) -> None:
    """The stack's ACL file (users `default` and `rpger_app`), written by the
    same script as in the compose stack's Valkey container."""
    if not REDIS_ACL_SCRIPT.exists():
        raise ServerStartError(f"{REDIS_ACL_SCRIPT} not found: the app user needs a checkout of rpger-dbstack")
    acl_path.parent.mkdir(parents=True, exist_ok=True)
    secrets_dir = acl_path.parent / ".acl-secrets"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    files = []
    for name, value in (("ops", password), ("app", app_password)):
        f = secrets_dir / name
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        files.append(str(f))
    try:
        fd = os.open(acl_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            subprocess.run(["sh", str(REDIS_ACL_SCRIPT), *files], stdout=out, stderr=subprocess.PIPE, check=True)
    except subprocess.CalledProcessError as exc:
        raise ServerStartError(f"{REDIS_ACL_SCRIPT.name} failed: {exc.stderr.decode(errors='replace')}") from None
    finally:
        shutil.rmtree(secrets_dir, ignore_errors=True)


def start_redis(data_dir: Path, password: str, port: int | None = None, host: str = "127.0.0.1",
                app_password: str | None = None) -> Server:
    """redis-server with AOF on and a password, as in production. With
    `app_password`, the users come from the compose stack's ACL (the `default`
    user with `password`, and the app's `rpger_app`)."""
    port = port or free_port()
    server = Server("redis", host, port, data_dir, secrets={"password": password})
    data_dir.mkdir(parents=True, exist_ok=True)
    if app_password is None:
        auth = f"requirepass {password}\n"
    else:
        server.secrets["app_password"] = app_password
        acl = data_dir / "users.acl"
        write_redis_acl(acl, password, app_password)
        auth = f"aclfile {acl}\n"
    conf = data_dir / "redis.conf"
    conf.write_text(
        f"bind {host}\nport {port}\ndir {data_dir}\nappendonly yes\nappendfsync everysec\n"
        f"save \"\"\n{auth}daemonize no\nprotected-mode yes\nlogfile \"\"\n"
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
                host: str = "127.0.0.1", console_port: int | None = None) -> Server:
    """MinIO; its (disabled) console still binds an address: `console_port`
    (a free port when not given)."""
    port = port or free_port()
    console = console_port or free_port()
    server = Server("minio", host, port, data_dir, secrets={"access_key": access_key, "secret_key": secret_key})
    server.extra_ports["console"] = console

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
