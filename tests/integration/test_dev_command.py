"""`rpger-ops dev`: data kept across a stop and a start; app.env; every process
stopped on SIGTERM/SIGINT (also under nohup); a dying server named."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


# --- app.env, shutdown, a dying server ------------------------------------------------

def _dev_argv(root: Path, ports: dict[str, int], servers_only: bool = True) -> list[str]:
    argv = [sys.executable, "-m", "rpger_ops", "dev", "--dir", str(root)]
    if servers_only:
        argv.append("--servers-only")
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    return argv


def _spawn_dev(root: Path, ports: dict[str, int], log: Path, servers_only: bool = True) -> subprocess.Popen[bytes]:
    """`rpger-ops dev` in a session of its own (its process tree can be killed), output to `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(_dev_argv(root, ports, servers_only=servers_only), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _ports(with_ui: bool = False) -> dict[str, int]:
    names = ["mongo", "redis", "chroma", "s3", "s3-console"] + (["ui"] if with_ui else [])
    return {n: devservers.free_port() for n in names}


def _wait_for(path: Path, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path} after {timeout}s:\n{path.read_text(errors='replace')[-3000:]}")


def _running(pids: list[int]) -> list[int]:
    from rpger_ops.commands.dev import _running as running

    return running(pids)


def _tree(pid: int) -> list[int]:
    from rpger_ops.commands.dev import descendants

    return [pid, *descendants(pid)]


def _processes_using(root: Path) -> list[str]:
    """Any process on the machine whose command line or environment names `root`."""
    found = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            blob = (d / "cmdline").read_bytes() + (d / "environ").read_bytes()
        except OSError:
            continue
        if str(root).encode() in blob and int(d.name) != os.getpid():
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ")[:200].decode(errors="replace")
            found.append(f"{d.name}: {cmd}")
    return found


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _assert_all_gone(tree: list[int], root: Path, ports: dict[str, int]) -> None:
    deadline = time.monotonic() + 10  # init reaps re-parented zombies
    while time.monotonic() < deadline and _running(tree):
        time.sleep(0.2)
    assert _running(tree) == [], f"left behind: {_running(tree)}"
    assert _processes_using(root) == []
    for name, port in ports.items():
        assert not devservers.port_open("127.0.0.1", port), f"{name} port {port} still open"


def test_app_env_is_private_sourceable_and_serves_python39(tmp_path: Path) -> None:
    """app.env (0600, RPGer's names, credentials inside the URLs) works with
    `source` and, for the client installed in a fresh Python 3.9 venv, sees
    all three databases."""
    from tests.client_venvs import PythonNotFound, build_client, client_venv, find_python, pythons, venv_env

    root, ports = tmp_path / "dev", _ports()
    log = tmp_path / "dev.log"
    proc = _spawn_dev(root, ports, log)
    tree: list[int] = []
    try:
        _wait_for(log, "servers running")
        tree = _tree(proc.pid)
        app_env = root / "app.env"
        assert oct(app_env.stat().st_mode & 0o777) == "0o600"
        env = {k: v for k, v in (line.split("=", 1) for line in app_env.read_text().splitlines()
                                 if line and not line.startswith("#"))}
        assert list(env) == ["MONGODB_URI", "MONGODB_DATABASE", "REDIS_URL", "CHROMA_HOST", "CHROMA_PORT", "CHROMA_SSL"]
        redis_pw = (root / "secrets" / "redis_app_password").read_text().strip()
        assert env["REDIS_URL"] == f"redis://rpger_app:{redis_pw}@127.0.0.1:{ports['redis']}/0"
        assert redis_pw != (root / "secrets" / "redis_password").read_text().strip()
        assert env["MONGODB_URI"] == f"mongodb://127.0.0.1:{ports['mongo']}/rpger"
        sourced = subprocess.run(["bash", "-c", f"set -a; . {app_env}; set +a; env"], capture_output=True,
                                 text=True, check=True, env={"PATH": "/usr/bin:/bin"}).stdout.splitlines()
        assert {k: v for k, v in (line.split("=", 1) for line in sourced) if k in env} == env
        # MinIO: its console (disabled) is given the declared port, and MinIO
        # listens on nothing but the S3 port (no random one).
        minio_pid = next(p for p in tree if b"minio" in Path(f"/proc/{p}/cmdline").read_bytes())
        assert f"127.0.0.1:{ports['s3-console']}" in Path(f"/proc/{minio_pid}/cmdline").read_bytes().decode()
        listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
        minio_ports = {int(line.split()[3].rsplit(":", 1)[1]) for line in listening.splitlines()
                       if f"pid={minio_pid}," in line}
        assert minio_ports == {ports["s3"]}, minio_ports

        minor, constraints, label = pythons()["py39-rpger-pins"]
        try:
            venv = client_venv(find_python(minor), constraints, label)
        except PythonNotFound as exc:
            if os.environ.get("CI"):
                raise
            pytest.skip(str(exc))
        site = build_client(venv, tmp_path / "site")
        code = "import json; from rpger_stack_client import StackClients; print(json.dumps(StackClients.from_env().health()))"
        p = subprocess.run(["bash", "-c", f"set -a; . {app_env}; set +a; exec {venv.python} -c '{code}'"],
                           env=venv_env(site), capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        health = json.loads(p.stdout)
        assert {k: v["ok"] for k, v in health.items()} == {"mongo": True, "redis": True, "chroma": True}, health
        assert health["redis"]["version"], "the app user may run INFO"
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        if rc != 0:
            _kill_all(tree)
    assert rc == 0, log.read_text()[-3000:]
    _assert_all_gone(tree, root, ports)


def test_sigterm_stops_dagster_dev_and_every_server(tmp_path: Path) -> None:
    import urllib.request

    root, ports = tmp_path / "dev", _ports(with_ui=True)
    log = tmp_path / "dev.log"
    proc = _spawn_dev(root, ports, log, servers_only=False)
    tree: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports['ui']}/server_info", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        else:
            raise AssertionError("the Dagster UI did not come up:\n" + log.read_text()[-3000:])
        time.sleep(3)  # let the daemon start its sensors
        tree = _tree(proc.pid)
        cmdlines = " ".join(Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace") for p in _running(tree))
        for expected in ("rpger-ferretdb", "redis-server", "chroma", "minio", "dagster_webserver", "dagster._daemon",
                         "code-server"):
            assert expected in cmdlines, f"{expected} not running under rpger-ops dev"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
        stop_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            _kill_all(_tree(proc.pid))
    text = log.read_text()
    assert rc == 0, text[-3000:]
    assert "SIGTERM received" in text and "everything stopped" in text
    _assert_all_gone(tree, root, ports)
    print(f"\nrpger-ops dev: {len(tree)} processes, all stopped {stop_s:.1f}s after SIGTERM")


def test_sigint_under_nohup_stops_everything(tmp_path: Path) -> None:
    """A background job of a non-interactive shell starts with SIGINT ignored
    and nohup ignores SIGHUP: SIGHUP must stay ignored, SIGINT must stop it."""
    root, ports = tmp_path / "dev", _ports()
    log, pidfile = tmp_path / "nohup.out", tmp_path / "pid"
    argv = " ".join(_dev_argv(root, ports))
    wrapper = subprocess.Popen(["bash", "-c", f"nohup {argv} >{log} 2>&1 & echo $! >{pidfile}; wait $!; echo rc=$?"],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    tree: list[int] = []
    try:
        _wait_for(log, "servers running")
        pid = int(pidfile.read_text())
        tree = _tree(pid)
        sigign = int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if line.startswith("SigIgn:")).split()[1], 16)
        assert sigign & (1 << (signal.SIGHUP - 1)), "not started under nohup?"
        os.kill(pid, signal.SIGHUP)
        time.sleep(1)
        assert _running([pid]) == [pid], "SIGHUP under nohup stopped it"
        os.kill(pid, signal.SIGINT)
        out, _ = wrapper.communicate(timeout=60)
    finally:
        if wrapper.poll() is None:
            _kill_all(tree)
            wrapper.kill()
    assert out.strip() == "rc=0", log.read_text()[-3000:]
    assert "SIGINT received" in log.read_text()
    _assert_all_gone(tree, root, ports)


def test_a_dying_server_is_named_with_its_reason(tmp_path: Path) -> None:
    root, ports = tmp_path / "dev", _ports()
    log = tmp_path / "dev.log"
    proc = _spawn_dev(root, ports, log)
    tree: list[int] = []
    try:
        _wait_for(log, "servers running")
        tree = _tree(proc.pid)
        redis_pid = next(p for p in tree if b"redis-server" in Path(f"/proc/{p}/cmdline").read_bytes())
        os.kill(redis_pid, signal.SIGKILL)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            _kill_all(tree)
    text = log.read_text()
    assert rc == 1, text[-3000:]
    assert f"redis (pid {redis_pid}, 127.0.0.1:{ports['redis']}) was killed by SIGKILL" in text, text[-3000:]
    assert "redis.redis.log" in text
    _assert_all_gone(tree, root, ports)
