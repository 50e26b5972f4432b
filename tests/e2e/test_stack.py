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
    ALL_VOLUMES,
    COMPOSE_DIR,
    COMPOSE_FILE,
    CONTAINERS,
    DAGSTER_PORT,
    DB_PORTS,
    DB_SERVICES,
    DB_VOLUMES,
    E2E_FILE,
    PORTS_FILE,
    REPO,
    Stack,
    Timings,
    host_addresses,
    json_line,
    listeners,
    log,
    podman,
    port_answers,
    published_ports,
    require_tools,
    run,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

SCALE = int(os.environ.get("RPGER_E2E_SCALE", "50"))
SCREENSHOT = REPO / "docs" / "asset-graph.png"


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
    })
    run([str(COMPOSE_DIR / "setup-secrets.sh")], env=env)
    yield Stack(secrets_dir, env_file)
    if os.environ.get("RPGER_E2E_KEEP") != "1":
        shutil.rmtree(secrets_dir, ignore_errors=True)


def _bring_up(stack: Stack, t: Timings, *, ports: bool, preseed: bool, label: str) -> None:
    """Ordered like the depends_on conditions: DBs healthy -> preseed exit 0 -> ops."""
    with t.step(f"{label}: up databases (+ minio)"):
        stack.up(*DB_SERVICES, "minio", ports=ports)
    with t.step(f"{label}: databases healthy"):
        stack.wait_healthy([*DB_SERVICES, "minio"], timeout=240)
    if preseed:
        with t.step(f"{label}: preseed one-shot"):
            stack.up("preseed", ports=ports)
            code = stack.wait_exit("preseed", timeout=900)
            log("preseed logs:\n" + stack.logs("preseed", tail=40))
            assert code == 0, f"preseed exited {code}:\n{stack.logs('preseed')}"
    with t.step(f"{label}: up ops services"):
        stack.up("dagster-code", ports=ports)
        stack.wait_healthy(["dagster-code"], timeout=240)
        stack.up("dagster-webserver", "dagster-daemon", ports=ports)
        stack.wait_healthy(["dagster-webserver"], timeout=240)


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
    assert "-@dangerous" in users["rpger_app"], "rpger_app not restricted"
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


def _launch_through_daemon(job: str, timeout: float = 300) -> tuple[str, str]:
    """Submit `job` through the webserver's GraphQL API; the QueuedRunCoordinator
    hands it to the daemon, whose DockerRunLauncher starts a container."""
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=DAGSTER_PORT)
    run_id = client.submit_job_execution(job)
    deadline = time.monotonic() + timeout
    status = "QUEUED"
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(3)
    return run_id, status


