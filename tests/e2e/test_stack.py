"""End-to-end: the shipped compose stack under podman, from empty to preseeded.

Run through `tools/podman/e2e.sh` (installs podman etc., builds the stand-in
images, sets RPGER_E2E=1). The stack uses the fixed names of the real stack
(containers `rpger-*`, volumes `rpger-*-data`): the suite REMOVES those volumes,
so it refuses to run unless RPGER_E2E=1 says this host is a test machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from e2e_probes import CAPABILITIES, DIGESTS, ENSURE_BUCKET, LIST_BACKUPS, LOAD_DATA
from e2e_stack import (
    ADMIN_PORT,
    ALL_VOLUMES,
    COMPOSE_DIR,
    COMPOSE_FILE,
    CONTAINERS,
    DAGSTER_PORT,
    DB_PORTS,
    DB_SERVICES,
    DB_VOLUMES,
    E2E_FILE,
    LAUNCHER_FILE,
    MINIO_VOLUME,
    PORTS_FILE,
    REPO,
    STACK_VOLUMES,
    Stack,
    Timings,
    create_volumes,
    graphql,
    host_addresses,
    json_line,
    listeners,
    listening_tcp_ports,
    log,
    podman,
    port_answers,
    published_ports,
    remove_volumes,
    require_tools,
    run,
    sink_records,
    volume_names,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

SCALE = int(os.environ.get("RPGER_E2E_SCALE", "50"))
SCREENSHOT = REPO / "docs" / "asset-graph.png"
MONGO_PROD_FILE = Path(__file__).resolve().with_name("compose.mongo-prod.yaml")
HEARTBEAT_PATH = "/heartbeat/" + os.urandom(8).hex()
REPO_SELECTOR = {"repositoryLocationName": "rpger_ops", "repositoryName": "__repository__"}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if os.environ.get("RPGER_E2E") != "1":
        pytest.skip("destroys the rpger-* volumes of this host; run tools/podman/e2e.sh (sets RPGER_E2E=1)")
    missing = require_tools()
    if missing:
        pytest.skip(f"not available: {', '.join(missing)} (run tools/podman/e2e.sh)")
    # Not under pytest's basetemp: other pytest sessions on the host prune old
    # basetemps, and the running containers bind-mount these files.
    secrets_dir = Path(tempfile.mkdtemp(prefix="rpger-e2e-secrets-"))
    env_file = secrets_dir / "compose.env"
    env = dict(os.environ)
    env.update({
        "RPGER_SECRETS_DIR": str(secrets_dir),
        "RPGER_COMPOSE_ENV_FILE": str(env_file),
        # MinIO's root credentials double as the ops layer's S3 keys.
        "RPGER_S3_ACCESS_KEY": "rpger-e2e-" + os.urandom(6).hex(),
        "RPGER_S3_SECRET_KEY": os.urandom(24).hex(),
        "RPGER_DOCKER_SOCKET": os.environ.get("RPGER_DOCKER_SOCKET", "/run/podman/podman.sock"),
        # The e2e sink records alert webhook POSTs and heartbeat GETs.
        "RPGER_ALERT_WEBHOOK_URL": "http://sink:8080/hook",
        "RPGER_HEARTBEAT_URL": "http://sink:8080" + HEARTBEAT_PATH,
    })
    # A test host: start from no stack volumes at all, as on a new server.
    run(["podman-compose", "-f", str(COMPOSE_FILE), "down"], env=env, check=False, cwd=COMPOSE_DIR)
    remove_volumes(ALL_VOLUMES)
    out = run([str(COMPOSE_DIR / "setup-secrets.sh")], env=env).stdout
    assert "setup-volumes: created " + " ".join(STACK_VOLUMES) in out, out
    assert "down -v' keeps them" in out
    yield Stack(secrets_dir, env_file)
    if os.environ.get("RPGER_E2E_KEEP") != "1":
        shutil.rmtree(secrets_dir, ignore_errors=True)


def _bring_up(stack: Stack, t: Timings, *, ports: bool, preseed: bool, label: str, launcher: bool = False,
              admin: bool = False, env: dict[str, str] | None = None) -> None:
    """Ordered like the depends_on conditions: DBs healthy -> preseed exit 0 -> ops."""
    kw = {"ports": ports, "launcher": launcher, "env": env}
    with t.step(f"{label}: up databases (+ minio, sink)"):
        stack.up("chroma-init", **kw)
        assert stack.wait_exit("chroma-init", timeout=120) == 0, stack.logs("chroma-init")
        stack.up(*DB_SERVICES, "minio", "sink", **kw)
    with t.step(f"{label}: databases healthy"):
        stack.wait_healthy([*DB_SERVICES, "minio"], timeout=240)
    if preseed:
        with t.step(f"{label}: preseed one-shot"):
            stack.up("preseed", **kw)
            code = stack.wait_exit("preseed", timeout=900)
            log("preseed logs:\n" + stack.logs("preseed", tail=40))
            assert code == 0, f"preseed exited {code}:\n{stack.logs('preseed')}"
    with t.step(f"{label}: up ops services"):
        stack.up("dagster-code", **kw)
        stack.wait_healthy(["dagster-code"], timeout=240)
        if launcher:
            stack.up("docker-socket-proxy", **kw)
        stack.up("dagster-webserver", "dagster-daemon", *(["dagster-admin"] if admin else []), **kw)
        stack.wait_healthy(["dagster-webserver", *(["dagster-admin"] if admin else [])], timeout=240)
        if admin:
            stack.up("admin-proxy", **kw)
            stack.wait_healthy(["admin-proxy"], timeout=60)


def _digests(stack: Stack) -> dict[str, str]:
    out = json_line(stack.python("dagster-code", DIGESTS))
    log(f"digests ({out['how']}): " + ", ".join(f"{k}={v[:12]}" for k, v in out["digests"].items()))
    return out["digests"]


def _assert_not_exposed() -> None:
    for svc, port in DB_PORTS.items():
        assert listeners(port) == [], f"something listens on :{port}: {listeners(port)}"
        for addr in ["127.0.0.1", *host_addresses()]:
            assert not port_answers(addr, port), f"{svc} answers on {addr}:{port} without the ports overlay"
        assert published_ports(CONTAINERS[svc]) == [], f"{svc} publishes {published_ports(CONTAINERS[svc])}"


def _redis_password(stack: Stack) -> str:
    return (stack.secrets_dir / "redis_password").read_text().strip()


def _assert_app_users(stack: Stack) -> None:
    """The app's Redis user (the ready-made `redis_app_url` secret, host part
    swapped for the ports overlay) reads and writes, but is refused what only
    the ops layer may do; the ops (default) user keeps full rights.

    The MongoDB app user (rpger_app, readWrite on `rpger`, created by
    compose/scripts/mongo-healthcheck.js) cannot be checked here: the FerretDB
    stand-in has no authentication or users and runs its own healthcheck, not
    the mongosh one (tests/unit/test_mongo_healthcheck_js.py covers the
    script's logic under node with a fake `db`)."""
    import redis as redis_lib

    url = urlsplit((stack.secrets_dir / "redis_app_url").read_text().strip())
    assert (url.hostname, url.port, url.username) == ("redis", 6379, "rpger_app"), url._replace(netloc="...")
    local = url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{DB_PORTS['redis']}").geturl()
    app = redis_lib.Redis.from_url(local, socket_timeout=5)
    assert app.acl_whoami() in ("rpger_app", b"rpger_app")
    assert app.set("rpger:e2e:app-user", "ok") is True
    assert app.get("rpger:e2e:app-user") == b"ok"
    assert app.delete("rpger:e2e:app-user") == 1
    # What RPGer's /api/health, /api/status and RedisInterface call (redis-acl.sh).
    assert app.info("server").get("redis_version")
    assert app.dbsize() >= 0 and isinstance(app.keys("game:state:characters:*"), list)
    refused = {
        "FLUSHALL": ("FLUSHALL",),
        "FLUSHDB": ("FLUSHDB",),
        "CONFIG GET": ("CONFIG", "GET", "appendonly"),
        "PSYNC": ("PSYNC", "?", "-1"),
        "SYNC": ("SYNC",),
        "REPLCONF": ("REPLCONF", "listening-port", "6380"),
        "ACL SETUSER": ("ACL", "SETUSER", "rpger_app", "+@all"),
        "CLIENT KILL": ("CLIENT", "KILL", "ID", "999999"),
    }
    for name, cmd in refused.items():
        try:
            app.execute_command(*cmd)
        except redis_lib.exceptions.NoPermissionError:
            continue
        pytest.fail(f"the app user may run {name}")
    app.close()
    # The ops (default) user still has everything (backups use PSYNC/REPLCONF,
    # forced restores FLUSHDB; backup_all and preseed exercise those for real).
    ops = redis_lib.Redis(host="127.0.0.1", port=DB_PORTS["redis"], password=_redis_password(stack))
    acl = [u.decode() if isinstance(u, bytes) else u for u in ops.acl_list()]
    users = {u.split()[1]: u for u in acl}
    assert set(users) == {"default", "rpger_app"}, users.keys()
    assert users["default"].endswith(" ~* &* +@all"), "default user restricted"
    # The never-list, asked of Valkey itself (DRYRUN runs nothing, so SHUTDOWN too).
    for cmd in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "x"), ("ACL", "SETUSER", "x"), ("SHUTDOWN",),
                ("PSYNC", "?", "-1"), ("SYNC",), ("DEBUG", "SLEEP", "0"), ("MODULE", "LIST")):
        answer = ops.execute_command("ACL", "DRYRUN", "rpger_app", *cmd)
        answer = answer.decode() if isinstance(answer, bytes) else str(answer)
        assert "no permissions" in answer, f"rpger_app may run {cmd}: {answer}"
    assert ops.config_get("appendonly") == {"appendonly": "yes"}
    ops.close()


