"""`rpger-ops dev`: run the stack on a machine without Docker.

Starts the same real servers as the test harness (FerretDB as the
MongoDB-wire server, redis-server with AOF and a password, Chroma, MinIO as
the off-site store) with persistent data under `.dev/` (git-ignored), writes
the matching settings to `.dev/env`, and runs `dagster dev -w workspace.yaml`
on them. Stopping (Ctrl-C) and starting again keeps the data.

Secrets are generated once into `.dev/secrets/` (mode 0600) and handed to the
ops layer as `*_FILE` paths, never on a command line.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rpger_ops import devservers


def _secret(path: Path, nbytes: int = 24) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(nbytes))
    return path.read_text().strip()


def _check_free(name: str, port: int) -> None:
    if devservers.port_open("127.0.0.1", port):
        raise SystemExit(f"rpger-ops dev: port {port} for {name} is already in use "
                         f"(another `dev` running? choose another with --{name}-port)")


def build_env(root: Path, ports: dict[str, int]) -> dict[str, str]:
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rpger-ops dev", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(".dev"), help="where data lives (default .dev/)")
    parser.add_argument("--mongo-port", type=int, default=27017)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--chroma-port", type=int, default=8000)
    parser.add_argument("--s3-port", type=int, default=9000)
    parser.add_argument("--ui-port", type=int, default=3000)
    parser.add_argument("--servers-only", action="store_true",
                        help="start the databases and wait; don't run dagster dev")
    args = parser.parse_args(argv)

    root = args.dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    ports = {"mongo": args.mongo_port, "redis": args.redis_port, "chroma": args.chroma_port, "s3": args.s3_port}
    for name, port in ports.items():
        _check_free(name, port)

    redis_pw = _secret(root / "secrets" / "redis_password")
    s3_access = "rpger-" + _secret(root / "secrets" / "s3_access_key_seed", 6).lower().replace("_", "")
    (root / "secrets" / "s3_access_key").write_text(s3_access)
    (root / "secrets" / "s3_access_key").chmod(0o600)
    s3_secret = _secret(root / "secrets" / "s3_secret_key")

    env = build_env(root, ports)
    env_file = root / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))

    servers: list[devservers.Server] = []
    try:
        print(f"dev: starting servers, data under {root}", flush=True)
        servers.append(devservers.start_ferretdb(root / "mongo", port=ports["mongo"]))
        servers.append(devservers.start_redis(root / "redis", redis_pw, port=ports["redis"]))
        servers.append(devservers.start_chroma(root / "chroma", port=ports["chroma"]))
        servers.append(devservers.start_minio(root / "s3", s3_access, s3_secret, port=ports["s3"]))
        for s in servers:
            print(f"dev:   {s.name:<8} 127.0.0.1:{s.port}  (log {s.log_path})", flush=True)
        print(f"dev: settings written to {env_file} (source it to use the CLI: "
              f"`set -a; . {env_file}; set +a`)", flush=True)
        child_env = {**os.environ, **env, "DAGSTER_HOME": str(root / "dagster_home")}
        (root / "dagster_home").mkdir(exist_ok=True)
        if args.servers_only:
            print("dev: servers running; Ctrl-C to stop", flush=True)
            while all(s.running for s in servers):
                time.sleep(1)
            down = [s.name for s in servers if not s.running]
            print(f"rpger-ops dev: server(s) exited: {', '.join(down)}", file=sys.stderr)
            return 1
        dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
        print(f"dev: Dagster UI on http://127.0.0.1:{args.ui_port}", flush=True)
        return subprocess.call([dagster, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1",
                                "-p", str(args.ui_port)], env=child_env)
    except KeyboardInterrupt:
        return 0
    except devservers.ServerStartError as exc:
        print(f"rpger-ops dev: {exc}", file=sys.stderr)
        return 1
    finally:
        for s in reversed(servers):
            s.stop()
        print("dev: servers stopped; data kept", flush=True)