# --------------------------------------------------------------------------
def test_compose_files_valid(tmp_path: Path) -> None:
    """`podman-compose config` accepts every combination; the shipped files
    validate against the compose-spec JSON schema; no :latest, no version key."""
    import yaml

    missing = [t for t in ("podman-compose",) if shutil.which(t) is None]
    if missing:
        pytest.skip("podman-compose not installed (run tools/podman/e2e.sh)")
    env = dict(os.environ, RPGER_SECRETS_DIR=str(tmp_path))
    for files in ([COMPOSE_FILE], [COMPOSE_FILE, PORTS_FILE], [COMPOSE_FILE, PORTS_FILE, E2E_FILE]):
        args = ["podman-compose", "--env-file", "/dev/null"]
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
        for files in ([COMPOSE_FILE], [COMPOSE_FILE, PORTS_FILE], [COMPOSE_FILE, PORTS_FILE, E2E_FILE]):
            args = [docker_compose, "--env-file", "/dev/null"]
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
    # `name:` key of the current spec; allow exactly that one addition.
    schema["properties"].setdefault("name", {"type": "string"})
    for f in (COMPOSE_FILE, PORTS_FILE):
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

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "placeholder").write_text("changeme\n")
    (bad / "empty").write_text("")
    os.chmod(bad / "placeholder", 0o644)
    os.chmod(bad / "empty", 0o644)
    scripts = f"{COMPOSE_DIR / 'scripts'}:/rpger:ro"
    redis_image = stack.env["RPGER_REDIS_IMAGE"]
    for case in ("placeholder", "empty", "missing"):
        mounts = [] if case == "missing" else ["-v", f"{bad / case}:/run/secrets/redis_password:ro"]
        p = podman("run", "--rm", *mounts, "-v", scripts, "--entrypoint", "/bin/sh", redis_image,
                   "/rpger/redis-entrypoint.sh", check=False, timeout=60)
        assert p.returncode == 78, f"redis wrapper with {case} secret: rc={p.returncode} {p.stderr}"
        assert "changeme" not in p.stderr
        p = podman("run", "--rm", *mounts, "-e", "REDIS_PASSWORD_FILE=/run/secrets/redis_password",
                   stack.env["RPGER_OPS_IMAGE"], "true", check=False, timeout=60)
        assert p.returncode == 78, f"ops entrypoint with {case} secret: rc={p.returncode} {p.stderr}"
    # A valid ops password but no app password: the Valkey wrapper refuses too.
    p = podman("run", "--rm", "-v", f"{stack.secrets_dir / 'redis_password'}:/run/secrets/redis_password:ro",
               "-v", scripts, "--entrypoint", "/bin/sh", redis_image, "/rpger/redis-entrypoint.sh",
               check=False, timeout=60)
    assert p.returncode == 78 and "redis_app_password" in p.stderr, f"rc={p.returncode} {p.stderr}"


