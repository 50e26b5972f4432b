"""`rpger-ops dev` keeps its data across a stop and a start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rpger_ops import devservers
from rpger_ops.settings import load_settings


def _start(root: Path, ports: dict[str, int]) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "rpger_ops", "dev", "--servers-only", "--dir", str(root)]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    for line in proc.stdout:
        if b"servers running" in line:
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError("dev did not come up")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)


def _settings(root: Path):  # type: ignore[no-untyped-def]
    env = dict(line.split("=", 1) for line in (root / "env").read_text().splitlines())
    return load_settings(_env_file=None, **env)


def test_dev_data_survives_restart(tmp_path: Path) -> None:
    from rpger_ops.connect import chroma_client, mongo_client, redis_client

    root = tmp_path / "dev"
    ports = {n: devservers.free_port() for n in ("mongo", "redis", "chroma", "s3")}
    proc = _start(root, ports)
    try:
        s = _settings(root)
        assert "REDIS_PASSWORD_FILE" in (root / "env").read_text()
        assert oct((root / "secrets" / "redis_password").stat().st_mode & 0o777) == "0o600"
        mongo_client(s)["rpger"]["campaigns"].insert_one({"name": "Tomb of Horrors"})
        redis_client(s).set("game:state:environment", "dusk")
        chroma_client(s).create_collection("notes").add(ids=["a"], embeddings=[[0.1, 0.2]])
    finally:
        _stop(proc)
    for port in ports.values():
        assert not devservers.port_open("127.0.0.1", port)
    proc = _start(root, ports)
    try:
        s = _settings(root)
        assert mongo_client(s)["rpger"]["campaigns"].find_one()["name"] == "Tomb of Horrors"
        assert redis_client(s).get("game:state:environment") == b"dusk"
        assert chroma_client(s).get_collection("notes").count() == 1
        # Secrets never on a command line.
        out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert (root / "secrets" / "redis_password").read_text().strip() not in out
    finally:
        _stop(proc)
    assert os.path.isdir(root / "mongo")