def _screenshot(path: Path) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return "chromium not installed"
    with tempfile.TemporaryDirectory() as profile:
        tmp_png = Path(profile) / "shot.png"
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}/profile", "--window-size=1600,1000", "--hide-scrollbars",
               "--virtual-time-budget=25000", f"--screenshot={tmp_png}",
               f"http://127.0.0.1:{DAGSTER_PORT}/locations/rpger_ops/asset-groups/backups"]
        run(cmd, check=False, timeout=180)
        if not tmp_png.exists() or tmp_png.stat().st_size < 10_000:
            return "no screenshot written"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_png, path)
    return f"saved {path.relative_to(REPO)}"


def _admin_auth(stack: Stack) -> tuple[str, str]:
    return ("admin", (stack.secrets_dir / "dagster_admin_password").read_text().strip())


def _launch_through_daemon(job: str, auth: tuple[str, str], timeout: float = 300,
                           watch_containers: bool = False) -> tuple[str, str, set[str]]:
    """Submit `job` through the ADMIN webserver (authenticated proxy); the
    QueuedRunCoordinator hands it to the daemon, whose run launcher starts it.
    Returns (run id, final status, names of the run containers seen meanwhile)."""
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=ADMIN_PORT, headers=_basic_header(auth))
    run_id = client.submit_job_execution(job)
    deadline = time.monotonic() + timeout
    status = "QUEUED"
    seen: set[str] = set()
    while time.monotonic() < deadline:
        if watch_containers:
            seen |= set(podman("ps", "-a", "--filter", f"label=dagster/run_id={run_id}",
                               "--format", "{{.Names}}").stdout.split())
        status = client.get_run_status(run_id).value
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(0.5 if watch_containers else 3)
    return run_id, status, seen


def _basic_header(auth: tuple[str, str]) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()}


RUNS_QUERY = """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}, limit: 50) {
  __typename ... on Runs { results { runId status jobName startTime endTime tags { key value } } } } }"""

SCHEDULE_QUERY = """query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) {
  __typename ... on Schedule { scheduleState { id status } } } }"""

SENSOR_TICKS = """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
  __typename ... on Sensor { sensorState { ticks(limit: 20) { status timestamp error { message } } } } } }"""

# Every mutation a compromised app would want; the read-only UI must refuse all.
MUTATIONS = {
    "launchRun": """mutation { launchRun(executionParams: {selector: {repositoryLocationName: "rpger_ops",
        repositoryName: "__repository__", jobName: "restore"}, runConfigData: "{}"}) { __typename } }""",
    "startSchedule": """mutation { startSchedule(scheduleSelector: {repositoryLocationName: "rpger_ops",
        repositoryName: "__repository__", scheduleName: "retention_schedule"}) { __typename } }""",
    "wipeAssets": """mutation { wipeAssets(assetPartitionRanges: [{assetKey: {path: ["mongo", "dump"]}}])
        { __typename } }""",
    "deleteRun": """mutation { deletePipelineRun(runId: "00000000-0000-0000-0000-000000000000") { __typename } }""",
    "reloadWorkspace": """mutation { reloadWorkspace { __typename } }""",
}


def _runs(port: int, tags: dict[str, str], auth: tuple[str, str] | None = None) -> list[dict]:
    code, body = graphql(port, RUNS_QUERY, {"tags": [{"key": k, "value": v} for k, v in tags.items()]}, auth)
    assert code == 200 and body["data"]["runsOrError"]["__typename"] == "Runs", (code, body)
    return list(body["data"]["runsOrError"]["results"])


def _schedule(auth: tuple[str, str], start: bool) -> str:
    selector = {**REPO_SELECTOR, "scheduleName": "backup_schedule"}
    if start:
        code, body = graphql(ADMIN_PORT, """mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s)
            { __typename } }""", {"s": selector}, auth)
    else:
        _, state = graphql(ADMIN_PORT, SCHEDULE_QUERY, {"s": selector}, auth)
        state_id = state["data"]["scheduleOrError"]["scheduleState"]["id"]
        code, body = graphql(ADMIN_PORT, """mutation($id: String) { stopRunningSchedule(id: $id)
            { __typename } }""", {"id": state_id}, auth)
    key = "startSchedule" if start else "stopRunningSchedule"
    assert code == 200 and "errors" not in body, body
    typename = str(body["data"][key]["__typename"])
    assert typename == "ScheduleStateResult", body
    # The state the daemon reads: confirm it (a stop must really stop the ticks).
    want = "RUNNING" if start else "STOPPED"
    for _ in range(10):
        _, state = graphql(ADMIN_PORT, SCHEDULE_QUERY, {"s": selector}, auth)
        status = state["data"]["scheduleOrError"]["scheduleState"]["status"]
        if status == want:
            return typename
        time.sleep(1)
    raise AssertionError(f"backup_schedule is {status}, not {want}")


