"""`rpger-ops dev`: run the stack on a machine without Docker.

Starts the same real servers as the test harness (FerretDB as the
MongoDB-wire server, redis-server with AOF and the stack's two users, Chroma,
MinIO as the off-site store) with persistent data under `.dev/` (git-ignored)
and runs `dagster dev -w workspace.yaml` on them. Stopping and starting again
keeps the data. It writes:

  .dev/env       the ops layer's settings (secrets as *_FILE paths), for the CLI:
                 set -a; . .dev/env; set +a
  .dev/app.env   the RPGer backend's settings (mode 0600): its own variable
                 names, the app user's credentials inside REDIS_URL; usable as
                 a compose `env_file` or with `set -a; . .dev/app.env; set +a`

Secrets are generated once into `.dev/secrets/` (mode 0600), never put on a
command line.

Stopping: SIGINT (Ctrl-C), SIGTERM or SIGHUP (unless ignored, as under nohup)
stops everything it started: `dagster dev` (in its own process group: SIGINT,
then SIGTERM, then SIGKILL), then each server's process group (SIGTERM, then
SIGKILL), then anything left below it (it is a child subreaper on Linux, so
nothing escapes by being orphaned). If a server dies meanwhile, it says which
one and how, shows the end of its log, stops the rest and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from urllib.parse import quote

from rpger_ops import devservers

# Values in the env files must survive `source` unquoted and compose's env_file.
_SHELL_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]*")
DAGSTER_STOP_S = 30.0


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _secret(path: Path, nbytes: int = 24) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(nbytes))
    return path.read_text().strip()


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600 (replacing it atomically)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)
    os.replace(tmp, path)


def _env_text(env: dict[str, str], header: str) -> str:
    for key, value in env.items():
        if not _SHELL_SAFE.fullmatch(value):
            raise ValueError(f"{key}: value is not safe to source unquoted")
    return header + "".join(f"{k}={v}\n" for k, v in env.items())


def _check_free(name: str, port: int) -> None:
    if devservers.port_open("127.0.0.1", port):
        raise SystemExit(f"rpger-ops dev: port {port} for {name} is already in use "
                         f"(another `dev` running? choose another with --{name}-port)")


def build_env(root: Path, ports: dict[str, int]) -> dict[str, str]:
    """The ops layer's settings (the default Redis user; secrets as files)."""
    sec = root / "secrets"
    return {
        "MONGODB_URI": f"mongodb://127.0.0.1:{ports['mongo']}/rpger",
        "MONGODB_DATABASE": "rpger",
        "REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "REDIS_PASSWORD_FILE": str(sec / "redis_password"),
        "CHROMA_HOST": "127.0.0.1",
        "CHROMA_PORT": str(ports["chroma"]),
        "RPGER_BACKUP_DIR": str(root / "backups"),
        "RPGER_S3_ENDPOINT": f"127.0.0.1:{ports['s3']}",
        "RPGER_S3_SECURE": "false",
        "RPGER_S3_BUCKET": "rpger-backups",
        "RPGER_S3_ACCESS_KEY_FILE": str(sec / "s3_access_key"),
        "RPGER_S3_SECRET_KEY_FILE": str(sec / "s3_secret_key"),
        "RPGER_STACK_ID": "rpger-dev",
    }


def build_app_env(ports: dict[str, int], redis_app_password: str) -> dict[str, str]:
    """The RPGer backend's settings: its variable names, credentials in the URLs.
    (FerretDB, the dev MongoDB-wire server, has no users: no Mongo credentials.)"""
    return {
        "MONGODB_URI": f"mongodb://127.0.0.1:{ports['mongo']}/rpger",
        "MONGODB_DATABASE": "rpger",
        "REDIS_URL": f"redis://{devservers.REDIS_APP_USER}:{quote(redis_app_password, safe='')}"
                     f"@127.0.0.1:{ports['redis']}/0",
        "CHROMA_HOST": "127.0.0.1",
        "CHROMA_PORT": str(ports["chroma"]),
        "CHROMA_SSL": "false",
    }


APP_ENV_HEADER = ("# Written by `rpger-ops dev`: the RPGer backend's settings for this dev stack.\n"
                  "# Credentials are inside the URLs: keep this file private (0600).\n"
                  "# Use as a compose env_file, or: set -a; . .dev/app.env; set +a\n")