def test_stack_end_to_end(stack: Stack) -> None:
    t = Timings()
    try:
        with t.step("clean slate"):
            stack.down(volumes=True)
            for v in ALL_VOLUMES:
                podman("volume", "rm", "-f", v, check=False)

        caps = json_line(run(["podman", "run", "--rm", "-i", "--entrypoint", "python3", stack.env["RPGER_OPS_IMAGE"],
                              "-"], input=CAPABILITIES).stdout)
        log(f"rpger_ops capabilities in the image: {json.dumps(caps)}")
        have_data = caps.get("rpger_ops.testdata") is True
        have_backup = caps.get("backup_all") is True
        backup_blocker = None if have_backup else f"backup_all not available yet: {caps.get('backup_all')}"
        if have_backup and caps.get("archive_uses_tar_filter") and not caps.get("tar_filter"):
            # rpger_ops.archive extracts with tarfile's filter="data" (PEP 706), which the
            # image's Python lacks (Debian 12's 3.11.2; python:3.11.13 has it).
            have_backup = False
            backup_blocker = ("rpger_ops.archive uses tarfile filter='data' but the ops image's Python "
                              "has no PEP 706 filters (Debian 12 python3 3.11.2)")
        have_preseed = caps.get("preseed") is True

        # Phase 1: fresh stack, secure defaults ---------------------------
        _bring_up(stack, t, ports=False, preseed=have_preseed, label="phase 1")
        with t.step("exposure: nothing published by default"):
            _assert_not_exposed()
            web = published_ports(CONTAINERS["dagster-webserver"])
            assert web and all("127.0.0.1:" in p for p in web), web
            assert listeners(DAGSTER_PORT) == ["127.0.0.1"], listeners(DAGSTER_PORT)
            for addr in host_addresses():
                assert not port_answers(addr, DAGSTER_PORT), f"Dagster UI answers on {addr}"
            assert port_answers("127.0.0.1", DAGSTER_PORT)
        with t.step("deploy.resources.limits and restart policy applied"):
            for svc in (*DB_SERVICES, "dagster-code"):
                hc = json.loads(podman("inspect", "--format", "{{json .HostConfig}}", CONTAINERS[svc]).stdout)
                assert hc["Memory"] > 0 and hc["NanoCpus"] > 0, f"{svc}: no limits {hc['Memory']} {hc['NanoCpus']}"
                assert hc["RestartPolicy"]["Name"] == "unless-stopped", (svc, hc["RestartPolicy"])
        with t.step("no secret value in inspect output"):
            secret_values = [p.read_text().strip() for p in stack.secrets_dir.iterdir()
                             if p.is_file() and p.name != stack.env_file.name and p.read_text().strip()]
            inspect = podman("inspect", *CONTAINERS.values(), check=False).stdout
            for value in secret_values:
                assert value not in inspect

        if not have_data:
            pytest.skip(f"rpger_ops.testdata not available yet: {caps.get('rpger_ops.testdata')}")
        with t.step(f"write RPGer-shaped data (scale {SCALE})"):
            report = json_line(stack.python("dagster-code", LOAD_DATA.replace("SCALE", str(SCALE))))
            log(f"loaded: {report}")
        with t.step("digests after load"):
            original = _digests(stack)

        if have_backup:
            with t.step("backup_all through the running code-location container"):
                stack.python("dagster-code", ENSURE_BUCKET)
                p = stack.exec("dagster-code", "dagster", "job", "execute", "-m", "rpger_ops.definitions",
                               "-a", "defs", "-j", "backup_all", check=False, timeout=1200)
                assert p.returncode == 0, f"backup_all failed:\n{p.stdout[-5000:]}\n{p.stderr[-5000:]}"
                listing = json_line(stack.python("dagster-code", LIST_BACKUPS))
                log(f"backups: local={len(listing['local'])} files, remote={len(listing['remote'])} objects")
                assert listing["local"], "backup_all left no local archive"
                assert listing["remote"], "backup_all left no off-site copy in S3"
        else:
            log(f"backup step skipped: {backup_blocker}")

        # Phase 2: down (volumes kept), up with every container recreated ---
        ids_before = stack.container_ids()
        with t.step("down (volumes kept)"):
            stack.down(volumes=False)
            remaining = podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
            assert set(DB_VOLUMES) <= set(remaining)
        _bring_up(stack, t, ports=True, preseed=have_preseed, label="phase 2 (ports overlay)")
        ids_after = stack.container_ids()
        same = [s for s in ids_after if ids_before.get(s) == ids_after[s]]
        assert not same, f"containers not recreated: {same}"
        with t.step("digests after recreate"):
            assert _digests(stack) == original

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

        with t.step("DockerRunLauncher: the daemon runs a job in its own container"):
            run_id, status = _launch_through_daemon("health_check")
            launched = podman("ps", "-a", "--filter", f"label=dagster/run_id={run_id}",
                              "--format", "{{.Names}} {{.Image}} {{.Status}}").stdout.strip()
            log(f"run {run_id}: {status}; container: {launched or '-'}")
            assert launched, "no run container was started through the podman socket"
            if status != "SUCCESS":  # say why, for the CI log
                daemon_log = podman("logs", "--tail", "40", "rpger-dagster-daemon", check=False)
                name = launched.split()[0]
                container_log = podman("logs", "--tail", "40", name, check=False)
                state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}} {{.State.Error}}",
                               name, check=False)
                log(f"launched container {name}: {state.stdout.strip()} {state.stderr.strip()}\n"
                    f"its log:\n{container_log.stdout}{container_log.stderr}\n"
                    f"daemon log:\n{daemon_log.stdout}{daemon_log.stderr}")
            assert status == "SUCCESS", f"launched run ended {status}"
            podman("rm", "-f", *[ln.split()[0] for ln in launched.splitlines()], check=False)

        # Phase 3: database volumes lost -> preseed restores -------------
        if not (have_backup and have_preseed):
            pytest.skip(f"preseed scenario: rpger_ops pieces not available yet "
                        f"(backup: {backup_blocker}, preseed: {caps.get('preseed')})")
        with t.step("down, remove only the database volumes"):
            stack.down(volumes=False)
            for v in DB_VOLUMES:
                podman("volume", "rm", v)
            remaining = podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
            assert "rpger-backups" in remaining and not set(DB_VOLUMES) & set(remaining)
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
            for v in ALL_VOLUMES:
                podman("volume", "rm", "-f", v, check=False)
