"""docs/runbook.md stays true: its `rpger-ops` commands, and its by-hand Redis and
Chroma procedures, are run against real servers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from restore_support import digests, settings_env, wipe

from rpger_ops import cli, devservers, migrate, testdata
from rpger_ops.connect import chroma_client
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.settings import Settings
from rpger_ops.store import LocalStore

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"
SET_ID = re.compile(r"^\d{8}T\d{6}Z$")


def fenced_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^ *```{lang}\n(.*?)^ *```", text, flags=re.S | re.M)


def runbook_commands() -> list[str]:
    commands = []
    for block in fenced_blocks(RUNBOOK.read_text(), "console"):
        commands += [line[2:].strip() for line in block.splitlines() if line.startswith("$ ")]
    return commands


def block_after(heading: str, lang: str) -> str:
    text = RUNBOOK.read_text()
    return fenced_blocks(text[text.index(heading):], lang)[0]


def test_runbook_documents_every_operator_command() -> None:
    commands = runbook_commands()
    verbs = {c.split()[1] for c in commands}
    assert all(c.startswith("rpger-ops ") for c in commands)
    assert {"backup", "sets", "verify", "restore", "preseed"} <= verbs
    assert any("--deep" in c for c in commands) and any("--source offsite" in c for c in commands)
    assert any("--db" in c and "<SET_ID>" in c for c in commands)


def test_runbook_commands_work_in_order(settings_s3: Settings, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in settings_env(settings_s3).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(settings_s3.backup_dir.parent)  # no stray .env is read
    testdata.load_all(settings_s3, scale=20)
    migrate.apply_pending(settings_s3)  # a live stack is migrated: restores then have nothing pending
    set_id = ""
    for command in runbook_commands():
        if "<SET_ID>" in command:
            assert set_id, f"{command!r} needs a set, but no backup ran before it"
            command = command.replace("<SET_ID>", set_id)
        argv = command.split()[1:]
        code = cli.main(argv)
        out, err = capsys.readouterr()
        assert code == 0, f"`{command}` exited {code}:\n{out}\n{err}"
        if argv[0] == "backup":
            set_id = out.strip().splitlines()[-1]
            assert SET_ID.match(set_id), out
        if argv[0] == "sets":  # one line per copy: the set, locally and off-site, complete
            lines = [ln.split() for ln in out.splitlines()]
            assert [set_id, "manual", "local", "verified", "verified", "verified", "yes"] in [ln[:7] for ln in lines]
            assert ["offsite", "verified", "verified", "verified", "yes"] in [ln[:5] for ln in lines], out
            assert f"latest offsite (whole stack): {set_id}" in out
    # The walk ended restored from the off-site copy of the set it backed up.
    backup_set = LocalStore(settings_s3.backup_dir).read(set_id)
    assert digests(settings_s3) == {db: backup_set.databases[db].digest for db in ENGINE_NAMES}


def test_restore_without_force_exits_3_and_names_the_data(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    testdata.load_redis(settings, scale=20)
    assert cli.main(["backup", "--db", "redis"]) == 0
    capsys.readouterr()
    assert cli.main(["restore", "--db", "redis"]) == 3
    err = capsys.readouterr().err
    assert "refused" in err and "redis holds" in err and "--force" in err
    for bad_args in (["--db", "postgres"], ["--set", "yesterday"], ["--source", "tape"]):
        with pytest.raises(SystemExit) as bad:
            cli.main(["restore", *bad_args])
        assert bad.value.code == 2


def _backed_up(settings: Settings) -> tuple[str, Path]:
    testdata.load_all(settings, scale=20)
    from rpger_ops.pipeline import BackupPipeline
    from rpger_ops.sets import SetKind

    set_id = BackupPipeline(settings).take_set(SetKind.MANUAL, offsite=False).set_id
    return set_id, LocalStore(settings.backup_dir).set_dir(set_id)


def _reassemble_by_hand(settings: Settings, set_id: str, db: str, out: Path) -> None:
    """The runbook's step 2 as written: blobs checked and decompressed into a dump folder."""
    script = (block_after("2. Reassemble", "sh").replace("DB=mongo", f"DB={db}")
              .replace("<SET_ID>", set_id).replace("/tmp/restore/$DB", str(out)))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=settings.backup_dir,
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_by_hand_redis_procedure(settings: Settings, tmp_path: Path, redis_factory: Any,
                                 mongo_endpoint: Any, chroma_endpoint: Any) -> None:
    set_id, set_dir = _backed_up(settings)
    live = redis_factory()
    target = make_settings(tmp_path, mongo_endpoint, live, chroma_endpoint)
    secret = tmp_path / "redis_password"
    secret.write_text(live.secrets["password"])
    _reassemble_by_hand(settings, set_id, "redis", tmp_path / "manual" / "redis")
    script = (block_after("### Redis", "sh")
              .replace("/tmp/restore", str(tmp_path / "manual"))
              .replace("6390", str(devservers.free_port())))
    env = {"PATH": "/usr/bin:/bin", "LIVE_HOST": live.host, "LIVE_PORT": str(live.port),
           "REDIS_PASSWORD_FILE": str(secret)}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=set_dir, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    backup_set = LocalStore(settings.backup_dir).read(set_id)
    assert digests(target, ["redis"]) == {"redis": backup_set.databases["redis"].digest}


def test_by_hand_chroma_procedure(settings: Settings, tmp_path: Path) -> None:
    set_id, set_dir = _backed_up(settings)
    src = tmp_path / "chroma"
    _reassemble_by_hand(settings, set_id, "chroma", src)
    wipe(settings, ["chroma"])
    code = block_after("### Chroma", "python")
    code = code.replace('"/tmp/restore/chroma"', repr(str(src)))
    code = re.sub(r"client = chromadb\.HttpClient\(.*\)", "client = make_client()", code)
    exec(compile(code, "runbook-chroma", "exec"), {"make_client": lambda: chroma_client(settings)})
    backup_set = LocalStore(settings.backup_dir).read(set_id)
    client = chroma_client(settings)
    counts = {c.name: c.count() for c in client.list_collections()}
    assert counts == backup_set.databases["chroma"].counts
    got = client.get_collection("monsters").get(ids=["monster_3_0"], include=["metadatas", "documents"])
    assert got["metadatas"][0]["monster_id"] == "monster-3" and "monsters document 3" in got["documents"][0]