# --- processes --------------------------------------------------------------------
def _become_subreaper() -> None:
    """Orphaned descendants (e.g. a grandchild whose parent died) are re-parented
    to us instead of init, so the final sweep finds them. Linux only."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def descendants(pid: int) -> list[int]:
    """All processes below `pid` (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _running(pids: list[int]) -> list[int]:
    """The pids that still run (not zombies, not gone)."""
    out = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            out.append(pid)
    return out


def _sweep(timeout: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, whatever still runs below us; reap what is ours.
    Returns the pids that were still running."""
    me = os.getpid()
    found = _running(descendants(me))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _running(descendants(me)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in descendants(me):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            if not _running(descendants(me)):
                return found
            time.sleep(0.1)
    return found


def _stop_dagster(proc: subprocess.Popen[bytes]) -> None:
    """dagster dev stops its webserver and daemon on SIGINT (its Ctrl-C path;
    it ignores SIGTERM); its code server may linger until its heartbeat times
    out (45 s): a short grace, then SIGTERM and SIGKILL to the whole group."""
    if proc.poll() is not None and not devservers.group_alive(proc.pid, proc.pid):
        return
    print("dev: stopping dagster dev", flush=True)
    devservers._signal_group(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + DAGSTER_STOP_S
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    grace = time.monotonic() + 3
    while time.monotonic() < grace and devservers.group_alive(proc.pid, proc.pid):
        time.sleep(0.1)
    devservers.stop_group(proc, timeout=10)


def _died(servers: list[devservers.Server]) -> devservers.Server | None:
    return next((s for s in servers if not s.running), None)


def _report_death(server: devservers.Server) -> None:
    assert server.proc is not None
    print(f"rpger-ops dev: {server.name} (pid {server.proc.pid}, 127.0.0.1:{server.port}) {server.exit_reason()}; "
          f"stopping the rest. Last lines of {server.log_path}:\n{server.log_tail(20)}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rpger-ops dev", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(".dev"), help="where data lives (default .dev/)")
    parser.add_argument("--mongo-port", type=int, default=27017)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--chroma-port", type=int, default=8000)
    parser.add_argument("--s3-port", type=int, default=9000)
    parser.add_argument("--s3-console-port", type=int, default=9001,
                        help="MinIO binds its (disabled) console here (default 9001)")
    parser.add_argument("--ui-port", type=int, default=3000)
    parser.add_argument("--servers-only", action="store_true",
                        help="start the databases and wait; don't run dagster dev")
    args = parser.parse_args(argv)

    root = args.dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    ports = {"mongo": args.mongo_port, "redis": args.redis_port, "chroma": args.chroma_port, "s3": args.s3_port}
    for name, port in {**ports, "s3-console": args.s3_console_port,
                       **({} if args.servers_only else {"ui": args.ui_port})}.items():
        _check_free(name, port)

    sec = root / "secrets"
    redis_pw = _secret(sec / "redis_password")
    redis_app_pw = _secret(sec / "redis_app_password")
    s3_access = "rpger-" + _secret(sec / "s3_access_key_seed", 6).lower().replace("_", "")
    _write_private(sec / "s3_access_key", s3_access)
    s3_secret = _secret(sec / "s3_secret_key")

    env = build_env(root, ports)
    env_file, app_env_file = root / "env", root / "app.env"
    _write_private(env_file, _env_text(env, ""))
    _write_private(app_env_file, _env_text(build_app_env(ports, redis_app_pw), APP_ENV_HEADER))

    _become_subreaper()
    stop_signals = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # nohup: keep ignoring hangups
        stop_signals.append(signal.SIGHUP)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signum)

    def while_stopping(signum: int, frame: FrameType | None) -> None:
        print(f"dev: {signal.Signals(signum).name} again: already stopping (each step is bounded)",
              file=sys.stderr, flush=True)

    # Set explicitly: a background job (`cmd &`, nohup) starts with SIGINT ignored.
    for sig in stop_signals:
        signal.signal(sig, on_signal)

    servers: list[devservers.Server] = []
    dagster: subprocess.Popen[bytes] | None = None
    code = 0
    try:
        print(f"dev: starting servers, data under {root}", flush=True)
        servers.append(devservers.start_ferretdb(root / "mongo", port=ports["mongo"]))
        servers.append(devservers.start_redis(root / "redis", redis_pw, port=ports["redis"], app_password=redis_app_pw))
        servers.append(devservers.start_chroma(root / "chroma", port=ports["chroma"]))
        servers.append(devservers.start_minio(root / "s3", s3_access, s3_secret, port=ports["s3"],
                                              console_port=args.s3_console_port))
        for s in servers:
            extra = "".join(f", {k} :{p}" for k, p in s.extra_ports.items())
            print(f"dev:   {s.name:<8} 127.0.0.1:{s.port}  (pid {s.proc.pid if s.proc else '?'}{extra}; "
                  f"log {s.log_path})", flush=True)
        print(f"dev: ops settings in {env_file}: set -a; . {env_file}; set +a", flush=True)
        print(f"dev: RPGer backend settings in {app_env_file} (0600; env_file or `set -a; . {app_env_file}; "
              f"set +a`)", flush=True)
        if args.servers_only:
            print("dev: servers running; Ctrl-C (or SIGTERM) stops them", flush=True)
        else:
            (root / "dagster_home").mkdir(exist_ok=True)
            child_env = {**os.environ, **env, "DAGSTER_HOME": str(root / "dagster_home")}
            exe = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
            dagster = subprocess.Popen([exe, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1",
                                        "-p", str(args.ui_port)], env=child_env, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
            print(f"dev: dagster dev (pid {dagster.pid}): UI on http://127.0.0.1:{args.ui_port}", flush=True)
        while True:
            dead = _died(servers)
            if dead is not None:
                _report_death(dead)
                code = 1
                break
            if dagster is not None and dagster.poll() is not None:
                print(f"rpger-ops dev: dagster dev {devservers.describe_exit(dagster.returncode)}; "
                      "stopping the servers", file=sys.stderr, flush=True)
                code = 1
                break
            time.sleep(0.5)
    except _Stop as stop:
        print(f"dev: {stop} received, stopping", flush=True)
    except devservers.ServerStartError as exc:
        print(f"rpger-ops dev: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        for sig in stop_signals:
            signal.signal(sig, while_stopping)
        if dagster is not None:
            _stop_dagster(dagster)
        for s in reversed(servers):
            s.stop()
        left = _sweep()
        if left:
            print(f"dev: stopped {len(left)} leftover process(es): {left}", file=sys.stderr, flush=True)
        print("dev: everything stopped; data kept", flush=True)
    return code
