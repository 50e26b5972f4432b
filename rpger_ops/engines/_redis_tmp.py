"""A throwaway redis-server on a private unix socket, optionally loaded with an RDB.

Reading an RDB means loading it: the Redis engine uses this to count a dump,
to replay it into the real server (DUMP/RESTORE) and as a scratch target.
The server listens on no TCP port, has no password (the socket is mode 0700
in a private 0700 directory), never persists (`save ""`, no AOF) and is
removed with its directory on exit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rpger_ops.engines.base import EngineError, Progress, no_progress

# Generous: an RDB may use any logical db index the source allowed.
TEMP_DATABASES = 256
# Loading a large RDB is slow but shows progress; a server that neither
# loads nor answers for this long is stuck.
STARTUP_TIMEOUT_S = 30.0


class TempServerError(EngineError):
    """The temporary server did not start or could not load the RDB."""


def redis_server_binary() -> str:
    # Valkey first where both exist: it also reads the newer formats Valkey writes.
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise TempServerError("redis-server not found on PATH (needed to read Redis dumps); install redis-server or valkey")


def check_rdb(rdb: Path, timeout_s: float = 600.0) -> int:
    """Validate an RDB file without loading it into a server (redis-check-rdb /
    valkey-check-rdb: every record parsed, the CRC64 checked); returns the number of
    keys it holds. The checker is the server binary run under its checker name when
    no separate one is installed."""
    server = redis_server_binary()
    name = "valkey-check-rdb" if Path(server).name.startswith("valkey") else "redis-check-rdb"
    with tempfile.TemporaryDirectory(prefix="rpger-check-rdb-") as tmp:
        checker = shutil.which(name)
        if checker is None:
            checker = str(Path(tmp) / name)
            os.symlink(server, checker)
        proc = subprocess.run([checker, str(rdb)], capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    found = _KEYS_READ.search(proc.stdout)
    if proc.returncode != 0 or "RDB looks OK" not in proc.stdout or found is None:
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        raise TempServerError(f"{name}: {rdb.name} is not a valid RDB: " + " | ".join(lines[-3:]))
    return int(found.group(1))


_KEYS_READ = re.compile(r"\[info\] (\d+) keys read")


@dataclass
class TempRedis:
    directory: Path
    socket_path: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def client(self, db: int = 0, retries: int = 3) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket_path), db=db, socket_timeout=60,
                           retry=Retry(NoBackoff(), retries))

    def log_tail(self, n: int = 4) -> str:
        """The server's last warnings/errors (`#` lines), which say why a load failed."""
        try:
            lines = (self.directory / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        errors = [ln for ln in lines if " # " in ln and "overcommit" not in ln]
        return "\n".join((errors or lines)[-n:])


def _config(directory: Path, socket_path: Path, replica: bool) -> str:
    lines = [
        "port 0",
        f'unixsocket "{socket_path}"',
        "unixsocketperm 700",
        f'dir "{directory}"',
        "dbfilename dump.rdb",
        "appendonly no",
        'save ""',
        f"databases {TEMP_DATABASES}",
        "daemonize no",
        f'logfile "{directory / "server.log"}"',
        # Our own throwaway server: DEBUG DIGEST (the content digest) from its unix socket only.
        "enable-debug-command local",
        # As a scratch target its snapshot (a digest of it) starts at once.
        "repl-diskless-sync-delay 0",
    ]
    if replica:
        # A replica keeps keys whose TTL passed while loading (a master drops
        # them), so counting a dump gives the same answer today and tomorrow.
        # Port 0 cannot be connected to, so it never syncs from anything.
        lines += ["replicaof 127.0.0.1 0", "replica-serve-stale-data yes", "replica-read-only yes"]
    return "\n".join(lines) + "\n"


@contextmanager
def temp_redis(rdb: Path | None = None, progress: Progress = no_progress) -> Iterator[TempRedis]:
    """Start a private redis-server; with `rdb`, load it read-only (as a detached replica).

    Raises EngineError when the server cannot start or the RDB does not load
    (truncated, wrong checksum, newer format than this redis-server reads).
    """
    directory = Path(tempfile.mkdtemp(prefix="rpger-redis-"))
    os.chmod(directory, 0o700)
    socket_path = directory / "redis.sock"
    if rdb is not None:
        # A symlink, not a copy: the server only reads it at startup.
        (directory / "dump.rdb").symlink_to(rdb.resolve())
    conf = directory / "redis.conf"
    conf.write_text(_config(directory, socket_path, replica=rdb is not None))
    proc = subprocess.Popen([redis_server_binary(), str(conf)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server = TempRedis(directory, socket_path, proc)
    try:
        _wait_ready(server, progress)
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()  # it holds nothing worth a graceful shutdown
            proc.wait(timeout=15)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_ready(server: TempRedis, progress: Progress) -> None:
    client = server.client(retries=0)  # this loop is the retry
    last_change = time.monotonic()
    next_progress = last_change
    try:
        while True:
            if server.proc.poll() is not None:
                raise TempServerError("temporary redis-server could not load the dump "
                                  f"(exit {server.proc.returncode}):\n{server.log_tail()}")
            try:
                client.ping()
                return
            except redis.BusyLoadingError:
                last_change = time.monotonic()  # loading is progress
                if last_change >= next_progress:
                    progress("loading the dump into a temporary redis-server", 0, None)
                    next_progress = last_change + 1.0
                # Short polls: a 100k-key dump loads in ~0.2 s, and a 0.5 s sleep was
                # a fifth of the whole Redis backup step.
                time.sleep(0.02)
            except (redis.ConnectionError, FileNotFoundError):
                if time.monotonic() - last_change > STARTUP_TIMEOUT_S:
                    raise TempServerError(f"temporary redis-server did not start:\n{server.log_tail()}") from None
                time.sleep(0.02)
    finally:
        client.close()