def _wait_scheduled_run(after: float, auth: tuple[str, str], timeout: float = 240, probe_ui: bool = True) -> dict:
    """Wait for the first run backup_schedule creates after `after` (epoch s),
    stop the schedule as soon as it exists (exactly one scheduled run), and wait
    for that run to end; meanwhile keep the read-only UI busy (GraphQL every
    0.5 s) and collect what the SQLite proof needs: UI latencies/errors, the run."""
    deadline = time.monotonic() + timeout
    latencies: list[float] = []
    ui_errors: list[str] = []
    found: dict | None = None
    run_id: str | None = None
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            runs = _runs(DAGSTER_PORT, {"dagster/schedule_name": "backup_schedule"})
        except (AssertionError, OSError) as exc:
            ui_errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            runs = []
        latencies.append(time.monotonic() - t0)
        if probe_ui:
            t0 = time.monotonic()
            code, body = graphql(DAGSTER_PORT, "{ assetNodes { assetKey { path } } }")
            latencies.append(time.monotonic() - t0)
            if code != 200 or "errors" in body:
                ui_errors.append(f"assetNodes {code} {str(body)[:200]}")
        if run_id is None:
            tick_after = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(after))
            new_runs = [r for r in runs if next((tg["value"] for tg in r["tags"] if tg["key"] == "dagster/partition"),
                                                "") >= tick_after]
            if new_runs:
                run_id = new_runs[-1]["runId"]
                # Not in the same seconds as the daemon's tick: its scheduler
                # writes the schedule state back after launching and would
                # overwrite a stop made meanwhile (seen here once).
                time.sleep(5)
                _schedule(auth, start=False)
                log(f"scheduled run {run_id} created; schedule stopped again")
        mine = [r for r in runs if r["runId"] == run_id]
        if mine and mine[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            found = mine[0]
            break
        time.sleep(0.5)
    assert found is not None, f"no scheduled run ended within {timeout} s (UI errors: {ui_errors[:3]})"
    lat = sorted(latencies)
    return {"run": found, "ui_requests": len(lat), "ui_errors": ui_errors,
            "ui_p50_ms": round(1000 * lat[len(lat) // 2]), "ui_p95_ms": round(1000 * lat[int(len(lat) * 0.95) - 1]),
            "ui_max_ms": round(1000 * lat[-1])}


def _run_containers_left(run_id: str, wait_s: float = 30.0) -> list[str]:
    """A run's containers still present after `wait_s`: the run is marked finished
    by its worker a moment before the engine removes the exited container."""
    deadline = time.monotonic() + wait_s
    while True:
        left = podman("ps", "-a", "--filter", f"label=dagster/run_id={run_id}", "--format", "{{.Names}}").stdout.split()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(1)


def _set_files(stack: Stack) -> dict[str, list]:
    """The backup data, local and in S3, with their sizes: v1 archives and v2 blobs
    (manifests and lock files may legitimately be touched by later checks)."""
    listing = json_line(stack.python("dagster-code", LIST_BACKUPS))

    def data(key: str) -> bool:
        name = key.rsplit("/", 1)[-1]
        return (("sets/" in key and key.endswith(".tar.zst"))
                or ("blobs/" in key and not name.startswith(".") and not name.endswith(".sha256")))

    return {"local": [f for f in listing["local"] if data(f[0])],
            "remote": [f for f in listing["remote"] if data(f[0])]}


def _sensor_failures(since: float) -> dict[str, int]:
    failures = {}
    for sensor in ("health_sensor", "monitoring_sensor", "heartbeat_sensor", "run_failure_alert"):
        code, body = graphql(DAGSTER_PORT, SENSOR_TICKS, {"s": {**REPO_SELECTOR, "sensorName": sensor}})
        assert code == 200 and body["data"]["sensorOrError"]["__typename"] == "Sensor", (sensor, body)
        ticks = [tk for tk in body["data"]["sensorOrError"]["sensorState"]["ticks"] if tk["timestamp"] >= since]
        failures[sensor] = sum(1 for tk in ticks if tk["status"] == "FAILURE")
    return failures


LOCK_ERRORS = ("database is locked", "database table is locked", "sqlite3.OperationalError")


def _lock_errors(since: str) -> dict[str, int]:
    out = {}
    for svc in ("dagster-code", "dagster-daemon", "dagster-webserver"):
        p = podman("logs", "--since", since, CONTAINERS[svc], check=False)
        text = p.stdout + p.stderr
        out[svc] = sum(text.count(e) for e in LOCK_ERRORS)
    return out


def _assert_hardened(names: list[str], socket_ok: frozenset[str] = frozenset(),
                     docker_host: dict[str, str] | None = None) -> None:
    """On the RUNNING containers: no capability beyond the allowed set (none
    effective for the server process), no-new-privileges, read-only root,
    json-file logs rotated at 10 MB, limits, no engine socket, non-root."""
    allowed = {"rpger-mongodb": {"CAP_CHOWN", "CAP_SETUID", "CAP_SETGID", "CAP_DAC_READ_SEARCH"},
               "rpger-redis": {"CAP_CHOWN", "CAP_SETUID", "CAP_SETGID", "CAP_DAC_READ_SEARCH"},
               "rpger-chroma-init": {"CAP_CHOWN", "CAP_DAC_READ_SEARCH"}}
    for name in names:
        info = json.loads(podman("inspect", name).stdout)[0]
        hc = info["HostConfig"]
        bounding = set(info.get("EffectiveCaps") or info.get("BoundingCaps") or [])
        assert bounding <= allowed.get(name, set()), (name, sorted(bounding))
        assert any("no-new-privileges" in o for o in hc.get("SecurityOpt") or []), (name, hc.get("SecurityOpt"))
        assert hc["ReadonlyRootfs"] is True, name
        assert hc["LogConfig"]["Type"] in ("json-file", "k8s-file") and hc["LogConfig"].get("Size") == "10MB", \
            (name, hc["LogConfig"])
        assert hc["Memory"] > 0 and hc["NanoCpus"] > 0, name
        for m in info["Mounts"]:
            if name in socket_ok:  # the launcher overlay's socket proxy: read-only, nobody else
                continue
            assert not any(x in (m.get("Source") or "") + m.get("Destination", "")
                           for x in ("docker.sock", "podman.sock")), (name, m)
        env = info["Config"].get("Env") or []
        hosts = [e.split("=", 1)[1] for e in env if e.startswith("DOCKER_HOST=")]
        assert hosts == ([docker_host[name]] if docker_host and name in docker_host else []), (name, hosts)
        # The server process itself: not root, no effective capability.
        status = podman("exec", name, "cat", "/proc/1/status").stdout
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = int(fields["Uid"].split()[1])
        cap_eff = int(fields["CapEff"].strip(), 16)
        assert uid != 0 and cap_eff == 0, (name, uid, hex(cap_eff))
        log(f"{name}: uid {uid}, CapEff 0, caps <= {sorted(allowed.get(name, set())) or 'none'}, read-only, "
            f"no-new-privileges, log {hc['LogConfig']['Type']} {hc['LogConfig'].get('Size')}")


def _app_container_reaches(targets: dict[str, int], image: str) -> dict[str, bool]:
    """What an app container on rpger-db-network (only) can connect to."""
    code = ("import json, socket, sys\nout = {}\nfor host, port in json.loads(sys.argv[1]).items():\n"
            "    try:\n        socket.create_connection((host, port), timeout=3).close(); out[host] = True\n"
            "    except OSError:\n        out[host] = False\nprint(json.dumps(out))\n")
    p = podman("run", "--rm", "--network", "rpger-db-network", "--entrypoint", "python3", image, "-c", code,
               json.dumps(targets), timeout=120)
    return {k: bool(v) for k, v in json_line(p.stdout).items()}


# --------------------------------------------------------------------------
def test_compose_files_valid(tmp_path: Path) -> None:
    """`podman-compose config` accepts every combination; the shipped files
    validate against the compose-spec JSON schema; no :latest, no version key."""
    import yaml

    missing = [t for t in ("podman-compose",) if shutil.which(t) is None]
    if missing:
        pytest.skip("podman-compose not installed (run tools/podman/e2e.sh)")
    env = dict(os.environ, RPGER_SECRETS_DIR=str(tmp_path))
    combos = ([COMPOSE_FILE], [COMPOSE_FILE, PORTS_FILE], [COMPOSE_FILE, LAUNCHER_FILE],
              [COMPOSE_FILE, PORTS_FILE, E2E_FILE], [COMPOSE_FILE, PORTS_FILE, LAUNCHER_FILE, E2E_FILE])
    env["RPGER_DOCKER_GID"] = "0"
    for files in combos:
        args = ["podman-compose", "--env-file", "/dev/null", "--profile", "admin"]
        for f in files:
            args += ["-f", str(f)]
        out = run([*args, "config"], env=env, cwd=COMPOSE_DIR).stdout
        cfg = yaml.safe_load(out)
        assert "version" not in cfg
        if E2E_FILE not in files:
            for name, svc in cfg["services"].items():
                assert not svc["image"].endswith(":latest") and ":" in svc["image"], (name, svc["image"])
    # Exactly the documented check, from the repository root.
    run(["podman-compose", "-f", "compose/compose.yaml", "config"], env=env, cwd=REPO)
    base = yaml.safe_load(COMPOSE_FILE.read_text())
    assert base["networks"]["rpger-db-network"]["internal"] is True
    for svc in DB_SERVICES:
        assert "ports" not in base["services"][svc], f"{svc} publishes ports by default"
    web_ports = base["services"]["dagster-webserver"]["ports"]
    assert all(p.startswith("127.0.0.1:") for p in web_ports), web_ports
    ports = yaml.safe_load(PORTS_FILE.read_text())
    for svc, spec in ports["services"].items():
        assert all(p.startswith("127.0.0.1:") for p in spec["ports"]), (svc, spec["ports"])

    # Docker Compose itself (built from its Go module by tools/podman/e2e.sh):
    # the current compose-spec schema and Docker's own merge rules.
    docker_compose = _docker_compose()
    if docker_compose:
        for files in combos:
            args = [docker_compose, "--env-file", "/dev/null", "--profile", "admin"]
            for f in files:
                args += ["-f", str(f)]
            run([*args, "config", "-q"], env=env, cwd=REPO)
        merged = yaml.safe_load(run([docker_compose, "-f", str(COMPOSE_FILE), "-f", str(E2E_FILE), "config"],
                                    env=env, cwd=REPO).stdout)
        assert merged["services"]["mongodb"]["healthcheck"]["test"] == ["CMD", "/usr/local/bin/ferretdb-healthcheck"]
        assert merged["services"]["dagster-code"]["depends_on"]["preseed"]["condition"] == \
            "service_completed_successfully"
    else:
        log("docker compose not built (no Go toolchain?): validated with podman-compose and the schema only")

    schema = _compose_spec_schema()
    if schema is None:
        pytest.skip("compose-spec schema: docker-compose wheel not downloadable from PyPI here")
    import jsonschema

    # The schema shipped with docker-compose 1.29.2 predates the top-level
    # `name:` key and `bind.create_host_path` of the current spec; allow
    # exactly those additions.
    schema["properties"].setdefault("name", {"type": "string"})

    def allow_create_host_path(node: object) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict) and "propagation" in props:
                props.setdefault("create_host_path", {"type": "boolean"})
            for value in node.values():
                allow_create_host_path(value)
        elif isinstance(node, list):
            for value in node:
                allow_create_host_path(value)

    allow_create_host_path(schema)
    for f in (COMPOSE_FILE, PORTS_FILE, LAUNCHER_FILE):
        jsonschema.validate(yaml.safe_load(f.read_text()), schema)


def _docker_compose() -> str | None:
    cache = Path(os.environ.get("RPGER_CACHE_DIR", Path.home() / ".cache" / "rpger-dbstack")) / "bin"
    path = cache / "docker-compose"
    return str(path) if path.exists() else shutil.which("docker-compose")


def _compose_spec_schema() -> dict | None:
    """compose_spec.json from the docker-compose 1.29.2 wheel (PyPI), cached."""
    cache = Path(os.environ.get("RPGER_CACHE_DIR", Path.home() / ".cache" / "rpger-dbstack")) / "compose_spec.json"
    if not cache.exists():
        with tempfile.TemporaryDirectory() as d:
            p = subprocess.run(["python3", "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                                "-d", d, "docker-compose==1.29.2"], capture_output=True, text=True, timeout=300)
            wheels = list(Path(d).glob("docker_compose-*.whl"))
            if p.returncode != 0 or not wheels:
                return None
            with zipfile.ZipFile(wheels[0]) as z:
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_bytes(z.read("compose/config/compose_spec.json"))
    return json.loads(cache.read_text())


def test_secrets_refused_when_missing_or_placeholder(stack: Stack, tmp_path: Path) -> None:
    """setup-secrets.sh never overwrites; containers refuse placeholder/empty/missing secrets."""
    before = {p.name: (p.read_bytes(), p.stat().st_mode & 0o777) for p in stack.secrets_dir.iterdir()}
    run([str(COMPOSE_DIR / "setup-secrets.sh")],
        env=dict(os.environ, RPGER_SECRETS_DIR=str(stack.secrets_dir), RPGER_COMPOSE_ENV_FILE=str(stack.env_file)))
    after = {p.name: (p.read_bytes(), p.stat().st_mode & 0o777) for p in stack.secrets_dir.iterdir()}
    assert before == after
    for name in ("mongodb_password", "mongodb_keyfile", "redis_password", "mongodb_app_password",
                 "redis_app_password", "mongodb_app_uri", "redis_app_url"):
        mode = after[name][1]
        assert mode & 0o007 == 0, f"{name} is world-accessible: {oct(mode)}"
        assert len(after[name][0]) >= 32
    # Only root (the database containers) reads the app passwords; the app's
    # connection secrets carry them (the generator's alphabet is URL-safe).
    for name in ("mongodb_app_password", "redis_app_password"):
        assert after[name][1] == 0o600, (name, oct(after[name][1]))
    app_mongo_pw = after["mongodb_app_password"][0].decode()
    app_redis_pw = after["redis_app_password"][0].decode()
    assert after["mongodb_app_uri"][0].decode() == \
        f"mongodb://rpger_app:{app_mongo_pw}@mongodb:27017/rpger?authSource=rpger&replicaSet=rs0"
    assert after["redis_app_url"][0].decode() == f"redis://rpger_app:{app_redis_pw}@redis:6379/0"
    assert app_redis_pw != _redis_password(stack)
    # The admin UI's credentials: the password for the operator (root only),
    # its SHA-512-crypt hash for the proxy (group 101 = nginx).
    assert after["dagster_admin_password"][1] == 0o600
    htpasswd = after["dagster_admin_htpasswd"][0].decode()
    assert htpasswd.startswith("admin:$6$") and after["dagster_admin_password"][0].decode() not in htpasswd
    assert after["dagster_admin_htpasswd"][1] == 0o640
    assert (stack.secrets_dir / "dagster_admin_htpasswd").stat().st_gid == 101
    # The optional URLs the fixture configured (alert sink, heartbeat monitor).
    assert after["heartbeat_url"][0].decode().startswith("http://sink:8080/heartbeat/")
    assert after["alert_webhook_url"][0].decode() == "http://sink:8080/hook"

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "placeholder").write_text("changeme\n")
    (bad / "empty").write_text("")
    os.chmod(bad / "placeholder", 0o644)
    os.chmod(bad / "empty", 0o644)
    # The wrapper as built into the stack's Valkey image (compose/images/valkey).
    wrapper = "/usr/local/lib/rpger/redis-entrypoint.sh"
    redis_image = stack.env["RPGER_REDIS_IMAGE"]
    for case in ("placeholder", "empty", "missing"):
        mounts = [] if case == "missing" else ["-v", f"{bad / case}:/run/secrets/redis_password:ro"]
        p = podman("run", "--rm", *mounts, "--entrypoint", "/bin/sh", redis_image,
                   wrapper, check=False, timeout=60)
        assert p.returncode == 78, f"redis wrapper with {case} secret: rc={p.returncode} {p.stderr}"
        assert "changeme" not in p.stderr
        p = podman("run", "--rm", *mounts, "-e", "REDIS_PASSWORD_FILE=/run/secrets/redis_password",
                   stack.env["RPGER_OPS_IMAGE"], "true", check=False, timeout=60)
        assert p.returncode == 78, f"ops entrypoint with {case} secret: rc={p.returncode} {p.stderr}"
    # A valid ops password but no app password: the Valkey wrapper refuses too.
    p = podman("run", "--rm", "-v", f"{stack.secrets_dir / 'redis_password'}:/run/secrets/redis_password:ro",
               "--entrypoint", "/bin/sh", redis_image, wrapper, check=False, timeout=60)
    assert p.returncode == 78 and "redis_app_password" in p.stderr, f"rc={p.returncode} {p.stderr}"


MONGO_PROBE = r'''
import json, subprocess
from pymongo import MongoClient
from pymongo.errors import OperationFailure
from rpger_ops.connect import mongo_client
from rpger_ops.settings import load_settings
s = load_settings()
out = {"uri_has_replicaset": "replicaSet=rs0" in s.mongo_client_uri(), "user": s.mongodb_username}
c = mongo_client(s)
hello = c.admin.command("hello")
out.update(ping=c.admin.command("ping")["ok"], set_name=hello.get("setName"), primary=hello.get("isWritablePrimary"))
db = c[s.mongodb_database]
db.e2e_prod.insert_one({"written_by": "ops layer with credentials"})
out["ops_count"] = db.e2e_prod.count_documents({})
out["topology"] = c.topology_description.topology_type_name
out["initdb_marker"] = c.rpger_e2e_initdb.marker.count_documents({"ranBy": "docker-entrypoint-initdb.d"})
out["rpger_users"] = sorted(u["user"] for u in db.command("usersInfo")["users"])
def code(fn):
    try:
        fn()
        return "allowed"
    except OperationFailure as exc:
        return exc.code
anon = MongoClient("mongodb://mongodb:27017/?directConnection=true", serverSelectionTimeoutMS=5000)
out["anonymous_find"] = code(lambda: anon.rpger.e2e_prod.find_one())
wrong = MongoClient(host="mongodb", port=27017, username=s.mongodb_username, password="wrong-password-123456",
                    authSource="admin", directConnection=True, serverSelectionTimeoutMS=5000)
out["wrong_password"] = code(lambda: wrong.rpger.e2e_prod.find_one())
app = MongoClient(open("/run/secrets/mongodb_app_uri").read().strip(), serverSelectionTimeoutMS=10000)
out["app_write_rpger"] = code(lambda: app.rpger.e2e_app.insert_one({"by": "rpger_app"}))
out["app_read_rpger"] = code(lambda: app.rpger.e2e_prod.find_one())
out["app_write_other_db"] = code(lambda: app.otherdb.x.insert_one({"x": 1}))
out["app_create_user"] = code(lambda: app.rpger.command("createUser", "evil", pwd="x" * 20, roles=["root"]))
health = subprocess.run(["rpger-ops", "health", "--json"], capture_output=True, text=True)
out["health_mongo"] = json.loads(health.stdout)["mongo"]
print(json.dumps(out, default=str))
'''


def test_mongo_production_path(stack: Stack) -> None:
    """The production MongoDB path, as far as this machine allows: the shipped
    mongodb service (compose/images/mongodb: mongo-entrypoint.sh,
    mongo-healthcheck.js) on a stand-in that keeps the official image's
    contract -- its own docker-entrypoint.sh, MONGO_INITDB_ROOT_*_FILE,
    /docker-entrypoint-initdb.d run by a temporary server without auth, real
    mongosh -- then the ops layer logging in with credentials over the
    replica-set URI, and the app's rpger_app user."""
    if podman("image", "exists", "localhost/rpger-mongodb:e2e", check=False).returncode != 0:
        pytest.skip("localhost/rpger-mongodb:e2e not built (tools/podman/build-images.sh mongo)")
    env = {**stack.env, "RPGER_MONGO_IMAGE": "localhost/rpger-mongodb:e2e"}
    files = ["-f", str(COMPOSE_FILE), "-f", str(MONGO_PROD_FILE)]

    def compose(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run(["podman-compose", "--env-file", str(stack.env_file), *files, *args], env=env, cwd=COMPOSE_DIR,
                   check=check, timeout=timeout)

    # The probe plays the app too: its URI (0600 root on the host, as the app
    # reads it as root) handed to the probe container's user (10001).
    app_uri = Path(tempfile.mkdtemp(prefix="rpger-e2e-app-")) / "mongodb_app_uri"
    shutil.copyfile(stack.secrets_dir / "mongodb_app_uri", app_uri)
    os.chmod(app_uri, 0o644)
    t = Timings()
    try:
        with t.step("fresh mongodb volume; first start: initdb with the temporary server"):
            compose("down", "-t", "10", check=False)
            podman("rm", "-f", CONTAINERS["mongodb"], check=False)
            remove_volumes(["rpger-mongodb-data"])
            create_volumes()
            compose("up", "-d", "--no-build", "--no-deps", "mongodb")
            took = stack.wait_healthy(["mongodb"], timeout=180)
            logs = stack.logs("mongodb", tail=400)
            log(f"mongodb healthy after {took['mongodb']:.1f}s")
            # The official entrypoint's own steps, in its own words.
            assert "running /docker-entrypoint-initdb.d/10-rpger-e2e-marker.js" in logs, logs[-3000:]
            assert "MongoDB init process complete; ready for start up." in logs, logs[-3000:]
        with t.step("keyfile staged for the mongodb user; server process unprivileged"):
            p = stack.exec("mongodb", "stat", "-c", "%a %U", "/run/rpger/mongodb_keyfile", "/run/rpger/mongodb_password")
            assert p.stdout.split("\n")[:2] == ["400 mongodb", "400 mongodb"], p.stdout
            _assert_hardened([CONTAINERS["mongodb"]])
        with t.step("healthcheck: replSetInitiate done, rpger_app created"):
            p = podman("healthcheck", "run", CONTAINERS["mongodb"], check=False)
            assert p.returncode == 0, p.stdout + p.stderr
            hc = json.loads(podman("inspect", "--format", "{{json .State.Health}}", CONTAINERS["mongodb"]).stdout)
            outputs = " ".join(entry.get("Output", "") for entry in hc.get("Log") or [])
            assert "user rpger_app@rpger created (readWrite on rpger)" in outputs, hc
            assert stack.secrets_dir.joinpath("mongodb_app_password").read_text().strip() not in outputs
        with t.step("ops layer with credentials (replicaSet URI), anonymous/wrong/app users"):
            p = compose("run", "--rm", "--no-deps", "-v",
                        f"{app_uri}:/run/secrets/mongodb_app_uri:ro",
                        "preseed", "python3", "-c", MONGO_PROBE, timeout=300)
            probe = json_line(p.stdout)
            log(f"production MongoDB path: {json.dumps(probe)}")
            assert probe["uri_has_replicaset"] and probe["user"] == "rpger_root"
            assert probe["ping"] == 1 and probe["set_name"] == "rs0" and probe["primary"] is True
            assert probe["topology"] == "ReplicaSetWithPrimary" and probe["ops_count"] == 1
            assert probe["initdb_marker"] == 1 and probe["rpger_users"] == ["rpger_app"]
            assert probe["anonymous_find"] == 13 and probe["wrong_password"] == 18
            assert probe["app_write_rpger"] == "allowed" and probe["app_read_rpger"] == "allowed"
            assert probe["app_write_other_db"] == 13 and probe["app_create_user"] == 13
            assert probe["health_mongo"]["up"] is True, probe["health_mongo"]
        with t.step("restart: no second initdb, root user kept, rpger_app updated"):
            podman("restart", "-t", "10", CONTAINERS["mongodb"])
            stack.wait_healthy(["mongodb"], timeout=180)
            logs = stack.logs("mongodb", tail=2000)
            assert logs.count("MongoDB init process complete") == 1, "initdb ran again on a used volume"
            p = podman("healthcheck", "run", CONTAINERS["mongodb"], check=False)
            hc = json.loads(podman("inspect", "--format", "{{json .State.Health}}", CONTAINERS["mongodb"]).stdout)
            outputs = " ".join(entry.get("Output", "") for entry in hc.get("Log") or [])
            assert "user rpger_app@rpger updated" in outputs, hc
            p = compose("run", "--rm", "--no-deps", "-v",
                        f"{app_uri}:/run/secrets/mongodb_app_uri:ro",
                        "preseed", "python3", "-c", MONGO_PROBE, timeout=300)
            again = json_line(p.stdout)
            assert again["ops_count"] == 2 and again["initdb_marker"] == 1, again
    finally:
        log("timings:\n" + t.report())
        compose("down", "-t", "10", check=False)
        podman("rm", "-f", CONTAINERS["mongodb"], check=False)
        remove_volumes(["rpger-mongodb-data"])
        shutil.rmtree(app_uri.parent, ignore_errors=True)


REQUIRED_CAPABILITIES = ("rpger_ops.testdata", "rpger_ops.engines.mongo", "rpger_ops.engines.redis",
                         "rpger_ops.engines.chroma", "rpger_ops.cli", "backup_all", "preseed")


def test_stack_end_to_end(stack: Stack) -> None:
    t = Timings()
    auth = _admin_auth(stack)
    every_minute = {"RPGER_E2E_BACKUP_CRON": "* * * * *"}
    try:
        with t.step("clean slate: no stack volume, then setup-volumes.sh"):
            stack.down(volumes=True)
            remove_volumes(ALL_VOLUMES)
            created = create_volumes()
            assert "created " + " ".join(STACK_VOLUMES) in created, created
            assert set(ALL_VOLUMES) <= volume_names()

        caps = json_line(run(["podman", "run", "--rm", "-i", "--entrypoint", "python3", stack.env["RPGER_OPS_IMAGE"],
                              "-"], input=CAPABILITIES).stdout)
        log(f"rpger_ops capabilities in the image: {json.dumps(caps)}")
        # A broken image is a failure, never a skip: every later phase needs all of this.
        broken = {k: v for k, v in caps.items() if k in REQUIRED_CAPABILITIES and v is not True}
        assert not broken, f"the ops image cannot load what the stack needs: {json.dumps(broken)}"
        assert not caps.get("archive_uses_tar_filter") or caps.get("tar_filter"), (
            "rpger_ops.archive extracts with tarfile's filter='data' (PEP 706), which the ops image's Python lacks")

        # Phase 1: fresh stack, secure defaults, default run launcher ----------
        phase1_start = time.time()
        _bring_up(stack, t, ports=False, preseed=True, label="phase 1", admin=True, env=every_minute)
        with t.step("admin (with credentials) pauses the every-minute schedule until the proof"):
            assert _schedule(auth, start=False) == "ScheduleStateResult"
        with t.step("exposure: nothing published by default"):
            _assert_not_exposed()
            web = published_ports(CONTAINERS["dagster-webserver"])
            assert web and all("127.0.0.1:" in p for p in web), web
            assert listeners(DAGSTER_PORT) == ["127.0.0.1"], listeners(DAGSTER_PORT)
            assert listeners(ADMIN_PORT) == ["127.0.0.1"], listeners(ADMIN_PORT)
            for addr in host_addresses():
                assert not port_answers(addr, DAGSTER_PORT), f"Dagster UI answers on {addr}"
                assert not port_answers(addr, ADMIN_PORT), f"admin proxy answers on {addr}"
            assert port_answers("127.0.0.1", DAGSTER_PORT)
        with t.step("networks: no webserver on rpger-db-network, no gRPC port anywhere"):
            for svc in ("dagster-webserver", "dagster-admin", "admin-proxy"):
                nets = json.loads(podman("inspect", "--format", "{{json .NetworkSettings.Networks}}",
                                         CONTAINERS[svc]).stdout)
                assert "rpger-db-network" not in nets, (svc, sorted(nets))
            for svc in ("dagster-code", "dagster-daemon"):
                assert listening_tcp_ports(CONTAINERS[svc]) == [], (svc, listening_tcp_ports(CONTAINERS[svc]))
            # What the app (a container on rpger-db-network) can reach: the
            # databases, and nothing of Dagster.
            reach = _app_container_reaches({"mongodb": 27017, "redis": 6379, "chroma": 8000, "dagster-code": 4000,
                                            "dagster-webserver": 3000, "dagster-admin": 3000,
                                            "dagster-daemon": 4000}, stack.env["RPGER_OPS_IMAGE"])
            assert reach == {"mongodb": True, "redis": True, "chroma": True, "dagster-code": False,
                             "dagster-webserver": False, "dagster-admin": False, "dagster-daemon": False}, reach
        with t.step("deploy.resources.limits and restart policy applied"):
            for svc in (*DB_SERVICES, "dagster-code"):
                hc = json.loads(podman("inspect", "--format", "{{json .HostConfig}}", CONTAINERS[svc]).stdout)
                assert hc["Memory"] > 0 and hc["NanoCpus"] > 0, f"{svc}: no limits {hc['Memory']} {hc['NanoCpus']}"
                assert hc["RestartPolicy"]["Name"] == "unless-stopped", (svc, hc["RestartPolicy"])
        with t.step("hardening on every running container; no engine socket anywhere"):
            running = podman("ps", "--format", "{{.Names}}").stdout.split()
            assert set(running) >= {CONTAINERS[s] for s in (*DB_SERVICES, "minio", "sink", "dagster-code",
                                                            "dagster-webserver", "dagster-daemon", "dagster-admin",
                                                            "admin-proxy")}, running
            _assert_hardened([n for n in running if n.startswith("rpger-")])
        with t.step("Valkey fork headroom: maxmemory <= half the memory limit"):
            limit = int(podman("inspect", "--format", "{{.HostConfig.Memory}}", CONTAINERS["redis"]).stdout)
            p = stack.exec("redis", "sh", "-c", "REDISCLI_AUTH=$(cat /run/secrets/redis_password) "
                           "valkey-cli --no-auth-warning config get maxmemory")
            maxmemory = int(p.stdout.split()[-1])
            log(f"valkey maxmemory {maxmemory >> 20} MiB, container limit {limit >> 20} MiB")
            assert 0 < maxmemory * 2 <= limit, (maxmemory, limit)
        with t.step("no secret value in inspect output"):
            secret_values = [p.read_text().strip() for p in stack.secrets_dir.iterdir()
                             if p.is_file() and p.name != stack.env_file.name and len(p.read_text().strip()) >= 16]
            inspect = podman("inspect", *CONTAINERS.values(), check=False).stdout
            for value in secret_values:
                assert value not in inspect

        with t.step("the UI refuses mutations without credentials"):
            for name, mutation in MUTATIONS.items():
                code, body = graphql(DAGSTER_PORT, mutation)
                result = next(iter((body.get("data") or {}).values()), None) if code == 200 else None
                assert (result or {}).get("__typename") == "UnauthorizedError", \
                    f"read-only UI did not refuse {name}: {code} {body}"
            for creds in (None, ("admin", "wrong-password-" + "x" * 10), ("root", auth[1])):
                code, _ = graphql(ADMIN_PORT, MUTATIONS["reloadWorkspace"], auth=creds)
                assert code == 401, f"admin proxy answered {code} to {creds and creds[0]}"
            code, body = graphql(ADMIN_PORT, MUTATIONS["reloadWorkspace"], auth=auth)
            assert code == 200 and body["data"]["reloadWorkspace"]["__typename"] == "Workspace", body

        with t.step(f"write RPGer-shaped data (scale {SCALE})"):
            report = json_line(stack.python("dagster-code", LOAD_DATA.replace("SCALE", str(SCALE))))
            log(f"loaded: {report}")
        with t.step("digests after load"):
            original = _digests(stack)

        with t.step("backup_all through the running code-location container"):
            stack.python("dagster-code", ENSURE_BUCKET)
            p = stack.exec("dagster-code", "dagster", "job", "execute", "-m", "rpger_ops.definitions",
                           "-a", "defs", "-j", "backup_all", check=False, timeout=1200)
            assert p.returncode == 0, f"backup_all failed:\n{p.stdout[-5000:]}\n{p.stderr[-5000:]}"
            listing = json_line(stack.python("dagster-code", LIST_BACKUPS))
            log(f"backups: local={len(listing['local'])} files, remote={len(listing['remote'])} objects")
            assert listing["local"], "backup_all left no local archive"
            assert listing["remote"], "backup_all left no off-site copy in S3"

        with t.step("scheduled backup without a Docker socket, UI and sensors busy (SQLite proof)"):
            since_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            containers_before = set(podman("ps", "-a", "--format", "{{.Names}}").stdout.split())
            started = time.time()
            assert _schedule(auth, start=True) == "ScheduleStateResult"
            # The next minute's run, with the UI probed from before it starts to its end.
            proof = _wait_scheduled_run(after=started, auth=auth, timeout=360)
            scheduled = proof["run"]
            assert scheduled["status"] == "SUCCESS", scheduled
            assert scheduled["jobName"] == "backup_chains", scheduled
            new_containers = set(podman("ps", "-a", "--format", "{{.Names}}").stdout.split()) - containers_before
            assert not new_containers, f"a run container appeared without the launcher overlay: {new_containers}"
            failures = _sensor_failures(phase1_start)
            locks = _lock_errors(since_iso)
            proof.update({"run_seconds": round(scheduled["endTime"] - scheduled["startTime"], 1),
                          "sensor_failures": failures, "sqlite_lock_errors": locks})
            proof.pop("run")
            log(f"SQLite proof: {json.dumps(proof)}")
            assert proof["ui_errors"] == [] and sum(failures.values()) == 0 and sum(locks.values()) == 0, proof
        with t.step("the heartbeat URL is pinged after the complete verified set"):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                beats = [r for r in sink_records() if r["path"] == HEARTBEAT_PATH]
                if beats:
                    break
                time.sleep(3)
            assert beats and beats[0]["method"] == "GET", sink_records()[-5:]
            log(f"heartbeat: {len(beats)} GET(s) to the monitor")
        with t.step("the schedule is stopped again; nothing left running"):
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                _schedule(auth, start=False)  # idempotent; re-asserts the stop
                active = [r for r in _runs(DAGSTER_PORT, {}) if r["status"] in
                          ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")]
                if not active:
                    break
                time.sleep(5)
            assert not active, active
        with t.step("a job launched by the admin runs without a container (default launcher)"):
            containers_before = set(podman("ps", "-a", "--format", "{{.Names}}").stdout.split())
            run_id, status, seen = _launch_through_daemon("health_check", auth, watch_containers=True)
            assert status == "SUCCESS" and not seen, (run_id, status, seen)
            assert set(podman("ps", "-a", "--format", "{{.Names}}").stdout.split()) == containers_before

        with t.step("daemon frozen: healthcheck unhealthy, one alert; thawed: healthy, recovery"):
            # Busy minutes (several runs) can delay a beat; start from a live daemon.
            deadline = time.monotonic() + 120
            while stack.health("dagster-daemon") != "healthy":
                assert time.monotonic() < deadline, (
                    stack.exec("dagster-daemon", "rpger-ops", "daemon-health", check=False).stdout,
                    stack.logs("dagster-daemon"))
                time.sleep(5)
            podman("kill", "--signal", "STOP", CONTAINERS["dagster-daemon"])
            t_frozen = time.monotonic()
            try:
                deadline = time.monotonic() + 180
                states: list[str] = []
                while time.monotonic() < deadline:
                    states.append(stack.health("dagster-daemon"))
                    alerts = [r for r in sink_records() if (r.get("json") or {}).get("incident") == "daemon:unhealthy"]
                    # podman counts no failure inside the healthcheck's start_period (120 s from the
                    # container's start), so its recorded status can trail the runs' own results.
                    status = podman("inspect", "--format", "{{.State.Health.Status}}",
                                    CONTAINERS["dagster-daemon"]).stdout
                    if states[-3:] == ["unhealthy"] * 3 and alerts and status.strip() == "unhealthy":
                        break
                    time.sleep(5)
                log(f"daemon frozen {time.monotonic() - t_frozen:.0f} s: health {status.strip()}, "
                    f"alerts {[(a['json']['event'], a['json']['severity']) for a in alerts]}")
                assert status.strip() == "unhealthy", (status, states)
                assert [a["json"]["event"] for a in alerts] == ["alert"], alerts
                assert "not live" in alerts[0]["json"]["summary"]
            finally:
                podman("kill", "--signal", "CONT", CONTAINERS["dagster-daemon"])
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if stack.health("dagster-daemon") == "healthy":
                    break
                time.sleep(5)
            deadline = time.monotonic() + 60
            while True:  # the recovery is posted by the healthcheck that saw the beats again
                events = [r["json"]["event"] for r in sink_records()
                          if (r.get("json") or {}).get("incident") == "daemon:unhealthy"]
                if events == ["alert", "recovery"] or time.monotonic() > deadline:
                    break
                time.sleep(3)
            assert events == ["alert", "recovery"], (events, stack.logs("sink", tail=20))

        # Phase 2: down -v keeps everything; up with the ports overlay and the
        # DockerRunLauncher overlay (socket proxy), every container recreated -----
        ids_before = stack.container_ids()
        listing_before = _set_files(stack)
        with t.step("down -v: every volume kept"):
            stack.down(volumes=True)
            assert set(ALL_VOLUMES) <= volume_names(), sorted(set(ALL_VOLUMES) - volume_names())
        _bring_up(stack, t, ports=True, preseed=True, label="phase 2 (ports + docker launcher)",
                  launcher=True, admin=True, env=every_minute)
        ids_after = stack.container_ids()
        same = [s for s in ids_after if ids_before.get(s) == ids_after[s]]
        assert not same, f"containers not recreated: {same}"
        with t.step("digests and backups after down -v + up: all data kept"):
            assert _digests(stack) == original
            if listing_before is not None:
                after = _set_files(stack)
                assert listing_before["local"] and listing_before["remote"], listing_before
                assert after == listing_before, {"before": listing_before, "after": after}

        with t.step("exposure: overlay publishes on 127.0.0.1 only; Redis refuses unauthenticated"):
            import redis as redis_lib

            for svc, port in DB_PORTS.items():
                pub = published_ports(CONTAINERS[svc])
                assert pub and all("127.0.0.1:" in p for p in pub), (svc, pub)
                assert port_answers("127.0.0.1", port), f"{svc} not on 127.0.0.1:{port}"
                assert listeners(port) == ["127.0.0.1"], (svc, listeners(port))
                for addr in host_addresses():
                    assert not port_answers(addr, port), f"{svc} answers on {addr}:{port}"
            anon = redis_lib.Redis(host="127.0.0.1", port=DB_PORTS["redis"], socket_timeout=5)
            with pytest.raises(redis_lib.exceptions.AuthenticationError):
                anon.ping()
            wrong = redis_lib.Redis(host="127.0.0.1", port=DB_PORTS["redis"], password="wrong-" + "x" * 20)
            with pytest.raises(redis_lib.exceptions.AuthenticationError):
                wrong.ping()
            authed = redis_lib.Redis(host="127.0.0.1", port=DB_PORTS["redis"], password=_redis_password(stack))
            assert authed.ping() is True
            assert authed.config_get("appendonly") == {"appendonly": "yes"}
            # The healthcheck fails on wrong auth, too.
            p = podman("exec", CONTAINERS["redis"], "sh", "-c",
                       "cli=$(command -v valkey-cli || command -v redis-cli); "
                       "REDISCLI_AUTH=wrong-password-123 VALKEYCLI_AUTH=wrong-password-123 "
                       "$cli -e --no-auth-warning ping", check=False)
            assert p.returncode != 0, p.stdout

        with t.step("app users: redis_app_url works, but no admin/dangerous commands"):
            _assert_app_users(stack)

        with t.step("screenshot of the Dagster asset graph"):
            log(f"screenshot: {_screenshot(SCREENSHOT)}")

        with t.step("socket proxy: only the daemon, only the launcher's API calls"):
            proxy = CONTAINERS["docker-socket-proxy"]
            _assert_hardened([proxy], socket_ok=frozenset({proxy}))
            mounts = json.loads(podman("inspect", "--format", "{{json .Mounts}}", proxy).stdout)
            sock = [m for m in mounts if m["Destination"] == "/var/run/docker.sock"]
            assert sock and sock[0]["RW"] is False, sock
            others = [n for n in podman("ps", "--format", "{{.Names}}").stdout.split()
                      if n.startswith("rpger-") and n != proxy]
            # No other container has the socket in this mode either; the daemon reaches the
            # engine only through the proxy (its DOCKER_HOST is the proxy, checked here).
            _assert_hardened(others, docker_host={"rpger-dagster-daemon": "tcp://docker-socket-proxy:2375"})
            probe = ("import json, urllib.request, urllib.error\nout = {}\n"
                     "for method, path in [('GET', '/version'), ('GET', '/v1.41/images/json'),"
                     " ('POST', '/v1.41/containers/x/exec'), ('DELETE', '/v1.41/containers/x'),"
                     " ('POST', '/v1.41/images/create')]:\n"
                     "    req = urllib.request.Request('http://docker-socket-proxy:2375' + path, method=method)\n"
                     "    try:\n        out[method + ' ' + path] = urllib.request.urlopen(req, timeout=10).status\n"
                     "    except urllib.error.HTTPError as e:\n        out[method + ' ' + path] = e.code\n"
                     "print(json.dumps(out))\n")
            answers = json_line(stack.exec("dagster-daemon", "python3", "-", input=probe).stdout)
            assert answers == {"GET /version": 200, "GET /v1.41/images/json": 403,
                               "POST /v1.41/containers/x/exec": 403, "DELETE /v1.41/containers/x": 405,
                               "POST /v1.41/images/create": 403}, answers
            # Not from another container on its network (the proxy resolves its allowed
            # names on every request: under load an answer can take seconds).
            p = podman("run", "--rm", "--network", "rpger-socket-network", "--entrypoint", "python3",
                       stack.env["RPGER_OPS_IMAGE"], "-c",
                       "import urllib.request, urllib.error\ntry:\n"
                       "    print(urllib.request.urlopen('http://docker-socket-proxy:2375/version', timeout=60).status)\n"
                       "except urllib.error.HTTPError as e:\n    print(e.code)\n", timeout=120)
            assert p.stdout.strip() == "403", p.stdout

        with t.step("DockerRunLauncher overlay: a launched job runs in its own container, removed after"):
            run_id, status, seen = _launch_through_daemon("health_check", auth, watch_containers=True)
            log(f"run {run_id}: {status}; containers seen: {sorted(seen) or '-'}")
            if status != "SUCCESS":  # say why, for the CI log
                daemon_log = podman("logs", "--tail", "40", "rpger-dagster-daemon", check=False)
                proxy_log = podman("logs", "--tail", "40", CONTAINERS["docker-socket-proxy"], check=False)
                log(f"daemon log:\n{daemon_log.stdout}{daemon_log.stderr}\n"
                    f"socket proxy log:\n{proxy_log.stdout}{proxy_log.stderr}")
            assert seen, "no run container was started through the socket proxy"
            assert status == "SUCCESS", f"launched run ended {status}"
            left = _run_containers_left(run_id)
            assert not left, f"run container not removed: {left}"
        with t.step("DockerRunLauncher overlay: the schedule's run works through the socket proxy"):
            started = time.time()
            assert _schedule(auth, start=True) == "ScheduleStateResult"
            scheduled = _wait_scheduled_run(after=started, auth=auth, timeout=360, probe_ui=False)["run"]
            tags = {tg["key"]: tg["value"] for tg in scheduled["tags"]}
            assert scheduled["status"] == "SUCCESS" and tags.get("docker/container_id"), scheduled
            left = _run_containers_left(scheduled["runId"])
            assert not left, f"scheduled run container not removed: {left}"

        with t.step("MinIO frozen: rpger-ops backup fails within 90 s, the local set is complete; offsite re-uploads"):
            podman("kill", "--signal", "STOP", CONTAINERS["minio"])
            try:
                started = time.monotonic()
                p = stack.exec("dagster-code", "rpger-ops", "backup", check=False, timeout=300)
                took = time.monotonic() - started
            finally:
                podman("kill", "--signal", "CONT", CONTAINERS["minio"])
            log(f"backup with a frozen store: exit {p.returncode} after {took:.0f} s")
            assert p.returncode == 1 and took < 90, (p.returncode, took, p.stderr[-2000:])
            frozen_set = p.stdout.strip().splitlines()[-1]
            assert "off-site copy failed" in p.stderr and f"rpger-ops offsite --set {frozen_set}" in p.stderr
            listing = json.loads(stack.exec("dagster-code", "rpger-ops", "sets", "--local", "--json").stdout)
            local = next(r["local"] for r in listing["sets"] if r["set_id"] == frozen_set)
            assert local["complete"], local
            again = stack.exec("dagster-code", "rpger-ops", "offsite", "--set", frozen_set, check=False, timeout=300)
            assert again.returncode == 0, again.stderr[-2000:]

        # Phase 3: database volumes lost -> preseed restores -------------
        with t.step("down, remove only the database volumes, setup-volumes.sh makes new empty ones"):
            stack.down(volumes=True)
            for v in DB_VOLUMES:
                podman("volume", "rm", v)
            assert "created " + " ".join(DB_VOLUMES) in create_volumes()
            remaining = volume_names()
            assert {"rpger-backups", "rpger-dagster-home", MINIO_VOLUME} <= remaining
        _bring_up(stack, t, ports=False, preseed=True, label="phase 3 (empty DB volumes)")
        with t.step("digests after preseed"):
            assert _digests(stack) == original
        with t.step("preseed again on full databases is a no-op"):
            stack.up("preseed")
            assert stack.wait_exit("preseed", timeout=600) == 0
            assert _digests(stack) == original
    finally:
        log("timings:\n" + t.report())
        if os.environ.get("RPGER_E2E_KEEP") != "1":
            stack.down(volumes=True)
            remove_volumes(ALL_VOLUMES)
