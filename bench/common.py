"""Shared by the benchmarks: servers on fresh directories, timing, RPGer-sized cache keys,
and running an `rpger-ops` command in a child process to read its own peak RSS."""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rpger_ops import devservers
from rpger_ops.connect import chroma_admin, redis_client
from rpger_ops.settings import Settings, _alias_of, load_settings, settings_to_env


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def ratio(ours: float, baseline: float) -> float:
    return ours / baseline if baseline > 0 else float("nan")


class Stack:
    """FerretDB, redis-server (password, AOF) and Chroma on fresh data directories under `root`."""

    def __init__(self, root: Path, backup_dir: Path) -> None:
        self.servers: dict[str, devservers.Server] = {}
        password = secrets.token_urlsafe(18)
        started = time.perf_counter()
        try:
            ferret = self.servers.setdefault("mongo", devservers.start_ferretdb(root / "ferretdb"))
            redis = self.servers.setdefault("redis", devservers.start_redis(root / "redis", password))
            chroma = self.servers.setdefault("chroma", devservers.start_chroma(root / "chroma"))
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - started
        self.settings: Settings = load_settings(
            _env_file=None, MONGODB_URI=f"mongodb://{ferret.host}:{ferret.port}/", MONGODB_DATABASE="rpger",
            REDIS_URL=f"redis://{redis.host}:{redis.port}/0", REDIS_PASSWORD=password,
            CHROMA_HOST=chroma.host, CHROMA_PORT=chroma.port, RPGER_BACKUP_DIR=str(backup_dir),
            RPGER_STACK_ID="bench")
        c = redis_client(self.settings)
        c.config_set("repl-diskless-sync-delay", 0)  # a benchmark measures the snapshot, not the 5 s wait
        c.close()
        admin = chroma_admin(self.settings)
        try:
            admin.get_database(self.settings.chroma_database, tenant=self.settings.chroma_tenant)
        except Exception:
            admin.create_database(self.settings.chroma_database, tenant=self.settings.chroma_tenant)

    def stop(self) -> None:
        for s in self.servers.values():
            s.stop()


def bulk_cache_keys(count: int, seed: int = 11) -> list[tuple[str, str, int | None]]:
    """Extra string keys (JSON values, most with a TTL), like RPGer's caches at scale."""
    rnd = random.Random(seed)
    return [(f"cache:entity:{i}", json.dumps({"id": i, "payload": "x" * rnd.randrange(50, 400)}),
             rnd.choice([None, 3_600_000, 86_400_000])) for i in range(count)]


def load_cache_keys(settings: Settings, cache: list[tuple[str, str, int | None]]) -> None:
    r = redis_client(settings)
    pipe = r.pipeline(transaction=False)
    for i, (key, value, ttl_ms) in enumerate(cache, 1):
        pipe.set(key, value)
        if ttl_ms:
            pipe.pexpire(key, ttl_ms)
        if i % 1000 == 0:
            pipe.execute()
    pipe.execute()
    r.close()


def settings_env(settings: Settings) -> dict[str, str]:
    return settings_to_env(settings)


def export_env(settings: Settings) -> None:
    """Dagster resources read the environment: make it say exactly `settings`."""
    for name in Settings.model_fields:
        alias = _alias_of(name)
        os.environ.pop(alias, None)
        os.environ.pop(alias + "_FILE", None)
    os.environ.update(settings_env(settings))


# Runs `python -m rpger_ops` and, at exit, records the process's OWN peak RSS (VmHWM, kB).
# Neither rusage will do: wait4's covers reaped grandchildren (temporary redis-servers, ...),
# and ru_maxrss survives exec, so a child forked from this (large) process starts at its size.
_CHILD = """
import atexit, os, runpy, sys
def _record():
    status = open("/proc/self/status").read()
    hwm = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    with open(os.environ["RPGER_BENCH_RSS_FILE"], "w") as fh:
        fh.write(hwm)
atexit.register(_record)
sys.argv = ["rpger-ops", *sys.argv[1:]]
runpy.run_module("rpger_ops", run_name="__main__", alter_sys=True)
"""


def run_child(settings: Settings, *argv: str, cwd: Path) -> tuple[float, int, str]:
    """`rpger-ops <argv>` in a child process: (seconds, its own peak RSS in MB, stdout).
    Temporary servers it starts are other processes and not counted (`last_child_tree_mb`
    holds the peak including them)."""
    global last_child_tree_mb
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "REDIS_", "CHROMA_", "RPGER_"))}
    env.update(settings_env(settings))
    out_path, err_path, rss_path = cwd / ".child.out", cwd / ".child.err", cwd / ".child.rss"
    env["RPGER_BENCH_RSS_FILE"] = str(rss_path)
    started = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, *argv], cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"rpger-ops {' '.join(argv)} exited {code}: {err_path.read_text()[-2000:]}")
    last_child_tree_mb = round(usage.ru_maxrss / 1024)
    return seconds, round(int(rss_path.read_text()) / 1024), out_path.read_text()


last_child_tree_mb = 0


def write_json(path: Path | None, flat: dict[str, Any]) -> None:
    text = json.dumps(flat, indent=2, sort_keys=True)
    if path is None:
        print(text)
    else:
        path.write_text(text + "\n")
