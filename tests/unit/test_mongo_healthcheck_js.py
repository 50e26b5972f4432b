"""compose/scripts/mongo-healthcheck.js under node with a fake mongosh `db`.

The official mongo image cannot run on the test machines (no MongoDB binaries,
and the e2e FerretDB stand-in has no users), so this checks the script's own
logic: replica-set initiation, "healthy only on a writable primary", and the
app user rpger_app created/updated exactly once per container start with
readWrite on `rpger` and the password from the secret file, never printed.
What it cannot check is mongosh/mongod themselves (e.g. that the server
accepts these exact commands): that part is reviewed, not executed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "compose" / "scripts" / "mongo-healthcheck.js"
ROOT_PW = "root-pw-0123456789abcdef"
APP_PW = "app-pw-Zyx9876543210_-abc"

# Runs SCRIPT in a vm context with mongosh's globals faked; /run/secrets and
# /run/rpger are redirected into a temporary directory. Prints one JSON line.
DRIVER = r"""
const vm = require("vm"), realFs = require("fs"), path = require("path");
const [scriptPath, root, stateJson] = process.argv.slice(2);
const state = JSON.parse(stateJson);
const remap = (p) => p.startsWith("/run/") ? path.join(root, p) : p;
const fs = {
  readFileSync: (p, enc) => realFs.readFileSync(remap(p), enc),
  existsSync: (p) => realFs.existsSync(remap(p)),
  writeFileSync: (p, d) => realFs.writeFileSync(remap(p), d),
};
const commands = [], printed = [];
class Quit { constructor(code) { this.code = code; } }
function siblingDB(name) {
  return {
    getSiblingDB: siblingDB,
    auth(user, pwd) {
      if (pwd !== state.rootPw) { const e = new Error("Authentication failed."); e.code = 18; throw e; }
      state.authed = user;
    },
    runCommand(cmd) {
      if (!state.authed) { const e = new Error("requires authentication"); e.code = 13; throw e; }
      commands.push({ db: name, cmd });
      const op = Object.keys(cmd)[0];
      if (op === "replSetGetStatus") {
        if (state.standalone) { const e = new Error("not running with --replSet"); e.code = 76; throw e; }
        if (!state.initiated) { const e = new Error("no replset config has been received"); e.code = 94; throw e; }
        return { ok: 1 };
      }
      if (op === "replSetInitiate") { state.initiated = true; return { ok: 1 }; }
      if (op === "ping") return { ok: 1 };
      if (op === "hello") {
        if (state.standalone) return { ok: 1, isWritablePrimary: true };  // no setName
        return { ok: 1, isWritablePrimary: state.initiated && state.primary, setName: state.initiated ? "rs0" : undefined };
      }
      const key = cmd[op] + "@" + name;
      if (op === "usersInfo") return { ok: 1, users: state.users[key] ? [state.users[key]] : [] };
      if (op === "createUser") {
        if (state.users[key]) return { ok: 0, codeName: "Location51003" };
        state.users[key] = { pwd: cmd.pwd, roles: cmd.roles };
        return { ok: 1 };
      }
      if (op === "updateUser") {
        if (!state.users[key]) return { ok: 0, codeName: "UserNotFound" };
        state.users[key] = { pwd: cmd.pwd, roles: cmd.roles };
        return { ok: 1 };
      }
      return { ok: 0, codeName: "CommandNotFound" };
    },
  };
}
const ctx = vm.createContext({
  require: (m) => { if (m !== "fs") throw new Error("unexpected require " + m); return fs; },
  process: { env: { MONGO_INITDB_ROOT_USERNAME: "rpger_root" } },
  db: siblingDB("test"),
  print: (...a) => printed.push(a.join(" ")),
  quit: (code) => { throw new Quit(code); },
});
let exit = null;
try {
  vm.runInContext(realFs.readFileSync(scriptPath, "utf8"), ctx, { filename: scriptPath });
} catch (e) {
  if (!(e instanceof Quit)) throw e;
  exit = e.code;
}
delete state.authed;
console.log(JSON.stringify({ exit, printed, commands, state }));
"""


@pytest.fixture
def run_check(tmp_path: Path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed")
    driver = tmp_path / "driver.js"
    driver.write_text(DRIVER)
    (tmp_path / "run" / "secrets").mkdir(parents=True)
    (tmp_path / "run" / "rpger").mkdir()
    (tmp_path / "run" / "secrets" / "mongodb_password").write_text(ROOT_PW + "\n")
    (tmp_path / "run" / "secrets" / "mongodb_app_password").write_text(APP_PW + "\n")
    state = {"rootPw": ROOT_PW, "initiated": False, "primary": True, "users": {}}

    def run() -> dict:
        p = subprocess.run([node, str(driver), str(SCRIPT), str(tmp_path), json.dumps(state)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout.strip().splitlines()[-1])
        state.update(out["state"])
        for line in out["printed"]:
            assert APP_PW not in line and ROOT_PW not in line, line
        return out

    run.state = state  # type: ignore[attr-defined]
    run.marker = tmp_path / "run" / "rpger" / "app_user_synced"  # type: ignore[attr-defined]
    return run


def _ops(out: dict) -> list[str]:
    return [next(iter(c["cmd"])) for c in out["commands"]]


def test_syntax_is_plain_js() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed")
    subprocess.run([node, "--check", str(SCRIPT)], check=True, timeout=60)


def test_first_start_initiates_then_creates_app_user_once(run_check) -> None:
    first = run_check()
    # Just initiated: the fake becomes primary at once, so the user follows.
    assert first["exit"] == 0, first["printed"]
    assert _ops(first) == ["replSetGetStatus", "replSetInitiate", "ping", "hello", "usersInfo", "createUser"]
    create = first["commands"][-1]
    assert create == {"db": "rpger", "cmd": {"createUser": "rpger_app", "pwd": APP_PW,
                                              "roles": [{"role": "readWrite", "db": "rpger"}]}}
    assert run_check.marker.exists()
    # Later healthchecks in the same container: no user commands at all.
    again = run_check()
    assert again["exit"] == 0
    assert _ops(again) == ["replSetGetStatus", "ping", "hello"]


def test_restart_updates_existing_user_with_current_password(run_check) -> None:
    run_check.state["initiated"] = True
    run_check.state["users"] = {"rpger_app@rpger": {"pwd": "old-password-0000000", "roles": []}}
    out = run_check()
    assert out["exit"] == 0
    assert _ops(out)[-2:] == ["usersInfo", "updateUser"]
    assert run_check.state["users"]["rpger_app@rpger"] == {
        "pwd": APP_PW, "roles": [{"role": "readWrite", "db": "rpger"}]}


def test_no_user_changes_before_primary(run_check) -> None:
    run_check.state["primary"] = False
    out = run_check()
    assert out["exit"] == 1
    assert "not yet primary" in " ".join(out["printed"])
    assert "usersInfo" not in _ops(out) and "createUser" not in _ops(out)
    assert not run_check.marker.exists()


def test_not_healthy_and_no_user_on_the_images_init_time_standalone(run_check) -> None:
    # docker-entrypoint.sh first runs a temporary mongod without --replSet to
    # create the root user: that one is a writable "primary" without setName.
    run_check.state["standalone"] = True
    out = run_check()
    assert out["exit"] == 1
    assert "replSetInitiate" not in _ops(out) and "createUser" not in _ops(out)


def test_failed_user_sync_is_unhealthy_and_retried(run_check) -> None:
    run_check.state["initiated"] = True
    (run_check.marker.parent.parent / "secrets" / "mongodb_app_password").unlink()
    out = run_check()
    assert out["exit"] == 1 and not run_check.marker.exists()
    assert "createUser" not in _ops(out)


def test_wrong_root_password_is_unhealthy(run_check) -> None:
    run_check.state["rootPw"] = "something-else-entirely"
    out = run_check()
    assert out["exit"] == 1
    assert out["commands"] == []
